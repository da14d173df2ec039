"""FAME and SASRec models, batching, losses, trainer and full-ranking evaluation (no I/O policy)."""
