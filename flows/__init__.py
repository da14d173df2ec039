"""Prefect orchestration of the pipeline: the ``fame`` flow, its deployments, the local server."""
