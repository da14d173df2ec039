"""The real all-MiniLM-L6-v2 encoder, loaded offline from the installed package."""

import os
import socket
from pathlib import Path

import numpy as np
import pytest

from pretrain.encoder import (
    DEFAULT_NAME,
    EncoderError,
    TextEncoder,
    default_model_path,
    validate_encoder,
)

TEXTS = [
    "A comedy about toys that come alive.",
    "Animated film where toys are alive.",
    "Quarterly tax filing rules for small companies and the forms they need to submit.",
    "x",
    "Heat (1995). Genres: Action, Crime, Thriller.",
]


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_real_encoder_embeds_meaningfully(encoder, no_network):
    v = encoder.encode(TEXTS, progress=False)
    assert encoder.name == DEFAULT_NAME and encoder.dim == 384
    assert v.shape == (5, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3  # similar sentences are closer than unrelated ones
    assert encoder.encode([], progress=False).shape == (0, 384)


def test_length_sorted_batches_keep_input_order(encoder, monkeypatch):
    monkeypatch.setattr(encoder, "batch_size", 2)  # three batches of mixed lengths
    batched = encoder.encode(TEXTS, progress=False)
    one_by_one = np.stack([encoder.encode([t], progress=False)[0] for t in TEXTS])
    assert np.allclose(batched, one_by_one, atol=1e-5)
    reversed_ = encoder.encode(TEXTS[::-1], progress=False)
    assert np.allclose(reversed_[::-1], batched, atol=1e-5)


def test_non_text_is_rejected(encoder):
    with pytest.raises(TypeError, match="text 1 is NoneType"):
        encoder.encode(["a", None], progress=False)


def test_unknown_encoder_fails_fast_without_network(tmp_path, no_network):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    with pytest.raises(EncoderError, match="unknown encoder 'no-such/model-xyz'.*not in the local"):
        validate_encoder("no-such/model-xyz")
    with pytest.raises(EncoderError, match="unknown encoder 'BAAI/bge-small-en-v1.5'"):
        TextEncoder("BAAI/bge-small-en-v1.5", device="cpu")
    with pytest.raises(EncoderError, match="does not exist"):
        validate_encoder(str(tmp_path / "missing" / "model"))
    with pytest.raises(EncoderError, match="does not exist"):
        validate_encoder("./models/mine")
    with pytest.raises(EncoderError, match="holds no sentence-transformers model"):
        validate_encoder(str(tmp_path))
    for alias in ("default", DEFAULT_NAME, f"sentence-transformers/{DEFAULT_NAME}"):
        validate_encoder(alias)  # the bundled model under any of its names


def _fake_hub_cache(root: Path, repo: str) -> None:
    """The layout huggingface_hub leaves after a download, pointing at the bundled files."""
    folder = root / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0" * 40)
    for item in Path(default_model_path()).iterdir():
        (snapshot / item.name).symlink_to(item)


def test_other_models_by_cached_name_or_folder(encoder, tmp_path, monkeypatch, no_network):
    import huggingface_hub.constants

    _fake_hub_cache(tmp_path / "hub", "acme/minilm-copy")
    _fake_hub_cache(tmp_path / "hub", "sentence-transformers/short-name")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    validate_encoder("short-name")  # found as sentence-transformers/short-name
    reference = encoder.encode(TEXTS[:2], progress=False)

    by_name = TextEncoder("acme/minilm-copy", device="cpu")
    assert by_name.name == "acme/minilm-copy" and by_name.dim == 384
    assert np.allclose(by_name.encode(TEXTS[:2], progress=False), reference, atol=1e-6)

    by_folder = TextEncoder(default_model_path(), device="cpu")
    assert by_folder.name == str(Path(default_model_path()).resolve())
    assert np.allclose(by_folder.encode(TEXTS[:2], progress=False), reference, atol=1e-6)


def test_max_length_truncates_and_keys_the_cache(encoder):
    short = TextEncoder("default", device="cpu", max_length=8)
    assert short.name == f"{DEFAULT_NAME}@max_length=8"
    long_text = TEXTS[2]
    assert not np.allclose(
        short.encode([long_text], progress=False), encoder.encode([long_text], progress=False)
    )
    same = TextEncoder("default", device="cpu", max_length=encoder.model.max_seq_length)
    assert same.name == DEFAULT_NAME
    with pytest.raises(EncoderError, match="max_length"):
        TextEncoder("default", device="cpu", max_length=10**5)
