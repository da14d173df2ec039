"""The DAG core: typed config (``config``), stage keys and the runner (``runner``), the stage
registry and catalog views (``registry``), the stages themselves (``stages``), readers of
stored artifacts (``artifacts``), run context and provenance. Readers of raw data live below
it (``sources``); sweeps (``studies``), user surfaces (``app``) and Prefect (``flows``)
above it.
"""
