"""Readers for the raw formats, each returning one normalised ``RawData``.

Every reader yields interactions as (user, item, timestamp, rating, ord) with ``ord`` the line
order, which breaks timestamp ties stably, plus an optional item metadata table keyed by ``item``.
All parsing is vectorised with pyarrow; only the Python-literal Amazon meta lines are parsed one
by one (``ast.literal_eval``; never ``eval``).
"""

from __future__ import annotations

import ast
import gzip
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from sources.errors import IngestError

INT_RE = r"^\s*[-+]?\d+\s*$"
FLOAT_RE = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
# RecBole / MovieLens column names -> the canonical item fields text templates and facets use.
CANONICAL = {"movie_title": "title", "release_year": "year", "class": "genres"}
# Free-text fields RecBole stores as token_seq (word lists): kept as one string.
TEXT_FIELDS = ("title", "description")


@dataclass
class RawData:
    interactions: (
        pa.Table
    )  # user: string, item: string, timestamp: float64, rating: float64, ord: int64
    items: pa.Table | None = None  # item: string + metadata fields
    strict_items: bool = False  # metadata naming items absent from the interactions is an error
    source_files: list[Path] = field(default_factory=list)
    items_file: Path | None = None  # the metadata file that ``strict_items`` errors name


def require_file(path: Path) -> Path:
    if not path.is_file():
        raise IngestError(path, "file not found")
    return path


def require_utf8(path: Path) -> None:
    """Raise naming the first line of ``path`` that is not UTF-8 (error paths only: it reads
    the file again, line by line; ``.gz`` files decompressed)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            try:
                line.decode("utf8")
            except UnicodeDecodeError as exc:
                raise IngestError(
                    path,
                    f"not UTF-8 text: invalid byte 0x{line[exc.start]:02x} at position "
                    f"{exc.start + 1} of the line (re-encode the file as UTF-8)",
                    line=lineno,
                ) from None


def _first_bad(col: pa.ChunkedArray | pa.Array, pattern: str) -> int | None:
    ok = pc.match_substring_regex(pc.fill_null(col, ""), pattern)
    bad = np.flatnonzero(~ok.to_numpy(zero_copy_only=False))
    return int(bad[0]) if bad.size else None


def to_number(col, file: Path, fld: str, kind: str, line_of=lambda i: i + 1) -> pa.ChunkedArray:
    """Cast a string column to int64/float64, or raise naming the first bad line and value."""
    target = pa.int64() if kind == "int" else pa.float64()
    try:
        return pc.cast(col, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        bad = _first_bad(col, INT_RE if kind == "int" else FLOAT_RE)
        if bad is None:  # e.g. an integer overflow
            raise IngestError(file, f"cannot convert to {kind}", field=fld) from None
        value = col[bad].as_py()
        raise IngestError(
            file,
            f"expected {'an integer' if kind == 'int' else 'a number'}, got {value!r}",
            line=line_of(bad),
            field=fld,
        ) from None


MAX_LINE_BYTES = 1 << 28  # a row longer than this is refused, not read


def _longest_line(path: Path) -> tuple[int, int]:
    """(line number, length in bytes) of the longest line (error path only: reads the file)."""
    best, best_len = 1, 0
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if len(line) > best_len:
                best, best_len = lineno, len(line)
    return best, best_len


def read_csv_grown(path: Path, read_options: pacsv.ReadOptions | None = None, **kw) -> pa.Table:
    """``pyarrow.csv.read_csv`` whose blocks grow to hold the longest line: pyarrow otherwise
    fails with "straddling object" on a row longer than its block; beyond ``MAX_LINE_BYTES``
    the row is an error naming its line."""
    read_options = read_options or pacsv.ReadOptions()
    try:
        return pacsv.read_csv(path, read_options=read_options, **kw)
    except pa.ArrowInvalid as exc:
        if "straddl" not in str(exc):
            raise
    line, length = _longest_line(path)
    if length >= MAX_LINE_BYTES:
        raise IngestError(
            path,
            f"a line of {length / 2**20:.0f} MiB (rows may take at most "
            f"{MAX_LINE_BYTES >> 20} MiB)",
            line=line,
        ) from None
    read_options.block_size = max(read_options.block_size, 2 * length + (1 << 20))
    return pacsv.read_csv(path, read_options=read_options, **kw)


def read_lines(path: Path, encoding: str = "utf8") -> pa.ChunkedArray:
    """The file's lines as a string column (index i = line i + 1; blank lines kept)."""
    opts = pacsv.ReadOptions(column_names=["line"], encoding=encoding, block_size=1 << 24)
    parse = pacsv.ParseOptions(
        delimiter="\x1f", quote_char=False, escape_char=False, ignore_empty_lines=False
    )
    conv = pacsv.ConvertOptions(column_types={"line": pa.string()}, strings_can_be_null=False)
    try:
        return read_csv_grown(path, opts, parse_options=parse, convert_options=conv)["line"]
    except pa.ArrowInvalid as exc:
        if encoding.replace("-", "").lower() == "utf8":
            require_utf8(path)
        raise IngestError(path, f"unreadable: {exc}") from None


def _read_csv(path: Path, **options) -> pa.Table:
    """``pyarrow.csv.read_csv``, its errors naming the file (and the line of bad UTF-8)."""
    try:
        table = read_csv_grown(require_file(path), options.pop("read_options", None), **options)
    except pa.ArrowInvalid as exc:
        require_utf8(path)
        raise IngestError(path, f"unreadable table: {exc}") from None
    try:
        table.column_names  # noqa: B018 (a header of bad UTF-8 fails only when decoded)
    except UnicodeDecodeError:
        require_utf8(path)
        raise
    if any(pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type) for f in table.schema):
        require_utf8(path)  # type inference reads a column with bad UTF-8 as bytes
    return table


# what an id may not contain: ASCII control characters (NUL, newline, tab, ...)
CONTROL_RE = r"[\x00-\x1f\x7f]"


def _interactions(
    user, item, ts, rating=None, *, file: Path, fields: tuple[str, ...], line_of=lambda i: i + 1
) -> pa.Table:
    """The normalised interactions table; ``fields`` names the user, item, timestamp and rating
    columns of ``file`` for errors, ``line_of`` maps a row to its line."""
    n = len(user)
    cols = {}
    for name, col, target, fld in (
        ("user", user, pa.string(), fields[0]),
        ("item", item, pa.string(), fields[1]),
        ("timestamp", ts, pa.float64(), fields[2]),
        ("rating", rating, pa.float64(), fields[3]),
    ):
        if col is None:
            cols[name] = pa.nulls(n, target)
            continue
        try:
            cols[name] = pc.cast(col, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise IngestError(file, f"cannot read as {target}: {exc}", field=fld) from None
        try:  # the JSON and Parquet readers do not check that strings are UTF-8
            cols[name].validate(full=True)
        except pa.ArrowInvalid:
            if file.suffix != ".parquet":
                require_utf8(file)
            raise IngestError(file, "not UTF-8 text", field=fld) from None
    table = pa.table({**cols, "ord": pa.array(np.arange(n, dtype=np.int64))})
    _check_interactions(table, file, fields, line_of)
    return table


def _first(mask) -> int | None:
    bad = np.flatnonzero(pc.fill_null(mask, True).to_numpy(zero_copy_only=False))
    return int(bad[0]) if bad.size else None


def _check_interactions(table: pa.Table, file: Path, fields: tuple[str, ...], line_of) -> None:
    """Ids present, non-empty and free of control characters; timestamps present and finite;
    ratings finite where given. The first bad row is named by file, line and field."""
    for name, fld in zip(("user", "item"), fields, strict=False):
        col = table[name]
        if (row := _first(pc.equal(pc.utf8_trim_whitespace(col), ""))) is not None:
            raise IngestError(file, "empty id", line=line_of(row), field=fld)
        if (row := _first(pc.match_substring_regex(col, CONTROL_RE))) is not None:
            raise IngestError(
                file,
                f"id {col[row].as_py()!r} contains a control character",
                line=line_of(row),
                field=fld,
            )
    ts = table["timestamp"]
    if (row := _first(pc.invert(pc.is_finite(ts)))) is not None:
        value = ts[row].as_py()
        raise IngestError(
            file,
            "missing timestamp (empty, or a null marker such as NA or NaN)"
            if value is None
            else f"expected a finite number, got {value}",
            line=line_of(row),
            field=fields[2],
        )
    rating = table["rating"]
    if rating.null_count < len(rating):
        bad = pc.and_kleene(pc.is_valid(rating), pc.invert(pc.is_finite(rating)))
        if (row := _first(pc.fill_null(bad, False))) is not None:
            raise IngestError(
                file,
                f"expected a finite number, got {rating[row].as_py()}",
                line=line_of(row),
                field=fields[3],
            )


# -- (a) S3-Rec: "user item item ..." per line, line order is time order ---------------------
def read_s3rec(seq_file: Path, attr_file: Path | None, text_file: Path | None = None) -> RawData:
    """Sequences, plus the attribute lists split by the S3-Rec convention (``split_attributes``)
    and an optional item-text table joined on the S3-Rec item id (``read_item_text``)."""
    lines = read_lines(require_file(seq_file))
    tokens = pc.split_pattern_regex(pc.utf8_trim_whitespace(lines), r"\s+")
    lengths = pc.list_value_length(tokens).to_numpy(zero_copy_only=False)
    blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(lines)), 0).to_numpy(
        zero_copy_only=False
    )
    short = np.flatnonzero((lengths < 2) & ~blank)
    if short.size:
        raise IngestError(
            seq_file, "expected 'user_id item_id [item_id ...]'", line=int(short[0]) + 1
        )
    keep = np.flatnonzero(~blank)
    if not keep.size:
        raise IngestError(seq_file, "no sequences: the file is empty")
    tokens = tokens.take(pa.array(keep))
    flat = pc.list_flatten(tokens)
    parent = pc.list_parent_indices(tokens).to_numpy(zero_copy_only=False)
    bad = _first_bad(flat, r"^\d+$")
    if bad is not None:
        pos = bad - int(np.searchsorted(parent, parent[bad]))
        raise IngestError(
            seq_file,
            f"non-integer id {flat[bad].as_py()!r}",
            line=int(keep[parent[bad]]) + 1,
            field="user_id" if pos == 0 else "item_id",
        )
    starts = np.concatenate([[0], np.cumsum(lengths[keep])[:-1]])
    is_user = np.zeros(len(flat), dtype=bool)
    is_user[starts] = True
    flat_np = flat.to_numpy(zero_copy_only=False)
    users = flat_np[starts][parent[~is_user]]
    items = flat_np[~is_user]
    position = np.arange(len(flat)) - starts[parent]
    inter = _interactions(
        pa.array(users),
        pa.array(items),
        pa.array((position[~is_user] - 1).astype(np.float64)),
        file=seq_file,
        fields=("user_id", "item_id", "position", "rating"),
    )
    inter = inter.set_column(4, "ord", pa.array(np.flatnonzero(~is_user).astype(np.int64)))
    # canonical integers ("007" is item 7), the spelling of the attribute and text tables
    inter = inter.set_column(1, "item", pc.cast(pc.cast(inter["item"], pa.int64()), pa.string()))
    items_tbl = None
    if attr_file is not None:
        items_tbl = split_attributes(_read_attributes(require_file(attr_file)))
    if text_file is not None:
        text = read_item_text(require_file(text_file), pc.unique(inter["item"]))
        if items_tbl is None:
            items_tbl = text
        else:
            clash = sorted(set(text.column_names) & set(items_tbl.column_names) - {"item"})
            if clash:
                raise IngestError(
                    text_file,
                    f"column(s) {clash} clash with the fields derived from the attribute file",
                    line=1,
                    field=clash[0],
                )
            items_tbl = _outer_join_items(items_tbl, text)
    return RawData(
        inter,
        items_tbl,
        strict_items=True,
        source_files=[
            seq_file,
            *([attr_file] if attr_file else []),
            *([text_file] if text_file else []),
        ],
        items_file=attr_file,
    )


def _outer_join_items(left: pa.Table, right: pa.Table) -> pa.Table:
    """Rows for every ``item`` of either table, the other table's fields null where it has no
    row (Arrow's own join cannot carry list columns)."""
    ids = pc.unique(pa.chunked_array([left["item"], right["item"]]).combine_chunks())
    cols = {"item": ids}
    for table in (left, right):
        rows = pc.index_in(ids, value_set=table["item"])  # null where the item is absent
        cols.update({c: table[c].take(rows) for c in table.column_names if c != "item"})
    return pa.table(cols)


def _read_attributes(path: Path) -> pa.Table:
    try:
        data = json.loads(path.read_text(encoding="utf8"))
    except UnicodeDecodeError:
        require_utf8(path)
        raise
    except json.JSONDecodeError as exc:
        raise IngestError(path, f"invalid JSON: {exc.msg}", line=exc.lineno) from None
    if not isinstance(data, dict):
        raise IngestError(path, "expected an object {item_id: [attribute_id, ...]}")
    for key, value in data.items():
        if not re.fullmatch(r"\d+", key):
            raise IngestError(path, f"non-integer item id {key!r}", field="item_id")
        if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
            raise IngestError(path, f"item {key}: attributes must be a list of integers", field=key)
    return pa.table(
        {
            "item": pa.array([str(int(k)) for k in data], pa.string()),
            "attributes": pa.array(list(data.values()), pa.list_(pa.int64())),
        }
    )


def split_attributes(table: pa.Table) -> pa.Table:
    """Add ``brand`` and ``categories`` to an S3-Rec ``attributes`` table.

    The S3-Rec convention, stated once here: an item's list is ``[brand] + categories`` (brand
    first when the item has one, then its category path(s) below the top level), so an attribute
    id that appears first in some list and never at a later position is a brand id. ``brand``
    is the item's brand id (null without one); ``categories`` is the list without it, coarse to
    fine, so the generic list facets apply: ``level`` (0 = coarse category), ``last`` (leaf),
    ``set``.
    """
    attrs = table["attributes"]
    flat = pc.list_flatten(attrs).to_numpy(zero_copy_only=False)
    parent = pc.list_parent_indices(attrs).to_numpy(zero_copy_only=False)
    offsets = attrs.combine_chunks().offsets.to_numpy()
    first = np.zeros(len(flat), dtype=bool)
    first[offsets[:-1][np.diff(offsets) > 0] - offsets[0]] = True
    later_ids = np.unique(flat[~first])
    is_brand = first & ~np.isin(flat, later_ids)
    brand = np.full(table.num_rows, -1, dtype=np.int64)
    brand[parent[is_brand]] = flat[is_brand]
    keep = ~is_brand
    counts = np.bincount(parent[keep], minlength=table.num_rows)
    cat_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    categories = pa.ListArray.from_arrays(pa.array(cat_offsets), pa.array(flat[keep]))
    return table.append_column("brand", pa.array(brand, mask=brand < 0)).append_column(
        "categories", categories
    )


def read_item_text(path: Path, known_items: pa.Array) -> pa.Table:
    """An item table (TSV/CSV/Parquet) with an ``item_id`` column, joined on the dataset's ids.

    Every other column becomes an item field, read as text; empty cells are missing values (an
    empty title stays an item without a title, never the text ""). An id that is not an
    integer, repeated, or never named by the interactions is an error naming the file and line.
    """
    table = _read_any_table(path)
    # the line of data row i: after the header in text files; the row number in Parquet
    line_of = (lambda i: i + 1) if path.suffix == ".parquet" else (lambda i: i + 2)
    _require_cols(table, path, ["item_id"])
    ids = pc.cast(table["item_id"], pa.string())
    bad = _first_bad(ids, r"^\s*\d+\s*$")
    if bad is not None:
        raise IngestError(
            path, f"non-integer item id {ids[bad].as_py()!r}", line=line_of(bad), field="item_id"
        )
    ids = pc.cast(pc.cast(ids, pa.int64()), pa.string())
    ids_np = ids.to_numpy(zero_copy_only=False)
    _, first_at, inverse = np.unique(ids_np, return_index=True, return_inverse=True)
    repeated = np.flatnonzero(first_at[inverse] != np.arange(len(ids_np)))
    if repeated.size:  # the first row whose id an earlier row already gave
        row = int(repeated[0])
        raise IngestError(
            path, f"item {ids_np[row]} is described twice", line=line_of(row), field="item_id"
        )
    unknown = np.flatnonzero(~pc.is_in(ids, known_items).to_numpy(zero_copy_only=False))
    if unknown.size:
        shown = ", ".join(ids_np[unknown[:5]])
        raise IngestError(
            path,
            f"names {unknown.size} item(s) the interactions never name, e.g. {shown}",
            line=line_of(int(unknown[0])),
            field="item_id",
        )
    cols = {"item": ids}
    for name in table.column_names:
        if name == "item_id":
            continue
        col = pc.utf8_trim_whitespace(pc.cast(table[name], pa.string()))
        cols[name] = pc.if_else(pc.equal(col, ""), pa.scalar(None, pa.string()), col)
    return pa.table(cols)


# -- (b) RecBole atomic files: tab separated, typed header "name:type" ------------------------
RECBOLE_TYPES = {"token", "token_seq", "float", "float_seq"}


def read_atomic(path: Path) -> pa.Table:
    """Read a RecBole atomic file; token_seq -> list<string>, float -> float64."""
    require_file(path)
    try:
        with open(path, encoding="utf8") as fh:
            header = fh.readline().rstrip("\n").split("\t")
    except UnicodeDecodeError:
        require_utf8(path)
        raise
    names, types = [], []
    for col in header:
        name, _, typ = col.partition(":")
        if typ not in RECBOLE_TYPES:
            raise IngestError(
                path,
                f"header column {col!r} needs a type (one of {sorted(RECBOLE_TYPES)})",
                line=1,
                field=name,
            )
        names.append(name)
        types.append(typ)
    opts = pacsv.ReadOptions(column_names=names, skip_rows=1, block_size=1 << 24)
    parse = pacsv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False)
    conv = pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()))
    try:
        table = read_csv_grown(path, opts, parse_options=parse, convert_options=conv)
    except pa.ArrowInvalid as exc:
        require_utf8(path)
        raise IngestError(
            path, f"malformed row: {exc}", line=_first_bad_width(path, len(names), "\t")
        ) from None
    cols = {}
    for name, typ in zip(names, types, strict=True):
        col = table[name]
        if typ == "float":
            col = to_number(
                pc.if_else(pc.equal(col, ""), None, col), path, name, "float", lambda i: i + 2
            )
        elif typ.endswith("_seq"):
            col = pc.split_pattern_regex(pc.utf8_trim_whitespace(col), r"\s+")
            if typ == "float_seq":
                col = pa.chunked_array([pc.cast(c, pa.list_(pa.float64())) for c in col.chunks])
        cols[name] = col
    return pa.table(cols)


def _first_bad_width(path: Path, width: int, sep: str) -> int | None:
    """Slow path for error messages only: the first line whose field count is wrong."""
    with open(path, encoding="utf8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if lineno > 1 and line.strip() and len(line.rstrip("\n").split(sep)) != width:
                return lineno
    return None


def _require_cols(table: pa.Table, path: Path, cols: list[str]) -> None:
    for col in cols:
        if col not in table.column_names:
            raise IngestError(
                path, f"missing column (has: {', '.join(table.column_names)})", field=col
            )


def read_recbole(
    inter_file: Path, item_file: Path | None, user_col: str, item_col: str, time_col: str
) -> RawData:
    inter = read_atomic(inter_file)
    _require_cols(inter, inter_file, [user_col, item_col, time_col])
    rating = inter["rating"] if "rating" in inter.column_names else None
    raw = RawData(
        _interactions(
            inter[user_col],
            inter[item_col],
            inter[time_col],
            rating,
            file=inter_file,
            fields=(user_col, item_col, time_col, "rating"),
            line_of=lambda i: i + 2,
        ),
        source_files=[inter_file],
    )
    if item_file is not None:
        items = read_atomic(item_file)
        _require_cols(items, item_file, [item_col])
        items = items.rename_columns(
            ["item" if c == item_col else CANONICAL.get(c, c) for c in items.column_names]
        )
        for name in TEXT_FIELDS:
            if name in items.column_names and pa.types.is_list(items[name].type):
                items = items.set_column(
                    items.column_names.index(name), name, pc.binary_join(items[name], " ")
                )
        raw.items, raw.source_files = _normalise_year(items), [inter_file, item_file]
    return raw


def _normalise_year(items: pa.Table) -> pa.Table:
    """A string ``year`` column as integers; anything but four digits becomes null."""
    if "year" in items.column_names and pa.types.is_string(items["year"].type):
        year = pc.if_else(pc.match_substring_regex(items["year"], r"^\d{4}$"), items["year"], None)
        items = items.set_column(
            items.column_names.index("year"), "year", pc.cast(year, pa.int64())
        )
    return items


# -- (c) raw Amazon 2014: reviews_X_5.json(.gz) strict JSON, meta_X.json(.gz) Python literals ----
def read_amazon(reviews_file: Path, meta_file: Path | None) -> RawData:
    schema = pa.schema(
        [
            ("reviewerID", pa.string()),
            ("asin", pa.string()),
            ("unixReviewTime", pa.int64()),
            ("overall", pa.float64()),
        ]
    )
    try:
        reviews = pajson.read_json(
            require_file(reviews_file),
            parse_options=pajson.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior="ignore"
            ),
        )
    except pa.ArrowInvalid as exc:
        require_utf8(reviews_file)
        raise IngestError(reviews_file, f"malformed JSON line: {exc}") from None
    for col in ("reviewerID", "asin", "unixReviewTime"):
        if reviews[col].null_count:
            row = int(np.flatnonzero(pc.is_null(reviews[col]).to_numpy(zero_copy_only=False))[0])
            raise IngestError(reviews_file, "missing field", line=row + 1, field=col)
    raw = RawData(
        _interactions(
            reviews["reviewerID"],
            reviews["asin"],
            reviews["unixReviewTime"],
            reviews["overall"],
            file=reviews_file,
            fields=("reviewerID", "asin", "unixReviewTime", "overall"),
        ),
        source_files=[reviews_file],
    )
    if meta_file is not None:
        raw.items = _read_amazon_meta(require_file(meta_file))
        raw.source_files.append(meta_file)
    return raw


def _read_amazon_meta(path: Path) -> pa.Table:
    opener = gzip.open if path.suffix == ".gz" else open
    rows: dict[str, list] = {
        k: [] for k in ("item", "title", "brand", "categories", "price", "description")
    }
    try:
        return _parse_amazon_meta(path, opener, rows)
    except UnicodeDecodeError:
        require_utf8(path)
        raise


def _parse_amazon_meta(path: Path, opener, rows: dict[str, list]) -> pa.Table:
    with opener(path, "rt", encoding="utf8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = ast.literal_eval(line)
            except (ValueError, SyntaxError) as exc:
                raise IngestError(path, f"not a Python/JSON literal: {exc}", line=lineno) from None
            if not isinstance(rec, dict) or "asin" not in rec:
                raise IngestError(path, "record without 'asin'", line=lineno, field="asin")
            cats = rec.get("categories") or []
            price = rec.get("price")
            rows["item"].append(str(rec["asin"]))
            rows["title"].append(rec.get("title"))
            rows["brand"].append(rec.get("brand"))
            rows["categories"].append(
                [str(c) for c in cats[0]] if cats and isinstance(cats[0], list) else None
            )
            rows["price"].append(float(price) if isinstance(price, int | float) else None)
            rows["description"].append(rec.get("description"))
    return pa.table(
        rows,
        schema=pa.schema(
            [
                ("item", pa.string()),
                ("title", pa.string()),
                ("brand", pa.string()),
                ("categories", pa.list_(pa.string())),
                ("price", pa.float64()),
                ("description", pa.string()),
            ]
        ),
    )


# -- (d) MovieLens ml-1m (.dat, "::") and ml-20m (.csv) -------------------------------------
def _split_dat(
    path: Path, width: int, names: list[str], encoding: str
) -> dict[str, pa.ChunkedArray]:
    lines = read_lines(require_file(path), encoding)
    parts = pc.split_pattern(lines, "::")
    bad = np.flatnonzero(pc.list_value_length(parts).to_numpy(zero_copy_only=False) != width)
    if bad.size:
        raise IngestError(path, f"expected {width} '::'-separated fields", line=int(bad[0]) + 1)
    return {name: pc.list_element(parts, i) for i, name in enumerate(names)}


def _movies(ids, titles, genres, sep: str) -> pa.Table:
    year = pc.struct_field(pc.extract_regex(titles, r"\((?P<year>\d{4})\)\s*$"), "year")
    title = pc.replace_substring_regex(titles, r"\s*\(\d{4}\)\s*$", "")
    return pa.table(
        {
            "item": pc.cast(ids, pa.string()),
            "title": title,
            "year": pc.cast(pc.if_else(pc.is_valid(year), year, None), pa.int64()),
            "genres": pc.split_pattern(genres, sep),
        }
    )


ML_CSV_TYPES = {
    "userId": pa.int64(),
    "movieId": pa.int64(),
    "rating": pa.float64(),
    "timestamp": pa.int64(),
}


def _ratings_csv_typed(path: Path) -> dict[str, pa.ChunkedArray] | None:
    """ml-20m's ``ratings.csv`` streamed in typed blocks, each turned into the normalised column
    types at once, so memory holds the result plus one block (20M rows: see
    ``bench/movielens_read.py``) instead of every field as a string first. None when any value
    does not parse (Arrow's CSV numbers may be padded with spaces, like ``INT_RE``'s): the
    string path then names the bad line and field."""
    conv = pacsv.ConvertOptions(
        column_types=ML_CSV_TYPES,
        include_columns=list(ML_CSV_TYPES),
        null_values=[],  # an empty field is an error, as on the string path
        quoted_strings_can_be_null=False,
    )
    cols: dict[str, list[pa.Array]] = {"user": [], "item": [], "ts": [], "rating": []}
    try:
        reader = pacsv.open_csv(
            path, read_options=pacsv.ReadOptions(block_size=1 << 22), convert_options=conv
        )
        for batch in reader:
            cols["user"].append(pc.cast(batch["userId"], pa.string()))
            cols["item"].append(pc.cast(batch["movieId"], pa.string()))
            cols["ts"].append(pc.cast(batch["timestamp"], pa.float64()))
            cols["rating"].append(batch["rating"])
    except (pa.ArrowInvalid, pa.ArrowKeyError, UnicodeDecodeError):
        return None
    types = {"user": pa.string(), "item": pa.string(), "ts": pa.float64(), "rating": pa.float64()}
    return {k: pa.chunked_array(v, types[k]) for k, v in cols.items()}


def _ratings_csv_strings(path: Path) -> dict[str, pa.ChunkedArray]:
    table = _read_csv(
        path,
        convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(ML_CSV_TYPES, pa.string())),
    )
    _require_cols(table, path, list(ML_CSV_TYPES))
    return {
        "user": table["userId"],
        "item": table["movieId"],
        "rating": table["rating"],
        "ts": table["timestamp"],
    }


def _ratings_numbers(cols: dict, path: Path, line_of) -> dict[str, pa.ChunkedArray]:
    return {
        fld: to_number(cols[fld], path, fld, kind, line_of)
        for fld, kind in (("user", "int"), ("item", "int"), ("ts", "int"), ("rating", "float"))
    }


def read_movielens(ratings_file: Path, movies_file: Path | None) -> RawData:
    dat = ratings_file.suffix == ".dat"
    line_of = (lambda i: i + 1) if dat else (lambda i: i + 2)  # the csv header is line 1
    if dat:
        cols = _split_dat(ratings_file, 4, ["user", "item", "rating", "ts"], "utf8")
        num = _ratings_numbers(cols, ratings_file, line_of)
    else:
        num = _ratings_csv_typed(require_file(ratings_file))
        if num is None:
            num = _ratings_numbers(_ratings_csv_strings(ratings_file), ratings_file, line_of)
    raw = RawData(
        _interactions(
            num["user"],
            num["item"],
            num["ts"],
            num["rating"],
            file=ratings_file,
            fields=("user", "item", "ts", "rating"),
            line_of=line_of,
        ),
        source_files=[ratings_file],
    )
    if movies_file is not None:
        if movies_file.suffix == ".dat":
            m = _split_dat(movies_file, 3, ["item", "title", "genres"], "latin-1")
            raw.items = _movies(m["item"], m["title"], m["genres"], "|")
        else:
            t = _read_csv(movies_file)
            _require_cols(t, movies_file, ["movieId", "title", "genres"])
            raw.items = _movies(t["movieId"], t["title"], t["genres"], "|")
        raw.source_files.append(movies_file)
    return raw


# -- (e) generic interactions table (CSV/Parquet) + optional items table ----------------------
def read_table_file(path: Path) -> pa.Table:
    if path.suffix != ".parquet":
        return _read_csv(path)
    try:
        return pq.read_table(require_file(path))
    except pa.ArrowInvalid as exc:
        raise IngestError(path, f"unreadable table: {exc}") from None


def _read_any_table(path: Path) -> pa.Table:
    """Parquet as stored; CSV and TSV (by suffix: ``.tsv``/``.tab`` are tab separated, no
    quoting) with every column read as a string, so ids and text keep their spelling."""
    require_file(path)
    if path.suffix == ".parquet":
        return read_table_file(path)
    tab = path.suffix in (".tsv", ".tab")
    parse = pacsv.ParseOptions(
        delimiter="\t" if tab else ",", quote_char=False if tab else '"', escape_char=False
    )
    try:
        with open(path, encoding="utf8") as fh:
            header = fh.readline().rstrip("\r\n").split("\t" if tab else ",")
        conv = pacsv.ConvertOptions(
            column_types=dict.fromkeys([h.strip('"') for h in header], pa.string()),
            strings_can_be_null=False,
        )
        return read_csv_grown(
            path,
            pacsv.ReadOptions(block_size=1 << 24),
            parse_options=parse,
            convert_options=conv,
        )
    except pa.ArrowInvalid as exc:
        require_utf8(path)
        raise IngestError(
            path,
            f"malformed row: {exc}",
            line=_first_bad_width(path, len(header), "\t" if tab else ","),
        ) from None
    except UnicodeDecodeError:
        require_utf8(path)
        raise


def read_generic(
    inter_file: Path, item_file: Path | None, user_col: str, item_col: str, time_col: str
) -> RawData:
    inter = read_table_file(inter_file)
    _require_cols(inter, inter_file, [user_col, item_col, time_col])
    ts = inter[time_col]
    if pa.types.is_timestamp(ts.type) or pa.types.is_date(ts.type):
        ts = pc.cast(pc.cast(ts, pa.timestamp("s")), pa.int64())
    elif not (pa.types.is_integer(ts.type) or pa.types.is_floating(ts.type)):
        ts = to_number(pc.cast(ts, pa.string()), inter_file, time_col, "float", lambda i: i + 2)
    rating = inter["rating"] if "rating" in inter.column_names else None
    raw = RawData(
        _interactions(
            inter[user_col],
            inter[item_col],
            ts,
            rating,
            file=inter_file,
            fields=(user_col, item_col, time_col, "rating"),
            line_of=(lambda i: i + 1) if inter_file.suffix == ".parquet" else (lambda i: i + 2),
        ),
        source_files=[inter_file],
    )
    if item_file is not None:
        items = read_table_file(item_file)
        _require_cols(items, item_file, [item_col])
        raw.items = items.rename_columns(
            ["item" if c == item_col else c for c in items.column_names]
        )
        raw.items = raw.items.set_column(
            raw.items.column_names.index("item"), "item", pc.cast(raw.items["item"], pa.string())
        )
        raw.source_files.append(item_file)
    return raw
