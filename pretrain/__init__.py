"""Text encoder wrapper, facet labels and facet-aware supervised contrastive pre-training.

``encoder`` (offline sentence encoder), ``text`` (item text templates), ``facets`` (labels
from metadata), ``supcon`` (the loss), ``sampler`` (label-balanced batches), ``projector``
(φ_k), ``train`` (alternating pre-training, initial embeddings, the kNN facet report),
``config`` (typed configs). Imports nothing from ``fame``, ``storage``, ``pipeline``, ``flows``.
"""
