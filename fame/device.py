"""The torch device a config's ``device`` field names (``auto``, ``cpu``, ``cuda``, ``mps``...),
for training, evaluation, facet pre-training and the text encoder alike."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA, else MPS, else CPU. ``cuda`` without CUDA fails here, before any work."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device = 'cuda' but CUDA is not available")
    return torch.device(name)
