"""``fame data fetch ml-1m|ml-20m`` against a loopback HTTP server: the extracted files read back
with the shipped configs; HTTP errors, non-zips, missing members, checksum mismatches, and
truncated or killed transfers leave no dataset folder; the typed ratings.csv path still names
bad lines."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
from support import Route, serve
from typer.testing import CliRunner

from app.cli import app
from pipeline.errors import IngestError, PipelineError
from sources import fetch as fetch_mod
from sources.fetch import CHUNK, download, fetch
from sources.readers import read_movielens
from storage.atomic import parse_work_name

REPO = Path(__file__).resolve().parents[2]

ML1M_RATINGS = (
    "1::1193::5::978300760\n1::661::3::978302109\n1::914::3::978301968\n"
    "2::1193::4::978298413\n2::661::2::978299000\n2::3408::4::978298800\n3::914::5::978297000\n"
)
ML1M_MOVIES = (
    "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
    "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
    "914::My Fair Lady (1964)::Musical|Romance\n"
    "3408::Erin Brockovich (2000)::Drama\n"
    "3409::Ça tourne (1999)::Comedy\n"
).encode("latin-1")  # GroupLens' ml-1m titles are Latin-1
ML20M_RATINGS = (
    "userId,movieId,rating,timestamp\n"
    "1,2,3.5,1112486027\n1,29,3.5,1112484676\n1,32,4.0,1112484819\n"
    "2,3,4.0,974820889\n2,62,5.0,974820598\n2,70,0.5,974820691\n"
)
ML20M_MOVIES = (
    "movieId,title,genres\n"
    "2,Jumanji (1995),Adventure|Children|Fantasy\n"
    '29,"City of Lost Children, The (Cité des enfants perdus, La) (1995)",Adventure|Drama\n'
    "32,Twelve Monkeys (a.k.a. 12 Monkeys) (1995),Mystery|Sci-Fi|Thriller\n"
    "3,Grumpier Old Men (1995),Comedy|Romance\n"
    "62,Mr. Holland's Opus (1995),Drama\n"
    "70,From Dusk Till Dawn (1996),Action|Comedy|Horror|Thriller\n"
)


def zip_of(files: dict[str, bytes | str], stored: bool = False) -> bytes:
    buf = io.BytesIO()
    kind = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(buf, "w", kind) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def ml1m_zip(**drop: bool) -> bytes:
    files = {
        "ml-1m/README": "the GroupLens readme",
        "ml-1m/users.dat": "1::F::1::10::48067\n",
        "ml-1m/ratings.dat": ML1M_RATINGS,
        "ml-1m/movies.dat": ML1M_MOVIES,
    }
    return zip_of({k: v for k, v in files.items() if not drop.get(k.split("/")[-1], False)})


def ml20m_zip() -> bytes:
    return zip_of(
        {
            "ml-20m/README.txt": "the GroupLens readme",
            "ml-20m/ratings.csv": ML20M_RATINGS,
            "ml-20m/movies.csv": ML20M_MOVIES,
            "ml-20m/tags.csv": "userId,movieId,tag,timestamp\n18,4141,Mark Waters,1240597180\n",
            "ml-20m/links.csv": "movieId,imdbId,tmdbId\n2,0113497,8844\n",
        }
    )


def rows(raw) -> list[tuple]:
    t = raw.interactions
    return list(
        zip(
            t["user"].to_pylist(),
            t["item"].to_pylist(),
            t["timestamp"].to_pylist(),
            t["rating"].to_pylist(),
            strict=True,
        )
    )


def test_ml1m_fetch_extracts_what_the_reader_needs(tmp_path):
    with serve({"/ml-1m.zip": Route(ml1m_zip())}) as (base, _):
        path = fetch("ml-1m", tmp_path, f"{base}/ml-1m.zip", progress=False)
    assert path == tmp_path / "ml-1m"
    assert sorted(p.name for p in path.iterdir()) == ["movies.dat", "ratings.dat"]
    assert (path / "movies.dat").read_bytes() == ML1M_MOVIES  # copied byte for byte
    assert [p.name for p in tmp_path.iterdir()] == ["ml-1m"]  # no download or work dir left
    raw = read_movielens(path / "ratings.dat", path / "movies.dat")
    assert rows(raw)[:3] == [
        ("1", "1193", 978300760.0, 5.0),
        ("1", "661", 978302109.0, 3.0),
        ("1", "914", 978301968.0, 3.0),
    ]
    assert len(rows(raw)) == 7
    titles = dict(zip(raw.items["item"].to_pylist(), raw.items["title"].to_pylist(), strict=True))
    assert titles["3409"] == "Ça tourne" and titles["1193"] == "One Flew Over the Cuckoo's Nest"


def test_ml20m_fetch_and_read_back(tmp_path):
    with serve({"/ml-20m.zip": Route(ml20m_zip())}) as (base, _):
        res = CliRunner().invoke(
            app, ["data", "fetch", "ml-20m", "--dest", str(tmp_path), "--url", f"{base}/ml-20m.zip"]
        )
    assert res.exit_code == 0, res.output
    assert "ml-20m written to" in res.output
    path = tmp_path / "ml-20m"
    assert sorted(p.name for p in path.iterdir()) == ["movies.csv", "ratings.csv"]
    raw = read_movielens(path / "ratings.csv", path / "movies.csv")
    assert rows(raw) == [
        ("1", "2", 1112486027.0, 3.5),
        ("1", "29", 1112484676.0, 3.5),
        ("1", "32", 1112484819.0, 4.0),
        ("2", "3", 974820889.0, 4.0),
        ("2", "62", 974820598.0, 5.0),
        ("2", "70", 974820691.0, 0.5),
    ]
    item = raw.items.to_pylist()[1]
    assert item == {
        "item": "29",
        "title": "City of Lost Children, The (Cité des enfants perdus, La)",
        "year": 1995,
        "genres": ["Adventure", "Drama"],
    }


@pytest.mark.parametrize(("name", "body"), [("ml-1m", ml1m_zip), ("ml-20m", ml20m_zip)])
def test_fetched_data_runs_the_shipped_config(tmp_path, name, body):
    """``fame config`` resolves every stage key, and ingest reads the files, under the config."""
    from pipeline.config import load_config
    from pipeline.runner import run_pipeline

    with serve({"/d.zip": Route(body())}) as (base, _):
        fetch(name, tmp_path, f"{base}/d.zip", progress=False)
    res = CliRunner().invoke(app, ["config", "-c", name, "--data-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    resolved = json.loads(res.stdout)
    assert resolved["data"]["format"] == "movielens" and resolved["model"]["max_len"] == 200
    assert set(resolved["_resolved"]["keys"]) >= {"ingest", "train", "evaluate"}
    cfg = load_config(name, {"paths.artifacts": str(tmp_path / "a")}, tmp_path)
    ctx = run_pipeline(cfg, ["ingest"], progress=False)
    # ml-1m's user 3 has one rating, under data.min_seq_len = 3
    assert ctx.results["ingest"].rows["interactions"] == 6


def assert_nothing_left(dest: Path) -> None:
    assert not dest.exists() or list(dest.iterdir()) == []


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        ({}, "HTTP Error 404"),
        ({"/d.zip": Route(b"<html>moved</html>")}, "did not return a zip archive"),
        ({"/d.zip": Route(ml1m_zip(**{"movies.dat": True}))}, "has no movies.dat"),
        ({"/d.zip": Route(ml1m_zip(), cut=100)}, "failed"),  # the server closes early
    ],
    ids=["404", "not-a-zip", "missing-member", "truncated"],
)
def test_errors_name_the_url_and_leave_no_folder(tmp_path, routes, message):
    dest = tmp_path / "data"
    with serve(routes) as (base, _), pytest.raises(PipelineError, match=message) as exc:
        fetch("ml-1m", dest, f"{base}/d.zip", progress=False, timeout=10)
    assert f"{base}/d.zip" in str(exc.value)
    assert_nothing_left(dest)


def test_cli_errors(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["data", "fetch", "ml-10m", "--dest", str(tmp_path)])
    assert res.exit_code == 2 and "ml-20m" in res.output  # the fetchable names are listed
    res = runner.invoke(
        app, ["data", "fetch", "ml-20m", "--dest", str(tmp_path), "--url", "ftp://x/ml-20m.zip"]
    )
    assert res.exit_code == 2 and "http" in res.output
    with serve({}) as (base, _):
        res = runner.invoke(
            app, ["data", "fetch", "ml-20m", "--dest", str(tmp_path), "--url", f"{base}/x.zip"]
        )
    assert res.exit_code == 2 and "404" in res.output
    assert_nothing_left(tmp_path)


def test_official_url_is_checked_against_the_published_md5(tmp_path, monkeypatch):
    body = ml1m_zip()
    with serve({"/ml-1m.zip": Route(body)}) as (base, _):
        spec = dataclasses.replace(fetch_mod.DATASETS["ml-1m"], url=f"{base}/ml-1m.zip")
        monkeypatch.setitem(fetch_mod.DATASETS, "ml-1m", spec)  # no url: the official path
        with pytest.raises(PipelineError, match="MD5 .* is not GroupLens' published"):
            fetch("ml-1m", tmp_path, progress=False)
        assert_nothing_left(tmp_path)
        # an override URL is not checked (a mirror's archive may differ)
        assert fetch("ml-1m", tmp_path, f"{base}/ml-1m.zip", progress=False).is_dir()
        md5 = hashlib.md5(body, usedforsecurity=False).hexdigest()
        monkeypatch.setitem(fetch_mod.DATASETS, "ml-1m", dataclasses.replace(spec, md5=md5))
        assert (fetch("ml-1m", tmp_path, progress=False) / "ratings.dat").is_file()


class Recorder(io.RawIOBase):
    def __init__(self) -> None:
        self.sizes: list[int] = []

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.sizes.append(len(b))
        return len(b)


def test_download_streams_in_chunks():
    body = os.urandom(2 * CHUNK + 123)
    out = Recorder()
    with serve({"/big": Route(body)}) as (base, _):
        md5 = download(f"{base}/big", out, progress=False)
    assert md5 == hashlib.md5(body, usedforsecurity=False).hexdigest()
    assert sum(out.sizes) == len(body) and max(out.sizes) <= CHUNK and len(out.sizes) >= 3


KILLED = """
import sys
from pathlib import Path
from sources.fetch import fetch
fetch("ml-20m", Path(sys.argv[1]), sys.argv[2], progress=False)
"""


def test_killed_transfer_leaves_no_dataset_folder(tmp_path):
    """SIGKILL mid-download: ``<dest>/ml-20m`` never appears; what remains is the hidden work
    folder (``storage.atomic`` naming) holding the partial zip, and a new fetch publishes."""
    lines = "".join(
        f"{u},{m},4.0,{1_100_000_000 + m}\n" for u in range(1, 1000) for m in range(150)
    )
    body = zip_of({"ml-20m/ratings.csv": "userId,movieId,rating,timestamp\n" + lines}, stored=True)
    assert len(body) > 2 * CHUNK
    dest = tmp_path / "data"
    hold = threading.Event()
    routes = {
        "/stall.zip": Route(body, cut=len(body) // 2, hold=hold),
        "/ok.zip": Route(ml20m_zip()),
    }
    with serve(routes) as (base, sent):
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED, str(dest), f"{base}/stall.zip"], cwd=REPO
        )
        try:
            assert sent.wait(60), "the fetch never connected"
            deadline = time.monotonic() + 60
            partial = []
            while time.monotonic() < deadline and not partial:
                partial = [p for p in dest.glob(".*/.download.zip") if p.stat().st_size >= CHUNK]
                time.sleep(0.05)
            assert partial, "the download never reached the disk"
            assert proc.poll() is None
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        left = list(dest.iterdir())
        assert len(left) == 1 and left[0].name.startswith(".")
        assert parse_work_name(left[0].name[1:]) == ("data", "ml-20m", proc.pid)
        assert not (dest / "ml-20m").exists()
        path = fetch("ml-20m", dest, f"{base}/ok.zip", progress=False)
    assert sorted(p.name for p in path.iterdir()) == ["movies.csv", "ratings.csv"]


@pytest.mark.parametrize(
    ("body", "line", "field", "message"),
    [
        ("1,2,3.5,100\n1,2x,4,90\n", 3, "item", "got '2x'"),
        ("1,2,3.5,100\n1,3,,90\n", 3, "rating", "got ''"),
        ("1,2,3.5,100\n1,3,4,1e9x\n", 3, "ts", "got '1e9x'"),
    ],
)
def test_ratings_csv_errors_name_line_and_field(tmp_path, body, line, field, message):
    """The typed fast path hands bad values to the string path, which names them."""
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n" + body)
    with pytest.raises(IngestError, match=message) as exc:
        read_movielens(path, None)
    assert (exc.value.line, exc.value.field) == (line, field)


def test_ratings_csv_missing_column(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,timestamp\n1,2,100\n")
    with pytest.raises(IngestError, match="missing column") as exc:
        read_movielens(path, None)
    assert exc.value.field == "rating"
