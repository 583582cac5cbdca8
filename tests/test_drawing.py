"""Tests for molmo_nb_utils.drawing: pixels land where the points are, videos decode and files are atomic."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import matplotlib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from molmo_nb_utils import drawing
from molmo_nb_utils.drawing import (
    color_for,
    draw_masks,
    draw_masks_on_images,
    draw_points,
    draw_points_on_images,
    draw_tracks,
    frame_grid,
    masked_frames,
    plot_timeline,
    plot_trajectories,
    render_masks_video,
    render_tracks_video,
    show_video,
    write_gif,
    write_video,
)
from molmo_nb_utils.drawing import points as drawing_points
from molmo_nb_utils.drawing import video as drawing_video
from molmo_nb_utils.drawing.masks import MASK_ALPHA, mask_title
from molmo_nb_utils.grounding import Point
from molmo_nb_utils.masks import mask_box
from molmo_nb_utils.media import sample_frames
from molmo_nb_utils.paths import INPUT_DIR

GRAY = (100, 100, 100)


def solid(width: int, height: int, color=GRAY) -> np.ndarray:
    return np.full((height, width, 3), color, dtype=np.uint8)


def pixel(image, x: int, y: int) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(image)[y, x])


def centroid(image, color) -> tuple[float, float]:
    """Mean (x, y) of the pixels exactly equal to ``color``."""
    ys, xs = np.nonzero(np.all(np.asarray(image) == color, axis=-1))
    assert len(xs) > 0, f"no pixel has colour {color}"
    return float(xs.mean()), float(ys.mean())


def make_video(path, *, width=160, height=120, fps=10, frames=20, color=(128, 128, 128)) -> None:
    """A uniform-colour H.264 clip written with PyAV directly (not with the code under test)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(frames):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(solid(width, height, color), format="rgb24")))
        out.mux(stream.encode(None))


def decode(path) -> tuple[list[np.ndarray], dict]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        facts = {
            "codec": stream.codec_context.name,
            "pix_fmt": stream.codec_context.pix_fmt,
            "size": (stream.width, stream.height),
            "fps": stream.average_rate,
        }
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return frames, facts


def close_to(actual, expected, tolerance: int) -> bool:
    return max(abs(int(a) - int(b)) for a, b in zip(actual, expected, strict=True)) < tolerance


# --- colours ---------------------------------------------------------------------------------


def test_color_for_is_stable_distinct_and_matches_tab10():
    colors = [color_for(i) for i in range(1, 11)]
    assert len(set(colors)) == 10
    assert colors == [color_for(i) for i in range(1, 11)]
    tab10 = matplotlib.colormaps["tab10"]
    assert colors == [tuple(round(c * 255) for c in tab10(i)[:3]) for i in range(10)]


# --- images ----------------------------------------------------------------------------------


def test_draw_points_colours_each_point_below_a_header_and_keeps_the_original():
    image = solid(64, 48)
    before = image.copy()
    out = draw_points(image, [Point(1, 20, 10), Point(2, 45, 30)], label="coins")
    assert isinstance(out, Image.Image)
    assert out.width == 64 and out.height > 48
    header = out.height - 48
    assert pixel(out, 20, 10 + header) == color_for(1)
    assert pixel(out, 45, 30 + header) == color_for(2)
    assert pixel(out, 2, 46 + header) == GRAY  # far from both points
    header_strip = np.asarray(out)[:header]
    assert (header_strip == 255).all(axis=-1).mean() > 0.5 and (header_strip < 100).any()  # white, with text
    assert np.array_equal(image, before)


def test_draw_points_leaves_a_pil_input_unchanged():
    image = Image.new("RGB", (64, 48), GRAY)
    draw_points(image, [Point(1, 32, 24)])
    assert image.getpixel((32, 24)) == GRAY


def test_draw_points_image_index_keeps_only_that_image_and_unassigned_points():
    points = [Point(1, 10, 10, image=1), Point(2, 50, 10, image=2), Point(3, 30, 35)]
    out = draw_points(solid(64, 48), points, image_index=2)
    header = out.height - 48
    assert pixel(out, 10, 10 + header) == GRAY
    assert pixel(out, 50, 10 + header) == color_for(2)
    assert pixel(out, 30, 35 + header) == color_for(3)


def test_draw_points_clamps_border_points_and_skips_points_outside():
    out = draw_points(solid(64, 48), [Point(1, 64, 48), Point(2, 200, 10)])
    header = out.height - 48
    assert pixel(out, 63, 47 + header) == color_for(1)
    assert not np.all(np.asarray(out) == color_for(2), axis=-1).any()


@settings(max_examples=25, deadline=None)
@given(
    width=st.integers(16, 200),
    height=st.integers(16, 200),
    fx=st.floats(0, 1),
    fy=st.floats(0, 1),
    pid=st.integers(1, 40),
)
def test_draw_points_puts_the_id_colour_under_any_point(width, height, fx, fy, pid):
    x, y = fx * (width - 1), fy * (height - 1)
    out = draw_points(solid(width, height, (0, 0, 0)), [Point(pid, x, y)])
    assert pixel(out, int(x), int(y) + out.height - height) == color_for(pid)


def test_draw_points_on_images_scales_to_one_height_and_places_each_point():
    big, small = solid(64, 48), solid(32, 24)  # small is scaled x2 to the common height 48
    points = [Point(1, 20, 10, image=1), Point(2, 16, 12, image=2)]
    out = draw_points_on_images([big, small], points, label="dogs")
    assert 128 <= out.width <= 128 + 24
    x1, y1 = centroid(out, color_for(1))
    x2, y2 = centroid(out, color_for(2))
    top = out.height - 48  # both panels are 48 px high, under their titles
    assert abs(x1 - 20) <= 1 and abs(y1 - (top + 10)) <= 1
    assert abs(x2 - (out.width - 64 + 32)) <= 1 and abs(y2 - (top + 24)) <= 1


def test_a_strip_of_wide_images_fits_the_display_and_its_labels_stay_readable():
    """Two 16:9 photos side by side were 1722 px wide, shown at 868 px: labels about 6 px high."""
    photos = [solid(1280, 720), solid(1280, 720)]
    out = draw_points_on_images(photos, [Point(7, 640, 360, image=2)])
    assert out.width <= drawing.DISPLAY_WIDTH
    ys, xs = np.nonzero(np.all(np.asarray(out) == color_for(7), axis=-1))
    assert xs.max() - xs.min() + 1 >= 12  # the marker's coloured centre
    cx, cy = xs.mean(), ys.mean()
    assert abs(cx - (out.width - out.width / 4)) < 12  # the middle of image 2
    label = np.asarray(out)[int(cy) - 30 : int(cy) + 30, int(xs.max()) + 4 : int(xs.max()) + 60]
    rows = np.nonzero(np.all(label == (255, 255, 255), axis=-1).any(axis=1))[0]
    assert rows.max() - rows.min() + 1 >= 12  # the white "7" is at least 12 px tall
    narrow = draw_points_on_images(photos, [], max_width=400)
    assert narrow.width <= 400
    with pytest.raises(ValueError, match="too small for 2 images"):
        draw_points_on_images(photos, [], max_width=20)


def test_draw_points_on_images_rejects_points_on_missing_images():
    with pytest.raises(ValueError, match=r"image\(s\) \[3\] but only 2"):
        draw_points_on_images([solid(8, 8), solid(8, 8)], [Point(1, 1, 1, image=3)])
    with pytest.raises(ValueError, match="at least one image"):
        draw_points_on_images([], [])


def test_frame_grid_size_and_point_on_the_nearest_frame():
    frames = np.stack([solid(64, 48, (20, 20, 20))] * 6)
    times = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    out = frame_grid(frames, times, points=[Point(3, 32, 24, time=1.04)], cols=3, width=300)
    assert out.width == 300
    thumb_h = 48 * 96 / 64  # three thumbnails of about 96 px across 300 px
    assert 2 * thumb_h < out.height < 2 * thumb_h + 100
    x, y = centroid(out, color_for(3))
    assert 200 < x < 300 and abs(x - (300 - 96 / 2)) < 4  # third column, point in its middle
    assert y < out.height / 2  # first row


def test_frame_grid_captions_fit_their_frames():
    frames = [solid(64, 36)] * 8
    grid = frame_grid(frames, [312.5 + k for k in range(8)], fps=24, cols=8, width=1000)  # "(frame 7500)"
    thumb_w = (1000 - 4 * 7) // 8
    top = np.asarray(grid)[:20]  # the caption row
    dark = np.nonzero((top < 100).all(axis=-1).any(axis=0))[0]
    assert len(dark) and not any(thumb_w <= x < thumb_w + 4 for x in dark)  # nothing runs into the gap
    rows = np.nonzero((top[:, :thumb_w] < 100).all(axis=-1).any(axis=1))[0]
    assert rows.max() - rows.min() + 1 >= 8  # still readable text, not shrunk to nothing


def test_frame_grid_computes_times_from_fps_and_checks_lengths():
    frames = [solid(32, 24)] * 3
    out = frame_grid(frames, None, fps=2, points=[Point(1, 16, 12, time=1.0)], cols=3, width=300)
    x, _ = centroid(out, color_for(1))
    assert x > 200  # t = 1.0 s is the third frame at 2 fps
    with pytest.raises(ValueError, match="3 frames but 2 timestamps"):
        frame_grid(frames, [0.0, 1.0])
    with pytest.raises(ValueError, match="fps > 0"):
        frame_grid(frames, None)
    with pytest.raises(ValueError, match="with .time"):
        frame_grid(frames, [0, 1, 2], points=[Point(1, 1, 1, image=1)])


def test_frame_grid_of_video_frames_captions_the_real_frame_numbers(tmp_path, monkeypatch):
    source = tmp_path / "ntsc.mp4"
    make_video(source, fps=Fraction(30000, 1001), frames=40)  # 1.33 s at 29.97 fps
    seen = sample_frames(source, fps=2)  # 0, 0.5, 1.0 and the end, 1.3347 s
    captions = []
    original = drawing_points.ImageDraw.ImageDraw.text
    monkeypatch.setattr(
        drawing_points.ImageDraw.ImageDraw,
        "text",
        lambda self, xy, text, **kw: captions.append(text) or original(self, xy, text, **kw),
    )
    out = frame_grid(seen, points=[Point(1, 80, 60, time=0.5)], cols=4, width=400)
    # floor(0.5 * 29.97) = 14, floor(1.0 * 29.97) = 29, the end is clamped to the last frame, 39
    assert [c for c in captions if c.startswith("t = ")] == [
        "t = 0.0 s (frame 0)",
        "t = 0.5 s (frame 14)",
        "t = 1.0 s (frame 29)",
        "t = 1.33 s (frame 39)",
    ]
    x, _ = centroid(out, color_for(1))
    assert 100 < x < 200  # the second thumbnail
    with pytest.raises(ValueError, match="carry their own timestamps"):
        frame_grid(seen, seen.timestamps)


# --- tracks ----------------------------------------------------------------------------------

TRACKS = [
    Point(1, 30, 30, time=0.0),
    Point(2, 120, 90, time=0.0),
    Point(1, 70, 70, time=1.0),  # object 2 is absent (occluded) at t = 1.0
]


def test_draw_tracks_draws_visible_objects_and_their_trail():
    frame = solid(160, 120)
    before = frame.copy()
    out = draw_tracks(frame, TRACKS, 1.2)
    assert isinstance(out, np.ndarray) and out.shape == frame.shape
    assert pixel(out, 70, 70) == color_for(1)
    assert pixel(out, 120, 90) == GRAY  # occluded at the latest sample, 1.0 s
    assert pixel(out, 50, 50) != GRAY  # the trail from (30, 30) to (70, 70)
    assert np.array_equal(frame, before)


def test_draw_tracks_before_between_and_at_samples():
    frame = solid(160, 120)
    assert np.array_equal(draw_tracks(frame, TRACKS, -0.1), frame)  # before the first sample
    out = draw_tracks(frame, TRACKS, 0.5)
    assert pixel(out, 30, 30) == color_for(1) and pixel(out, 120, 90) == color_for(2)
    assert pixel(draw_tracks(frame, TRACKS, 1.0), 70, 70) == color_for(1)
    with pytest.raises(ValueError, match="with .time"):
        draw_tracks(frame, [Point(1, 3, 3, image=1)], 0.0)
    with pytest.raises(ValueError, match="trail must be"):
        draw_tracks(frame, TRACKS, 0.0, trail=-1)


def test_draw_tracks_accepts_a_pil_frame_and_draws_no_trail_with_trail_0():
    out = draw_tracks(Image.new("RGB", (160, 120), GRAY), TRACKS, 1.0, trail=0)
    assert pixel(out, 70, 70) == color_for(1)
    assert pixel(out, 50, 50) == GRAY


# --- videos ----------------------------------------------------------------------------------

BACKGROUND = (128, 128, 128)
VIDEO_TRACKS = [
    Point(1, 40, 40, time=0.5),
    Point(2, 120, 30, time=0.5),
    Point(1, 80, 60, time=1.0),  # object 2 occluded from 1.0 s
    Point(1, 120, 90, time=1.5),
]


def test_render_tracks_video_is_browser_h264_and_frame_accurate(tmp_path):
    source = tmp_path / "in.mp4"
    make_video(source)
    out = render_tracks_video(source, VIDEO_TRACKS, tmp_path / "out.mp4", progress=False)
    assert out == tmp_path / "out.mp4"
    frames, facts = decode(out)
    assert facts["codec"] == "h264" and facts["pix_fmt"] == "yuv420p"
    assert facts["size"] == (160, 120) and facts["fps"] == 10
    assert len(frames) == 20
    assert np.abs(frames[4].astype(int) - BACKGROUND).max() < 12  # before the first sample: nothing drawn
    assert close_to(frames[5][40, 40], color_for(1), 60)  # round(0.5 * 10)
    assert close_to(frames[5][30, 120], color_for(2), 60)
    assert close_to(frames[10][60, 80], color_for(1), 60)  # round(1.0 * 10)
    assert not close_to(frames[10][30, 120], color_for(2), 60)  # object 2 occluded (id 1's tag may be near)
    assert close_to(frames[19][90, 120], color_for(1), 60)  # the last sample stays until the end


def test_render_tracks_video_draws_on_the_frames_the_model_was_shown(tmp_path):
    """At 29.97 fps the sample at 0.5 s shows frame 14 (floor(14.985)), not round(14.985) = 15: from the
    VideoFrames shown and from a path alike."""
    source = tmp_path / "ntsc.mp4"
    make_video(source, fps=Fraction(30000, 1001), frames=40)
    seen = sample_frames(source, fps=2)
    tracks = [Point(1, 40, 40, time=0.5)]
    frames, _ = decode(render_tracks_video(seen, tracks, tmp_path / "seen.mp4", progress=False))
    assert close_to(frames[13][40, 40], BACKGROUND, 12) and close_to(frames[14][40, 40], color_for(1), 60)
    frames, _ = decode(render_tracks_video(source, tracks, tmp_path / "path.mp4", progress=False))
    # from a path too: the frame on screen at 0.5 s, by the plan's rule (plan_for_times), not round(t * fps)
    assert close_to(frames[13][40, 40], BACKGROUND, 12) and close_to(frames[14][40, 40], color_for(1), 60)


def test_render_tracks_video_max_width_scales_frames_and_points(tmp_path):
    source = tmp_path / "in.mp4"
    make_video(source)
    frames, facts = decode(
        render_tracks_video(source, VIDEO_TRACKS, tmp_path / "o.mp4", max_width=80, progress=False)
    )
    assert facts["size"] == (80, 60)
    assert close_to(frames[10][30, 40], color_for(1), 60)


def test_render_tracks_video_of_a_phone_video_is_upright(tmp_path):
    """Stored 160x120 with a quarter-turn rotation: drawn and written upright, 120x160, no tag needed."""
    source = tmp_path / "phone.mp4"
    with av.open(str(source), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.set_display_rotation(90)
        for _ in range(10):
            pixels = solid(160, 120)
            pixels[:30, :40] = 255  # stored top-left; upright (a quarter turn anticlockwise): bottom-left
            out.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        out.mux(stream.encode(None))
    seen = sample_frames(source, fps=2)
    rendered = render_tracks_video(seen, [Point(1, 60, 20, time=0.0)], tmp_path / "out.mp4", progress=False)
    frames, facts = decode(rendered)
    assert facts["size"] == (120, 160)
    with av.open(str(rendered)) as container:
        assert next(container.decode(video=0)).rotation == 0  # upright as written: no rotation to apply
    assert frames[0][150, 10].min() > 230 and frames[0][10, 10].max() < 130  # the box, bottom-left
    assert np.abs(frames[3].astype(int) - seen.frames[1]).mean() < 6  # the frames the model saw
    assert close_to(frames[0][20, 60], color_for(1), 60)  # the point, in upright pixels


def test_render_tracks_video_leaves_no_file_when_it_fails(tmp_path, monkeypatch):
    source = tmp_path / "in.mp4"
    make_video(source)
    calls = []

    def fail_on_third_frame(*args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")

    monkeypatch.setattr(drawing_video, "draw_tracks_on", fail_on_third_frame)
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(RuntimeError, match="boom"):
        render_tracks_video(source, VIDEO_TRACKS, folder / "out.mp4", progress=False)
    assert list(folder.iterdir()) == []


def test_render_tracks_video_names_a_missing_or_unreadable_video(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.mp4"):
        render_tracks_video(tmp_path / "nowhere.mp4", VIDEO_TRACKS, tmp_path / "o.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video")
    with pytest.raises(ValueError, match="Cannot read video .*junk.mp4"):
        render_tracks_video(junk, VIDEO_TRACKS, tmp_path / "o.mp4")
    with pytest.raises(ValueError, match="trail must be"):
        render_tracks_video(junk, VIDEO_TRACKS, tmp_path / "o.mp4", trail=-2)
    with pytest.raises(ValueError, match="with .time"):
        render_tracks_video(junk, [Point(1, 2, 2, image=1)], tmp_path / "o.mp4")
    assert not (tmp_path / "o.mp4").exists()


def test_write_video_crops_odd_sizes_and_rejects_bad_frames(tmp_path):
    colors = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    frames, facts = decode(write_video([solid(33, 25, c) for c in colors], tmp_path / "odd.mp4", 5))
    assert facts["size"] == (32, 24) and len(frames) == 3
    for frame, color in zip(frames, colors, strict=True):
        assert close_to(frame[12, 16], color, 20)
    with pytest.raises(ValueError, match="one size"):
        write_video([solid(32, 24), solid(16, 12)], tmp_path / "mixed.mp4", 5)
    with pytest.raises(ValueError, match="no frames"):
        write_video([], tmp_path / "empty.mp4", 5)
    with pytest.raises(ValueError, match="fps must be a positive number"):
        write_video([solid(32, 24)], tmp_path / "zero.mp4", 0)
    assert decode(write_video([solid(32, 24)] * 2, tmp_path / "ntsc.mp4", np.float64(30000 / 1001)))[1][
        "fps"
    ] == Fraction(30000, 1001)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ntsc.mp4", "odd.mp4"]


def test_write_gif_frame_count_width_and_duration(tmp_path):
    frames = [solid(100, 80, (20 * i, 255 - 20 * i, 90)) for i in range(12)]
    with Image.open(write_gif(frames, tmp_path / "all.gif", 10)) as gif:
        assert gif.n_frames == 12 and gif.width == 100 and gif.info["duration"] == 100
    with Image.open(write_gif(frames, tmp_path / "few.gif", 10, max_width=50, max_frames=4)) as gif:
        assert gif.n_frames == 4 and gif.size == (50, 40)
        assert gif.info["duration"] == 300  # 1.2 s shown in 4 frames
    with pytest.raises(ValueError, match="no frames"):
        write_gif([], tmp_path / "none.gif", 10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.gif", "few.gif"]


def test_show_video_embeds_mp4_and_gif(tmp_path):
    mp4 = write_video([solid(32, 24)] * 2, tmp_path / "v.mp4", 5)
    html = show_video(mp4)._repr_html_()
    assert "video/mp4" in html and "base64" in html
    gif = write_gif([solid(32, 24), solid(32, 24, (0, 0, 0))], tmp_path / "v.gif", 5)
    assert show_video(gif).data[:6] == b"GIF89a"
    # Shown at its own size (an enlarged GIF is blurry), at most 640 px, or as asked.
    assert show_video(gif).width == 32 and show_video(gif, width=100).width == 100
    assert 'width="32"' in html
    wide = write_gif([solid(900, 20)], tmp_path / "wide.gif", 5, max_width=900)
    assert show_video(wide).width == 640
    with pytest.raises(FileNotFoundError, match="gone.mp4"):
        show_video(tmp_path / "gone.mp4")
    (tmp_path / "v.avi").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"\.mp4 and \.gif"):
        show_video(tmp_path / "v.avi")


# --- plots -----------------------------------------------------------------------------------


def test_plot_timeline_and_trajectories_return_savable_figures():
    from matplotlib.figure import Figure

    timeline = plot_timeline(VIDEO_TRACKS, duration=2.0, label="ball")
    assert isinstance(timeline, Figure)
    ax = timeline.axes[0]
    assert ax.get_xlim() == (0.0, 2.0) and ax.get_title() == "ball: 2 ids"
    assert len(ax.collections) == 2  # one series per id
    trajectories = plot_trajectories(solid(160, 120), VIDEO_TRACKS)
    assert [t.get_text() for t in trajectories.axes[0].get_legend().get_texts()] == [
        "id 1",
        "id 2",
        "start",
        "last seen",
    ]
    for fig in (timeline, trajectories):
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        assert buffer.getvalue()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="with .time"):
        plot_timeline([Point(1, 1, 1, image=1)])


# --- masks -----------------------------------------------------------------------------------


def square_mask(width: int, height: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_draw_masks_fills_each_mask_in_its_ids_colour_and_titles_the_count():
    image = solid(200, 150)
    masks = np.stack(
        [
            square_mask(200, 150, 20, 60, 80, 120),
            square_mask(200, 150, 120, 60, 180, 120),
            np.zeros((150, 200), bool),
        ]
    )
    out = draw_masks(image, masks, ids=[3, 5, 9], label="coins")
    header = out.height - 150
    assert out.width == 200 and header > 0  # "coins: 2 masks": the empty mask is not counted
    inside = np.asarray(out)[header + 100, 50]
    expected = np.array(GRAY) * (1 - MASK_ALPHA) + np.array(color_for(3)) * MASK_ALPHA
    assert close_to(inside, expected, 3)
    assert close_to(
        np.asarray(out)[header + 100, 150],
        np.array(GRAY) * (1 - MASK_ALPHA) + np.array(color_for(5)) * MASK_ALPHA,
        3,
    )
    assert pixel(out, 100, header + 140) == GRAY  # outside every mask
    assert mask_box(masks[0]) == (20.0, 60.0, 80.0, 120.0) and mask_box(masks[2]) == (0.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="picture they were made for"):
        draw_masks(solid(100, 100), masks, ids=[3, 5, 9])
    with pytest.raises(ValueError, match="one id per mask"):
        draw_masks(image, masks, ids=[1])


def test_draw_masks_and_draw_points_take_an_image_file_s_path_issue_31(tmp_path):
    """draw_masks(path, masks) as draw_points(path, points): the picture loaded upright, as the model saw it."""
    path = tmp_path / "photo.png"
    Image.fromarray(solid(200, 150)).save(path)
    masks = square_mask(200, 150, 20, 60, 80, 120)[None]
    from_path, from_image = (
        draw_masks(path, masks, label="coins"),
        draw_masks(solid(200, 150), masks, label="coins"),
    )
    assert np.array_equal(np.asarray(from_path), np.asarray(from_image))
    assert (
        draw_points(str(path), [Point(1, 10, 10)]).size
        == draw_points(solid(200, 150), [Point(1, 10, 10)]).size
    )


def test_a_16_bit_picture_is_drawn_scaled_as_the_model_saw_it():
    grey = Image.fromarray(np.full((20, 30), 30_000, np.uint16))
    drawn = draw_masks(grey, np.zeros((1, 20, 30), bool))
    assert pixel(drawn, 5, drawn.height - 5) == (117, 117, 117)  # 30000 / 257, not clipped to white


def test_draw_masks_on_images_puts_each_set_on_its_own_image():
    images = [solid(120, 80), solid(60, 80)]
    sets = [np.stack([square_mask(120, 80, 10, 10, 50, 50)]), np.zeros((0, 80, 60), bool)]
    out = draw_masks_on_images(images, sets)
    assert out.width <= drawing.DISPLAY_WIDTH
    with pytest.raises(ValueError, match="one set per image"):
        draw_masks_on_images(images, sets[:1])


def test_mask_titles_say_how_many_clicks_and_which_masks_are_empty_issue_31():
    """Three clicks and one blob read "3 clicks, 1 non-empty mask of 3", not "coins: 1 mask"."""
    assert mask_title("coins", 3, 1, clicks=3) == "coins: 3 clicks, 1 non-empty mask of 3"
    assert mask_title("coins", 3, 3, clicks=3) == "coins: 3 clicks, 3 masks"
    assert mask_title(None, 2, 0, clicks=2) == "2 clicks, all 2 masks empty"
    assert mask_title("Image 2", 0, 0, clicks=0) == "Image 2: no clicks"
    assert mask_title("Point to the coins.", 1, 1, clicks=1) == "Point to the coins. (1 click, 1 mask)"
    assert mask_title("coins", 3, 2) == "coins: 2 non-empty masks of 3"


def test_mask_pictures_draw_the_clicks_issue_31():
    """Each click is a numbered dot in its id's colour at the pixel clicked, on one picture, on several
    (by Point.image) and on the frames shown (by time)."""
    masks = np.stack([square_mask(200, 150, 20, 60, 80, 120), np.zeros((150, 200), bool)])
    clicks = [Point(3, 50, 90, image=1), Point(5, 150, 30, image=1)]
    out = draw_masks(solid(200, 150), masks, ids=[3, 5], clicks=clicks, label="coins")
    header = out.height - 150
    assert pixel(out, 50, header + 90) == color_for(3) and pixel(out, 150, header + 30) == color_for(5)
    plain = draw_masks(solid(200, 150), masks, ids=[3, 5], label="coins")
    assert pixel(plain, 150, header + 30) == GRAY  # no click, no dot: the empty mask shows nothing
    strip = draw_masks_on_images(
        [solid(200, 150), solid(200, 150)],
        [masks, masks[:1]],
        clicks=clicks[:1] + [Point(7, 150, 30, image=2)],
    )
    top = strip.height - 150  # both panels are drawn at full size: 408 px fit the strip
    assert pixel(strip, 50, top + 90) == color_for(3) and pixel(strip, 208 + 150, top + 30) == color_for(7)
    everywhere = draw_masks_on_images([solid(200, 150)] * 2, [masks, masks], clicks=[Point(9, 30, 30)])
    assert pixel(everywhere, 30, top + 30) == pixel(everywhere, 208 + 30, top + 30) == color_for(9)
    with pytest.raises(ValueError, match="one title per image"):
        draw_masks_on_images([solid(20, 20)], [masks[:0, :20, :20]], titles=["a", "b"])
    seen = sample_frames(INPUT_DIR / "moving_objects.mp4", fps=1)
    width, height = seen.size
    empty = [np.zeros((0, height, width), bool)] * len(seen.timestamps)
    painted = masked_frames(seen, empty, clicks=[Point(2, 100, 100, time=seen.timestamps[1])])
    assert tuple(painted[1][100, 100]) == color_for(2) and tuple(painted[0][100, 100]) != color_for(2)


def test_render_masks_video_is_upright_h264_of_the_frames_shown(tmp_path):
    seen = sample_frames(
        INPUT_DIR / "bunny_phone.mp4", fps=2
    )  # stored sideways with a rotation: shown upright
    width, height = seen.size
    assert height > width
    per_frame = [
        np.stack([square_mask(width, height, 10, 10, 60, 60 + 10 * k)]) for k in range(len(seen.timestamps))
    ]
    out = render_masks_video(seen, per_frame, tmp_path / "masks.mp4", progress=False)
    frames, facts = decode(out)
    assert facts["codec"] == "h264" and facts["pix_fmt"] == "yuv420p"
    assert facts["size"] == (width // 2 * 2, height // 2 * 2) and len(frames) == len(seen.timestamps)
    assert close_to(
        frames[0][40, 30],
        np.asarray(seen.frames[0][40, 30]) * (1 - MASK_ALPHA) + np.array(color_for(1)) * MASK_ALPHA,
        40,
    )
    with pytest.raises(ValueError, match="one set of masks per frame shown"):
        render_masks_video(seen, per_frame[:1], tmp_path / "short.mp4")
    assert not (tmp_path / "short.mp4").exists()
