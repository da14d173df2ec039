"""``fame data fetch``: download a public dataset into the layout its config expects.

ml-100k is converted to RecBole atomic files (``configs/ml-100k.toml``); ml-1m and ml-20m keep
GroupLens' own files, only those the ``movielens`` reader needs (``configs/ml-1m.toml``,
``ml-20m.toml``). The archive streams to disk inside the folder's temporary twin
(``storage.atomic.atomic_dir``), so memory stays flat for ml-20m's 190 MB zip and a failed or
killed fetch never leaves a half-written ``<dest>/<name>/``.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import shutil
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from sources.errors import PipelineError
from storage.atomic import atomic_dir

GROUPLENS = "https://files.grouplens.org/datasets/movielens"
CHUNK = 1 << 20
ARCHIVE = ".download.zip"  # inside the temporary folder; removed before it is published


@dataclass(frozen=True)
class Dataset:
    url: str
    md5: str  # of the official archive, as GroupLens publishes it in <url>.md5
    convert: Callable[[zipfile.ZipFile, Path, str], None]  # (archive, out dir, url for errors)


def download(url: str, out: BinaryIO, progress: bool = True, timeout: float = 60.0) -> str:
    """Stream ``url`` into ``out`` in 1 MiB chunks with a progress bar; returns its MD5."""
    digest = hashlib.md5(usedforsecurity=False)
    got = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (http(s) only, checked by caller)
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc=url.rsplit("/", 1)[-1],
                disable=not progress,
            ) as bar:
                while chunk := resp.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
    except (OSError, http.client.HTTPException) as exc:
        raise PipelineError(
            f"download of {url} failed: {exc or type(exc).__name__}"  # some carry no message
        ) from exc
    if total is not None and got != total:
        raise PipelineError(
            f"download of {url} failed: the connection closed after {got} of {total} bytes"
        )
    return digest.hexdigest()


def fetch(
    name: str,
    dest: Path,
    url: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download dataset ``name`` into ``dest/<name>/``; returns that folder.

    The official archive is checked against GroupLens' published MD5; an override ``url``
    (a mirror, a test server) is not, since its archive may legitimately differ.
    """
    if name not in DATASETS:
        raise PipelineError(f"unknown dataset {name!r}; fetchable: {sorted(DATASETS)}")
    spec = DATASETS[name]
    official = url is None
    url = url or spec.url
    if not re.match(r"^https?://", url):
        raise PipelineError(f"only http(s) URLs can be fetched, got {url!r}")
    target = dest / name
    with atomic_dir(target) as tmp:
        archive_path = tmp / ARCHIVE
        with open(archive_path, "wb") as fh:
            md5 = download(url, fh, progress, timeout)
        if official and md5 != spec.md5:
            raise PipelineError(
                f"{url}: MD5 {md5} is not GroupLens' published {spec.md5} (a corrupt or changed "
                "download: retry, or pass --url to fetch it unchecked)"
            )
        try:
            archive = zipfile.ZipFile(archive_path)
        except zipfile.BadZipFile as exc:
            raise PipelineError(f"{url} did not return a zip archive") from exc
        with archive:
            spec.convert(archive, tmp, url)
        archive_path.unlink()
    return target


def _find(archive: zipfile.ZipFile, filename: str, url: str) -> zipfile.ZipInfo:
    """The member called ``filename`` in any folder of the archive (GroupLens nest them)."""
    for info in archive.infolist():
        if not info.is_dir() and info.filename.rsplit("/", 1)[-1] == filename:
            return info
    names = ", ".join(archive.namelist()[:8]) or "nothing"
    raise PipelineError(f"{url}: the archive has no {filename} (it holds {names})")


def _member(archive: zipfile.ZipFile, filename: str, url: str) -> str:
    return archive.read(_find(archive, filename, url)).decode("latin-1")


def extract(*filenames: str) -> Callable[[zipfile.ZipFile, Path, str], None]:
    """A converter that copies ``filenames`` out of the archive as they are, streamed."""

    def convert(archive: zipfile.ZipFile, out: Path, url: str) -> None:
        for filename in filenames:
            info = _find(archive, filename, url)
            try:
                with archive.open(info) as src, open(out / filename, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
            except (zipfile.BadZipFile, EOFError) as exc:
                raise PipelineError(f"{url}: {info.filename} is corrupt ({exc})") from exc

    return convert


def _convert_ml100k(archive: zipfile.ZipFile, out: Path, url: str) -> None:
    """u.data/u.item/u.genre -> ml-100k.inter and ml-100k.item (RecBole atomic format)."""
    genres = [
        line.split("|")[0] for line in _member(archive, "u.genre", url).splitlines() if line.strip()
    ]
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for line in _member(archive, "u.data", url).splitlines():
        if line.strip():
            user, item, rating, ts = line.split("\t")
            inter.append(f"{user}\t{item}\t{rating}\t{ts}")
    items = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    for line in _member(archive, "u.item", url).splitlines():
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


ML100K_URL = f"{GROUPLENS}/ml-100k.zip"
DATASETS = {
    "ml-100k": Dataset(ML100K_URL, "0e33842e24a9c977be4e0107933c0723", _convert_ml100k),
    "ml-1m": Dataset(
        f"{GROUPLENS}/ml-1m.zip",
        "c4d9eecfca2ab87c1945afe126590906",
        extract("ratings.dat", "movies.dat"),
    ),
    "ml-20m": Dataset(
        f"{GROUPLENS}/ml-20m.zip",
        "cd245b17a1ae2cc31bb14903e1204af3",
        extract("ratings.csv", "movies.csv"),
    ),
}
