"""Item text from a template over metadata fields, and the hash that keys the embedding cache."""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any


def template_fields(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def _value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, list | tuple):
        return ", ".join(s for s in (_value(x) for x in v) if s)
    if isinstance(v, float) and v != v:  # NaN
        return ""
    return str(v).strip()


_OPTIONAL = re.compile(r"\[([^\[\]]*)\]")


def render_texts(rows: Sequence[Mapping[str, Any]], template: str) -> list[str | None]:
    """Render ``template`` for each row; None where the result is empty.

    ``{field}`` placeholders take the row's value (lists joined with ", "); a ``[...]`` section
    is dropped when any field inside it is missing, so ``"{title}[ ({year})]"`` gives ``"Heat"``
    rather than ``"Heat ()"``. Unknown fields are an error naming the available ones.
    """
    fields = template_fields(_OPTIONAL.sub(r"\1", template))
    if not fields:
        raise ValueError(f"encode.template {template!r} names no {{field}}")
    if rows:
        available = set(rows[0].keys())
        unknown = [f for f in fields if f not in available]
        if unknown:
            raise ValueError(
                f"encode.template names unknown field(s) {unknown}; item fields are "
                f"{sorted(available)}"
            )
    out: list[str | None] = []
    for row in rows:
        values = {name: _value(row.get(name)) for name in fields}

        def section(match: re.Match, values=values) -> str:
            inner = match.group(1)
            return (
                inner.format_map(values) if all(values[f] for f in template_fields(inner)) else ""
            )

        text = _OPTIONAL.sub(section, template).format_map(values)
        text = re.sub(r"\s+", " ", text).strip()
        out.append(text if any(values.values()) and text else None)
    return out


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf8")).hexdigest()
