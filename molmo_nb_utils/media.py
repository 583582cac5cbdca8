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

Videos are shown upright, as people see them: a phone video stored 640x360 with a 90-degree
rotation in its display matrix is decoded and turned to 360x640 (``VideoInfo.rotation`` says by how
much), so the model, the drawings and point coordinates all use the upright pixels, as images with
EXIF orientation do. (``molmo_utils`` ignores the rotation and would show such a video sideways.)

Memory: the frames are decoded into one array allocated up front (never a list of frames and then a
stacked copy), and when that array would not fit in the memory available, ``sample_frames`` says so
before decoding, with an ``fps``, ``max_frames`` or size that would fit. Images larger than
``MAX_IMAGE_PIXELS`` are decoded at a reduced scale (JPEG) or refused before they are decoded.
"""

from __future__ import annotations

import bisect
import functools
import io
import math
import numbers
import os
import re
import urllib.parse
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import av
import numpy as np
import psutil
from molmo_utils.vision_process import sample_times
from PIL import ExifTags, Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from molmo_nb_utils.checks import positive_int
from molmo_nb_utils.downloads import download, local_path, sniff_kind
from molmo_nb_utils.grounding import nearest_index

__all__ = [
    "FramePlan",
    "VideoFrames",
    "VideoInfo",
    "frame_times",
    "frames_of",
    "image_size",
    "load_image",
    "plan_frames",
    "planned_frames",
    "sample_frames",
    "video_info",
]

# What Molmo2 was trained with: 2 frames per second for QA and pointing, up to 384 frames.
# Tracking works best with more frames per second (the model card uses 8).
DEFAULT_FPS = 2.0
DEFAULT_MAX_FRAMES = 384
TRACKING_FPS = 8.0

# Images up to this many pixels load in full: a 50 MP phone photo (8160x6120) does, a 108 MP one
# (12000x9000) too. Beyond it a JPEG (or MPO) is decoded at 1/2, 1/4 or 1/8 scale (libjpeg does that
# while decoding, so the full image is never in memory): a 200 MP phone photo loads at 1/2. Other formats
# are refused (past Pillow's own limit, about 179 MP, Pillow refuses them on opening): a 560 KB PNG of
# 12000x12000 would otherwise take gigabytes. Molmo2 itself sees at most a few 378 px crops.
MAX_IMAGE_PIXELS = 120_000_000
# Share of the available memory the decoded frames of one video may take; the processor, the model
# and the drawings need the rest.
MEMORY_SHARE = 0.8

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
        with warnings.catch_warnings(), _open(fp) as image:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # ours is MAX_IMAGE_PIXELS
            _limit_pixels(image, name)  # reads the header only: nothing is decoded yet
            image.load()
            return _upright_rgb(image, own=True)
    except Image.DecompressionBombError as err:  # Pillow's own refusal, past twice its limit (~179 MP)
        pixels = re.search(r"\((\d+) pixels\)", str(err))  # Pillow: "Image size (N pixels) exceeds ..."
        size = f"{int(pixels.group(1)) / 1e6:.0f} megapixels" if pixels else "past Pillow's own limit"
        raise ValueError(_too_large(name, size, jpeg_hint=False)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        if isinstance(err, _TooLarge):
            raise ValueError(str(err)) from None
        raise ValueError(
            f"Cannot read {name} as an image ({err}). It may be truncated or not an image: open it in an "
            "image viewer, and if it was downloaded, fetch it again with download(url, force=True)."
        ) from err


class _TooLarge(ValueError):
    pass


def _too_large(name: str, size: str, *, jpeg_hint: bool = True) -> str:
    return (
        f"{name} is too large to load: {size}, more than the {MAX_IMAGE_PIXELS / 1e6:g} megapixels "
        "load_image decodes (a 50 MP phone photo loads; Molmo2 sees at most a few 378x378 crops of any "
        "image). Scale it down first, e.g. to 8000 px on the long side with an image editor or "
        "`magick big.png -resize 8000x8000 smaller.png`"
        + (", or save it as JPEG, which loads at a reduced scale." if jpeg_hint else ".")
    )


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file, upright (EXIF orientation applied), from its header alone.

    The size in which a reader's true points are given. It is the full size: past
    ``MAX_IMAGE_PIXELS`` a JPEG loads smaller (see ``load_image``).
    """
    try:
        with warnings.catch_warnings(), _open(Path(path)) as image:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            width, height = image.size
            turned = image.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8)
    except Image.DecompressionBombError as err:
        raise ValueError(_too_large(str(path), "past Pillow's own limit", jpeg_hint=False)) from err
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"Cannot read {path} as an image ({err}): open it in an image viewer.") from err
    return (height, width) if turned else (width, height)


def image_orientation(path: str | os.PathLike) -> tuple[tuple[int, int], int]:
    """(width, height) of an image file as stored, and its EXIF orientation (1: stored upright), from its
    header alone: what a mask drawn on the stored pixels needs to be turned as ``load_image`` turns them."""
    try:
        with warnings.catch_warnings(), _open(Path(path)) as image:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return image.size, int(image.getexif().get(ExifTags.Base.Orientation, 1) or 1)
    except Image.DecompressionBombError as err:
        raise ValueError(_too_large(str(path), "past Pillow's own limit", jpeg_hint=False)) from err
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"Cannot read {path} as an image ({err}): open it in an image viewer.") from err


def _open(fp: Path | io.BytesIO) -> Image.Image:
    """The image, opened (header only). A JPEG is opened by Pillow's JPEG reader itself.

    Why: ``Image.open`` refuses anything past twice Pillow's limit (about 179 MP) before a reduced
    decode can be asked for, and phones shoot 200 MP JPEGs (16320x12240). The JPEG reader reads the
    header without that check; ``_limit_pixels`` then sets the scale, our own limit. An MPO (the
    multi-picture JPEG of many cameras) is read as its first picture, the photo itself.
    """
    if isinstance(fp, Path):
        with open(fp, "rb") as f:
            head = f.read(3)
    else:
        head = fp.getvalue()[:3]
    if head == b"\xff\xd8\xff":
        return JpegImagePlugin.JpegImageFile(fp)
    return Image.open(fp)


def _limit_pixels(image: Image.Image, name: str) -> None:
    """Past MAX_IMAGE_PIXELS: ask libjpeg for a 1/2, 1/4 or 1/8 scale decode, or refuse (other formats)."""
    width, height = image.size
    if width * height <= MAX_IMAGE_PIXELS:
        return
    if image.format in ("JPEG", "MPO"):  # an MPO's pictures are JPEGs
        scale = next((s for s in (2, 4, 8) if (width // s) * (height // s) <= MAX_IMAGE_PIXELS), 8)
        image.draft("RGB", (math.ceil(width / scale), math.ceil(height / scale)))
        if image.size[0] * image.size[1] <= MAX_IMAGE_PIXELS:
            return
    raise _TooLarge(_too_large(name, f"{width}x{height} pixels ({width * height / 1e6:.0f} megapixels)"))


def _upright_rgb(image: Image.Image, own: bool = False) -> Image.Image:
    """EXIF-rotated RGB image; alpha composited on white, 16-bit grey scaled to 8 bits.

    A new image, and never more than one extra copy at a time: with ``own`` (an image just loaded
    here) the rotation is done in place.
    """
    try:
        if own:
            ImageOps.exif_transpose(image, in_place=True)
        else:
            image = ImageOps.exif_transpose(image)  # a new image
    except Exception:  # a broken EXIF block should not make a readable photo unusable
        image = image if own else image.copy()
    return rgb_image(image, own=True)


def rgb_image(image: Image.Image, own: bool = False) -> Image.Image:
    """The picture in RGB as the model gets it, not turned: alpha composited on white, 16-bit grey scaled to
    8 bits (not clipped). A new image unless ``own`` (an image nobody else holds) is already RGB."""
    mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image if mode == "RGBA" else image.convert("RGBA")
        white = Image.new("RGB", rgba.size, (255, 255, 255))
        white.paste(rgba, mask=rgba.getchannel("A"))  # in place: one RGB and one alpha plane more
        return white
    if mode.startswith("I") or mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16") or values.max(initial=0) > 255:
            values = values / 257.0  # 0..65535 -> 0..255
        gray = np.clip(np.round(values), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    return image if own and mode == "RGB" else image.convert("RGB")


# ---------------------------------------------------------------------------------------------
# Videos


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


@dataclass(frozen=True)
class FramePlan:
    """Which frames of a video Molmo2 is shown, worked out once and carried from then on.

    ``times[k]`` is the time written before frame ``k`` in the prompt (the model answers in these
    times), ``indices[k]`` the index of that frame in the video, ``size`` the (width, height) of the
    upright frames shown: what point coordinates scale to. Answers, results, drawings, scores and
    training examples read these, never sample again.
    """

    times: tuple[float, ...]
    indices: tuple[int, ...]
    size: tuple[int, int]

    def __post_init__(self) -> None:
        if len(self.times) != len(self.indices):
            raise ValueError(
                f"a frame plan needs one index per time, got {len(self.times)} and {len(self.indices)}"
            )


@dataclass(frozen=True, eq=False)
class VideoFrames:
    """The frames Molmo2 is shown from one video, and what the processor is told about them.

    ``plan`` says which frames they are (prompt times, video frame indices, size);
    ``timestamps[k]`` is the time written before frame ``k`` in the prompt, ``indices[k]`` the
    index of that frame in the video. Unpacks as ``frames, timestamps = sample_frames(...)``.
    """

    frames: np.ndarray  # (N, H, W, 3) uint8 RGB, upright
    plan: FramePlan
    info: VideoInfo

    @property
    def timestamps(self) -> list[float]:
        """The prompt time of each frame shown, in seconds."""
        return list(self.plan.times)

    @property
    def indices(self) -> list[int]:
        """The video frame index of each frame shown."""
        return list(self.plan.indices)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels: what point coordinates scale to."""
        return self.plan.size

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
    """Frame rate, frame count, duration, upright size and rotation of a video (reads packet
    headers and decodes one frame)."""
    path = _check_video_file(path)
    return _index(path).info


def frame_times(
    seconds: float, *, fps: float | None = DEFAULT_FPS, max_frames: int = DEFAULT_MAX_FRAMES
) -> list[float]:
    """The prompt times of the frames Molmo2 is shown of a ``seconds``-long video: THE sampling rule.

    ``0, 1/fps, 2/fps, ...`` below the duration, plus the duration itself; past ``max_frames`` of
    them (or with ``fps=None``), ``max_frames`` times spread evenly from 0 to the duration
    (``molmo_utils.vision_process.sample_times``, the rule the model cards use).
    """
    if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real) or not 0 < seconds < math.inf:
        raise ValueError(f"need seconds > 0 (the video's duration), got {seconds!r}")
    _check_fps(fps)
    budget = positive_int(max_frames, "max_frames")
    return [float(t) for t in sample_times(seconds, budget, "uniform_last_frame", max_fps=fps)]


def planned_frames(
    seconds: float, *, fps: float | None = DEFAULT_FPS, max_frames: int = DEFAULT_MAX_FRAMES
) -> int:
    """How many frames Molmo2 sees of a ``seconds``-long video (``frame_times``' rule), without the video."""
    return len(frame_times(seconds, fps=fps, max_frames=max_frames))


def plan_frames(
    video: str | os.PathLike,
    max_frames: int | None = None,
    fps: float | None = DEFAULT_FPS,
    *,
    num_frames: int | None = None,
) -> FramePlan:
    """Which frames ``sample_frames`` shows of ``video`` (times, indices, size), without decoding them.

    Reads the packet headers only: what training and scoring need to put ground truth on the
    frames a run shows.
    """
    budget = _budget(max_frames, num_frames)
    _check_fps(fps)
    index = _index(_check_video_file(video))
    return _frame_plan(index, fps, budget)


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
    _check_fps(fps)
    path = _check_video_file(video)
    index = _index(path)
    return _decode(path, index, _frame_plan(index, fps, budget), fps)


def frames_of(video: str | os.PathLike, plan: FramePlan) -> VideoFrames:
    """Decode exactly the frames ``plan`` names: those a run showed (``ItemResult.plan``), not sampled again.

    Why: the plan was worked out once, when the model was asked; a picture or a score of that answer
    needs the same frames, whatever the settings are now. A plan that does not fit the video
    (another size, frame indices past its end) is refused: the file is not the one answered.
    """
    if not isinstance(plan, FramePlan):
        raise TypeError(
            f"frames_of takes a FramePlan (plan_frames, ItemResult.plan), got {type(plan).__name__}"
        )
    path = _check_video_file(video)
    index = _index(path)
    info = index.info
    outside = [i for i in plan.indices if not 0 <= i < info.num_frames]
    if tuple(plan.size) != (info.width, info.height) or outside:
        raise ValueError(
            f"{path.name} is not the video these frames were planned for (frames {plan.size[0]}x{plan.size[1]}"
            f"{f', up to index {max(outside)}' if outside else ''}; the video is {info.width}x{info.height} "
            f"with {info.num_frames} frames): was the file replaced? Ask about it again."
        )
    return _decode(path, index, plan, None)


def _decode(path: Path, index: _AvIndex, plan: FramePlan, fps: float | None) -> VideoFrames:
    """The frames of ``plan``, decoded into one array (refused before decoding if it would not fit)."""
    frames = _frames_array(index.info, plan.times, fps, len(plan.times))
    try:
        _read_pyav(path, index, plan.indices, frames)
    except MemoryError:
        raise
    except Exception as err:
        raise _unreadable(path, err) from None
    return VideoFrames(frames, plan, index.info)


def _check_fps(fps: Any) -> None:
    if fps is not None and (
        isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not 0 < fps < math.inf
    ):
        raise ValueError(f"fps must be a number > 0 (or None to spread the frames evenly), got {fps!r}.")


def _available_memory() -> int:
    """Bytes of memory this process can still use without swapping (what the OS says is available)."""
    return int(psutil.virtual_memory().available)


def _frames_array(info: VideoInfo, times: Sequence[float], fps: float | None, budget: int) -> np.ndarray:
    """The one array the frames are decoded into; a clear MemoryError when it would not fit.

    The message gives what would fit: fewer frames (``max_frames``), a lower ``fps``, or the video
    scaled down. Nothing is wrong with the file, so it never says "corrupt".
    """
    frame_bytes = info.width * info.height * 3
    need = len(times) * frame_bytes
    available = _available_memory()
    allowed = int(available * MEMORY_SHARE)
    if need <= allowed:
        try:
            return np.empty((len(times), info.height, info.width, 3), np.uint8)
        except (
            MemoryError
        ):  # the OS said it was free, the allocator disagrees: the setting is not the problem
            raise MemoryError(
                f"{len(times)} frames of {info.path.name} at {info.width}x{info.height} need {need / 1e9:.2f} GB, "
                "which the system would not allocate just now: free some memory (other notebooks, "
                "gc.collect()) and try again. The file itself is fine."
            ) from None
    fit = allowed // frame_bytes
    ways = []
    if fit >= 1:
        ways.append(f"max_frames={fit}" + (f" (at fps={fps:g})" if fps else ""))
        lower = _fps_that_fits(info.duration, fit) if fps else None
        if lower is not None and lower < fps:
            ways.append(f"fps={lower:g}")
    scale = math.sqrt(allowed / need)
    width, height = int(info.width * scale) // 2 * 2, int(info.height * scale) // 2 * 2
    if width >= 16 and height >= 16:
        ways.append(
            f"the video scaled down to {width}x{height} first, e.g. "
            f"`ffmpeg -i {info.path.name} -vf scale={width}:{height} smaller.mp4`"
        )
    raise MemoryError(
        f"{len(times)} frames of {info.path.name} at {info.width}x{info.height} need "
        f"{need / 1e9:.2f} GB of memory, but only {allowed / 1e9:.2f} GB can be used "
        f"({MEMORY_SHARE:.0%} of the {available / 1e9:.2f} GB available now). "
        + ("These would fit: " + "; or ".join(ways) + ". " if ways else "Free some memory first. ")
        + "The file itself is fine."
    )


def _fps_that_fits(duration: float, frames: int) -> float | None:
    """The highest fps, in steps of 0.1 (then 0.01), whose sampling of ``duration`` takes at most ``frames``."""
    for step in (0.1, 0.01):
        fps = math.floor(max(frames - 1, 0) / max(duration, 1e-9) / step) * step
        while fps >= step - 1e-12:
            if planned_frames(max(duration, 1e-9), fps=fps, max_frames=10**9) <= frames:
                return round(fps, 2)
            fps -= step
    return None


def _budget(max_frames: int | None, num_frames: int | None) -> int:
    if max_frames is not None and num_frames is not None and max_frames != num_frames:
        raise ValueError(
            f"give max_frames or num_frames (the same thing), not both: {max_frames}, {num_frames}"
        )
    budget = next((n for n in (max_frames, num_frames) if n is not None), DEFAULT_MAX_FRAMES)
    return positive_int(budget, "max_frames")


def _plan(index: _AvIndex, fps: float | None, max_frames: int) -> tuple[list[float], list[int]]:
    """(sample times, frame indices): molmo_utils' PyAV reader, step for step, so the floats match."""
    info = index.info
    times = np.asarray(frame_times(info.duration, fps=fps, max_frames=max_frames))
    # Each frame ends where the next one starts (in the stream's own clock); the last ends at the
    # duration, and the first frame's start is the offset of time 0.
    ends = np.array([float(p * index.time_base) for p in index.pts[1:]] + [info.duration])
    offset = float(index.pts[0] * index.time_base)
    chosen = np.minimum(np.searchsorted(ends, times + offset, side="right"), len(ends) - 1)
    return [float(t) for t in times], [int(i) for i in chosen]


def _frame_plan(index: _AvIndex, fps: float | None, max_frames: int) -> FramePlan:
    times, indices = _plan(index, fps, max_frames)
    return FramePlan(tuple(times), tuple(indices), (index.info.width, index.info.height))


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
    return _AvIndex(pts, keyframes, Fraction(time_base), info)


def _rotation(container, stream) -> int:
    """The counter-clockwise turn (0, 90, 180, 270) that shows the stored frames upright.

    FFmpeg gives each decoded frame the stream's display matrix (a phone's "rotate" tag); PyAV
    reads its angle as ``VideoFrame.rotation``. Angles that are not quarter turns are rounded to one.
    """
    container.seek(0, stream=stream, backward=True)
    for frame in container.decode(stream):
        return round(getattr(frame, "rotation", 0) / 90) % 4 * 90
    return 0


def _read_pyav(path: Path, index: _AvIndex, indices: Sequence[int], out: np.ndarray) -> None:
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
    workers = max(1, min(len(runs), _cpu_count(), 4))
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
    path: Path, index: _AvIndex, runs: list[list[int]], slots: dict[int, list[int]], out: np.ndarray
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
    container, stream, index: _AvIndex, run, key, slots, out: np.ndarray, *, skip: bool
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


def _cpu_count() -> int:
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
    path = _check_video_file(video)
    info = _index(path).info
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
        raise _unreadable(path, err) from None
