"""The pipeline stages. Each module declares NAME, VERSION, SUMMARY, TABLES (its output tables
and their catalog views), upstream(cfg), key_config(cfg), compute(ctx, inputs) -> StageOutput
and optionally precheck(cfg, items). ``pipeline.registry`` lists them; ``pipeline.runner`` does
keys, skipping and records. Stages read upstream artifacts through ``pipeline.artifacts`` and
never import each other."""
