"""The user surfaces over the DAG core: the Python API (``api``: open a run, recommend, add
items), the HTTP service (``service``, ``service_cli``), the HTML report (``run_report``), text
summaries (``report``, ``display``) and the ``fame`` command (``cli``), whose shared options and
run opening live in ``options`` so that no command module imports another.
"""
