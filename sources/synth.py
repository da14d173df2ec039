"""A synthetic sequential dataset with ground-truth facets, generated from a seed.

The one dataset where a facet-aware model can be checked against the true facets, and the one
every user has: nothing is committed but this code. The process (docs/synthetic.md): a
catalogue (``synth_items``); per user a few preferred categories, brands, price bands and
colours; each next item from a mixture of preference, a subcategory Markov chain (so order
matters) and popularity. Vectorised numpy over a chunk of users at a time, written chunk by
chunk with a ParquetWriter, so memory is bounded by the chunk, not the dataset.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from sources.synth_config import SynthConfig
from sources.synth_items import Catalogue, items_table, make_catalogue

VERSION = "1"  # bump whenever the same parameters would produce different bytes
INTERACTIONS_FILE = "synthetic.inter.parquet"
ITEMS_FILE = "synthetic.items.parquet"
CHUNK_INTERACTIONS = 1 << 19  # interactions generated (and held) at a time
CANDIDATES = 8  # items drawn by popularity among which the user's taste picks one
REDRAW_ROUNDS = 3  # times a repeated (user, item) is drawn again before it is kept
PREF, TRANS, POP = 0, 1, 2  # mixture components of a step
T_START, T_SPREAD, MEAN_GAP = 1_500_000_000, 2 * 365 * 86_400, 86_400  # seconds
SLOTS = {"category": 3, "brand": 3, "price_band": 2, "colour": 3}  # max preferred values
BRAND_HOME_BOOST = 20.0  # a user's brands are mostly brands of the user's categories
WRITE = {"compression": "zstd"}  # pyarrow writes no timestamp: same input, same bytes
INTER_SCHEMA = pa.schema(
    [("user_id", pa.int64()), ("item_id", pa.int64()), ("timestamp", pa.int64())]
)


@dataclass
class SynthResult:
    files: dict[str, Path]  # "interactions" / "items" -> file
    rows: dict[str, int]
    seconds: float


@dataclass
class Markov:
    """Subcategory transition matrix, stored as its non-zero entries per row."""

    targets: np.ndarray  # (S, k) successor subcategories
    cdf: np.ndarray  # (S, k) cumulative probabilities


@dataclass
class Preferences:
    """Per user and facet: up to ``SLOTS[facet]`` preferred values (-1 = unused) and weights."""

    values: dict[str, np.ndarray]  # facet -> (U, slots) int
    weights: dict[str, np.ndarray]  # facet -> (U, slots) float, rows sum to 1


def generate(p: SynthConfig, out: Path, progress: bool = False) -> SynthResult:
    """Write ``out/synthetic.inter.parquet`` and ``out/synthetic.items.parquet``.

    Each file appears whole or not at all (written aside, then renamed); other files in
    ``out`` are left alone.
    """
    start = time.perf_counter()
    cat = make_catalogue(p, _rng(p, 0))
    markov = markov_matrix(p, _rng(p, 1))
    lengths = sequence_lengths(p, _rng(p, 2))
    per_chunk = max(1, CHUNK_INTERACTIONS // int(np.ceil(lengths.mean())))
    bounds = list(range(0, p.users, per_chunk)) + [p.users]
    with _staged(out, [INTERACTIONS_FILE, ITEMS_FILE]) as tmp:
        pq.write_table(items_table(cat, p, _rng(p, 3)), tmp / ITEMS_FILE, **WRITE)
        bar = tqdm(
            total=int(lengths.sum()),
            unit="inter",
            unit_scale=True,
            desc="synthetic",
            disable=not progress or p.interactions < 1_000_000,
        )
        with bar, pq.ParquetWriter(tmp / INTERACTIONS_FILE, INTER_SCHEMA, **WRITE) as writer:
            for c, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
                writer.write_table(user_chunk(p, cat, markov, lengths[lo:hi], lo, _rng(p, 4, c)))
                bar.update(int(lengths[lo:hi].sum()))
    return SynthResult(
        files={"interactions": out / INTERACTIONS_FILE, "items": out / ITEMS_FILE},
        rows={"interactions": int(lengths.sum()), "items": p.items, "users": p.users},
        seconds=time.perf_counter() - start,
    )


def fingerprint(p: SynthConfig) -> str:
    """Names the files of ``p``: the parameters and the generator version, hashed."""
    payload = json.dumps({"params": p.model_dump(mode="json"), "version": VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _rng(p: SynthConfig, *stream: int) -> np.random.Generator:
    """An independent stream per part, so that chunks are reproducible on their own."""
    return np.random.default_rng([p.seed, *stream])


@contextlib.contextmanager
def _staged(out: Path, names: list[str]) -> Iterator[Path]:
    """A temporary folder inside ``out``; on success its files ``names`` replace those in out."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-synth-", dir=out))
    try:
        yield tmp
        for name in names:
            with open(tmp / name, "rb+") as fh:
                os.fsync(fh.fileno())
        for name in names:
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- the shape of the data: lengths and the subcategory chain ---------------------------------
def sequence_lengths(p: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """(U,) lengths: min_len + a lognormal share of the rest, capped at max_len, summing to
    ``interactions`` exactly (the config checks that it lies within the caps)."""
    x = rng.lognormal(0.0, p.length_sigma, p.users) if p.length_sigma else np.ones(p.users)
    extra, cap = p.interactions - p.users * p.min_len, p.max_len - p.min_len
    share = np.zeros(p.users)
    free = np.ones(p.users, dtype=bool)
    while free.any():  # water-filling: capped users keep the cap, the others share the rest
        left = extra - share[~free].sum()
        s = x[free] * left / x[free].sum()
        over = s > cap
        idx = np.flatnonzero(free)
        if not over.any():
            share[idx] = s
            break
        share[idx[over]] = cap
        free[idx[over]] = False
    whole = np.floor(share).astype(np.int64)
    short = extra - int(whole.sum())  # largest remainders get one more
    if short > 0:
        frac = np.where(whole < cap, share - whole, -1.0)
        whole[np.argsort(-frac, kind="stable")[:short]] += 1
    return p.min_len + whole


def markov_matrix(p: SynthConfig, rng: np.random.Generator) -> Markov:
    """Each subcategory leads to ``successors`` others, with Dirichlet(1) probabilities."""
    n = p.categories * p.subcategories
    if n == 1:
        return Markov(np.zeros((1, 1), dtype=np.int64), np.ones((1, 1)))
    keys = rng.random((n, n))
    np.fill_diagonal(keys, np.inf)
    targets = np.argsort(keys, axis=1)[:, : p.successors]
    cdf = np.cumsum(rng.dirichlet(np.ones(p.successors), size=n), axis=1)
    return Markov(targets, cdf)


# -- users ------------------------------------------------------------------------------------
def _top_k(log_weight: np.ndarray, k: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(U, slots): k[u] distinct values per row drawn without replacement with probability
    proportional to exp(log_weight) (Gumbel top-k); unused slots are -1."""
    slots = int(k.max())
    keys = log_weight + rng.gumbel(size=log_weight.shape)
    top = np.argsort(-keys, axis=1)[:, :slots]
    return np.where(np.arange(slots)[None, :] < k[:, None], top, -1)


def preferences(
    p: SynthConfig, cat: Catalogue, n_users: int, rng: np.random.Generator
) -> Preferences:
    """1-3 preferred categories (by their popularity), brands (mostly at home in those
    categories), 1-2 price bands and 1-3 colours per user, with Dirichlet(1) weights."""
    sizes = {
        "category": p.categories,
        "brand": p.brands,
        "price_band": len(cat.labels["price_band"]),
        "colour": len(cat.labels["colour"]),
    }
    values, weights = {}, {}
    for facet, most in SLOTS.items():
        k = rng.integers(1, min(most, sizes[facet]) + 1, n_users)
        mass = np.bincount(cat.codes(facet), weights=cat.popularity, minlength=sizes[facet])
        log_w = np.broadcast_to(np.log(mass + 1e-12), (n_users, sizes[facet]))
        if facet == "brand":
            home = (values["category"][:, :, None] == cat.brand_home[None, None, :]).any(axis=1)
            log_w = log_w + np.log(BRAND_HOME_BOOST) * home
        values[facet] = _top_k(log_w, k, rng)
        g = rng.gamma(1.0, size=values[facet].shape) * (values[facet] >= 0)
        weights[facet] = g / g.sum(axis=1, keepdims=True)
    return Preferences(values, weights)


# -- sequences --------------------------------------------------------------------------------
def user_chunk(
    p: SynthConfig,
    cat: Catalogue,
    markov: Markov,
    lengths: np.ndarray,
    first_user: int,
    rng: np.random.Generator,
) -> pa.Table:
    """The interactions of users ``first_user ..`` (0-based) with the given lengths, by user
    then time. Steps are drawn all at once; only the Markov runs are resolved in order."""
    n_users, n = len(lengths), int(lengths.sum())
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    user = np.repeat(np.arange(n_users), lengths)
    prefs = preferences(p, cat, n_users, rng)
    mix = np.array([p.preference, p.transition, p.popular])
    comp = rng.choice(3, n, p=mix / mix.sum())
    first = p.preference / (p.preference + p.popular)
    comp[starts] = np.where(rng.random(n_users) < first, PREF, POP)  # no previous item yet
    sub = np.full(n, -1, dtype=np.int64)
    item = np.full(n, -1, dtype=np.int64)
    m = comp == POP
    item[m] = _by_popularity(cat.popularity, rng.random(int(m.sum())))
    sub[m] = cat.subcategory[item[m]]
    m = comp == PREF
    sub[m] = _preferred_subcategory(p, cat, prefs, user[m], rng)
    _follow_chain(sub, comp == TRANS, markov, rng)
    index = _SubcategoryIndex(cat)
    m = comp != POP
    item[m] = index.pick(sub[m], user[m], p.taste, prefs, cat, rng)
    for _ in range(REDRAW_ROUNDS):
        again = np.flatnonzero(_repeats(user, item, len(cat.popularity)))
        if not again.size:
            break
        taste = np.where(comp[again] == POP, 0.0, p.taste)
        item[again] = index.pick(sub[again], user[again], taste, prefs, cat, rng)
    gaps = 60 + rng.exponential(MEAN_GAP, n).astype(np.int64)
    gaps[starts] = 0
    elapsed = np.cumsum(gaps)
    t0 = T_START + rng.integers(0, T_SPREAD, n_users)
    timestamp = t0[user] + elapsed - elapsed[starts][user]
    return pa.table(
        [
            pa.array(first_user + user + 1),
            pa.array(item + 1),
            pa.array(timestamp),
        ],
        schema=INTER_SCHEMA,
    )


def _by_popularity(popularity: np.ndarray, u: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(popularity)
    return np.minimum(np.searchsorted(cdf, u * cdf[-1], side="right"), len(cdf) - 1)


def _mixture_slot(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One slot per row of (n, slots) weights."""
    cdf = np.cumsum(weights, axis=1)
    slot = (cdf < rng.random(len(weights))[:, None] * cdf[:, -1:]).sum(axis=1)
    return np.minimum(slot, weights.shape[1] - 1)


def _preferred_subcategory(
    p: SynthConfig, cat: Catalogue, prefs: Preferences, users: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """A category from the user's mixture, then one of its subcategories by popularity."""
    slot = _mixture_slot(prefs.weights["category"][users], rng)
    category = prefs.values["category"][users, slot]
    mass = np.bincount(cat.subcategory, weights=cat.popularity, minlength=cat.n_subcategories)
    within = mass.reshape(p.categories, p.subcategories)
    return category * p.subcategories + _mixture_slot(within[category], rng)


def _follow_chain(
    sub: np.ndarray, trans: np.ndarray, markov: Markov, rng: np.random.Generator
) -> None:
    """Fill ``sub`` at the transition steps from the subcategory one step earlier, run by run
    (a run of consecutive transition steps starts after a resolved step: step 0 never is one)."""
    idx = np.flatnonzero(trans)
    if not idx.size:
        return
    u = rng.random(len(idx))
    new_run = np.concatenate([[True], np.diff(idx) > 1])
    run_start = np.flatnonzero(new_run)
    run_len = np.diff(np.concatenate([run_start, [len(idx)]]))
    for j in range(int(run_len.max())):
        at = run_start[run_len > j] + j  # the j-th step of each long enough run
        prev = sub[idx[at] - 1]
        k = (markov.cdf[prev] < u[at, None] * markov.cdf[prev, -1:]).sum(axis=1)
        sub[idx[at]] = markov.targets[prev, np.minimum(k, markov.targets.shape[1] - 1)]


def _repeats(user: np.ndarray, item: np.ndarray, n_items: int) -> np.ndarray:
    """True where the user had the item at an earlier step."""
    key = user * n_items + item
    order = np.argsort(key, kind="stable")
    dup = np.concatenate([[False], key[order][1:] == key[order][:-1]])
    out = np.zeros(len(key), dtype=bool)
    out[order[dup]] = True
    return out


class _SubcategoryIndex:
    """Items grouped by subcategory with their cumulative popularity, for drawing within one."""

    def __init__(self, cat: Catalogue):
        n_sub = cat.n_subcategories
        self.items = np.argsort(cat.subcategory, kind="stable")
        self.cum = np.cumsum(cat.popularity[self.items])
        counts = np.bincount(cat.subcategory, minlength=n_sub)
        self.end = np.cumsum(counts)
        self.begin = self.end - counts
        self.lo = np.concatenate([[0.0], self.cum])[self.begin]
        self.mass = self.cum[self.end - 1] - self.lo

    def pick(
        self,
        sub: np.ndarray,
        users: np.ndarray,
        taste: float | np.ndarray,
        prefs: Preferences,
        cat: Catalogue,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Per step: CANDIDATES items of ``sub`` by popularity, then one of them with
        probability proportional to exp(taste * match), match = the user's weights of the
        candidate's brand, price band and colour (Gumbel-max)."""
        n = len(sub)
        u = rng.random((n, CANDIDATES), dtype=np.float32)
        pos = np.searchsorted(self.cum, self.lo[sub, None] + u * self.mass[sub, None], side="right")
        pos = np.clip(pos, self.begin[sub, None], self.end[sub, None] - 1)
        cand = self.items[pos]  # (n, CANDIDATES)
        match = np.zeros(cand.shape, dtype=np.float32)
        for facet in ("brand", "price_band", "colour"):
            values = cat.codes(facet)[cand]
            want, weight = prefs.values[facet][users], prefs.weights[facet][users]
            for s in range(want.shape[1]):
                match += np.where(values == want[:, s, None], weight[:, s, None], 0.0).astype(
                    np.float32
                )
        taste = np.broadcast_to(np.asarray(taste, dtype=np.float32), (n,))
        gumbel = -np.log(-np.log(rng.random(cand.shape, dtype=np.float32) + np.float32(1e-12)))
        choice = np.argmax(taste[:, None] * match + gumbel, axis=1)
        return cand[np.arange(n), choice]
