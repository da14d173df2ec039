"""Prefect orchestration of the pipeline: the ``fame`` flow and its artifacts, deployments, the
local server and ``fame serve``, the sweep flow on Dask, and the console script (``cli``, which
adds the Prefect-backed commands to ``app.cli``'s).
"""
