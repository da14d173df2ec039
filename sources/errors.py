"""Errors users see: each names the file and, where it can, the line and field at fault."""

from __future__ import annotations

from pathlib import Path


class PipelineError(RuntimeError):
    """A stage cannot run with this input or config."""


class IngestError(PipelineError):
    """Bad raw data: the message names the file, line and field."""

    def __init__(
        self, file: str | Path, message: str, *, line: int | None = None, field: str | None = None
    ):
        self.file, self.line, self.field, self.reason = str(file), line, field, message
        where = self.file + (f", line {line}" if line is not None else "")
        where += f", field {field!r}" if field else ""
        super().__init__(f"{where}: {message}")
