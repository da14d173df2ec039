"""The models and how they learn, given tensors and folders (no I/O policy, no config files).

FAME and SASRec (``model``, ``attention``, ``moe``), item representations (``item_repr``:
the free table or the text pathway, with ``projector``), batching (``data``, ``streaming``),
losses, the trainer with its resume state and epoch hook, data-parallel training
(``distributed``, ``shard``), full-ranking evaluation and metrics, checkpoints.
"""
