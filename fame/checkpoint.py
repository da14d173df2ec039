"""A checkpoint is a folder: weights (safetensors) + config.json; it reloads from the folder alone."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from fame.config import ModelConfig
from fame.item_repr import TextSpec
from fame.model import SeqRecModel

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def save_checkpoint(
    path: str | Path,
    model: SeqRecModel,
    cfg: ModelConfig,
    num_items: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, path / WEIGHTS)
    meta = {"model": dataclasses.asdict(cfg), "num_items": num_items, "extra": extra or {}}
    if model.text_spec is not None:
        meta["text_spec"] = model.text_spec.as_dict()
    (path / CONFIG).write_text(json.dumps(meta, indent=2, default=str))
    return path


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[SeqRecModel, dict[str, Any]]:
    """Rebuild the model from ``config.json`` and load its weights (no pickle involved).

    The model comes back in eval mode on ``map_location``, with the ``extra`` dict saved beside it.
    """
    path = Path(path)
    meta = json.loads((path / CONFIG).read_text())
    text = TextSpec(**meta["text_spec"]) if "text_spec" in meta else None
    model = SeqRecModel(ModelConfig(**meta["model"]), meta["num_items"], text)
    model.load_state_dict(load_file(path / WEIGHTS))
    model.to(map_location).eval()
    return model, meta.get("extra", {})
