"""``fame data fetch``: download a public dataset and convert it to the format configs expect.

Only ml-100k is supported (GroupLens' official zip, converted to RecBole atomic files, the
layout of ``configs/ml-100k.toml``). Downloads go to a temporary file first, so an interrupted
fetch leaves nothing behind.
"""

from __future__ import annotations

import io
import re
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from pipeline.errors import PipelineError
from storage.atomic import atomic_dir

ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
DATASETS = {"ml-100k": ML100K_URL}


def download(url: str, progress: bool = True, timeout: float = 60.0) -> bytes:
    """Fetch ``url`` into memory with a progress bar (datasets here are a few MB)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (http(s) only, checked by caller)
            total = int(resp.headers.get("Content-Length") or 0) or None
            buf = io.BytesIO()
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc=url.rsplit("/", 1)[-1],
                disable=not progress,
            ) as bar:
                while chunk := resp.read(1 << 16):
                    buf.write(chunk)
                    bar.update(len(chunk))
            return buf.getvalue()
    except OSError as exc:
        raise PipelineError(f"download of {url} failed: {exc}") from exc


def fetch(
    name: str,
    dest: Path,
    url: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download dataset ``name`` into ``dest/<name>/``; returns that folder."""
    if name not in DATASETS:
        raise PipelineError(f"unknown dataset {name!r}; fetchable: {sorted(DATASETS)}")
    url = url or DATASETS[name]
    if not re.match(r"^https?://", url):
        raise PipelineError(f"only http(s) URLs can be fetched, got {url!r}")
    data = download(url, progress, timeout)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise PipelineError(f"{url} did not return a zip archive") from exc
    target = dest / name
    with atomic_dir(target) as tmp:
        _convert_ml100k(archive, tmp)
    return target


def _member(archive: zipfile.ZipFile, suffix: str) -> str:
    for info in archive.namelist():
        if info.endswith(suffix):
            return archive.read(info).decode("latin-1")
    raise PipelineError(f"archive has no {suffix}")


def _convert_ml100k(archive: zipfile.ZipFile, out: Path) -> None:
    """u.data/u.item/u.genre -> ml-100k.inter and ml-100k.item (RecBole atomic format)."""
    genres = [
        line.split("|")[0] for line in _member(archive, "u.genre").splitlines() if line.strip()
    ]
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for line in _member(archive, "u.data").splitlines():
        if line.strip():
            user, item, rating, ts = line.split("\t")
            inter.append(f"{user}\t{item}\t{rating}\t{ts}")
    items = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    for line in _member(archive, "u.item").splitlines():
        if not line.strip():
            continue
        parts = line.split("|")
        title = re.sub(r"\s*\(\d{4}\)\s*$", "", parts[1]).replace("\t", " ")
        year = parts[2][-4:] if re.search(r"\d{4}$", parts[2]) else ""
        flags = parts[5 : 5 + len(genres)]
        cls = " ".join(g for g, f in zip(genres, flags, strict=False) if f == "1")
        items.append(f"{parts[0]}\t{title}\t{year}\t{cls}")
    (out / "ml-100k.inter").write_text("\n".join(inter) + "\n")
    (out / "ml-100k.item").write_text("\n".join(items) + "\n")
