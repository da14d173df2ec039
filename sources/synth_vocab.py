"""The words of the synthetic dataset: facet values, their synonyms and the clause phrasings.

Plain English on purpose: the sentence encoder has to read the descriptions, so every facet
value has a few synonyms it knows (``crimson`` ~ ``red``) and every clause a few phrasings.
The dict keys are the canonical values (what the facet columns hold).
"""

from __future__ import annotations

# category -> (category synonyms, {subcategory: subcategory synonyms}); subcategory names are
# unique across categories, so a subcategory label alone names its category
TAXONOMY: dict[str, tuple[tuple[str, ...], dict[str, tuple[str, ...]]]] = {
    "electronics": (
        ("electronics", "gadgets", "consumer tech"),
        {
            "headphones": ("headphones", "earphones", "headset"),
            "cameras": ("camera", "digital camera", "compact camera"),
            "speakers": ("speaker", "bluetooth speaker", "soundbar"),
            "laptops": ("laptop", "notebook computer", "ultrabook"),
            "phones": ("smartphone", "mobile phone", "cell phone"),
            "monitors": ("monitor", "computer screen", "display panel"),
        },
    ),
    "kitchen": (
        ("kitchen", "cookware", "home cooking"),
        {
            "pans": ("frying pan", "skillet", "saute pan"),
            "knives": ("chef knife", "kitchen knife", "knife set"),
            "coffee makers": ("coffee maker", "espresso machine", "coffee machine"),
            "blenders": ("blender", "smoothie maker", "food processor"),
            "kettles": ("kettle", "electric kettle", "tea kettle"),
            "toasters": ("toaster", "sandwich toaster", "toaster oven"),
        },
    ),
    "clothing": (
        ("clothing", "apparel", "fashion"),
        {
            "jackets": ("jacket", "coat", "windbreaker"),
            "shirts": ("shirt", "button-down shirt", "blouse"),
            "jeans": ("jeans", "denim trousers", "denim pants"),
            "dresses": ("dress", "summer dress", "evening gown"),
            "sweaters": ("sweater", "jumper", "pullover"),
            "t-shirts": ("t-shirt", "tee", "crew-neck top"),
        },
    ),
    "footwear": (
        ("footwear", "shoes", "shoe store"),
        {
            "sneakers": ("sneakers", "trainers", "running shoes"),
            "boots": ("boots", "ankle boots", "hiking boots"),
            "sandals": ("sandals", "flip-flops", "slides"),
            "slippers": ("slippers", "house shoes", "moccasins"),
            "heels": ("high heels", "pumps", "stilettos"),
            "loafers": ("loafers", "slip-on shoes", "boat shoes"),
        },
    ),
    "sports": (
        ("sports", "fitness", "outdoor sports"),
        {
            "yoga mats": ("yoga mat", "exercise mat", "pilates mat"),
            "dumbbells": ("dumbbells", "hand weights", "free weights"),
            "bicycles": ("bicycle", "bike", "mountain bike"),
            "rackets": ("tennis racket", "racquet", "squash racket"),
            "tents": ("tent", "camping tent", "dome tent"),
            "footballs": ("football", "soccer ball", "match ball"),
        },
    ),
    "beauty": (
        ("beauty", "cosmetics", "personal care"),
        {
            "lipstick": ("lipstick", "lip colour", "lip gloss"),
            "shampoo": ("shampoo", "hair wash", "hair cleanser"),
            "perfume": ("perfume", "fragrance", "eau de parfum"),
            "moisturiser": ("moisturiser", "face cream", "skin lotion"),
            "mascara": ("mascara", "lash mascara", "volumising mascara"),
            "nail polish": ("nail polish", "nail varnish", "nail lacquer"),
        },
    ),
    "toys": (
        ("toys", "games", "kids' toys"),
        {
            "puzzles": ("jigsaw puzzle", "puzzle", "brain teaser"),
            "board games": ("board game", "family game", "strategy game"),
            "dolls": ("doll", "fashion doll", "baby doll"),
            "building blocks": ("building blocks", "construction set", "brick set"),
            "plush toys": ("plush toy", "teddy bear", "stuffed animal"),
            "toy cars": ("toy car", "model car", "remote control car"),
        },
    ),
    "garden": (
        ("garden", "gardening", "outdoor living"),
        {
            "lawn mowers": ("lawn mower", "grass cutter", "robot mower"),
            "planters": ("planter", "flower pot", "plant pot"),
            "hoses": ("garden hose", "hose reel", "watering hose"),
            "barbecues": ("barbecue", "grill", "charcoal grill"),
            "patio chairs": ("patio chair", "garden chair", "deck chair"),
            "pruners": ("pruning shears", "secateurs", "hedge trimmer"),
        },
    ),
    "home": (
        ("home decor", "furnishings", "interior design"),
        {
            "lamps": ("floor lamp", "table lamp", "bedside lamp"),
            "rugs": ("rug", "area rug", "carpet"),
            "cushions": ("cushion", "throw pillow", "scatter cushion"),
            "curtains": ("curtains", "drapes", "window panels"),
            "clocks": ("wall clock", "mantel clock", "alarm clock"),
            "vases": ("vase", "flower vase", "ceramic vase"),
        },
    ),
    "office": (
        ("office supplies", "stationery", "home office"),
        {
            "notebooks": ("notebook", "journal", "notepad"),
            "pens": ("pen", "ballpoint pen", "fountain pen"),
            "desk chairs": ("desk chair", "office chair", "ergonomic chair"),
            "backpacks": ("backpack", "rucksack", "laptop bag"),
            "calculators": ("calculator", "scientific calculator", "pocket calculator"),
            "staplers": ("stapler", "heavy-duty stapler", "desktop stapler"),
        },
    ),
}
MAX_CATEGORIES = len(TAXONOMY)
MAX_SUBCATEGORIES = min(len(subs) for _, subs in TAXONOMY.values())

# ordered cheapest first: a brand's price tier is an index here
PRICE_BANDS: dict[str, tuple[str, ...]] = {
    "budget": ("budget", "cheap", "bargain"),
    "economy": ("economy", "affordable", "inexpensive"),
    "mid-range": ("mid-range", "mid-priced", "standard"),
    "premium": ("premium", "high-end", "upscale"),
    "luxury": ("luxury", "top-of-the-range", "exclusive"),
}
COLOURS: dict[str, tuple[str, ...]] = {
    "black": ("black", "jet black", "ebony"),
    "white": ("white", "ivory", "snow white"),
    "red": ("red", "crimson", "scarlet"),
    "blue": ("blue", "navy", "azure"),
    "green": ("green", "olive", "emerald"),
    "yellow": ("yellow", "mustard", "lemon"),
    "grey": ("grey", "charcoal", "slate"),
    "pink": ("pink", "rose", "blush"),
    "brown": ("brown", "chocolate", "tan"),
    "purple": ("purple", "violet", "lavender"),
}

# brand b is BRAND_HEADS[b % 16] + BRAND_TAILS[b // 16]: invented words, one token family each
BRAND_HEADS = (
    "Nord", "Vel", "Astra", "Lumi", "Kor", "Zen", "Bri", "Oro",
    "Tal", "Mira", "Quin", "Sol", "Vanta", "Echo", "Fen", "Hal",
)  # fmt: skip
BRAND_TAILS = ("wave", "ix", "ora", "tek", "line", "craft", "field", "stone", "co", "works")
MAX_BRANDS = len(BRAND_HEADS) * len(BRAND_TAILS)

# phrasings of each clause ("{}" is the value's synonym)
PHRASES: dict[str, tuple[str, ...]] = {
    "subcategory": ("{}", "quality {}", "{} for everyday use", "new {}"),
    "category": ("from the {} department", "part of our {} range", "category: {}", "in {}"),
    "brand": ("by {}", "made by {}", "a {} product", "brand: {}"),
    "price_band": ("{} price", "{} choice", "priced as {}", "{} option"),
    "colour": ("in {}", "{} colour", "finish: {}", "available in {}"),
}
# phrases that say nothing about any facet
DISTRACTORS = (
    "great gift", "best seller", "free delivery", "limited edition", "customer favourite",
    "easy to clean", "lightweight", "durable", "new arrival", "classic design", "modern look",
    "everyday essential", "ships fast", "highly rated", "two year warranty", "eco friendly",
)  # fmt: skip


def brand_name(b: int) -> str:
    return BRAND_HEADS[b % len(BRAND_HEADS)] + BRAND_TAILS[b // len(BRAND_HEADS)]
