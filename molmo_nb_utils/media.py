"""Media plumbing: cached downloads, images as the model sees them, video facts and exact frames.

Why this module exists: a point that Molmo2 returns is only useful if it is drawn on the very
pixels the model looked at. So images are loaded upright (EXIF) and in RGB, and a video frame is
always returned together with its exact time, ``index / fps``, using one rule everywhere:

* frame ``i`` is shown during ``[i / fps, (i + 1) / fps)``, so a video lasts ``num_frames / fps``
  seconds, and the frame shown at time ``t`` is ``floor(t * fps + 1e-6)`` (the ``1e-6`` absorbs
  float error such as ``0.7 * 30 = 20.999...``);
* a returned frame's timestamp is ``index / fps``, so ``round(timestamp * fps)`` gives the index
  back. (A sampling time ``k / sample_fps`` need not be a frame's start: at 29.97 fps, 0.5 s
  shows frame 14, since 0.5 * 29.97 = 14.985.)

Videos are assumed to have a constant frame rate (what cameras and encoders write nearly always);
frames are returned as stored, without applying rotation metadata, like the decord reader that
Molmo2's own preprocessing uses.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import http.client
import io
import math
import numbers
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from molmo_nb_utils import paths

__all__ = [
    "ASSETS",
    "Asset",
    "DownloadError",
    "Frames",
    "VideoInfo",
    "download",
    "fetch_asset",
    "frame_indices",
    "load_image",
    "sample_frames",
    "video_info",
]

DEFAULT_NUM_FRAMES = 8
_TIMEOUT_S = 30  # per network operation, not for the whole file
_CHUNK = 1 << 16

# ---------------------------------------------------------------------------------------------
# Downloads


class DownloadError(ConnectionError):
    """The network could not deliver a file (offline, DNS, refused, HTTP error, cut short)."""


def download(
    url: str,
    filename: str | None = None,
    *,
    sha256: str | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> Path:
    """Download ``url`` once into ``downloaded_data/downloads/`` and return the local path.

    A file already in the cache (with the right ``sha256`` when one is given) is returned without
    touching the network, so notebooks re-run offline. The body goes to a temporary file in the
    same folder and is renamed only when complete and verified: an interrupted download never
    leaves a broken file behind.

    For convenience a local path (or a ``file://`` URL) is returned as it is when the file exists,
    so a reader can swap a URL for their own file without changing the code.
    """
    local = _local_path(url)
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
    dest = folder / _safe_filename(filename or _url_basename(url))
    expected = sha256.lower() if sha256 else None
    if dest.is_file() and (expected is None or _file_sha256(dest) == expected):
        return dest

    with paths.atomic_path(dest) as tmp:  # also on Ctrl-C: never a half-written file
        with tmp.open("wb") as out:
            actual = _fetch(url, out, dest, progress)
        if expected is not None and actual != expected:
            raise ValueError(
                f"Checksum mismatch for {url}: expected sha256 {expected}, got {actual}. "
                "The file was not saved; the server may have changed it or the transfer was corrupted."
            )
    return dest


def _fetch(url: str, out, dest: Path, progress: bool) -> str:
    """Stream ``url`` into ``out``; return the sha256 of what was written."""
    from tqdm.auto import tqdm

    digest = hashlib.sha256()
    received = 0
    total = None
    request = urllib.request.Request(url, headers={"User-Agent": "molmo-nb-utils"})
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=dest.name,
                disable=not progress,
            ) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except (OSError, http.client.HTTPException) as err:  # URLError, HTTPError, timeouts, resets
        raise DownloadError(_offline_message(url, dest, _reason(err))) from err
    if total is not None and received != total:
        # urllib does not complain when a server closes the connection early; we must.
        raise DownloadError(
            _offline_message(url, dest, f"connection closed after {received} of {total} bytes")
        )
    return digest.hexdigest()


def _reason(err: BaseException) -> str:
    reason = getattr(err, "reason", None)
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    return str(reason if reason is not None else err) or type(err).__name__


def _offline_message(url: str, dest: Path, reason: str) -> str:
    return (
        f"Could not download {url} ({reason}). Without network, copy the file to {dest} "
        f"(it is then used as is) or pass the path of a local file instead; sample media that "
        f"works offline is in {paths.INPUT_DIR}/."
    )


def _local_path(src: str | os.PathLike) -> Path | None:
    """The local path that ``src`` names (``file://`` URL or an existing file), else None."""
    if isinstance(src, os.PathLike):
        return Path(src)
    if src.lower().startswith("file://"):
        return Path(urllib.request.url2pathname(urllib.parse.urlsplit(src).path))
    if "://" not in src and Path(src).exists():
        return Path(src)
    return None


def _url_basename(url: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path.rstrip("/").rpartition("/")[2])


def _safe_filename(name: str) -> str:
    """Keep a name that is safe on every OS: letters, digits, ``._-``; nothing hidden."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name).strip("._")
    return name or "download"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# The official Molmo2 demo media


@dataclass(frozen=True)
class Asset:
    """One demo file: where it lives, what to call it locally, and what it is."""

    url: str
    filename: str
    sha256: str | None
    description: str
    licence: str


_CARD = "Molmo2-4B / Molmo2-8B model cards on Hugging Face (Quick Start)"
_NOT_STATED = "not stated by Ai2; used in the official examples, fine for trying the model"

# Every URL below is copied from the Quick Start examples of the allenai/Molmo2-4B and
# allenai/Molmo2-8B model cards (https://huggingface.co/allenai/Molmo2-8B, README.md), sections
# "General Video QA" / "Pointing Video QA" (penguins), "Tracking Video QA" (basketball),
# "Multi-image QA" (dog, cherry blossom) and "Multi-Image Point QA" (boats). The penguins video and
# the dog and cherry-blossom images are also used by allenai/molmo2's HF test script.
# Checksums are unknown (None): the files are not mirrored here, so nothing could be hashed.
ASSETS: dict[str, Asset] = {
    "penguins": Asset(
        url="https://storage.googleapis.com/oe-training-public/demo_videos/many_penguins.mp4",
        filename="many_penguins.mp4",
        sha256=None,
        description=f"Video of many penguins; 'Which animal appears?' and 'Point to the penguins.' ({_CARD})",
        licence=_NOT_STATED,
    ),
    "basketball": Asset(
        url="https://storage.googleapis.com/oe-training-public/demo_videos/arena_basketball.mp4",
        filename="arena_basketball.mp4",
        sha256=None,
        description=f"Basketball game video; 'Track the player who is dunking' with max_fps=8 ({_CARD})",
        licence=_NOT_STATED,
    ),
    "boat1": Asset(
        url="https://storage.googleapis.com/oe-training-public/demo_images/boat1.jpeg",
        filename="boat1.jpeg",
        sha256=None,
        description=f"First of two boat photos for multi-image pointing, 'Point to the boats' ({_CARD})",
        licence=_NOT_STATED,
    ),
    "boat2": Asset(
        url="https://storage.googleapis.com/oe-training-public/demo_images/boat2.jpeg",
        filename="boat2.jpeg",
        sha256=None,
        description=f"Second of two boat photos for multi-image pointing, 'Point to the boats' ({_CARD})",
        licence=_NOT_STATED,
    ),
    "dog": Asset(
        url="https://picsum.photos/id/237/536/354",
        filename="picsum_237_dog.jpg",
        sha256=None,
        description=f"Black Labrador puppy (Lorem Picsum photo 237), 'Compare these images.' ({_CARD})",
        licence="Unsplash licence (Lorem Picsum serves photos from Unsplash)",
    ),
    "cherry_blossom": Asset(
        url="https://vllm-public-assets.s3.us-west-2.amazonaws.com/vision_model_images/cherry_blossom.jpg",
        filename="cherry_blossom.jpg",
        sha256=None,
        description=f"Cherry blossoms (vLLM's public test image), 'Compare these images.' ({_CARD})",
        licence="not stated by the vLLM project's public asset bucket",
    ),
}


def fetch_asset(name: str, *, cache_dir: Path | None = None, progress: bool = True) -> Path:
    """Download (once) one of the official demo files in ``ASSETS`` and return its local path."""
    asset = ASSETS.get(name)
    if asset is None:
        raise ValueError(f"Unknown asset {name!r}. Known assets: {', '.join(sorted(ASSETS))}.")
    return download(asset.url, asset.filename, sha256=asset.sha256, cache_dir=cache_dir, progress=progress)


# ---------------------------------------------------------------------------------------------
# Images


def load_image(src: str | os.PathLike | bytes | Image.Image) -> Image.Image:
    """Load an image upright and in RGB: the pixel grid that the model sees and points on.

    ``src`` is a file path, an http(s) URL (downloaded once, see ``download``), the file's bytes,
    or a PIL image. EXIF orientation is applied (phone photos are often stored sideways) and
    transparency is composited on white, so point coordinates scale to this image's size. The
    result is fully loaded: no file stays open.
    """
    if isinstance(src, Image.Image):
        return _upright_rgb(src)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return _open_image(io.BytesIO(bytes(src)), f"the given bytes ({len(src)} bytes)")
    if isinstance(src, str) and urllib.parse.urlsplit(src).scheme.lower() in ("http", "https"):
        src = download(src)
    if not isinstance(src, (str, os.PathLike)):
        raise TypeError(f"load_image takes a path, URL, bytes or PIL image, not {type(src).__name__}.")
    path = _local_path(src) or Path(src)
    if not path.is_file():
        raise FileNotFoundError(f"No image file at {path}. Check the path (it is relative to {Path.cwd()}).")
    return _open_image(path, str(path))


def _open_image(fp: Path | io.BytesIO, name: str) -> Image.Image:
    try:
        with Image.open(fp) as image:
            image.load()
            return _upright_rgb(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(
            f"Cannot read {name} as an image ({err}). It may be truncated or not an image; "
            "open it in an image viewer or download it again."
        ) from err


def _upright_rgb(image: Image.Image) -> Image.Image:
    """EXIF-rotated RGB copy; alpha composited on white, 16-bit grey scaled to 8 bits."""
    try:
        image = ImageOps.exif_transpose(image)  # always a new image
    except Exception:  # a broken EXIF block should not make a readable photo unusable
        image = image.copy()
    mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16") or values.max(initial=0) > 255:
            values = values / 257.0  # 0..65535 -> 0..255
        gray = np.clip(np.round(values), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    return image.convert("RGB")


# ---------------------------------------------------------------------------------------------
# Videos: facts and frame planning


@dataclass(frozen=True)
class VideoInfo:
    """What the frame planning needs; ``duration`` is ``num_frames / fps`` (see module doc)."""

    path: Path
    fps: float
    num_frames: int
    duration: float
    width: int
    height: int


class Frames(NamedTuple):
    """Frames (N, H, W, 3) uint8 RGB and the exact time of each: ``frames, times = ...``."""

    frames: np.ndarray
    timestamps: list[float]


def frame_indices(info: VideoInfo, num_frames: int | None = None, fps: float | None = None) -> list[int]:
    """Which frames to take, in increasing order; the pure planning step of ``sample_frames``.

    * ``fps``: sample times ``k / fps`` (k = 0, 1, ...) while ``< duration``, each mapped to the
      frame shown at that time, ``floor(t * video_fps + 1e-6)``; repeats are dropped (asking for
      more than the video's own rate gives every frame once). If ``num_frames`` is also given and
      there are more, ``num_frames`` of them are kept, evenly spaced (``np.linspace``, rounded).
    * only ``num_frames``: evenly spaced over the whole video, first and last frame included
      (``np.linspace(0, n - 1, num_frames)`` rounded); at most every frame once.
    * neither: ``DEFAULT_NUM_FRAMES`` (8) evenly spaced frames.
    """
    _check_request(num_frames, fps)
    total = info.num_frames
    if total < 1:
        raise ValueError(f"{info.path} has no video frames; check that it plays in a video player.")
    if fps is None:
        count = min(num_frames or DEFAULT_NUM_FRAMES, total)
        picked = np.round(np.linspace(0, total - 1, count)).astype(int)
        return list(dict.fromkeys(picked.tolist()))
    times = np.arange(math.ceil(info.duration * fps) + 1) / fps
    times = times[times < info.duration]
    chosen = np.minimum(np.floor(times * info.fps + 1e-6).astype(int), total - 1)
    chosen = list(dict.fromkeys(chosen.tolist()))
    if num_frames is not None and len(chosen) > num_frames:
        keep = np.round(np.linspace(0, len(chosen) - 1, num_frames)).astype(int)
        chosen = [chosen[k] for k in keep]
    return chosen


def _check_request(num_frames: int | None, fps: float | None) -> None:
    if num_frames is not None and (
        isinstance(num_frames, bool) or not isinstance(num_frames, numbers.Integral) or num_frames < 1
    ):
        raise ValueError(f"num_frames must be a whole number >= 1 (or None), got {num_frames!r}.")
    if fps is not None and (
        isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps <= 0
    ):
        raise ValueError(f"fps must be a number > 0 (or None), got {fps!r}.")


def video_info(path: str | os.PathLike) -> VideoInfo:
    """Frame rate, frame count, duration and size of a video (first backend that can read it)."""
    path = _check_video_file(path)
    errors: list[tuple[str, BaseException]] = []
    for name, info_fn, _ in _BACKENDS:
        try:
            return info_fn(path)
        except Exception as err:  # a backend missing or failing: try the next one
            errors.append((name, err))
    raise _unreadable(path, errors)


def sample_frames(path: str | os.PathLike, num_frames: int | None = None, fps: float | None = None) -> Frames:
    """Decode the frames chosen by ``frame_indices`` and give each its exact time ``index / fps``.

    Each returned frame is exactly the frame shown at its timestamp, so points that Molmo2 gives
    at that time can be drawn on it. Backends are tried in turn (PyAV, decord, OpenCV); see
    ``scripts/benchmark_frames.py`` for why PyAV comes first.
    """
    _check_request(num_frames, fps)
    path = _check_video_file(path)
    errors: list[tuple[str, BaseException]] = []
    for name, info_fn, read_fn in _BACKENDS:
        try:
            info = info_fn(path)
            indices = frame_indices(info, num_frames, fps)
            frames = read_fn(path, indices)
        except Exception as err:
            errors.append((name, err))
            continue
        return Frames(frames, [i / info.fps for i in indices])
    raise _unreadable(path, errors)


_IMAGE_MAGIC = {
    b"\x89PNG": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF8": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}


def _check_video_file(path: str | os.PathLike) -> Path:
    """Catch the common mistakes early, with a message that says what to do."""
    if isinstance(path, str) and urllib.parse.urlsplit(path).scheme.lower() in ("http", "https"):
        return download(path)
    path = _local_path(path) or Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No video file at {path}. Check the path (it is relative to {Path.cwd()}).")
    if not path.is_file():
        raise ValueError(f"{path} is not a file (a folder?). Pass the path of a video file.")
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise ValueError(
            f"{path} is empty (0 bytes): the download or copy failed. Delete it and get it again."
        )
    kind = next((k for magic, k in _IMAGE_MAGIC.items() if head.startswith(magic)), None)
    if kind is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        kind = "WebP"
    if kind is not None:
        raise ValueError(f"{path} is a {kind} image, not a video. Use load_image() for images.")
    return path


def _unreadable(path: Path, errors: list[tuple[str, BaseException]]) -> ValueError:
    """One clear error for 'no backend could read it', chained to the most telling cause."""
    real = [(n, e) for n, e in errors if not isinstance(e, ImportError)]
    if not real:
        names = ", ".join(n for n, _ in errors)
        error = ValueError(
            f"Cannot read {path}: no video library is installed (tried {names}); pip install av"
        )
        error.__cause__ = errors[0][1] if errors else None
        return error
    name, cause = real[0]
    error = ValueError(
        f"Cannot read video {path} ({name}: {cause}). The file may be corrupt, incomplete or not a "
        "video: check that it plays in a video player, download it again, or re-encode it, e.g. "
        "`ffmpeg -i in.mov -c:v libx264 -pix_fmt yuv420p out.mp4`."
    )
    error.__cause__ = cause
    return error


# ---------------------------------------------------------------------------------------------
# Backends. Each is (name, info(path) -> VideoInfo, read(path, indices) -> (N, H, W, 3) uint8).
#
# PyAV comes first because it is the fastest exact reader measured (scripts/benchmark_frames.py):
# it seeks only when the next wanted frame lies after another keyframe, skips decoding frames that
# nothing references (B-frames) unless wanted, and splits the work between CPU cores, each with
# its own decoder. Frames are identified by their presentation timestamp, so the index is exact.


class _AvIndex(NamedTuple):
    pts: list[int]  # presentation timestamps in display order: frame i has pts[i]
    keyframes: list[int]  # frame indices of keyframes, increasing
    fps: float
    width: int
    height: int


def _av_index(path: Path) -> _AvIndex:
    """Read every packet header once (no decoding): exact frame count, order and keyframes."""
    stat = path.stat()
    return _av_index_of(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)  # keyed on mtime and size: video_info then sample_frames reads once
def _av_index_of(path: str, mtime_ns: int, size: int) -> _AvIndex:
    import av

    with av.open(path) as container:
        fmt = container.format.name
        if fmt.endswith("_pipe") or fmt == "image2":
            raise ValueError(f"it is a still image ({fmt}), not a video; use load_image() for images")
        if not container.streams.video:
            raise ValueError("it has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        pts, key_pts = [], []
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            if packet.pts is None:
                raise ValueError("its packets carry no timestamps")
            pts.append(packet.pts)
            if packet.is_keyframe:
                key_pts.append(packet.pts)
        width, height = stream.codec_context.width, stream.codec_context.height
    if not pts:
        raise ValueError("it has no video frames")
    if not rate:
        raise ValueError("its frame rate is unknown")
    pts.sort()
    position = {p: i for i, p in enumerate(pts)}
    keyframes = sorted({0} | {position[p] for p in key_pts})
    return _AvIndex(pts, keyframes, float(rate), width, height)


def _info_pyav(path: Path) -> VideoInfo:
    index = _av_index(path)
    return _info(path, index.fps, len(index.pts), index.width, index.height)


def _info(path: Path, fps: float, num_frames: int, width: int, height: int) -> VideoInfo:
    if num_frames < 1:
        raise ValueError("it has no video frames")
    if not fps or not math.isfinite(fps) or fps <= 0:
        raise ValueError("its frame rate is unknown")
    return VideoInfo(path, float(fps), int(num_frames), num_frames / fps, int(width), int(height))


def _read_pyav(path: Path, indices: Sequence[int]) -> np.ndarray:
    index = _av_index(path)
    wanted = sorted(set(indices))
    # Runs of wanted frames that one forward decode serves: a new run starts where a keyframe lies
    # after the previous wanted frame, since seeking there is cheaper than decoding up to it.
    runs: list[list[int]] = []
    for i in wanted:
        key = index.keyframes[bisect.bisect_right(index.keyframes, i) - 1]
        if runs and key <= runs[-1][-1]:
            runs[-1].append(i)
        else:
            runs.append([i])
    workers = max(1, min(len(runs), _cpu_count(), 4))
    chunks = _split_runs(runs, index.keyframes, workers)
    if len(chunks) == 1:
        got = _decode_runs(path, index, chunks[0])
    else:
        got = {}
        with ThreadPoolExecutor(len(chunks)) as pool:  # PyAV releases the GIL while decoding
            for part in pool.map(lambda chunk: _decode_runs(path, index, chunk), chunks):
                got.update(part)
    return np.stack([got[i] for i in indices])


def _split_runs(runs: list[list[int]], keyframes: list[int], parts: int) -> list[list[list[int]]]:
    """Cut the runs into ``parts`` consecutive chunks of about equal decoding work."""
    cost = [run[-1] - keyframes[bisect.bisect_right(keyframes, run[0]) - 1] + 1 for run in runs]
    share = sum(cost) / parts
    chunks: list[list[list[int]]] = [[]]
    done = 0.0
    for run, c in zip(runs, cost, strict=True):
        if chunks[-1] and done >= share * len(chunks) and len(chunks) < parts:
            chunks.append([])
        chunks[-1].append(run)
        done += c
    return chunks


def _decode_runs(path: Path, index: _AvIndex, runs: list[list[int]]) -> dict[int, np.ndarray]:
    import av

    got: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"  # frame threads only add latency here; cores are used by runs
        for run in runs:
            key = index.keyframes[bisect.bisect_right(index.keyframes, run[0]) - 1]
            got.update(_decode_run(container, stream, index, run, key, skip=True))
            if not all(i in got for i in run):  # an odd file: decode plainly from the start
                got.update(_decode_run(container, stream, index, run, 0, skip=False))
            missing = [i for i in run if i not in got]
            if missing:
                raise ValueError(f"frames {missing[:5]} could not be decoded")
    return got


def _decode_run(container, stream, index: _AvIndex, run: list[int], key: int, skip: bool) -> dict:
    wanted = {index.pts[i]: i for i in run}
    codec = stream.codec_context
    container.seek(index.pts[key], stream=stream, backward=True)  # to the keyframe; resets decoder
    got: dict[int, np.ndarray] = {}
    for packet in container.demux(stream):
        if skip:  # decode frames no other frame references only when we want them
            codec.skip_frame = "DEFAULT" if packet.pts in wanted else "NONREF"
        for frame in packet.decode():
            i = wanted.get(frame.pts)
            if i is not None:
                got[i] = frame.to_ndarray(format="rgb24")
        if len(got) == len(wanted):
            break
    codec.skip_frame = "DEFAULT"
    return got


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _info_decord(path: Path) -> VideoInfo:
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    height, width = reader[0].shape[:2]
    return _info(path, reader.get_avg_fps(), len(reader), width, height)


def _read_decord(path: Path, indices: Sequence[int]) -> np.ndarray:
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    return reader.get_batch(list(indices)).asnumpy()


def _open_cv2(path: Path):
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError("OpenCV cannot open it")
    capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)  # frames as stored, like the other backends
    return cv2, capture


def _info_cv2(path: Path) -> VideoInfo:
    cv2, capture = _open_cv2(path)
    try:
        return _info(
            path,
            capture.get(cv2.CAP_PROP_FPS),
            int(capture.get(cv2.CAP_PROP_FRAME_COUNT)),
            int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
    finally:
        capture.release()


def _read_cv2(path: Path, indices: Sequence[int]) -> np.ndarray:
    """Plain sequential read: slow but exact (seeking by frame number is not, for some files)."""
    cv2, capture = _open_cv2(path)
    wanted, got = set(indices), {}
    try:
        for i in range(max(indices) + 1):
            if not capture.grab():
                break
            if i in wanted:
                ok, frame = capture.retrieve()
                if ok:
                    got[i] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()
    missing = [i for i in indices if i not in got]
    if missing:
        raise ValueError(f"frames {missing[:5]} could not be decoded")
    return np.stack([got[i] for i in indices])


_BACKENDS: list[tuple[str, Callable[[Path], VideoInfo], Callable[[Path, Sequence[int]], np.ndarray]]] = [
    ("pyav", _info_pyav, _read_pyav),
    ("decord", _info_decord, _read_decord),
    ("opencv", _info_cv2, _read_cv2),
]
