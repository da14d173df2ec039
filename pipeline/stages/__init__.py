"""The pipeline stages. Each module exposes NAME, VERSION, upstream(cfg), key_config(cfg) and
compute(ctx, inputs) -> StageOutput; ``pipeline.runner`` does keys, skipping and records."""
