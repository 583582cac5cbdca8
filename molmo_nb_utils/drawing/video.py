"""Video files: browser-playable H.264 MP4, annotated track videos, GIF previews, inline players.

Videos are written as H.264 MP4 (yuv420p, even width and height, ``+faststart``), the format every
browser plays inline; files are written under a temporary name and renamed at the end, so an
interrupted run never leaves a half-written file behind. Frames are read with ``media``'s decoder,
upright, as the model was shown them.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from IPython.display import Image as IPythonImage
from IPython.display import Video
from PIL import Image
from tqdm.auto import tqdm

from molmo_nb_utils.checks import positive_int_or_none
from molmo_nb_utils.drawing.style import style_for, to_pil
from molmo_nb_utils.drawing.tracks import check_trail, draw_tracks_on, index_tracks
from molmo_nb_utils.grounding import Point
from molmo_nb_utils.media import VideoFrames, iter_video_frames, plan_for_times, video_info
from molmo_nb_utils.paths import atomic_path

VIDEO_PRESET = "superfast"  # measured: x264 "veryfast" is slower than real time for 720p on 2 cores
VIDEO_CRF = 23


def video_rate(fps: float | Fraction) -> Fraction:
    """fps as the exact fraction containers want (29.97002997 -> 30000/1001)."""
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not 0 < fps < math.inf:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    return fps if isinstance(fps, Fraction) else Fraction(float(fps)).limit_denominator(100_000)


def _to_video_frame(rgb: np.ndarray) -> av.VideoFrame:
    # OpenCV's RGB -> I420 matches swscale's BT.601 conversion and is about 3x faster.
    return av.VideoFrame.from_ndarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420), format="yuv420p")


def write_video(
    frames: Iterable[Any], out_path: str | os.PathLike, fps: float | Fraction, *, preset: str = VIDEO_PRESET
) -> Path:
    """Write RGB frames (arrays or PIL images, all one size) to a browser-playable H.264 MP4.

    Odd widths or heights lose their last column or row (yuv420p needs even sizes). The file is
    written under a temporary name and renamed when complete.
    """
    out_path = Path(out_path)
    rate = video_rate(fps)
    with (
        atomic_path(out_path) as tmp,
        av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out,
    ):
        stream = None
        for n, frame in enumerate(frames):
            rgb = frame if isinstance(frame, np.ndarray) else np.asarray(to_pil(frame))
            if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
                raise ValueError(
                    f"frame {n} must be an (H, W, 3) uint8 RGB array, got {rgb.dtype} {rgb.shape}"
                )
            if stream is None:
                size = rgb.shape[:2]
                height, width = size[0] // 2 * 2, size[1] // 2 * 2
                if height < 2 or width < 2:
                    raise ValueError(f"frames must be at least 2x2 pixels, got {size[1]}x{size[0]}")
                stream = out.add_stream(
                    "libx264", rate=rate, options={"preset": preset, "crf": str(VIDEO_CRF)}
                )
                stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                stream.thread_type = "AUTO"
            elif rgb.shape[:2] != size:
                raise ValueError(
                    f"frame {n} is {rgb.shape[1]}x{rgb.shape[0]} but the first frame was {size[1]}x{size[0]}; "
                    "all frames of a video must have one size"
                )
            video_frame = _to_video_frame(rgb[:height, :width])
            video_frame.pts = n
            video_frame.time_base = 1 / rate
            out.mux(stream.encode(video_frame))
        if stream is None:
            raise ValueError(f"write_video got no frames for {out_path}")
        out.mux(stream.encode(None))
    return out_path


def render_tracks_video(
    video: str | os.PathLike | VideoFrames,
    points: Iterable[Point],
    out_path: str | os.PathLike,
    *,
    trail: int = 8,
    max_width: int | None = None,
    progress: bool = True,
) -> Path:
    """Draw tracks on every frame of ``video`` and save a browser-playable H.264 MP4 at its frame rate.

    Frame-accurate: ``video`` is best the ``VideoFrames`` the model was shown (``answer.video``):
    then the sample at time t is drawn from exactly the frame shown at t until the next sample
    (the rule of :func:`draw_tracks`). Given a path, each time starts at the frame on screen then, as
    sampling shows it (``plan_for_times``: at 29.97 fps the time 0.5 s is frame 14, not ``round(t * fps)``).
    ``max_width`` scales wider videos down (points scale with them).

    A phone video stored sideways with a rotation is drawn and written upright (points are in
    upright pixels, as ``sample_frames`` gives them), so the MP4 plays upright in every player
    without needing the rotation tag.
    """
    tracks = index_tracks(points)  # the arguments first, before a long decode
    check_trail(trail)
    seen = video if isinstance(video, VideoFrames) else None
    info = seen.info if seen is not None else video_info(video)
    plan = (
        seen.plan if seen is not None else plan_for_times(info.path, tracks.times) if tracks.times else None
    )
    fps = info.fps
    src_w, src_h = info.width, info.height  # upright, as the points are
    if max_width is not None and src_w > max_width:
        width, height = max(2, max_width // 2 * 2), max(2, round(src_h * max_width / src_w) // 2 * 2)
    else:
        width, height = src_w // 2 * 2, src_h // 2 * 2
    resize = (width, height) != (src_w // 2 * 2, src_h // 2 * 2)
    scale = (width / src_w, height / src_h) if resize else (1.0, 1.0)
    starts = [plan.frame_at(t) for t in tracks.times] if plan is not None else []
    style = style_for(width, height)

    def annotated() -> Iterator[np.ndarray]:
        k = -1
        for index, rgb in enumerate(iter_video_frames(info.path, (width, height) if resize else None)):
            rgb = np.ascontiguousarray(rgb[:height, :width])  # OpenCV draws on contiguous arrays
            while k + 1 < len(starts) and starts[k + 1] <= index:
                k += 1
            if k >= 0:
                draw_tracks_on(rgb, tracks, k, trail, scale, style)
            yield rgb

    frames = tqdm(annotated(), total=info.num_frames, disable=not progress, unit="frame", desc=info.path.name)
    try:
        return write_video(frames, out_path, fps)
    finally:
        frames.close()


def write_gif(
    frames: Iterable[Any],
    out_path: str | os.PathLike,
    fps: float,
    *,
    max_width: int = 320,
    max_frames: int | None = None,
) -> Path:
    """A small looping GIF preview: frames scaled down to ``max_width``, at most ``max_frames`` of them.

    With ``max_frames`` the frames are picked evenly across the clip and each is shown longer, so
    the preview lasts as long as the video. Frames are held in memory after scaling down.
    """
    rate = float(video_rate(fps))
    if max_width < 2:
        raise ValueError(f"max_width must be >= 2 pixels, got {max_width}")
    max_frames = positive_int_or_none(max_frames, "max_frames", "every frame")
    small = []
    for frame in frames:
        picture = to_pil(frame)
        if picture.width > max_width:
            size = (max_width, max(1, round(picture.height * max_width / picture.width)))
            picture = picture.resize(size, Image.Resampling.BILINEAR)
        small.append(picture)
    if not small:
        raise ValueError(f"write_gif got no frames for {out_path}")
    seconds = len(small) / rate
    if max_frames is not None and len(small) > max_frames:
        small = [small[i] for i in np.linspace(0, len(small) - 1, max_frames).round().astype(int)]
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        small[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=small[1:],
            duration=max(20, round(1000 * seconds / len(small))),  # browsers slow down shorter delays
            loop=0,
        )
    return out_path


def show_video(path: str | os.PathLike, *, width: int | None = None) -> Any:
    """An object that shows an MP4 or GIF inline in a notebook, embedded so it survives export and offline use.

    Shown ``width`` pixels wide; by default at its own width, at most 640 px, never enlarged
    (an enlarged GIF is blurry). Embedding puts the whole file in the notebook: keep clips short
    and small (``max_width``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    suffix = path.suffix.lower()
    if width is None and suffix in (".gif", ".mp4", ".m4v"):
        if suffix == ".gif":
            with Image.open(path) as gif:
                own = gif.width
        else:
            own = video_info(path).width
        width = min(own, 640)
    if suffix == ".gif":
        return IPythonImage(filename=str(path), width=width)
    if suffix in (".mp4", ".m4v"):
        return Video(
            str(path),
            embed=True,
            mimetype="video/mp4",
            width=width,
            html_attributes="controls loop muted autoplay playsinline",
        )
    raise ValueError(f"show_video shows .mp4 and .gif files, got {path.name}")
