"""Fixtures of the pretrain tests: the real MiniLM encoder (offline) and the real ml-100k items."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# nothing in these tests may reach a model hub
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

ML100K_TEMPLATE = "{title} ({year}). Genres: {genres}."


def read_ml100k_items(path: Path) -> list[dict]:
    """RecBole ml-100k.item: item_id, movie_title, release_year, class (space-separated genres)."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    header = [h.split(":")[0] for h in lines[0].split("\t")]
    rows = []
    for line in lines[1:]:
        rec = dict(zip(header, line.split("\t"), strict=False))
        rows.append(
            {
                "item_id": int(rec["item_id"]),
                "title": rec.get("movie_title") or None,
                "year": rec.get("release_year") or None,
                "genres": (rec.get("class") or "").split(),
            }
        )
    return rows


@pytest.fixture(scope="session")
def ml100k_items(data_dir) -> list[dict]:
    """The real ml-100k items (the root conftest's ``data_dir`` skips, or fails in CI, without)."""
    return read_ml100k_items(data_dir / "ml-100k" / "ml-100k.item")


@pytest.fixture(scope="session")
def encoder():
    from pretrain.encoder import TextEncoder

    return TextEncoder("default", device="cpu", batch_size=64)


@pytest.fixture(scope="session")
def ml100k_text_emb(ml100k_items, encoder) -> tuple[list[str], np.ndarray]:
    """(texts, (n, 384) MiniLM vectors) of every ml-100k item, encoded once per session."""
    from pretrain.text import render_texts

    texts = render_texts(ml100k_items, ML100K_TEMPLATE)
    assert all(texts)
    return texts, encoder.encode(texts, progress=False)
