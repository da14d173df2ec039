"""The Amazon Reviews 2023 reader at scale, and what a longer item text costs the encoder.

    python bench/amazon2023.py                        # 2M reviews, 200k items; 512 texts
    python bench/amazon2023.py --reviews 200000 --items 20000 --texts 128

1. Reading: a synthetic category in the 2023 schema (every review field the Hub's files carry,
   review text included; metadata with feature lists, description paragraphs and ``details``),
   written as JSONL, then ``read_amazon2023`` timed on it (reviews/s, items/s, peak RSS).
2. Encoding: the same items rendered by a title-only template and by title + features +
   description, encoded by the default encoder at its max length (256 tokens): texts/s, mean
   tokens per text and how many were cut.

Writes bench/results/amazon2023.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import peak_rss_mb, write_json  # noqa: E402

WORDS = [
    "gentle",
    "hydrating",
    "cream",
    "serum",
    "skin",
    "face",
    "oil",
    "free",
    "fragrance",
    "natural",
    "daily",
    "moisturizer",
    "vitamin",
    "repair",
    "night",
    "light",
    "matte",
    "finish",
    "shade",
    "long",
    "lasting",
    "formula",
    "sensitive",
    "dry",
    "brush",
    "nail",
    "polish",
    "lip",
    "balm",
    "shampoo",
    "conditioner",
    "hair",
    "scalp",
    "volume",
    "curl",
    "smooth",
    "shine",
]


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def write_category(root: Path, reviews: int, items: int, seed: int = 0) -> tuple[Path, Path]:
    """reviews.jsonl and meta.jsonl of a synthetic category, written in blocks."""
    root.mkdir(exist_ok=True)
    rng = random.Random(seed)
    meta_path, rev_path = root / "meta.jsonl", root / "reviews.jsonl"
    with open(meta_path, "w") as fh:
        for i in range(items):
            rec = {
                "main_category": "All Beauty",
                "title": _words(rng, rng.randint(4, 14)),
                "average_rating": 4.2,
                "rating_number": 10,
                "features": [_words(rng, rng.randint(5, 15)) for _ in range(rng.randint(0, 5))],
                "description": [_words(rng, rng.randint(20, 80)) for _ in range(rng.randint(0, 3))],
                "price": rng.choice([None, "None", round(rng.uniform(3, 60), 2)]),
                "images": [{"large": "https://example.invalid/a.jpg"}],
                "videos": [],
                "store": f"store{rng.randrange(2000)}",
                "categories": [],
                "details": {"Brand": f"brand{rng.randrange(3000)}", "Item Form": "Cream"},
                "parent_asin": f"B{i:09d}",
                "bought_together": None,
            }
            fh.write(json.dumps(rec) + "\n")
    with open(rev_path, "w") as fh:
        block = []
        for _ in range(reviews):
            block.append(
                json.dumps(
                    {
                        "rating": float(rng.randint(1, 5)),
                        "title": "good",
                        "text": _words(rng, 20),
                        "images": [],
                        "asin": "B0",
                        "parent_asin": f"B{int(items * rng.random() ** 2):09d}",
                        "user_id": f"A{rng.randrange(reviews // 4):012d}",
                        "timestamp": 1_500_000_000_000 + rng.randrange(10**11),
                        "helpful_vote": 0,
                        "verified_purchase": True,
                    }
                )
            )
            if len(block) == 50_000:
                fh.write("\n".join(block) + "\n")
                block = []
        if block:
            fh.write("\n".join(block) + "\n")
    return rev_path, meta_path


def encode_cost(meta_path: Path, texts: int) -> dict:
    """texts/s, tokens and cuts per template over the first ``texts`` items."""
    from pretrain.encoder import TextEncoder
    from pretrain.text import render_texts
    from sources.amazon2023 import read_meta

    rows = read_meta(meta_path).slice(0, texts).to_pylist()
    enc = TextEncoder(max_length=256)
    enc.encode(["warm up"], progress=False)
    out = {}
    for name, template in (
        ("title", "{title}"),
        ("title + features + description", "{title}[. Features: {features}][. {description}]"),
    ):
        batch = render_texts(rows, template)
        tokens = enc.model.tokenizer(batch, truncation=False, verbose=False)["input_ids"]
        t0 = time.perf_counter()
        enc.encode(batch, progress=False)
        sec = time.perf_counter() - t0
        out[name] = {
            "texts": len(batch),
            "seconds": sec,
            "texts_per_second": len(batch) / sec,
            "mean_tokens": sum(map(len, tokens)) / len(tokens),
            "truncated": enc.truncated(batch),
        }
        print(
            f"encode {name}: {len(batch) / sec:.0f} texts/s, {out[name]['mean_tokens']:.0f} tokens, {out[name]['truncated']} cut"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reviews", type=int, default=2_000_000)
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--texts", type=int, default=512)
    args = ap.parse_args()
    from sources.amazon2023 import read_amazon2023, read_meta

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rev, meta = write_category(Path(tmp), args.reviews, args.items)
        print(
            f"wrote {args.reviews:,} reviews, {args.items:,} items in {time.perf_counter() - t0:.0f} s"
        )
        read_amazon2023(*write_category(Path(tmp) / "warm", 10, 5))  # imports, first calls
        t0 = time.perf_counter()
        raw = read_amazon2023(rev, None)
        rev_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        raw_items = read_meta(meta)
        meta_s = time.perf_counter() - t0
        read = {
            "reviews": raw.interactions.num_rows,
            "items": raw_items.num_rows,
            "reviews_file_mb": rev.stat().st_size / 2**20,
            "meta_file_mb": meta.stat().st_size / 2**20,
            "reviews_seconds": rev_s,
            "reviews_per_second": raw.interactions.num_rows / rev_s,
            "meta_seconds": meta_s,
            "items_per_second": raw_items.num_rows / meta_s,
            "peak_rss_mb": peak_rss_mb(),
        }
        print(
            f"read {read['reviews']:,} reviews ({read['reviews_file_mb']:.0f} MB) in {rev_s:.1f} s "
            f"({read['reviews_per_second']:,.0f}/s); {read['items']:,} items in {meta_s:.1f} s; "
            f"peak RSS {read['peak_rss_mb']:.0f} MB"
        )
        encode = encode_cost(meta, args.texts)
    write_json("amazon2023.json", {"args": vars(args), "read": read, "encode": encode})


if __name__ == "__main__":
    main()
