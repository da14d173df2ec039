"""The recommendation service on real runs (synthetic data, FAME and SASRec): the real
``fame serve-model`` over HTTP answers as the Python API does and binds the loopback address;
every bad input is the documented 4xx, never a 500."""

from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from support import serve_model

from app import api
from app.service import MAX_SEQUENCE, create_app

SYNTH = {"data.synth.users": 300, "data.synth.items": 150, "data.synth.interactions": 4000}
SMALL = {"train.epochs": 2, "model.d": 32, "init.method": "random", **SYNTH}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("service") / "artifacts"


@pytest.fixture(scope="module")
def fame_run(root):
    return api.run("synthetic", {**SMALL, "paths.artifacts": str(root)}, progress=False)


@pytest.fixture(scope="module")
def sasrec_run(root, fame_run):  # after fame_run: shares its ingest artifacts
    overrides = {**SMALL, "model.name": "sasrec", "paths.artifacts": str(root)}
    return api.run("synthetic", overrides, progress=False)


@pytest.fixture(scope="module")
def server(fame_run, root, tmp_path_factory):
    """The console script's ``fame serve-model --run ID`` in its own process: (url, port)."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    with serve_model(fame_run.run_id, root, log) as started:
        yield started


@pytest.fixture(scope="module")
def client(fame_run):
    return TestClient(create_app(fame_run), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def sasrec_client(sasrec_run):
    return TestClient(create_app(sasrec_run), raise_server_exceptions=False)


def _items(run, n: int, start: int = 0) -> list[str]:
    return run.items["source_id"].cast("string").to_pylist()[start : start + n]


def test_posted_sequence_over_http_equals_the_api(server, fame_run):
    url, _ = server
    seq = _items(fame_run, 12, start=20)
    got = httpx.post(url + "/recommendations", json={"items": seq, "k": 10}).json()
    want = fame_run.recommend_sequence(seq, k=10)
    assert [r["item"] for r in got["items"]] == want["item"].tolist()
    assert [r["rank"] for r in got["items"]] == list(range(1, 11))
    assert [r["title"] for r in got["items"]] == want["title"].tolist()
    np.testing.assert_allclose([r["score"] for r in got["items"]], want["score"], rtol=1e-6)
    assert not {r["item"] for r in got["items"]} & set(seq)  # exclude_history
    assert got["run_id"] == fame_run.run_id and got["heads"] is None


def test_explanations_over_http_add_up(server, fame_run):
    url, _ = server
    seq = _items(fame_run, 8, start=3)
    got = httpx.post(url + "/recommendations", json={"items": seq, "k": 5, "explain": True})
    assert got.status_code == 200
    body = got.json()
    want = fame_run.recommend_sequence(seq, k=5, explain=True)
    names = fame_run.head_names
    assert [h["head"] for h in body["heads"]] == names
    assert sum(h["gate"] for h in body["heads"]) == pytest.approx(1.0, abs=1e-5)
    for row, (_, ref) in zip(body["items"], want.iterrows(), strict=True):
        assert list(row["contributions"]) == names
        assert sum(row["contributions"].values()) == pytest.approx(row["score"], abs=1e-4)
        np.testing.assert_allclose(
            [row["contributions"][n] for n in names], ref[names].astype(float), atol=1e-6
        )
    for h, name in zip(body["heads"], names, strict=True):
        assert h["top_expert"] == want.iloc[0][f"expert {name}"]
        assert h["expert_weight"] == pytest.approx(want.iloc[0][f"expert weight {name}"])


def test_user_endpoint_equals_recommend(server, fame_run):
    url, _ = server
    users = fame_run.artifact("ingest").table("sequences")["source_user_id"].to_pylist()[:4]
    for user in users:
        got = httpx.get(f"{url}/users/{user}/recommendations", params={"k": 7}).json()
        want = fame_run.recommend([user], k=7)
        assert got["user"] == user
        assert [r["item"] for r in got["items"]] == want["item"].tolist()
        np.testing.assert_allclose([r["score"] for r in got["items"]], want["score"], rtol=1e-6)


def test_binds_the_loopback_address_by_default(server, fame_run):
    url, port = server
    health = httpx.get(url + "/health").json()
    assert health["run_id"] == fame_run.run_id and health["items"] == fame_run.model.num_items
    assert health["heads"] == fame_run.head_names and health["model"] == "fame"
    listening = [  # /proc/net/tcp: local address hex ip:port, state 0A = LISTEN
        line.split()[1]
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
        if line.split()[3] == "0A" and line.split()[1].endswith(f":{port:04X}")
    ]
    assert listening == [f"0100007F:{port:04X}"]  # 127.0.0.1 only


def test_openapi_docs_describe_the_fields(client):
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert "source item ids" in schema["SequenceRequest"]["properties"]["items"]["description"]
    assert (
        "sum to the score"
        in schema["RecommendedItem"]["properties"]["contributions"]["description"]
    )


def _cases(run) -> list[tuple[str, str, dict | bytes | None, int, str]]:
    """(method, path, JSON body or raw bytes, status, text the message holds)."""
    seq = _items(run, 3)
    n = run.model.num_items
    return [
        ("post", "/recommendations", {"items": [*seq, "no-such-item"]}, 422, "no-such-item"),
        ("post", "/recommendations", {"items": []}, 422, "at least 1 item"),
        ("post", "/recommendations", {"items": seq * 3334}, 422, f"at most {MAX_SEQUENCE}"),
        ("post", "/recommendations", {"items": seq, "k": 0}, 422, "k = 0 must be in [1, "),
        ("post", "/recommendations", {"items": seq, "k": n + 1}, 422, f"[1, {n}]"),
        ("post", "/recommendations", {"items": seq, "k": "ten"}, 422, "valid integer"),
        ("post", "/recommendations", {"items": "abc"}, 422, "valid list"),
        ("post", "/recommendations", {"k": 3}, 422, "Field required"),
        ("post", "/recommendations", {"items": [None]}, 422, "valid string"),
        ("post", "/recommendations", b'{"items": ["1",', 422, "JSON decode error"),
        ("get", "/users/no-such-user/recommendations", None, 404, "unknown user"),
        ("get", "/users/1/recommendations?k=0", None, 422, "k = 0 must be in"),
        ("get", "/users/1/recommendations?k=abc", None, 422, "valid integer"),
        ("get", "/users/1/recommendations?explain=maybe", None, 422, "valid boolean"),
    ]


def _call(client: TestClient, method: str, path: str, body: dict | bytes | None):
    if isinstance(body, bytes):
        return client.post(path, content=body, headers={"content-type": "application/json"})
    return client.post(path, json=body) if method == "post" else client.get(path)


def test_every_bad_input_is_the_documented_4xx(client, fame_run):
    for method, path, body, status, text in _cases(fame_run):
        got = _call(client, method, path, body)
        assert (got.status_code, text in got.text) == (status, True), (path, body, got.text)


def test_bad_input_over_http_is_a_4xx_too(server, fame_run):
    url, _ = server
    with httpx.Client(base_url=url) as http:
        for method, path, body, status, _text in _cases(fame_run):
            assert _call(http, method, path, body).status_code == status, (path, body)


def test_explain_on_sasrec_is_a_422_with_the_apis_message(sasrec_client, sasrec_run):
    seq = _items(sasrec_run, 3)
    plain = sasrec_client.post("/recommendations", json={"items": seq})
    assert plain.status_code == 200
    want = sasrec_run.recommend_sequence(seq, k=10)
    assert [r["item"] for r in plain.json()["items"]] == want["item"].tolist()
    got = sasrec_client.post("/recommendations", json={"items": seq, "explain": True})
    assert got.status_code == 422 and "explanations need FAME's heads" in got.text
    assert got.json()["detail"][0]["loc"] == ["body", "explain"]
    user = sasrec_client.get("/users/1/recommendations?explain=true")
    assert user.status_code == 422 and "SASRec" in user.text
    assert sasrec_client.get("/health").json()["heads"] == []


def test_bounds_are_inclusive_and_few_candidates_are_no_error(client, fame_run):
    n = fame_run.model.num_items
    longest = {"items": _items(fame_run, 1) * MAX_SEQUENCE, "k": 1}
    assert client.post("/recommendations", json=longest).status_code == 200
    seen = _items(fame_run, n - 4)  # all but 4 items excluded: 4 answers, not k
    got = client.post("/recommendations", json={"items": seen, "k": min(n, 1000)})
    assert got.status_code == 200 and len(got.json()["items"]) == 4
    everything = client.post("/recommendations", json={"items": _items(fame_run, n), "k": 5})
    assert everything.status_code == 200 and everything.json()["items"] == []
    numbers = client.post("/recommendations", json={"items": [int(s) for s in seen[:3]]})
    assert numbers.status_code == 200  # numeric ids read as their decimal string


def test_serving_modes_answer_alike(fame_run):
    seq = {"items": _items(fame_run, 5, start=40), "k": 10, "explain": True}
    answers = [
        TestClient(create_app(fame_run, mode=mode)).post("/recommendations", json=seq).json()
        for mode in ("serial", "threads")
    ]
    assert answers[0] == answers[1]
