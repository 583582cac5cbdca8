"""The download cache: a file is fetched once into ``downloaded_data/downloads/``, whole and verified.

A file already in the cache (with the right ``sha256`` when one is given) is served without touching
the network, so notebooks re-run offline; nothing half-written or wrong is ever cached.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.parse
import urllib.request
from pathlib import Path

from molmo_nb_utils import paths
from molmo_nb_utils.downloads.network import fetch_to
from molmo_nb_utils.downloads.verify import check_body

__all__ = ["MAX_BYTES", "MAX_SECONDS", "download", "local_path"]

MAX_SECONDS = 30 * 60  # for the whole file: a server that trickles a byte at a time is given up on
MAX_BYTES = 20 * 2**30  # an endless body stops here instead of filling the disk
_KINDS = (None, "image", "video")
_SUFFIX_KINDS = {
    **dict.fromkeys((".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"), "image"),
    **dict.fromkeys((".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"), "video"),
}


def download(
    url: str,
    filename: str | None = None,
    *,
    sha256: str | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
    force: bool = False,
    kind: str | None = None,
    max_seconds: float | None = MAX_SECONDS,
    max_bytes: int | None = MAX_BYTES,
) -> Path:
    """Download ``url`` once into ``downloaded_data/downloads/`` and return the local path.

    A file already in the cache (with the right ``sha256`` when one is given) is returned without
    touching the network, so notebooks re-run offline; ``force=True`` fetches it again. The cache
    name is ``filename`` (or the URL's file name) plus a short hash of the whole URL, so two URLs
    never share a file. The body goes to a temporary file in the same folder and is renamed only
    when complete and verified: an interrupted download never leaves a broken file behind.

    ``kind`` ("image" or "video") says what the URL must deliver; by default it follows the suffix,
    else the file's first bytes. An image must decode and a video must have all its frames' data,
    and a web page is refused: these catch bodies cut short and captive-portal pages.

    ``max_seconds`` limits the whole download (each network operation also times out after 30 s)
    and ``max_bytes`` its size: a server that sends a byte every few seconds, or a body that never
    ends, stops there with a message that names the limit, and nothing is saved. None: no limit.

    For convenience a local path (or a ``file://`` URL) is returned as it is when the file exists,
    so a reader can swap a URL for their own file without changing the code.
    """
    if sha256 is not None and not (isinstance(sha256, str) and re.fullmatch(r"[0-9a-fA-F]{64}", sha256)):
        raise ValueError(
            f"sha256 must be 64 hexadecimal characters, not {sha256!r}. Compute it with "
            "hashlib.sha256(open(path, 'rb').read()).hexdigest(), or pass sha256=None to skip the check."
        )
    if kind not in _KINDS:
        raise ValueError(f"kind must be None, 'image' or 'video', not {kind!r}.")
    for name, limit in (("max_seconds", max_seconds), ("max_bytes", max_bytes)):
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit <= 0
        ):
            raise ValueError(f"{name} must be a number > 0, or None for no limit; got {limit!r}.")
    local = local_path(url)
    if local is not None:
        if not local.is_file():
            raise FileNotFoundError(f"No file at {local}. Pass an existing file or an http(s) URL.")
        return local
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(
            f"Cannot download {url!r}: only http(s) URLs and existing local paths are supported."
        )

    folder = Path(cache_dir) if cache_dir is not None else paths.DATA_DIR / "downloads"
    dest = folder / _cache_name(url, filename)
    expected = sha256.lower() if sha256 else None
    if not force and dest.is_file() and (expected is None or paths.file_sha256(dest) == expected):
        return dest

    paths.remove_partial_files(dest)  # what a killed earlier attempt left behind
    with paths.atomic_path(dest) as tmp:  # also on Ctrl-C: never a half-written file
        with tmp.open("wb") as out:
            actual, content_type = fetch_to(url, out, dest, progress, max_seconds, max_bytes)
        if expected is not None and actual != expected:
            raise ValueError(
                f"Checksum mismatch for {url}: expected sha256 {expected}, got {actual}. "
                "The file was not saved; the server may have changed it or the transfer was corrupted."
            )
        check_body(url, tmp, kind or _SUFFIX_KINDS.get(dest.suffix.lower()), content_type)
    return dest


def _cache_name(url: str, filename: str | None) -> str:
    """A readable name with the suffix, plus a hash of the whole URL: ``cat-3f2a9c1b.jpg``."""
    parts = urllib.parse.urlsplit(url)
    name = filename or _basename(parts.path)
    if not filename and not Path(name).suffix:  # /get?file=cat.jpg: the name is in the query
        values = [_basename(v) for _, v in urllib.parse.parse_qsl(parts.query)]
        name = next((v for v in values if Path(v).suffix), name)
    clean = Path(paths.clean_filename(name, default="download"))
    return f"{clean.stem}-{hashlib.sha256(url.encode()).hexdigest()[:8]}{clean.suffix}"


def _basename(path: str) -> str:
    return urllib.parse.unquote(path.rstrip("/").rpartition("/")[2])


def local_path(src: str | os.PathLike) -> Path | None:
    """The local path that ``src`` names (``file://`` URL or an existing file), else None."""
    if isinstance(src, os.PathLike):
        return Path(src)
    if src.lower().startswith("file://"):
        return Path(urllib.request.url2pathname(urllib.parse.urlsplit(src).path))
    if "://" not in src and Path(src).exists():
        return Path(src)
    return None
