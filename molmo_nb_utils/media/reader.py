"""The video reader: a file's facts, the frames on screen at given times, and their decoding (PyAV).

Videos are shown upright, as people see them: a phone video stored 640x360 with a 90-degree
rotation in its display matrix is decoded and turned to 360x640 (``VideoInfo.rotation`` says by how
much), so the model, the drawings and point coordinates all use the upright pixels, as images with
EXIF orientation do. (``molmo_utils`` ignores the rotation and would show such a video sideways.)

PyAV is faster than the usual recipes (scripts/benchmark_frames.py): it seeks only when the next
wanted frame lies after another keyframe, skips decoding frames that nothing references (B-frames)
unless wanted, and splits the work between CPU cores, each with its own decoder. Frames are
identified by their presentation timestamp, so the index is exact.
"""

from __future__ import annotations

import bisect
import functools
import os
import urllib.parse
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np

from molmo_nb_utils.downloads import download, local_path, sniff_kind

__all__ = ["VideoInfo", "iter_video_frames"]


@dataclass(frozen=True)
class VideoInfo:
    """A video's facts, measured as ``molmo_utils`` measures them (``duration`` runs from the first
    frame's start to the last frame's end).

    ``width`` and ``height`` are the upright size, as a player shows the video; ``rotation`` is the
    counter-clockwise turn in degrees (0, 90, 180 or 270) that brings the stored frames upright (a
    phone video stored 640x360 with rotation 90 or 270 is 360x640 here).
    """

    path: Path
    fps: float
    num_frames: int
    duration: float
    width: int
    height: int
    rotation: int = 0


class AvIndex(NamedTuple):
    pts: list[int]  # presentation timestamps in display order: frame i has pts[i]
    keyframes: list[int]  # frame indices of keyframes, increasing
    time_base: Fraction
    info: VideoInfo


def index_video(path: Path) -> AvIndex:
    """Read every packet header once (no decoding): exact frame count, order and keyframes."""
    stat = path.stat()
    try:
        return _index_of(str(path.resolve()), stat.st_mtime_ns, stat.st_size, path)
    except Exception as err:
        raise unreadable(path, err) from None


@functools.lru_cache(maxsize=8)  # keyed on mtime and size: video_info then sample_frames reads once
def _index_of(resolved: str, mtime_ns: int, size: int, path: Path) -> AvIndex:
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
        rotation = _rotation(container, stream) if pts else 0
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
    if rotation in (90, 270):
        width, height = height, width
    info = VideoInfo(path, float(rate), len(pts), duration, int(width), int(height), rotation)
    return AvIndex(pts, keyframes, Fraction(time_base), info)


def frames_on_screen(index: AvIndex, times: Sequence[float]) -> list[int]:
    """The index of the frame on screen at each time: molmo_utils' PyAV reader, step for step, so the floats match."""
    info = index.info
    # Each frame ends where the next one starts (in the stream's own clock); the last ends at the
    # duration, and the first frame's start is the offset of time 0.
    ends = np.array([float(p * index.time_base) for p in index.pts[1:]] + [info.duration])
    offset = float(index.pts[0] * index.time_base)
    chosen = np.minimum(
        np.searchsorted(ends, np.asarray(times, dtype=float) + offset, side="right"), len(ends) - 1
    )
    return [int(i) for i in chosen]


def _rotation(container, stream) -> int:
    """The counter-clockwise turn (0, 90, 180, 270) that shows the stored frames upright.

    FFmpeg gives each decoded frame the stream's display matrix (a phone's "rotate" tag); PyAV
    reads its angle as ``VideoFrame.rotation``. Angles that are not quarter turns are rounded to one.
    """
    container.seek(0, stream=stream, backward=True)
    for frame in container.decode(stream):
        return round(getattr(frame, "rotation", 0) / 90) % 4 * 90
    return 0


def read_frames(path: Path, index: AvIndex, indices: Sequence[int], out: np.ndarray) -> None:
    """Decode frame ``indices[k]`` into ``out[k]``, upright; a frame wanted twice is decoded once."""
    slots: dict[int, list[int]] = {}
    for k, i in enumerate(indices):
        slots.setdefault(i, []).append(k)
    wanted = sorted(slots)
    # Runs of wanted frames that one forward decode serves: a new run starts where a keyframe lies
    # after the previous wanted frame, since seeking there is cheaper than decoding up to it.
    runs: list[list[int]] = []
    for i in wanted:
        key = index.keyframes[bisect.bisect_right(index.keyframes, i) - 1]
        if runs and key <= runs[-1][-1]:
            runs[-1].append(i)
        else:
            runs.append([i])
    workers = max(1, min(len(runs), cpu_count(), 4))
    chunks = _split_runs(runs, index.keyframes, workers)
    if len(chunks) == 1:
        _decode_runs(path, index, chunks[0], slots, out)
    else:  # each thread writes its own frames' slots of ``out``
        with ThreadPoolExecutor(len(chunks)) as pool:  # PyAV releases the GIL while decoding
            list(pool.map(lambda chunk: _decode_runs(path, index, chunk, slots, out), chunks))


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


def _decode_runs(
    path: Path, index: AvIndex, runs: list[list[int]], slots: dict[int, list[int]], out: np.ndarray
) -> None:
    got: set[int] = set()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"  # frame threads only add latency here; cores are used by runs
        for run in runs:
            key = index.keyframes[bisect.bisect_right(index.keyframes, run[0]) - 1]
            got |= _decode_run(container, stream, index, run, key, slots, out, skip=True)
            if not all(i in got for i in run):  # an odd file: decode plainly from the start
                got |= _decode_run(container, stream, index, run, 0, slots, out, skip=False)
            missing = [i for i in run if i not in got]
            if missing:
                raise ValueError(f"frames {missing[:5]} could not be decoded")


def _decode_run(
    container, stream, index: AvIndex, run, key, slots, out: np.ndarray, *, skip: bool
) -> set[int]:
    wanted = {index.pts[i]: i for i in run}
    codec = stream.codec_context
    turns = index.info.rotation // 90
    container.seek(index.pts[key], stream=stream, backward=True)  # to the keyframe; resets decoder
    got: set[int] = set()
    for packet in container.demux(stream):
        if skip:  # decode frames no other frame references only when we want them
            codec.skip_frame = "DEFAULT" if packet.pts in wanted else "NONREF"
        for frame in packet.decode():
            i = wanted.get(frame.pts)
            if i is not None:
                rgb = frame.to_ndarray(format="rgb24")  # one frame as stored; turned upright below
                for k in slots[i]:
                    out[k] = np.rot90(rgb, turns) if turns else rgb
                got.add(i)
        if len(got) == len(wanted):
            break
    codec.skip_frame = "DEFAULT"
    return got


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def iter_video_frames(video: str | os.PathLike, size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """Every frame of ``video`` in display order, upright (H, W, 3) uint8 RGB, scaled to ``size``
    (upright width, height) when given.

    Why: a renderer that draws on every frame (``render_tracks_video``) walks the whole video once,
    holding one frame at a time; ``sample_frames`` decodes only the frames shown, into one array.
    One reader for both, so a phone video is turned upright the same way everywhere.
    """
    path = check_video_file(video)
    info = index_video(path).info
    turns = info.rotation // 90
    width, height = size or (info.width, info.height)
    stored = (height, width) if turns % 2 else (width, height)  # frames are scaled as stored, then turned
    resize = (width, height) != (info.width, info.height)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                if resize:
                    rgb = frame.to_ndarray(format="rgb24", width=stored[0], height=stored[1])
                else:
                    rgb = frame.to_ndarray(format="rgb24")
                yield np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb
    except av.FFmpegError as err:
        raise unreadable(path, err) from None


def check_video_file(path: str | os.PathLike) -> Path:
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


def unreadable(path: Path, cause: BaseException) -> ValueError:
    """One clear error for a file FFmpeg cannot read, chained to the cause."""
    error = ValueError(
        f"Cannot read video {path} ({cause}). The file may be corrupt, incomplete or not a video: check "
        "that it plays in a video player; if it came from a URL, fetch it again with "
        "download(url, force=True); or re-encode it, e.g. `ffmpeg -i in.mov -c:v libx264 -pix_fmt yuv420p out.mp4`."
    )
    error.__cause__ = cause
    return error
