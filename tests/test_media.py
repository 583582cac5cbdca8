"""media: images as the model sees them, and exactly the video frames it is shown.

Test videos are made here: 64x48, 10 fps, 3 s (30 frames), H.264 with B-frames and a keyframe
every 8 frames, and frame i is a flat grey of level 8 * i + 4, so every decoded frame says which
frame it is (``coded_video`` writes the index in stripes instead, for longer videos). Expected
frames are worked out by hand from the rule in media.plan's docs, and compared with molmo_utils.
"""

from __future__ import annotations

import io
import math
import re
import struct
import subprocess
import sys
import zlib
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from molmo_utils import fetch_video
from molmo_utils.vision_process import load_video_pyav_noseek
from PIL import Image

from molmo_nb_utils import media
from molmo_nb_utils.asking import Answer
from molmo_nb_utils.media import VideoInfo, fit, images, load_image, reader, sample_frames, video_info
from molmo_nb_utils.media import video as video_module

FPS, NUM_FRAMES, W, H = 10, 30, 64, 48


def write_video(path: Path, num_frames: int = NUM_FRAMES, fps: int = FPS, gop: int = 8) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {
            "preset": "veryfast",
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=3",
        }
        for i in range(num_frames):
            pixels = np.full((H, W, 3), 8 * i + 4, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return path


def codes(frames: np.ndarray) -> list[int]:
    """The frame index each decoded frame carries."""
    return [round((float(f.mean()) - 4) / 8) for f in frames]


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "index.mp4")


@pytest.fixture(autouse=True)
def _fresh_index_cache():
    reader._index_of.cache_clear()
    yield
    reader._index_of.cache_clear()


# ---------------------------------------------------------------------------------------------
# Video facts and planning


def test_video_info(video):
    assert video_info(video) == VideoInfo(video, 10.0, 30, 3.0, 64, 48)
    assert video_info(str(video)).duration == 3.0  # first frame's start to the last frame's end


def test_test_video_has_unreferenced_frames_and_keyframes_every_8(video):
    """The skipping and seeking paths are only exercised if the file really has both."""
    with av.open(str(video)) as container:
        packets = [p for p in container.demux(video=0) if p.size]
    all_pts = sorted(p.pts for p in packets)
    assert [all_pts.index(p.pts) for p in packets if p.is_keyframe] == [0, 8, 16, 24]
    with av.open(str(video)) as container:
        container.streams.video[0].codec_context.skip_frame = "NONREF"
        kept = sum(1 for _ in container.decode(video=0))
    assert 10 <= kept < NUM_FRAMES  # some frames are referenced by no other frame


def coded_video(path: Path, num_frames: int, rate: Fraction | int, width: int = 80, height: int = H) -> Path:
    """A video whose frame i shows i in binary as 10 vertical stripes (any rate, up to 1024 frames)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "x264-params": "keyint=12:min-keyint=12:scenecut=0:bframes=2"}
        for i in range(num_frames):
            pixels = np.zeros((height, width, 3), np.uint8)
            for bit in range(10):
                if (i >> bit) & 1:
                    pixels[:, bit * 8 : bit * 8 + 8] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return path


def stripe_codes(frames) -> list[int]:
    return [sum(1 << b for b in range(10) if f[:, b * 8 + 2 : b * 8 + 6, 1].mean() > 127) for f in frames]


# The rule by hand, for the 3 s, 10 fps test video (frame i shows from i/10 s to (i+1)/10 s, the
# duration is 3.0 s): sample times 0, 1/fps, ... below 3.0 and then 3.0 itself, each showing frame
# floor(10 t), the time 3.0 clamped to the last frame, 29.
@pytest.mark.parametrize(
    ("kwargs", "expected_codes", "expected_times"),
    [
        ({}, [0, 5, 10, 15, 20, 25, 29], [0, 0.5, 1, 1.5, 2, 2.5, 3]),  # chat's default: 2 fps
        ({"fps": 2}, [0, 5, 10, 15, 20, 25, 29], [0, 0.5, 1, 1.5, 2, 2.5, 3]),
        ({"fps": 1}, [0, 10, 20, 29], [0, 1, 2, 3]),
        # budget full: (4 - 1) / 2 = 1.5 s < 3 s, so 4 times spread evenly from 0 to 3 s
        ({"fps": 2, "max_frames": 4}, [0, 10, 20, 29], [0, 1, 2, 3]),
        ({"num_frames": 4}, [0, 10, 20, 29], [0, 1, 2, 3]),  # molmo_utils' name for the budget
        ({"fps": None, "max_frames": 7}, [0, 5, 10, 15, 20, 25, 29], [0, 0.5, 1, 1.5, 2, 2.5, 3]),
        ({"fps": None, "max_frames": 1}, [0], [0]),
        ({"fps": 0.25}, [0, 29], [0, 3]),  # only 0 is below 3 s; then the end
    ],
)
def test_sample_frames_rule_by_hand(video, kwargs, expected_codes, expected_times):
    seen = sample_frames(video, **kwargs)
    assert codes(seen.frames) == expected_codes == seen.indices
    assert seen.timestamps == pytest.approx(expected_times, abs=1e-12)
    assert seen.frames.shape == (len(expected_codes), H, W, 3) and seen.frames.dtype == np.uint8


def test_video_frames_unpack_and_carry_the_processor_metadata(video):
    seen = sample_frames(video, fps=2)
    frames, times = seen  # unpacks like the old (frames, timestamps) pair
    assert frames is seen.frames and times == seen.timestamps
    assert seen.size == (W, H) and seen.info == video_info(video)
    meta = seen.metadata()
    assert meta["fps"] == 10.0 and meta["total_num_frames"] == 30 and meta["duration"] == 3.0
    assert (meta["width"], meta["height"]) == (W, H)
    # the processor writes frames_indices / fps before each frame: the sample times
    assert list(meta["frames_indices"] / meta["fps"]) == pytest.approx([0, 0.5, 1, 1.5, 2, 2.5, 3])
    assert seen.frame_at(1.04) == 10 and seen.frame_at(2.9) == 29
    assert "7 frames of index.mp4" in repr(seen)


def test_frames_of_a_plan_are_the_frames_it_names_whatever_the_settings_now(video, tmp_path):
    """What a picture of a recorded answer decodes: the run's plan, never a new sampling."""
    plan = media.plan_frames(video, 4, fps=2)
    shown = media.frames_of(video, plan)
    assert shown.plan == plan and codes(shown.frames) == [0, 10, 20, 29]
    assert np.array_equal(shown.frames, sample_frames(video, 4, fps=2).frames)
    odd = media.FramePlan((0.0, 1.0), (3, 3), (W, H))  # any frames, even one twice
    assert codes(media.frames_of(video, odd).frames) == [3, 3]
    with pytest.raises(ValueError, match="not the video these frames were planned for .* up to index 30"):
        media.frames_of(video, media.FramePlan((0.0,), (30,), (W, H)))
    with pytest.raises(ValueError, match=r"not the video .* \(frames 32x24; the video is 64x48"):
        media.frames_of(video, media.FramePlan((0.0,), (0,), (32, 24)))
    with pytest.raises(TypeError, match="frames_of takes a FramePlan"):
        media.frames_of(video, [0.0])


def test_the_end_of_the_video_can_repeat_the_last_frame(tmp_path):
    """25 fps, 101 frames: 4.04 s. At 2 fps the times are 0, 0.5, ..., 4.0 and the end, 4.04 s:
    4.0 s is the start of frame 100, the last one, and 4.04 s is clamped to it, so the model sees
    frame 100 twice (molmo_utils does the same)."""
    path = coded_video(tmp_path / "pal.mp4", 101, 25)
    seen = sample_frames(path, fps=2)
    assert seen.indices == [0, 12, 25, 37, 50, 62, 75, 87, 100, 100]  # floor(12.5 k), then clamped
    assert stripe_codes(seen.frames) == seen.indices
    assert seen.timestamps[-2:] == pytest.approx([4.0, 4.04])


# Videos of odd rates and lengths, against molmo_utils itself: what chat shows the model must be
# exactly what AllenAI's own preprocessing shows it (same frames, same times, same metadata).
MOLMO_UTILS_CASES = [
    (30, 95),  # 3.17 s
    (Fraction(30000, 1001), 301),  # NTSC 29.97 fps, 10.04 s
    (25, 101),  # 4.04 s
    (12, 49),  # 4.08 s
    (Fraction(24000, 1001), 37),  # 23.976 fps, 1.54 s
]


@pytest.fixture(scope="module")
def odd_videos(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("odd")
    return {
        (rate, n): coded_video(folder / f"v_{float(rate):.3f}_{n}.mp4", n, rate)
        for rate, n in MOLMO_UTILS_CASES
    }


@pytest.mark.parametrize(("rate", "num_frames"), MOLMO_UTILS_CASES)
@pytest.mark.parametrize(("fps", "budget"), [(2, 384), (8, 384), (2, 16), (8, 64), (None, 9)])
def test_same_frames_times_and_metadata_as_molmo_utils(odd_videos, rate, num_frames, fps, budget):
    path = odd_videos[(rate, num_frames)]
    ref_frames, ref = load_video_pyav_noseek({"video": str(path), "max_fps": fps, "num_frames": budget})
    seen = sample_frames(path, budget, fps)
    ours = seen.metadata()
    assert len(seen.frames) == len(ref_frames) <= budget
    assert stripe_codes(seen.frames) == stripe_codes(ref_frames) == seen.indices
    assert all(np.array_equal(a, b) for a, b in zip(seen.frames, ref_frames, strict=True))
    for key in ("fps", "duration", "total_num_frames", "width", "height"):
        assert ours[key] == ref[key], key
    ref_indices = np.asarray(ref["frames_indices"], dtype=np.float64)
    assert np.array_equal(ours["frames_indices"], ref_indices)
    # what the prompt says before each frame: the processor's frames_indices / fps, one decimal
    assert [f"{i / ours['fps']:.1f}" for i in ours["frames_indices"]] == [
        f"{i / ref['fps']:.1f}" for i in ref_indices
    ]
    assert seen.timestamps == pytest.approx(list(ref_indices / ref["fps"]), abs=1e-9)


def test_default_molmo_utils_reader_agrees(video):
    """molmo_utils' default reader (PyAV, or decord where installed) gives the same frames here."""

    ref_frames, ref = fetch_video({"video": str(video)})  # molmo_utils' defaults: 2 fps, 384 frames
    seen = sample_frames(video)
    assert codes(ref_frames) == codes(seen.frames) and len(ref_frames) == 7


@settings(max_examples=200, deadline=None)
@given(
    total=st.integers(1, 3000),
    rate=st.sampled_from(
        [
            Fraction(8),
            Fraction(25, 2),
            Fraction(24000, 1001),
            Fraction(25),
            Fraction(30000, 1001),
            Fraction(60),
        ]
    ),
    fps=st.one_of(st.none(), st.floats(0.05, 30)),
    budget=st.integers(1, 400),
)
def test_plan_properties(total, rate, fps, budget):
    """For any video: at most `budget` times, from 0 up to the duration, each on the frame shown then."""
    time_base = Fraction(1, 90000)
    step = int(time_base.denominator / rate) if (time_base.denominator / rate).denominator == 1 else None
    pts = (
        [round(i / rate / time_base) for i in range(total)]
        if step is None
        else [i * step for i in range(total)]
    )
    duration = float(pts[-1] * time_base + 1 / rate)
    index = reader.AvIndex(pts, [0], time_base, VideoInfo(Path("v.mp4"), float(rate), total, duration, 8, 8))
    times = media.frame_times(duration, fps=fps, max_frames=budget)
    indices = reader.frames_on_screen(index, times)
    assert 1 <= len(times) <= budget and times[0] == 0 and times == sorted(times)
    assert len(times) == 1 or times[-1] == pytest.approx(duration)  # the end is always shown
    assert indices == sorted(indices) and 0 <= indices[0] and indices[-1] <= total - 1
    for t, i in zip(times, indices, strict=True):  # frame i shows from pts[i] until pts[i + 1]
        assert pts[i] * time_base <= Fraction(t) + Fraction(1, 10**9)
        assert i == total - 1 or Fraction(t) < pts[i + 1] * time_base + Fraction(1, 10**9)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "8", True])
def test_bad_budget(bad, video):
    with pytest.raises(ValueError, match="max_frames must be a whole number >= 1"):
        sample_frames(video, max_frames=bad)
    with pytest.raises(ValueError, match="max_frames must be a whole number >= 1"):
        sample_frames(video, num_frames=bad)


def test_budget_given_twice(video):
    with pytest.raises(ValueError, match="not both"):
        sample_frames(video, max_frames=4, num_frames=5)


@pytest.mark.parametrize("bad", [0, -2, math.nan, math.inf, "2", True])
def test_bad_fps(bad, video):
    with pytest.raises(ValueError, match="fps must be a number > 0"):
        sample_frames(video, fps=bad)


# ---------------------------------------------------------------------------------------------
# Exact frames, fast


def test_every_frame_including_b_frames_is_the_plain_decode(video):
    seen = sample_frames(video, fps=10)  # 31 times: 0.0 .. 2.9 and the end, 3.0 s (frame 29 again)
    assert codes(seen.frames) == [*range(30), 29]
    with av.open(str(video)) as container:  # the same pixels as a plain full decode
        plain = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert np.array_equal(seen.frames[:30], plain)


def test_skipping_unreferenced_frames_still_delivers_wanted_ones(video, monkeypatch):
    """The fast path (skip what nothing references unless wanted) needs no plain-decode retry."""
    calls = []
    original = reader._decode_run

    def spy(*args, skip):
        calls.append(skip)
        return original(*args, skip=skip)

    monkeypatch.setattr(reader, "_decode_run", spy)
    assert codes(sample_frames(video, fps=10).frames) == [*range(30), 29]
    assert calls and all(calls)


def test_sample_frames_split_between_threads(video, monkeypatch):
    """With 4 workers every run of frames gets its own decoder; still exact and in order."""
    monkeypatch.setattr(reader, "cpu_count", lambda: 4)
    seen = sample_frames(video, fps=4)  # 0, 0.25, ..., 2.75 and 3.0: floor(2.5 k), then 29
    assert codes(seen.frames) == [0, 2, 5, 7, 10, 12, 15, 17, 20, 22, 25, 27, 29]


def test_file_url_with_spaces(tmp_path, video):
    folder = tmp_path / "sp ace"
    folder.mkdir()
    copy = folder / "clip.mp4"
    copy.write_bytes(video.read_bytes())
    assert codes(sample_frames(copy.as_uri(), fps=1).frames) == [0, 10, 20, 29]


def test_missing_video(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope.mp4"))):
        sample_frames(tmp_path / "nope.mp4")
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        video_info(tmp_path / "nope.mp4")


def _bad_video(tmp_path: Path, kind: str, video: Path) -> Path:
    path = tmp_path / f"{kind}.mp4"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        path.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    elif kind == "text":
        path.write_text("this is a shopping list, not a video\n" * 20)
    elif kind in ("png", "jpeg"):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), "red").save(buffer, format=kind)
        path.write_bytes(buffer.getvalue())
    elif kind == "no_frames":
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=10)
            stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
            container.start_encoding()
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("empty", "is empty \\(0 bytes\\).*download\\(url, force=True\\)"),
        ("random", "corrupt, incomplete or not a video"),
        ("truncated", "corrupt, incomplete or not a video"),
        ("text", "corrupt, incomplete or not a video"),
        ("png", "is an image, not a video. Use load_image"),
        ("jpeg", "is an image, not a video. Use load_image"),
        ("no_frames", "no video"),
    ],
)
def test_bad_video_files(tmp_path, video, kind, message):
    path = _bad_video(tmp_path, kind, video)
    for fn in (video_info, sample_frames):
        with pytest.raises(ValueError, match=message) as caught:
            fn(path)
        assert str(path) in str(caught.value)


def test_folder_is_not_a_video(tmp_path):
    with pytest.raises(ValueError, match="is not a file"):
        sample_frames(tmp_path)


def test_not_a_path():
    with pytest.raises(TypeError, match="path or URL of a video"):
        sample_frames(42)


# ---------------------------------------------------------------------------------------------
# Phone videos: stored sideways, shown upright

RW, RH = 64, 36  # the stored size of the rotated test videos


def rotated_video(path: Path, degrees: int, num_frames: int = 6) -> Path:
    """A 64x36 video with a display rotation, as phones write; a white box in the stored top-left."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = RW, RH, "yuv420p"
        stream.set_display_rotation(degrees)  # counter-clockwise, as VideoFrame.rotation reads it
        for _ in range(num_frames):
            pixels = np.zeros((RH, RW, 3), np.uint8)
            pixels[:12, :20] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return path


def _box(frame: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the white box, inclusive."""
    rows, cols = np.nonzero(frame[..., 0] > 128)
    return rows.min(), rows.max(), cols.min(), cols.max()


# Where the stored top-left box is once the frame is upright, worked out by hand: turned a quarter
# counter-clockwise (90), the stored top-left corner goes to the bottom-left; half a turn (180),
# bottom-right; three quarters (270, i.e. a quarter clockwise), top-right.
@pytest.mark.parametrize(
    ("degrees", "size", "box"),
    [
        (0, (64, 36), (0, 11, 0, 19)),
        (90, (36, 64), (44, 63, 0, 11)),
        (180, (64, 36), (24, 35, 44, 63)),
        (270, (36, 64), (0, 19, 24, 35)),
    ],
)
def test_rotated_videos_are_shown_upright(tmp_path, degrees, size, box):
    path = rotated_video(tmp_path / f"phone{degrees}.mp4", degrees)
    info = video_info(path)
    assert (info.width, info.height, info.rotation) == (*size, degrees)
    seen = sample_frames(path)
    assert seen.size == size and seen.frames.shape[1:] == (size[1], size[0], 3)
    assert (seen.metadata()["width"], seen.metadata()["height"]) == size  # what the processor is told
    assert all(_box(frame) == box for frame in seen.frames)
    # OpenCV applies the display matrix on its own (CAP_PROP_ORIENTATION_AUTO): the same picture.
    capture = cv2.VideoCapture(str(path))
    ok, bgr = capture.read()
    capture.release()
    assert ok and np.abs(bgr[..., ::-1].astype(int) - seen.frames[0]).mean() < 2


def test_points_on_a_rotated_video_are_in_upright_pixels(tmp_path):
    seen = sample_frames(rotated_video(tmp_path / "phone.mp4", 90))
    # The box's centre in the upright 36x64 frame is (6, 54): 0..1000 coordinates 167, 844.
    answer = Answer('<points coords="0.0 1 167 844">box</points>', videos=[seen])
    (point,) = answer.points()
    assert abs(point.x - 6) < 0.5 and abs(point.y - 54) < 0.5
    frame = seen.frames[0]
    assert frame[round(point.y), round(point.x), 0] > 128  # on the white box


# ---------------------------------------------------------------------------------------------
# Memory: one copy of the frames, and a clear message when they will not fit


def test_frames_are_decoded_into_one_array(tmp_path):
    """Peak memory of sample_frames is one copy of the frames, not a list of them plus a stack."""
    path = coded_video(tmp_path / "hd.mp4", 30, 30, width=1920, height=1080)  # 1 s at 30 fps
    script = (
        "import sys\n"
        "from molmo_nb_utils.media import sample_frames\n"
        "sample_frames(sys.argv[1], fps=1)  # libraries and decoders loaded: not the frames\n"
        f"{MEASURE}"
        "frames = sample_frames(sys.argv[1], fps=30, max_frames=1000).frames\n"
        "print(grown_kb(), frames.nbytes // 1024)\n"
    )
    grown_kb, frames_kb = map(int, _run_python(script, str(path)).split())
    assert frames_kb == 31 * 1920 * 1080 * 3 // 1024  # 188 MB
    assert grown_kb < 1.5 * frames_kb  # a second copy would take it to 2x


def test_frames_that_do_not_fit_fail_before_decoding_and_say_what_fits(video, monkeypatch):
    frame_bytes = W * H * 3
    monkeypatch.setattr(fit, "available_memory", lambda: int(8 * frame_bytes / media.MEMORY_SHARE) + 100)
    decoded = []
    monkeypatch.setattr(video_module, "read_frames", lambda *args: decoded.append(args))
    with pytest.raises(MemoryError) as caught:
        sample_frames(video, fps=10)  # 31 frames; 8 fit
    message = str(caught.value)
    assert not decoded and "corrupt" not in message and "re-encode" not in message
    assert "31 frames of index.mp4 at 64x48" in message and "max_frames=8 (at fps=10)" in message
    fps = float(re.search(r"; or fps=([0-9.]+)", message).group(1))
    width, height = map(int, re.search(r"scaled down to (\d+)x(\d+)", message).groups())
    # Each suggestion really fits: the frames it takes need no more than the memory allowed.
    monkeypatch.undo()
    monkeypatch.setattr(fit, "available_memory", lambda: int(8 * frame_bytes / media.MEMORY_SHARE) + 100)
    assert len(sample_frames(video, fps=10, max_frames=8).frames) == 8
    assert len(sample_frames(video, fps=fps).frames) <= 8 and fps >= 2  # 2 fps: 7 frames
    assert 31 * width * height * 3 <= 8 * frame_bytes and width >= 0.9 * W * math.sqrt(8 / 31)


def test_not_even_one_frame_fits(video, monkeypatch):
    monkeypatch.setattr(fit, "available_memory", lambda: 1000)
    with pytest.raises(MemoryError, match="Free some memory first") as caught:
        sample_frames(video)
    assert "max_frames" not in str(caught.value)


# ---------------------------------------------------------------------------------------------
# Images


def _jpeg_with_orientation(orientation: int) -> bytes:
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 8, 8))  # red square in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif, quality=95)
    return buffer.getvalue()


def test_exif_orientation_applied(tmp_path):
    path = tmp_path / "phone.jpg"
    path.write_bytes(_jpeg_with_orientation(6))  # 6: display rotated 90 degrees clockwise
    image = load_image(path)
    assert image.size == (20, 40)
    # Turned clockwise, the stored top-left corner ends up top-right.
    assert image.getpixel((17, 2))[0] > 200 and image.getpixel((2, 2))[2] > 200
    assert load_image(path.read_bytes()).size == (20, 40)


def test_image_from_path_bytes_pil(tmp_path):
    original = Image.new("RGB", (30, 10), (10, 200, 30))
    path = tmp_path / "a.png"
    original.save(path)
    for src in (path, str(path), path.read_bytes(), original, f"file://{path}"):
        image = load_image(src)
        assert image.mode == "RGB" and image.size == (30, 10)
        assert image.getpixel((5, 5)) == (10, 200, 30)


def test_returned_image_is_loaded_and_closed(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (4, 4), "white").save(path)
    image = load_image(path)
    path.unlink()  # the file is gone; the image must not need it
    assert image.getpixel((0, 0)) == (255, 255, 255)
    assert getattr(image, "fp", None) is None


def test_transparency_on_white():
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (255, 0, 0, 128))
    image = load_image(rgba)
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 255, 255)
    red = image.getpixel((1, 0))
    assert red[0] == 255 and 125 <= red[1] <= 129 and red[1] == red[2]  # half red over white


def test_palette_grayscale_cmyk_16bit():
    palette = Image.new("P", (2, 2))
    palette.putpalette([0, 0, 0, 12, 34, 56] + [0] * 762)
    palette.putpixel((0, 0), 1)
    assert load_image(palette).getpixel((0, 0)) == (12, 34, 56)

    transparent = palette.copy()
    transparent.info["transparency"] = 0  # palette entry 0 is see-through
    assert load_image(transparent).getpixel((1, 1)) == (255, 255, 255)

    assert load_image(Image.new("L", (2, 2), 77)).getpixel((0, 0)) == (77, 77, 77)
    assert load_image(Image.new("CMYK", (2, 2), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)

    sixteen = Image.fromarray(np.array([[0, 257 * 100], [65535, 257 * 200]], dtype=np.uint16))
    assert sixteen.mode.startswith("I;16")
    image = load_image(sixteen)
    assert [image.getpixel(p)[0] for p in [(0, 0), (1, 0), (0, 1), (1, 1)]] == [0, 100, 255, 200]


def test_sixteen_bit_png_file(tmp_path):
    path = tmp_path / "depth.png"
    Image.fromarray(np.full((3, 3), 257 * 50, dtype=np.uint16)).save(path)
    assert load_image(path).getpixel((1, 1)) == (50, 50, 50)


def test_missing_image(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "gone.jpg"))):
        load_image(tmp_path / "gone.jpg")


def test_unreadable_images(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ValueError, match=re.escape(f"Cannot read {text} as an image")):
        load_image(text)
    truncated = tmp_path / "half.jpg"
    truncated.write_bytes(_jpeg_with_orientation(1)[:300])
    with pytest.raises(ValueError, match="half.jpg"):
        load_image(truncated)
    with pytest.raises(ValueError, match="the given bytes \\(5 bytes\\)"):
        load_image(b"hello")
    with pytest.raises(TypeError, match="not int"):
        load_image(42)


# ---------------------------------------------------------------------------------------------
# Very large images: a limit that photos pass, decoded small or refused before they are in memory


# Peak memory growth from here on, from Linux's own counters of this process (VmHWM is the peak
# resident size; ru_maxrss would not do: it carries over the parent's peak through fork and exec).
MEASURE = (
    "def _status(key):\n"
    "    line = next(l for l in open('/proc/self/status') if l.startswith(key + ':'))\n"
    "    return int(line.split()[1])\n"
    "now_kb = _status('VmRSS')\n"
    "def grown_kb():\n"
    "    return _status('VmHWM') - now_kb\n"
)


def _run_python(script: str, *args: str) -> str:
    """Run ``script`` in a fresh Python (its own peak memory); return what it prints."""

    return subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def _peak_rss_of_load(path: Path) -> tuple[str, int]:
    """Load ``path`` in a fresh Python; (the size or the error, peak memory growth in MB)."""
    script = (
        "import io\n"
        "from PIL import Image\n"
        "from molmo_nb_utils.media import load_image\n"
        "tiny = io.BytesIO()\n"
        "Image.new('RGB', (2, 2)).save(tiny, 'PNG')\n"
        "load_image(tiny.getvalue())  # what loads lazily is loaded now: not the image\n"
        f"{MEASURE}"
        "try:\n"
        f"    result = 'x'.join(map(str, load_image({str(path)!r}).size))\n"
        "except ValueError as err:\n"
        "    result = str(err)\n"
        "print(grown_kb() // 1024, result)\n"
    )
    grown, result = _run_python(script).split(" ", 1)
    return result, int(grown)


def _huge_png(path: Path, side: int) -> Path:
    """An RGBA PNG of side x side transparent pixels: a few hundred KB on disk (written in pieces)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    squeeze = zlib.compressobj(9)
    row = bytes(1 + 4 * side)  # filter byte 0, then transparent black
    data = b"".join(squeeze.compress(row) for _ in range(side)) + squeeze.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )
    return path


def test_a_huge_png_is_refused_before_it_is_decoded(tmp_path):
    path = _huge_png(tmp_path / "bomb.png", 12000)
    assert path.stat().st_size < 1_000_000
    with Image.open(path) as image:
        assert image.size == (12000, 12000)  # a real, valid PNG (576 MB as RGBA)
    message, grown_mb = _peak_rss_of_load(path)
    assert "bomb.png is too large to load: 12000x12000 pixels (144 megapixels)" in message
    assert "Scale it down first" in message
    assert grown_mb < 200  # not decoded: one RGBA copy alone is 549 MB (and loading took 3.2 GB)


def test_past_pillows_own_limit_the_message_is_ours_and_gives_no_jpeg_advice(tmp_path, monkeypatch):
    # Pillow's default limit: molmo_utils.fetch_image lifts it for the whole process (MAX_IMAGE_PIXELS = None),
    # and an earlier test in this worker may have called it.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", int(1024 * 1024 * 1024 // 4 // 3))
    path = _huge_png(tmp_path / "huge.png", 14000)  # 196 MP: Pillow refuses it on opening
    with pytest.raises(ValueError) as info:
        load_image(path)
    message = str(info.value)
    assert "huge.png is too large to load: 196 megapixels" in message and "Scale it down first" in message
    assert "JPEG" not in message and "decompression bomb" not in message


def test_a_50_megapixel_photo_loads_in_full(tmp_path):
    path = tmp_path / "phone_50mp.jpg"
    Image.new("RGB", (8160, 6120), (90, 140, 200)).save(path, quality=80)
    size, grown_mb = _peak_rss_of_load(path)
    assert size == "8160x6120"
    assert grown_mb < 3 * 8160 * 6120 * 3 / 2**20  # under three RGB copies (150 MB each)


def test_past_the_limit_a_jpeg_is_decoded_at_a_reduced_scale(tmp_path, monkeypatch):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (400, 300), (200, 30, 30)).save(path)
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 10_000)  # 400x300 is 12x that: 1/4 scale fits
    image = load_image(path)
    assert image.size == (100, 75) and image.getpixel((50, 40))[0] > 180
    png = tmp_path / "big.png"
    Image.new("RGB", (400, 300)).save(png)
    with pytest.raises(ValueError, match="big.png is too large to load: 400x300 pixels"):
        load_image(png)
    with pytest.raises(ValueError, match="the given bytes .* too large to load"):
        load_image(png.read_bytes())


def test_a_jpeg_past_pillows_own_limit_is_decoded_at_a_reduced_scale(tmp_path, monkeypatch):
    """A 200 MP phone JPEG (16320x12240) is past twice Pillow's limit: scaled here as 400x300 past 2 x 50000."""
    path = tmp_path / "phone_200mp.jpg"
    Image.new("RGB", (400, 300), (30, 200, 30)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)  # Image.open refuses past 100,000 pixels
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 40_000)  # ours: 1/2 scale (200x150 = 30,000) fits
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)  # what load_image met first
    image = load_image(path)
    assert image.size == (200, 150) and image.getpixel((100, 75))[1] > 180
    assert load_image(path.read_bytes()).size == (200, 150)


def test_an_mpo_jpeg_is_read_as_its_first_picture_at_a_reduced_scale(tmp_path, monkeypatch):
    """Cameras and phones write multi-picture JPEGs (MPO), which Pillow names "MPO", not "JPEG"."""
    path = tmp_path / "camera.jpg"
    first, second = Image.new("RGB", (400, 300), (200, 30, 30)), Image.new("RGB", (160, 120), (0, 0, 200))
    first.save(path, format="MPO", save_all=True, append_images=[second])
    with Image.open(path) as opened:
        assert opened.format == "MPO" and opened.n_frames == 2
    assert load_image(path).size == (400, 300)
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 10_000)  # 1/4 scale fits
    image = load_image(path)
    assert image.size == (100, 75) and image.getpixel((50, 40))[0] > 180  # the first picture


def test_image_size_is_the_upright_full_size_from_the_header(tmp_path, monkeypatch):
    """What true points are given in: upright (EXIF), and the full size even where load_image scales."""
    phone = tmp_path / "phone.jpg"
    phone.write_bytes(_jpeg_with_orientation(6))  # stored 40x20, shown 20x40
    assert media.image_size(phone) == (20, 40) == load_image(phone).size
    big = tmp_path / "big.jpg"
    Image.new("RGB", (400, 300)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)  # past twice Pillow's limit, as a 200 MP photo
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 40_000)
    assert media.image_size(big) == (400, 300) and load_image(big).size == (200, 150)
    (tmp_path / "not.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="Cannot read .*not.png as an image"):
        media.image_size(tmp_path / "not.png")
