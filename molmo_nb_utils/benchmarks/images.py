"""A benchmark's pictures and masks as files and ``Mask``s the dataset runner reads.

Why each rule is here:

* Images given by URL are fetched with the package's download rules (``downloads.download``: time
  and size limits, nothing half-written, a cache) and must hash to the row's ``image_sha256``: web
  images vanish and change, and an answer about another picture than the annotated one is not a
  score. An image that is gone or changed is reported, never scored.
* Each row gets its own file (``<row>.jpg``, a hard link to the cached download where the file system
  allows): rows share images (pixmo-points-eval asks several phrases of one picture), and the runner
  takes one item per file.
* Masks are fitted to the picture they belong to: AllenAI's evaluators test a point against the mask
  only where both the picture and the mask have that pixel, which is what a mask cropped or padded
  (with "outside") to the picture's size gives.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask
from tqdm.auto import tqdm

from molmo_nb_utils.downloads import DownloadError, download, local_path
from molmo_nb_utils.masks import Mask
from molmo_nb_utils.paths import atomic_path, file_sha256

__all__ = [
    "fetch_images",
    "fit_mask",
    "image_suffix",
    "mask_of",
    "pick_member",
    "png_mask",
    "read_member",
    "write_once",
    "zip_members",
]

_FORMATS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp"}
_FORMATS |= {"TIFF": ".tif"}
MAX_IMAGE_BYTES = 64 * 2**20  # a web photo; more is a broken server or another file
MAX_IMAGE_SECONDS = 120
SHA256 = re.compile(r"[0-9a-f]{64}")


def image_suffix(data: bytes | Path) -> str | None:
    """The file suffix of an image's format (``.jpg``, ``.png``, ...), or None if it is not an image
    the runner reads."""
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            return _FORMATS.get(image.format or "")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def write_once(path: Path, data: bytes) -> Path:
    """``data`` at ``path``, written atomically, and only if the file does not hold it already (so its
    time stays, and a results file still knows it)."""
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return path
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def _link(cached: Path, path: Path) -> Path:
    """``path`` as the same file as ``cached``: a hard link (no copy), else a copy, replaced atomically."""
    if path.is_file() and os.path.samefile(cached, path):
        return path
    tmp = path.with_name(f".{path.name}.link")
    try:
        tmp.unlink(missing_ok=True)
        os.link(cached, tmp)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        write_once(path, cached.read_bytes())
    return path


def _fetch_one(url: str, sha256: str, cache: Path) -> tuple[Path, str] | str:
    """(the cached image, its suffix), or why there is none ("gone: ..." or "changed: ...")."""
    try:
        path = download(
            url,
            sha256=sha256,
            cache_dir=cache,
            progress=False,
            kind="image",
            max_seconds=MAX_IMAGE_SECONDS,
            max_bytes=MAX_IMAGE_BYTES,
        )
    except DownloadError as err:
        return f"gone: {str(err).split('. Without network')[0]}"
    except ValueError as err:
        if "Checksum mismatch" in str(err):
            return "changed: its bytes no longer hash to the row's image_sha256"
        return f"gone: {err}"
    except OSError as err:  # a file:// URL to nothing, a full disk
        return f"gone: {err}"
    # download() returns a local file (file://) as it is: check it here
    if local_path(url) is not None and file_sha256(path) != sha256:
        return "changed: its bytes no longer hash to the row's image_sha256"
    suffix = image_suffix(path)
    if suffix is None:
        return "gone: it is not an image the runner reads (JPEG, PNG, WebP, GIF, BMP, TIFF)"
    return path, suffix


def fetch_images(
    wanted: Iterable[tuple[int, str, str]], cache: Path, folder: Path, *, workers: int = 8
) -> dict[int, Path | str]:
    """Row -> its image file in ``folder`` (``<row>.<suffix>``) or why it has none, for (row, url, sha256)s.

    Each distinct image is downloaded once (rows repeat URLs), ``workers`` at a time under one progress
    bar, and cached in ``cache``, so a second load is offline.
    """
    wanted = list(wanted)
    distinct = list(dict.fromkeys((url, sha) for _, url, sha in wanted))
    fetched: dict[tuple[str, str], tuple[Path, str] | str] = {}
    with (
        ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
        tqdm(total=len(distinct), desc="images") as bar,
    ):
        futures = {key: pool.submit(_fetch_one, *key, cache) for key in distinct}
        for key, future in futures.items():
            fetched[key] = future.result()
            bar.update()
    out: dict[int, Path | str] = {}
    for row, url, sha in wanted:
        got = fetched[(url, sha)]
        out[row] = got if isinstance(got, str) else _link(got[0], folder / f"{row:05d}{got[1]}")
    return out


def fit_mask(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An (H, W) mask cropped or padded (with False) to a picture of ``size`` = (width, height)."""
    width, height = size
    out = np.zeros((height, width), dtype=bool)
    h, w = min(height, pixels.shape[0]), min(width, pixels.shape[1])
    out[:h, :w] = pixels[:h, :w]
    return out


def mask_of(pixels: np.ndarray) -> Mask:
    """A ``Mask`` (compressed COCO RLE, as ``masks`` keeps them) of an (H, W) bool array."""
    encoded = coco_mask.encode(np.asfortranarray(pixels.astype(np.uint8)))
    return Mask(rle=encoded["counts"], size=(int(pixels.shape[1]), int(pixels.shape[0])))


def png_mask(data: bytes) -> np.ndarray:
    """Point-Bench's mask PNG as an (H, W) bool array, by AllenAI's ``PointBench.load_mask``: a grey
    pixel above 127 is inside; in colour, any channel above 127. (A 1-bit PNG is read as 0/255 first.)"""
    with Image.open(io.BytesIO(data)) as image:
        array = np.array(image.convert("L") if image.mode == "1" else image)
    if array.ndim == 2:
        return array > 127
    if array.ndim == 3:
        return np.any(array > 127, axis=2)
    raise ValueError(f"a mask image of shape {array.shape}")


def _real_name(info: zipfile.ZipInfo) -> str:
    """The member's name as written: zip tools that do not flag UTF-8 names get them read as cp437
    (AllenAI unzips Point-Bench with ``unzip`` for this reason)."""
    if info.flag_bits & 0x800:
        return info.filename
    try:
        return info.filename.encode("cp437").decode("utf-8")
    except UnicodeError:
        return info.filename


def zip_members(archive: zipfile.ZipFile) -> dict[str, list[zipfile.ZipInfo]]:
    """File name -> the members of that name, wherever the zip puts them (macOS ``__MACOSX`` and ``._``
    entries left out)."""
    found: dict[str, list[zipfile.ZipInfo]] = {}
    for info in archive.infolist():
        name = _real_name(info)
        base = name.rstrip("/").rsplit("/", 1)[-1]
        if info.is_dir() or name.startswith("__MACOSX/") or base.startswith("._"):
            continue
        found.setdefault(base, []).append(info)
    return found


def pick_member(
    members: dict[str, list[zipfile.ZipInfo]], filename: str, category: str, archive: str
) -> zipfile.ZipInfo | str:
    """The member for ``filename`` (in a folder named ``category`` where several share the name), or why none."""
    base = str(filename).replace("\\", "/").rsplit("/", 1)[-1]
    found = members.get(base, [])
    if len(found) > 1:
        found = [m for m in found if f"/{category}/" in f"/{_real_name(m)}"] or found
    if not found:
        return f"gone: {base} is not in {archive}"
    if len(found) > 1:
        names = ", ".join(_real_name(m) for m in found)
        raise ValueError(f"{archive} holds {base} several times ({names}): which one is meant is unclear")
    return found[0]


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int = MAX_IMAGE_BYTES) -> bytes:
    """A member's bytes; a member larger than ``limit`` (a zip bomb, another file) is refused."""
    if info.file_size > limit:
        raise ValueError(f"{_real_name(info)} would unpack to {info.file_size} bytes, more than {limit}")
    return archive.read(info)
