"""The errors users see, re-exported where the DAG core and its clients look for them.

They live in the data package (``sources.errors``), the lowest floor that raises them.
"""

from sources.errors import IngestError, PipelineError

__all__ = ["IngestError", "PipelineError"]
