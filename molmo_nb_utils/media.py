"""Images and videos as Molmo2 sees them: upright RGB images, and the exact frames it is shown.

Why this module exists: a point that Molmo2 returns is only useful if it is drawn on the very
pixels the model looked at, at the time the model was told. So images are loaded upright (EXIF)
and in RGB, and videos are sampled by exactly the rule of AllenAI's ``molmo_utils`` (what the
model cards use), reproduced on a faster reader:

* sample times ``0, 1/fps, 2/fps, ...`` while below the video's duration, plus the duration
  itself (the end of the video); past ``max_frames`` of them, ``max_frames`` times spread evenly
  from 0 to the duration instead (``molmo_utils.vision_process.sample_times``);
* each time shows the frame whose display interval contains it (a search over the frames' end
  times), the last index clamped to the last frame, so the end of the video is the last frame,
  and two times may show the same frame;
* the prompt tells the model each frame's sample time (written with one decimal), not the
  frame's own start time: at 29.97 fps the sample at 0.5 s shows frame 14, and the model reads
  "0.5".

``sample_frames`` returns the frames with those times, their frame indices and the metadata the
processor is given, so one decode serves the model, the drawings and the scores. Tests compare
it with ``molmo_utils`` on generated videos of odd frame rates and durations.

Videos are decoded with PyAV (FFmpeg) and returned as stored, without rotation metadata, as
``molmo_utils`` does.
"""

from __future__ import annotations

import bisect
import functools
import io
import math
import numbers
import os
import urllib.parse
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from molmo_nb_utils.downloads import download, local_path, sniff_kind
from molmo_nb_utils.grounding import nearest_index

__all__ = ["VideoFrames", "VideoInfo", "load_image", "sample_frames", "video_info"]

# What Molmo2 was trained with: 2 frames per second for QA and pointing, up to 384 frames.
# Tracking works best with more frames per second (the model card uses 8).
DEFAULT_FPS = 2.0
DEFAULT_MAX_FRAMES = 384
TRACKING_FPS = 8.0

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
        src = download(src, kind="image")
    if not isinstance(src, (str, os.PathLike)):
        raise TypeError(f"load_image takes a path, URL, bytes or PIL image, not {type(src).__name__}.")
    path = local_path(src) or Path(src)
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
            f"Cannot read {name} as an image ({err}). It may be truncated or not an image: open it in an "
            "image viewer, and if it was downloaded, fetch it again with download(url, force=True)."
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
# Videos


@dataclass(frozen=True)
class VideoInfo:
    """A video's facts, measured as ``molmo_utils`` measures them (``duration`` runs from the first
    frame's start to the last frame's end)."""

    path: Path
    fps: float
    num_frames: int
    duration: float
    width: int
    height: int


@dataclass(frozen=True, eq=False)
class VideoFrames:
    """The frames Molmo2 is shown from one video, and what the processor is told about them.

    ``timestamps[k]`` is the time written before frame ``k`` in the prompt (the model answers in
    these times), ``indices[k]`` the index of that frame in the video. Unpacks as
    ``frames, timestamps = sample_frames(...)``.
    """

    frames: np.ndarray  # (N, H, W, 3) uint8 RGB
    timestamps: list[float]
    indices: list[int]
    info: VideoInfo

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels: what point coordinates scale to."""
        return self.info.width, self.info.height

    def __iter__(self) -> Iterator[Any]:
        return iter((self.frames, self.timestamps))

    def __repr__(self) -> str:
        times = ", ".join(f"{t:g}" for t in self.timestamps[:4]) + (
            ", ..." if len(self.timestamps) > 4 else ""
        )
        return (
            f"VideoFrames({len(self.timestamps)} frames of {self.info.path.name} at [{times}] s, "
            f"{self.info.width}x{self.info.height})"
        )

    def frame_at(self, time: float) -> int:
        """The video frame index shown at the sampled time nearest to ``time``."""
        return self.indices[nearest_index(time, self.timestamps)]

    def metadata(self) -> dict[str, Any]:
        """The ``video_metadata`` the processor turns into the prompt's frame times (molmo_utils' format)."""
        return {
            "total_num_frames": self.info.num_frames,
            "fps": self.info.fps,
            "duration": self.info.duration,
            "video_backend": "pyav",
            "frames_indices": np.asarray(self.timestamps, dtype=np.float64) * self.info.fps,
            "height": self.info.height,
            "width": self.info.width,
        }


def video_info(path: str | os.PathLike) -> VideoInfo:
    """Frame rate, frame count, duration and size of a video (reads packet headers, decodes nothing)."""
    path = _check_video_file(path)
    return _index(path).info


def sample_frames(
    video: str | os.PathLike,
    max_frames: int | None = None,
    fps: float | None = DEFAULT_FPS,
    *,
    num_frames: int | None = None,
) -> VideoFrames:
    """Decode the frames Molmo2 is shown of ``video`` at ``fps``, at most ``max_frames`` of them.

    The defaults are ``chat``'s (2 fps, 384 frames), so this is exactly what a question about the
    video shows the model; pass the result in a message to ask about it without decoding again.
    ``fps=None`` spreads ``max_frames`` frames evenly over the whole video. ``num_frames`` is
    ``molmo_utils``' name for ``max_frames``.
    """
    budget = _budget(max_frames, num_frames)
    if fps is not None and (
        isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not 0 < fps < math.inf
    ):
        raise ValueError(f"fps must be a number > 0 (or None to spread the frames evenly), got {fps!r}.")
    path = _check_video_file(video)
    index = _index(path)
    times, indices = _plan(index, fps, budget)
    try:
        frames = _read_pyav(path, index, indices)
    except Exception as err:
        raise _unreadable(path, err) from None
    return VideoFrames(frames, times, indices, index.info)


def _budget(max_frames: int | None, num_frames: int | None) -> int:
    if max_frames is not None and num_frames is not None and max_frames != num_frames:
        raise ValueError(
            f"give max_frames or num_frames (the same thing), not both: {max_frames}, {num_frames}"
        )
    budget = next((n for n in (max_frames, num_frames) if n is not None), DEFAULT_MAX_FRAMES)
    if isinstance(budget, bool) or not isinstance(budget, numbers.Integral) or budget < 1:
        raise ValueError(f"max_frames must be a whole number >= 1, got {budget!r}.")
    return int(budget)


def _plan(index: _AvIndex, fps: float | None, max_frames: int) -> tuple[list[float], list[int]]:
    """(sample times, frame indices): molmo_utils' PyAV reader, step for step, so the floats match."""
    from molmo_utils.vision_process import sample_times

    info = index.info
    times = np.asarray(sample_times(info.duration, max_frames, "uniform_last_frame", max_fps=fps))
    # Each frame ends where the next one starts (in the stream's own clock); the last ends at the
    # duration, and the first frame's start is the offset of time 0.
    ends = np.array([float(p * index.time_base) for p in index.pts[1:]] + [info.duration])
    offset = float(index.pts[0] * index.time_base)
    chosen = np.minimum(np.searchsorted(ends, times + offset, side="right"), len(ends) - 1)
    return [float(t) for t in times], [int(i) for i in chosen]


def _check_video_file(path: str | os.PathLike) -> Path:
    """Catch the common mistakes early, with a message that says what to do."""
    if isinstance(path, str) and urllib.parse.urlsplit(path).scheme.lower() in ("http", "https"):
        return download(path, kind="video")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"expected the path or URL of a video, got {type(path).__name__}")
    path = local_path(path) or Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No video file at {path}. Check the path (it is relative to {Path.cwd()}).")
    if not path.is_file():
        raise ValueError(f"{path} is not a file (a folder?). Pass the path of a video file.")
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        raise ValueError(
            f"{path} is empty (0 bytes): the download or copy failed. Delete it and copy it again; if it came "
            "from a URL, fetch it again with download(url, force=True)."
        )
    if sniff_kind(head) == "image":
        raise ValueError(f"{path} is an image, not a video. Use load_image() for images.")
    return path


def _unreadable(path: Path, cause: BaseException) -> ValueError:
    """One clear error for a file FFmpeg cannot read, chained to the cause."""
    error = ValueError(
        f"Cannot read video {path} ({cause}). The file may be corrupt, incomplete or not a video: check "
        "that it plays in a video player; if it came from a URL, fetch it again with "
        "download(url, force=True); or re-encode it, e.g. `ffmpeg -i in.mov -c:v libx264 -pix_fmt yuv420p out.mp4`."
    )
    error.__cause__ = cause
    return error


# ---------------------------------------------------------------------------------------------
# The reader. PyAV is faster than the usual recipes (scripts/benchmark_frames.py): it seeks only
# when the next wanted frame lies after another keyframe, skips decoding frames that nothing
# references (B-frames) unless wanted, and splits the work between CPU cores, each with its own
# decoder. Frames are identified by their presentation timestamp, so the index is exact.


class _AvIndex(NamedTuple):
    pts: list[int]  # presentation timestamps in display order: frame i has pts[i]
    keyframes: list[int]  # frame indices of keyframes, increasing
    time_base: Fraction
    info: VideoInfo


def _index(path: Path) -> _AvIndex:
    """Read every packet header once (no decoding): exact frame count, order and keyframes."""
    stat = path.stat()
    try:
        return _index_of(str(path.resolve()), stat.st_mtime_ns, stat.st_size, path)
    except Exception as err:
        raise _unreadable(path, err) from None


@functools.lru_cache(maxsize=8)  # keyed on mtime and size: video_info then sample_frames reads once
def _index_of(resolved: str, mtime_ns: int, size: int, path: Path) -> _AvIndex:
    import av

    with av.open(resolved) as container:
        fmt = container.format.name
        if fmt.endswith("_pipe") or fmt == "image2":
            raise ValueError(f"it is a still image ({fmt}), not a video; use load_image() for images")
        if not container.streams.video:
            raise ValueError("it has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
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
        time_base, stream_duration = stream.time_base, stream.duration
    if not pts:
        raise ValueError("it has no video frames")
    if not rate:
        raise ValueError("its frame rate is unknown")
    pts.sort()
    position = {p: i for i, p in enumerate(pts)}
    keyframes = sorted({0} | {position[p] for p in key_pts})
    # molmo_utils' duration, literally: its test compares the stream duration in seconds with the
    # last pts in ticks, so in practice the end is the last frame's start plus one frame.
    end = stream_duration * time_base if stream_duration is not None else None
    if end is None or end < pts[-1]:
        end = pts[-1] * time_base + 1 / Fraction(rate)
    duration = float(end - pts[0] * time_base)
    info = VideoInfo(path, float(rate), len(pts), duration, int(width), int(height))
    return _AvIndex(pts, keyframes, Fraction(time_base), info)


def _read_pyav(path: Path, index: _AvIndex, indices: Sequence[int]) -> np.ndarray:
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
