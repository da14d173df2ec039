"""Text encoder wrapper, facet labels and facet-aware supervised contrastive pre-training.

``encoder`` (offline sentence encoder), ``text`` (item text templates), ``facets`` (labels
from metadata), ``supcon`` (the loss), ``sampler`` (label-balanced batches), ``train``
(alternating pre-training of the facet projectors φ_k, kept in ``fame.projector`` since the
text pathway needs them too; the kNN facet report), ``table`` (the initial item table, at gain
1), ``config`` (typed configs). Imports ``fame`` only, nothing of the floors above it.
"""
