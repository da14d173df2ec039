"""Amazon Reviews 2023 (McAuley Lab, Hou et al. 2024): one category's reviews and item metadata.

The Hub's raw files (``McAuley-Lab/Amazon-Reviews-2023``: ``raw/review_categories/<C>.jsonl``,
``raw/meta_categories/meta_<C>.jsonl``) or the same schema as Parquet. Reviews: ``user_id``,
``parent_asin`` (the item id: variants of one product share it), ``rating``, ``timestamp``
(Unix milliseconds, kept as they are: only their order matters, and milliseconds separate more
ties than seconds). Metadata becomes these item fields:

- ``title``, ``store``, ``main_category``: strings;
- ``features``: the bullet list joined with ``"; "``; ``description``: the paragraphs joined
  with ``" "`` (one string each, for encode templates such as ``"{title}. {features}.
  {description}"``; the encoder truncates at its max length and the encode stage logs how many
  texts were cut);
- ``categories``: the category path, coarse to fine (facets ``first`` / ``last`` / ``level``);
- ``brand``: ``details["Brand"]`` (any case), else ``details["Manufacturer"]``; ``details`` is an
  object in the JSONL files and a JSON string in the Hub's converted ones, both are read;
- ``price``: a number, or null where the file has none (``"None"``, ``"—"``).

Reviews are the large side (millions of rows per category): they are read by Arrow with an
explicit schema, never row by row in Python. Metadata is parsed line by line (``details`` and
``price`` change type from line to line): about 70,000 items/s on 2 cores against 1.2M
reviews/s (``bench/amazon2023.py``).

``fetch`` downloads a category into ``<data dir>/amazon2023-<C>/`` (``reviews.parquet``,
``meta.parquet``), whole or not at all, as the MovieLens fetch does.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from sources.errors import IngestError, PipelineError
from sources.readers import RawData, _interactions, require_file, require_utf8

HUB = "https://huggingface.co/datasets/McAuley-Lab/Amazon-Reviews-2023/resolve/main"
CATEGORY_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")
REVIEWS, META = "reviews.parquet", "meta.parquet"
REVIEW_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("parent_asin", pa.string()),
        ("rating", pa.float64()),
        ("timestamp", pa.int64()),
    ]
)
META_SCHEMA = pa.schema(
    [
        ("item", pa.string()),
        ("title", pa.string()),
        ("features", pa.string()),
        ("description", pa.string()),
        ("categories", pa.list_(pa.string())),
        ("brand", pa.string()),
        ("store", pa.string()),
        ("main_category", pa.string()),
        ("price", pa.float64()),
    ]
)
_FIELDS = ("user_id", "parent_asin", "timestamp", "rating")


def read_amazon2023(reviews_file: Path, meta_file: Path | None) -> RawData:
    """Interactions from ``reviews_file`` and item fields from ``meta_file`` (JSONL, .jsonl.gz
    or Parquet, each in the 2023 schema)."""
    reviews = read_reviews(require_file(reviews_file))
    raw = RawData(
        _interactions(
            reviews["user_id"],
            reviews["parent_asin"],
            reviews["timestamp"],
            reviews["rating"],
            file=reviews_file,
            fields=_FIELDS,
        ),
        source_files=[reviews_file],
    )
    if meta_file is not None:
        raw.items = read_meta(require_file(meta_file))
        raw.source_files.append(meta_file)
    return raw


def _is_parquet(path: Path) -> bool:
    return path.suffix == ".parquet"


def read_reviews(path: Path) -> pa.Table:
    """(user_id, parent_asin, rating, timestamp) of every review; a missing field or a value of
    the wrong type is an IngestError naming its line (JSONL) or row (Parquet)."""
    if _is_parquet(path):
        table = pq.read_table(path)
        for f in REVIEW_SCHEMA:
            if f.name not in table.column_names:
                raise IngestError(path, "missing column", field=f.name)
        table = table.select(REVIEW_SCHEMA.names)
        for f in REVIEW_SCHEMA:
            col = table[f.name]
            if f.name == "timestamp" and not pa.types.is_integer(col.type):
                raise IngestError(path, f"not a number (type {col.type})", field=f.name)
            try:
                table = table.set_column(
                    table.schema.get_field_index(f.name), f, pc.cast(col, f.type)
                )
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise IngestError(path, f"cannot read as {f.type}: {exc}", field=f.name) from None
        where = "row"
    else:
        try:  # streamed in 1 MiB blocks: memory is the four columns, not the file
            reader = pajson.open_json(
                path,
                read_options=pajson.ReadOptions(block_size=1 << 20),
                parse_options=pajson.ParseOptions(
                    explicit_schema=REVIEW_SCHEMA, unexpected_field_behavior="ignore"
                ),
            )
            table = pa.Table.from_batches(list(reader), schema=REVIEW_SCHEMA)
        except pa.ArrowInvalid as exc:
            if path.suffix != ".gz":
                require_utf8(path)
            line, field, what = _first_bad_review(path)
            raise IngestError(
                path, what or f"malformed JSON: {exc}", line=line, field=field
            ) from None
        where = "line"
    for name in REVIEW_SCHEMA.names:
        if table[name].null_count:
            row = int(np.flatnonzero(pc.is_null(table[name]).to_numpy(zero_copy_only=False))[0])
            raise IngestError(path, f"missing field ({where} {row + 1})", line=row + 1, field=name)
    return table


def _lines(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf8") as fh:
        yield from enumerate(fh, 1)


def _first_bad_review(path: Path) -> tuple[int | None, str | None, str | None]:
    """(line, field, message) of the first review Arrow refused: only on the error path."""
    types = {"user_id": str, "parent_asin": str, "rating": (int, float), "timestamp": int}
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            return lineno, None, f"not a JSON object: {exc}"
        if not isinstance(rec, dict):
            return lineno, None, "not a JSON object"
        for name, kind in types.items():
            v = rec.get(name)
            if v is not None and (not isinstance(v, kind) or isinstance(v, bool)):
                what = {str: "not a string", int: "not an integer (Unix milliseconds)"}
                return lineno, name, f"{what.get(kind, 'not a number')}: {v!r:.80}"
    return None, None, None


def read_meta(path: Path) -> pa.Table:
    """One row per item (``item`` = parent_asin) with the fields of META_SCHEMA."""
    rows: dict[str, list] = {f.name: [] for f in META_SCHEMA}
    seen: dict[str, int] = {}
    if _is_parquet(path):
        table = pq.read_table(path)
        if table.schema.names == META_SCHEMA.names:  # written by ``fetch``: already these rows
            return _unique(table.cast(META_SCHEMA), path)
        records = enumerate(table.to_pylist(), 1)
    else:
        records = _json_records(path)
    chunks = []  # Arrow every 65,536 items: Python holds one chunk's rows, not the category's
    for lineno, rec in records:
        item = _meta_row(rec, path, lineno)
        if item["item"] in seen:
            raise IngestError(
                path,
                f"item {item['item']!r} is described twice (first at {seen[item['item']]})",
                line=lineno,
                field="parent_asin",
            )
        seen[item["item"]] = lineno
        for k, v in item.items():
            rows[k].append(v)
        if len(rows["item"]) == 1 << 16:
            chunks.append(pa.table(rows, schema=META_SCHEMA))
            rows = {f.name: [] for f in META_SCHEMA}
    chunks.append(pa.table(rows, schema=META_SCHEMA))
    return pa.concat_tables(chunks)


def _unique(table: pa.Table, path: Path) -> pa.Table:
    """``table`` if no item is described twice, else an IngestError naming the second row."""
    ids = table["item"].to_numpy(zero_copy_only=False)
    _, first = np.unique(ids, return_index=True)
    if len(first) < len(ids):
        dup = int(np.setdiff1d(np.arange(len(ids)), first)[0])
        raise IngestError(
            path, f"item {ids[dup]!r} is described twice", line=dup + 1, field="parent_asin"
        )
    return table


def _json_records(path: Path):
    try:
        for lineno, line in _lines(path):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise IngestError(path, f"not a JSON object: {exc}", line=lineno) from None
    except UnicodeDecodeError:
        require_utf8(path)
        raise


def _strings(v: Any, path: Path, line: int, field: str) -> list[str]:
    """A list of strings (a lone string counts as a list of one); null as []."""
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise IngestError(
            path, f"expected a list of strings, got {v!r:.80}", line=line, field=field
        )
    return [s.strip() for s in v if s.strip()]


def _text(v: Any, path: Path, line: int, field: str) -> str | None:
    if v is None or isinstance(v, str):
        return (v or "").strip() or None
    raise IngestError(path, f"expected a string, got {v!r:.80}", line=line, field=field)


def _brand(details: Any, path: Path, line: int) -> str | None:
    if isinstance(details, str):
        try:
            details = json.loads(details) if details.strip() else None
        except json.JSONDecodeError as exc:
            raise IngestError(
                path, f"not a JSON object: {exc}", line=line, field="details"
            ) from None
    if details is None:
        return None
    if not isinstance(details, dict):
        raise IngestError(
            path, f"expected an object, got {details!r:.80}", line=line, field="details"
        )
    keys = {str(k).lower(): v for k, v in details.items()}
    for key in ("brand", "manufacturer"):
        if isinstance(keys.get(key), str) and keys[key].strip():
            return keys[key].strip()
    return None


def _price(v: Any) -> float | None:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.replace("$", "").replace(",", ""))
        except ValueError:
            return None  # "None", "—", ranges: no price
    return None


def _meta_row(rec: Any, path: Path, line: int) -> dict[str, Any]:
    if not isinstance(rec, dict):
        raise IngestError(path, "not a JSON object", line=line)
    asin = rec.get("parent_asin")
    if not isinstance(asin, str) or not asin.strip():
        raise IngestError(path, "missing field", line=line, field="parent_asin")
    return {
        "item": asin.strip(),
        "title": _text(rec.get("title"), path, line, "title"),
        "features": "; ".join(_strings(rec.get("features"), path, line, "features")) or None,
        "description": " ".join(_strings(rec.get("description"), path, line, "description"))
        or None,
        "categories": _strings(rec.get("categories"), path, line, "categories") or None,
        "brand": _brand(rec.get("details"), path, line),
        "store": _text(rec.get("store"), path, line, "store"),
        "main_category": _text(rec.get("main_category"), path, line, "main_category"),
        "price": _price(rec.get("price")),
    }


def hub_urls(category: str, base: str = HUB) -> dict[str, str]:
    """The review and metadata file URLs of one category under ``base``."""
    base = base.rstrip("/")
    return {
        REVIEWS: f"{base}/raw/review_categories/{category}.jsonl",
        META: f"{base}/raw/meta_categories/meta_{category}.jsonl",
    }


def fetch(
    category: str,
    dest: Path,
    base_url: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``category``'s reviews and metadata into ``dest/amazon2023-<category>/`` as
    Parquet, checked by the reader on the way (a bad line fails the fetch); returns the folder.
    A failed or interrupted fetch leaves nothing there."""
    from sources.fetch import download
    from storage.atomic import atomic_dir

    if not CATEGORY_RE.match(category):
        raise PipelineError(
            f"amazon2023 category {category!r}: expected a name such as All_Beauty "
            f"({CATEGORY_RE.pattern})"
        )
    base = base_url or HUB
    if not re.match(r"^https?://", base):
        raise PipelineError(f"only http(s) URLs can be fetched, got {base!r}")
    target = dest / f"amazon2023-{category}"
    with atomic_dir(target) as tmp:
        for name, url in hub_urls(category, base).items():
            raw = tmp / (name + ".download.jsonl")
            with open(raw, "wb") as fh:
                try:
                    download(url, fh, progress, timeout)
                except PipelineError as exc:
                    if "404" in str(exc):
                        raise PipelineError(
                            f"amazon2023 category {category!r} not found at {url} (names as on "
                            "the Hub, e.g. All_Beauty, Beauty_and_Personal_Care)"
                        ) from exc
                    raise
            try:
                table = read_reviews(raw) if name == REVIEWS else read_meta(raw)
            except IngestError as exc:  # name the download, not the temporary file
                raise IngestError(url, exc.reason, line=exc.line, field=exc.field) from None
            pq.write_table(table, tmp / name)
            raw.unlink()
    return target
