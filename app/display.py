"""The one way user-facing text reaches the terminal (``fame`` CLI, Prefect commands, reports).

Text printed here is literal: ids, titles, paths and error messages come from data and configs,
so rich must never read them as markup (``[/x]`` is a ``MarkupError``, ``[bold]`` a style) or
as emoji codes (``:x:``). Both consoles have markup, emoji and highlighting off, every string
becomes a ``Text``, and styling is explicit: ``say(("error:", "bold red"), " ", message)``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

# a piece of a line: plain text, or (text, style) with the style applied to the literal text
Part = str | tuple[str, str] | Text
Justify = Literal["default", "left", "center", "right", "full"]


def _console(stderr: bool) -> Console:
    # tables on stdout; when piped (no terminal width) rich would wrap at 80 columns
    width = None if stderr or sys.stdout.isatty() else 160
    return Console(stderr=stderr, width=width, markup=False, emoji=False, highlight=False)


out = _console(stderr=False)
err = _console(stderr=True)


def literal(value: object) -> Text:
    """``value`` as text that rich prints exactly as written."""
    return value if isinstance(value, Text) else Text(str(value))


def say(*parts: Part, stderr: bool = False) -> None:
    """Print one line (never wrapped: paths and messages stay copy-pasteable)."""
    text = Text.assemble(*(p if isinstance(p, tuple | Text) else Text(p) for p in parts))
    (err if stderr else out).print(text, soft_wrap=True)


def error(message: object) -> None:
    """``error: <message>`` on stderr, the message verbatim."""
    say(("error:", "bold red"), " ", str(message), stderr=True)


def show(renderable: RenderableType, stderr: bool = False) -> None:
    """Print a renderable built here (``table``); plain strings go through ``say``."""
    if isinstance(renderable, str):
        say(renderable, stderr=stderr)
    else:
        (err if stderr else out).print(renderable)


def table(
    columns: Sequence[object],
    rows: Iterable[Sequence[object]] = (),
    *,
    title: object | None = None,
    justify: Mapping[str, Justify] | None = None,
) -> Table:
    """A rich table whose title, headers and cells are literal text (``str(cell)``)."""
    tbl = Table(title=literal(title) if title is not None else None)
    for col in columns:
        tbl.add_column(literal(col), justify=(justify or {}).get(str(col), "left"))
    for row in rows:
        tbl.add_row(*(literal(v) for v in row))
    return tbl
