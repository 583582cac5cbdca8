"""media.py: downloads (against a loopback server), images as the model sees them, exact frames.

Test videos are made here: 64x48, 10 fps, 3 s (30 frames), H.264 with B-frames and a keyframe
every 8 frames, and frame i is a flat grey of level 8 * i + 4, so every decoded frame says which
frame it is. Expected indices below are worked out by hand from the rules in media.py's docs.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import math
import re
import socket
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from molmo_nb_utils import media
from molmo_nb_utils.media import (
    ASSETS,
    Asset,
    DownloadError,
    Frames,
    VideoInfo,
    download,
    fetch_asset,
    frame_indices,
    load_image,
    sample_frames,
    video_info,
)

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
    media._av_index_of.cache_clear()
    yield
    media._av_index_of.cache_clear()


def info(num_frames: int, fps: float) -> VideoInfo:
    return VideoInfo(Path("clip.mp4"), fps, num_frames, num_frames / fps, 64, 48)


# ---------------------------------------------------------------------------------------------
# Video facts and planning


def test_video_info(video):
    assert video_info(video) == VideoInfo(video, 10.0, 30, 3.0, 64, 48)


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


@pytest.mark.parametrize(
    ("num_frames", "fps", "expected"),
    [
        (8, None, [0, 4, 8, 12, 17, 21, 25, 29]),  # 29 * k / 7 rounded
        (None, None, [0, 4, 8, 12, 17, 21, 25, 29]),  # default: 8
        (1, None, [0]),
        (2, None, [0, 29]),
        (None, 2, [0, 5, 10, 15, 20, 25]),  # t = 0, 0.5, ..., 2.5
        (None, 3, [0, 3, 6, 10, 13, 16, 20, 23, 26]),  # t = k/3 < 3 -> floor(10 k / 3)
        (4, 3, [0, 10, 16, 26]),  # of those 9: positions 0, 2.67, 5.33, 8 rounded
        (20, 3, [0, 3, 6, 10, 13, 16, 20, 23, 26]),  # fewer than asked: all kept
        (None, 0.25, [0]),  # only t = 0 is < 3 s
    ],
)
def test_frame_indices_rules(num_frames, fps, expected):
    assert frame_indices(info(30, 10.0), num_frames=num_frames, fps=fps) == expected


def test_frame_indices_float_error_absorbed():
    # 0.7 * 30 == 20.999999999999996 in floats; the frame shown at 0.7 s is frame 21.
    assert frame_indices(info(30, 30.0), fps=10) == [0, 3, 6, 9, 12, 15, 18, 21, 24, 27]


def test_frame_indices_more_than_there_are():
    assert frame_indices(info(5, 2.0), num_frames=10) == [0, 1, 2, 3, 4]
    assert frame_indices(info(5, 2.0), fps=4) == [0, 1, 2, 3, 4]  # 0,0,1,1,... each frame once


def test_frame_indices_ntsc_rate():
    ntsc = 30000 / 1001  # 29.97: duration 300 / 29.97 = 10.01 s, so t = 0 .. 10.0 (21 times)
    got = frame_indices(info(300, ntsc), fps=2)
    assert got[:6] == [0, 14, 29, 44, 59, 74]  # floor(0.5 k * 29.97)
    assert len(got) == 21 and got[-1] == 299


@pytest.mark.parametrize("bad", [0, -1, 2.5, "8", True])
def test_bad_num_frames(bad, video):
    with pytest.raises(ValueError, match="num_frames must be a whole number >= 1"):
        frame_indices(info(30, 10.0), num_frames=bad)
    with pytest.raises(ValueError, match="num_frames must be"):
        sample_frames(video, num_frames=bad)


@pytest.mark.parametrize("bad", [0, -2, math.nan, math.inf, "2"])
def test_bad_fps(bad, video):
    with pytest.raises(ValueError, match="fps must be a number > 0"):
        frame_indices(info(30, 10.0), fps=bad)
    with pytest.raises(ValueError, match="fps must be"):
        sample_frames(video, fps=bad)


@settings(max_examples=200, deadline=None)
@given(
    total=st.integers(1, 3000),
    video_fps=st.sampled_from([1.0, 8.0, 12.5, 24000 / 1001, 25.0, 30.0, 30000 / 1001, 60.0, 120.0]),
    fps=st.floats(0.05, 200),
    num_frames=st.one_of(st.none(), st.integers(1, 300)),
)
def test_frame_indices_fps_property(total, video_fps, fps, num_frames):
    """Every index is the frame shown at one of the times k / fps, and none is repeated."""
    got = frame_indices(info(total, video_fps), num_frames=num_frames, fps=fps)
    duration = total / video_fps
    shown = set()
    k = 0
    while k / fps < duration:  # a plain re-statement of the rule, one time at a time
        shown.add(min(math.floor(k / fps * video_fps + 1e-6), total - 1))
        k += 1
    assert got == sorted(set(got)) and got[0] == 0
    assert set(got) <= shown
    assert len(got) == (len(shown) if num_frames is None else min(num_frames, len(shown)))


@settings(max_examples=200, deadline=None)
@given(total=st.integers(1, 5000), num_frames=st.integers(1, 400))
def test_frame_indices_even_spacing_property(total, num_frames):
    got = frame_indices(info(total, 30.0), num_frames=num_frames)
    assert len(got) == min(num_frames, total)
    assert got[0] == 0 and (len(got) == 1 or got[-1] == total - 1)
    gaps = np.diff(got)
    assert len(gaps) == 0 or (gaps.min() >= 1 and gaps.max() - gaps.min() <= 1)


# ---------------------------------------------------------------------------------------------
# Exact frames


def test_sample_frames_num_frames_exact(video):
    result = sample_frames(video, num_frames=8)
    assert isinstance(result, Frames)
    frames, times = result
    assert frames.shape == (8, H, W, 3) and frames.dtype == np.uint8
    assert codes(frames) == [0, 4, 8, 12, 17, 21, 25, 29]
    assert times == pytest.approx([0.0, 0.4, 0.8, 1.2, 1.7, 2.1, 2.5, 2.9])


def test_sample_frames_fps_exact(video):
    frames, times = sample_frames(video, fps=3)
    assert codes(frames) == [0, 3, 6, 10, 13, 16, 20, 23, 26]
    assert codes(frames) == [round(t * FPS) for t in times]  # the frame at each timestamp


def test_sample_frames_every_frame_including_b_frames(video):
    frames, times = sample_frames(video, fps=10)
    assert codes(frames) == list(range(30))
    with av.open(str(video)) as container:  # the same pixels as a plain full decode
        plain = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert np.array_equal(frames, plain)


def test_skipping_unreferenced_frames_still_delivers_wanted_ones(video, monkeypatch):
    """The fast path (skip what nothing references unless wanted) needs no plain-decode retry."""
    calls = []
    original = media._decode_run

    def spy(*args, skip):
        calls.append(skip)
        return original(*args, skip=skip)

    monkeypatch.setattr(media, "_decode_run", spy)
    frames, _ = sample_frames(video, fps=10)
    assert codes(frames) == list(range(30))
    assert calls and all(calls)


def test_sample_frames_default_and_single(video):
    assert codes(sample_frames(video).frames) == [0, 4, 8, 12, 17, 21, 25, 29]
    frames, times = sample_frames(str(video), num_frames=1)
    assert codes(frames) == [0] and times == [0.0]


def test_sample_frames_split_between_threads(video, monkeypatch):
    """With 4 workers every run of frames gets its own decoder; still exact and in order."""
    monkeypatch.setattr(media, "_cpu_count", lambda: 4)
    frames, _ = sample_frames(video, num_frames=12)
    assert codes(frames) == [0, 3, 5, 8, 11, 13, 16, 18, 21, 24, 26, 29]  # 29 k / 11 rounded


@pytest.mark.parametrize("backend", ["pyav", "decord", "opencv"])
def test_each_backend_gives_the_same_frames(video, backend, monkeypatch):
    monkeypatch.setattr(media, "_BACKENDS", [b for b in media._BACKENDS if b[0] == backend])
    assert video_info(video) == VideoInfo(video, 10.0, 30, 3.0, 64, 48)
    frames, times = sample_frames(video, fps=3)
    assert codes(frames) == [0, 3, 6, 10, 13, 16, 20, 23, 26]
    assert times == pytest.approx([i / 10 for i in [0, 3, 6, 10, 13, 16, 20, 23, 26]])


def _broken(*args):
    raise RuntimeError("backend exploded")


def test_fallback_when_pyav_fails_and_decord_is_missing(video, monkeypatch):
    reference = sample_frames(video, num_frames=5).frames
    monkeypatch.setitem(sys.modules, "decord", None)  # `import decord` now fails
    monkeypatch.setattr(media, "_BACKENDS", [("pyav", _broken, _broken), *media._BACKENDS[1:]])
    frames, times = sample_frames(video, num_frames=5)
    assert codes(frames) == [0, 7, 14, 22, 29]  # 29 k / 4 rounded (7.25, 14.5 -> 14, 21.75)
    assert np.abs(frames.astype(int) - reference).max() <= 3


def test_fallback_when_pyav_is_missing(video, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)
    frames, _ = sample_frames(video, num_frames=5)
    assert codes(frames) == [0, 7, 14, 22, 29]


def test_no_backend_installed(video, monkeypatch):
    for name in ("av", "decord", "cv2"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ValueError, match="no video library is installed.*pip install av"):
        sample_frames(video)


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
        ("empty", "is empty \\(0 bytes\\).*get it again"),
        ("random", "corrupt, incomplete or not a video"),
        ("truncated", "corrupt, incomplete or not a video"),
        ("text", "corrupt, incomplete or not a video"),
        ("png", "is a PNG image, not a video. Use load_image"),
        ("jpeg", "is a JPEG image, not a video. Use load_image"),
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
# Downloads, against a server on 127.0.0.1


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.hits.append(self.path)
        if self.path.startswith("/cut/"):  # promise 100 kB, send 1 kB, hang up
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(root))
    )
    httpd.hits = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield SimpleNamespace(root=root, url=f"http://127.0.0.1:{httpd.server_port}", hits=httpd.hits)
    httpd.shutdown()
    httpd.server_close()


BODY = b"molmo2 sample bytes " * 1000
BODY_SHA = hashlib.sha256(BODY).hexdigest()


def test_download_and_cache_hit(server, tmp_path):
    (server.root / "clip.bin").write_bytes(BODY)
    cache = tmp_path / "cache"
    first = download(f"{server.url}/clip.bin", cache_dir=cache, progress=False)
    assert first == cache / "clip.bin" and first.read_bytes() == BODY
    second = download(f"{server.url}/clip.bin", cache_dir=cache, progress=True)
    assert second == first
    assert server.hits == ["/clip.bin"]  # the second call did not touch the network
    assert sorted(p.name for p in cache.iterdir()) == ["clip.bin"]


def test_download_default_cache_dir_and_filename(server, tmp_path, monkeypatch):
    monkeypatch.setattr(media.paths, "DATA_DIR", tmp_path / "data")
    (server.root / "my photo.jpg").write_bytes(BODY)
    path = download(f"{server.url}/my%20photo.jpg?size=large", progress=False)
    assert path == tmp_path / "data" / "downloads" / "my_photo.jpg"
    named = download(f"{server.url}/my%20photo.jpg", "../../escape?.jpg", progress=False)
    assert named == tmp_path / "data" / "downloads" / "escape_.jpg"


def test_download_sha256_ok_and_stale_cache_replaced(server, tmp_path):
    (server.root / "clip.bin").write_bytes(BODY)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "clip.bin").write_bytes(b"old damaged copy")
    path = download(f"{server.url}/clip.bin", sha256=BODY_SHA.upper(), cache_dir=cache, progress=False)
    assert path.read_bytes() == BODY and len(server.hits) == 1
    download(f"{server.url}/clip.bin", sha256=BODY_SHA, cache_dir=cache, progress=False)
    assert len(server.hits) == 1  # verified cache hit


def test_download_sha256_mismatch_leaves_nothing(server, tmp_path):
    (server.root / "clip.bin").write_bytes(BODY)
    cache = tmp_path / "cache"
    wrong = "0" * 64
    url = f"{server.url}/clip.bin"
    with pytest.raises(ValueError, match=f"{re.escape(url)}: expected sha256 {wrong}, got {BODY_SHA}"):
        download(url, sha256=wrong, cache_dir=cache, progress=False)
    assert list(cache.iterdir()) == []


def test_interrupted_download_leaves_nothing(server, tmp_path):
    cache = tmp_path / "cache"
    url = f"{server.url}/cut/big.bin"
    with pytest.raises(
        DownloadError, match=f"{re.escape(url)} \\(connection closed after 1000 of 100000 bytes\\)"
    ):
        download(url, cache_dir=cache, progress=False)
    assert list(cache.iterdir()) == []


def test_http_error(server, tmp_path):
    url = f"{server.url}/missing.mp4"
    with pytest.raises(DownloadError, match=f"{re.escape(url)} \\(HTTP 404"):
        download(url, cache_dir=tmp_path / "cache", progress=False)
    assert list((tmp_path / "cache").iterdir()) == []


def test_no_network_message(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with socket.socket() as sock:  # a port that nobody listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/many_penguins.mp4"
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError) as caught:
        download(url, cache_dir=cache, progress=False)
    message = str(caught.value)
    assert message.startswith(f"Could not download {url} (")
    assert str(cache / "many_penguins.mp4") in message and "input" in message and "local file" in message
    assert isinstance(caught.value, ConnectionError)
    assert not cache.exists() or list(cache.iterdir()) == []


def test_local_paths_are_returned(tmp_path):
    local = tmp_path / "mine.mp4"
    local.write_bytes(b"x")
    assert download(str(local)) == local
    assert download(local.as_uri()) == local
    with pytest.raises(FileNotFoundError, match="gone.mp4"):
        download((tmp_path / "gone.mp4").as_uri())
    with pytest.raises(ValueError, match="only http\\(s\\) URLs"):
        download("ftp://example.org/a.mp4")


def test_load_image_and_sample_frames_from_url(server, tmp_path, monkeypatch, video):
    monkeypatch.setattr(media.paths, "DATA_DIR", tmp_path / "data")
    Image.new("RGB", (6, 4), (1, 2, 3)).save(server.root / "tiny.png")
    (server.root / "index.mp4").write_bytes(video.read_bytes())
    assert load_image(f"{server.url}/tiny.png").getpixel((0, 0)) == (1, 2, 3)
    assert codes(sample_frames(f"{server.url}/index.mp4", num_frames=2).frames) == [0, 29]


# ---------------------------------------------------------------------------------------------
# Demo assets


def test_assets_are_well_formed():
    assert {"penguins", "boat1", "boat2"} <= set(ASSETS)
    for name, asset in ASSETS.items():
        assert isinstance(asset, Asset)
        assert asset.url.startswith("https://"), name
        assert re.fullmatch(r"[A-Za-z0-9_.-]+\.(mp4|jpe?g|png)", asset.filename), name
        assert asset.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", asset.sha256), name
        assert asset.description and asset.licence


def test_fetch_asset(server, tmp_path, monkeypatch):
    (server.root / "boats.jpeg").write_bytes(BODY)
    monkeypatch.setitem(
        ASSETS, "local_boats", Asset(f"{server.url}/boats.jpeg", "boats.jpeg", BODY_SHA, "test", "test")
    )
    path = fetch_asset("local_boats", cache_dir=tmp_path / "cache", progress=False)
    assert path.read_bytes() == BODY


def test_fetch_unknown_asset_lists_names():
    with pytest.raises(ValueError, match="Unknown asset 'pengiuns'. Known assets: .*penguins"):
        fetch_asset("pengiuns")
