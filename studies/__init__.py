"""Experiments over many runs: sweeps (``sweep``: grids, Optuna searches, seeds, their reports)
and Optuna pruning of their trials (``pruning``). Each trial is an ordinary pipeline run;
``flows.sweep`` runs the trials as Prefect tasks on a Dask cluster.
"""
