"""The real all-MiniLM-L6-v2 encoder, loaded offline from the installed package."""

import os

import numpy as np
import pytest

from pretrain.encoder import EncoderError, TextEncoder, validate_encoder


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder("default", device="cpu", batch_size=4)


def test_real_encoder_embeds_meaningfully(encoder):
    texts = [
        "A comedy about toys that come alive.",
        "Animated film where toys are alive.",
        "Quarterly tax filing rules for small companies.",
        "x",
    ]
    v = encoder.encode(texts, progress=False)
    assert v.shape == (4, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3
    one_by_one = np.stack([encoder.encode([t], progress=False)[0] for t in texts])
    assert np.allclose(v, one_by_one, atol=1e-5)  # length-sorted batching keeps input order
    assert encoder.name == "all-MiniLM-L6-v2"


def test_unknown_encoder_fails_fast_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderError, match="unknown encoder 'no-such/model-xyz'"):
        validate_encoder("no-such/model-xyz")
    with pytest.raises(EncoderError, match="does not exist"):
        validate_encoder(str(tmp_path / "missing.bin"))
    with pytest.raises(EncoderError, match="no sentence-transformers model"):
        validate_encoder(str(tmp_path))
    assert os.environ["HF_HUB_OFFLINE"] == "1"
