"""Item text from a template over metadata fields, and the hash that keys the embedding cache.

A template names fields in braces: ``"{title} ({year}). Genres: {genres}."``. Missing values
(None, NaN, "", []) drop gracefully instead of leaving ``None`` or ``()`` behind:

- a segment (the text between sentence or list separators ``. , ; | ! ?`` and line breaks)
  whose fields are all missing disappears with its separator: no ``Genres: .``;
- a ``( … )`` group whose fields are all missing disappears: ``Heat. Genres: Action.``;
- an explicit ``[ … ]`` section is dropped when any field inside it is missing, and its brackets
  are never printed: ``"{title}[ ({year})]"`` gives ``Heat`` or ``Heat (1995)``;
- what is left is tidied (no space before punctuation, no doubled or dangling separators).

The tidying works on the template's own text only (values are substituted last), so a value
is never altered, and a row with every field present renders the template exactly.
"""

from __future__ import annotations

import hashlib
import math
import re
import string
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

__all__ = ["render_texts", "template_fields", "text_hash"]

# placeholders in the template skeleton: private characters no template text contains
_OPEN, _CLOSE = "\x00", "\x01"
_MARKER = re.compile(f"{_OPEN}(\\d+){_CLOSE}")
_SECTION = re.compile(r"\[([^\[\]]*)\]")
_PAREN = re.compile(r"\s*\(([^()]*)\)")
_SEPARATORS = ".,;|!?"


def template_fields(template: str) -> list[str]:
    """Field names in order of first appearance; ValueError for positional or formatted ones."""
    names: list[str] = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name or name.isdigit():
            raise ValueError(
                f"template {template!r}: placeholders must name a field, got {{{name}}}"
            )
        if spec or conversion:
            raise ValueError(
                f"template {template!r}: format specs and conversions are not supported "
                f"({{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}})"
            )
        if name not in names:
            names.append(name)
    return names


@lru_cache(maxsize=64)
def _parse(template: str) -> tuple[tuple[str, ...], str]:
    """(field of each placeholder occurrence, skeleton with markers instead of placeholders)."""
    template_fields(template)  # syntax errors surface here, naming the template
    fields: list[str] = []
    skeleton = []
    for literal, name, _, _ in string.Formatter().parse(template):
        skeleton.append(literal)  # braces already unescaped
        if name is not None:
            skeleton.append(f"{_OPEN}{len(fields)}{_CLOSE}")
            fields.append(name)
    return tuple(fields), "".join(skeleton)


def _segments(skeleton: str) -> list[str]:
    """Split after a separator followed by a space, or at a line break, outside parentheses."""
    parts, start, depth = [], 0, 0
    for i, c in enumerate(skeleton):
        if c == "(":
            depth += 1
        elif c == ")":
            depth = max(depth - 1, 0)
        elif depth == 0 and (c == "\n" or (c in _SEPARATORS and skeleton[i + 1 : i + 2].isspace())):
            parts.append(skeleton[start : i + (c != "\n")])
            start = i + 1
    parts.append(skeleton[start:])
    return [p.strip() for p in parts if p.strip()]


def _markers(text: str) -> list[int]:
    return [int(m) for m in _MARKER.findall(text)]


def _tidy(text: str) -> str:
    text = re.sub(r"\s*\(\s*\)", "", text)  # a group emptied by a missing value
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([.,;:!?)])", r"\1", text)
    text = re.sub(r"([,;|])(?:\s*[,;|])+", r"\1", text)  # "a, , b" -> "a, b"
    text = re.sub(r"(\s[-–/|])(?:\s+[-–/|])+(?=\s)", r"\1", text)  # "a - - b" -> "a - b"
    text = re.sub(r"\(\s*[,;:|]+\s*", "(", text)  # "(, b)" -> "(b)"
    text = re.sub(r"\s*[,;:|]+\s*\)", ")", text)  # "(a, )" -> "(a)"
    text = re.sub(r"[,;:|]+(\s*[.!?])", r"\1", text)  # "a,." -> "a."
    text = re.sub(r"\.(?:\s*\.)+", ".", text)
    text = re.sub(r"^[\s.,;:|\-]+", "", text)
    return re.sub(r"[\s,;:|\-]+$", "", text)


@lru_cache(maxsize=4096)
def _reduce(skeleton: str, missing: frozenset[int]) -> str:
    """The skeleton for a row whose placeholder occurrences ``missing`` have no value."""

    def present(text: str) -> bool:
        return not missing.intersection(_markers(text))

    # [ … ] sections, innermost first: kept without brackets only if all their fields are present
    while True:
        reduced = _SECTION.sub(lambda m: m.group(1) if present(m.group(1)) else "", skeleton)
        if reduced == skeleton:
            break
        skeleton = reduced
    if not missing:
        return skeleton

    def any_present(text: str) -> bool:
        return any(i not in missing for i in _markers(text))

    parts = _segments(skeleton)
    kept = [p for p in parts if not _markers(p) or any_present(p)]
    skeleton = " ".join(kept)
    skeleton = _PAREN.sub(
        lambda m: m.group(0) if not _markers(m.group(1)) or any_present(m.group(1)) else "",
        skeleton,
    )
    skeleton = _MARKER.sub(lambda m: "" if int(m.group(1)) in missing else m.group(0), skeleton)
    return _tidy(skeleton)


def _value(v: Any) -> str:
    """A field value as text: lists joined with ", ", integral floats without ``.0``."""
    if v is None:
        return ""
    if isinstance(v, list | tuple):
        return ", ".join(s for s in (_value(x) for x in v) if s)
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        if v.is_integer():
            return str(int(v))
    return str(v).strip()


def render_texts(rows: Sequence[Mapping[str, Any]], template: str) -> list[str | None]:
    """Render ``template`` for each row; None where no field has a value or the text is empty.

    Unknown fields (in no row) are a ValueError naming them and the available ones.
    """
    fields, skeleton = _parse(template)
    if not fields:
        raise ValueError(f"template {template!r} names no {{field}}")
    available: set[str] = set()
    for row in rows:
        available.update(row.keys())
    unknown = sorted({f for f in fields if f not in available})
    if rows and unknown:
        raise ValueError(
            f"template {template!r} names unknown field(s) {unknown}; item fields are "
            f"{sorted(available)}"
        )
    names = sorted(set(fields))
    out: list[str | None] = []
    for row in rows:
        values = {name: _value(row.get(name)) for name in names}
        if not any(values.values()):
            out.append(None)
            continue
        occurrences = [values[f] for f in fields]
        missing = frozenset(i for i, v in enumerate(occurrences) if not v)
        text = _MARKER.sub(
            lambda m, occ=occurrences: occ[int(m.group(1))], _reduce(skeleton, missing)
        )
        text = re.sub(r"\s+", " ", text).strip()
        out.append(text or None)
    return out


def text_hash(text: str) -> str:
    """SHA-256 hex digest of the text: the embedding cache key (with the encoder name)."""
    return hashlib.sha256(text.encode("utf8")).hexdigest()
