"""downloads: the download cache and the demo asset registry, against a server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import io
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
from PIL import Image, ImageFile

from molmo_nb_utils import paths
from molmo_nb_utils.downloads import ASSETS, Asset, DownloadError, download, fetch_asset
from molmo_nb_utils.media import load_image, sample_frames
from tests.test_media import write_video

# ---------------------------------------------------------------------------------------------
# A server on 127.0.0.1. Routes other than plain files:
#   /cut/NAME         promises 100 kB, sends 1 kB, hangs up
#   /close/NAME?keep=F  the first F (default 0.5) of the file, HTTP/1.0 style: no Content-Length
#   /chunked/NAME     half the file in chunks, then hangs up without the closing chunk
#   /html/NAME        a captive portal's login page, "200 OK", Content-Type text/html
#   /page/NAME        the same page labelled application/octet-stream
#   /get?file=NAME    the file named in the query
#   /redirect?to=URL  "302 Found" to URL
#   /stall/NAME       first request: half the file, then silence; later requests: the whole file
#   /trickle/NAME     one byte every 0.05 s, no Content-Length, never done
#   /endless/NAME     64 kB blocks as fast as they go, no Content-Length, never done
#   /huge/NAME        announces 10 GB, then sends the file


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.hits.append(self.path)
        url = urllib.parse.urlsplit(self.path)
        route, _, name = urllib.parse.unquote(url.path)[1:].partition("/")
        query = dict(urllib.parse.parse_qsl(url.query))
        if route == "cut":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
        elif route == "close":
            data = self._file(name)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(data[: int(len(data) * float(query.get("keep", 0.5)))])
        elif route == "chunked":
            data = self._file(name)
            self.protocol_version = "HTTP/1.1"
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()
            for start in range(0, len(data) // 2, 500):
                chunk = data[start : start + 500]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        elif route in ("html", "page"):
            self.send_response(200)
            self.send_header("Content-Type", "text/html" if route == "html" else "application/octet-stream")
            self.end_headers()
            self.wfile.write(b"\n  <!DOCTYPE html><html><body>Sign in to Airport Wi-Fi</body></html>")
        elif route == "get":
            self._send(self._file(query["file"]))
        elif route == "redirect":
            self.send_response(302)
            self.send_header("Location", query["to"])
            self.end_headers()
        elif route in ("trickle", "endless"):
            self.send_response(200)
            self.end_headers()
            block, pause = (b"x", 0.05) if route == "trickle" else (b"\0" * 65536, 0.0)
            deadline = time.monotonic() + 20  # bounded, even if the client never gives up
            with contextlib.suppress(OSError):  # the client hung up: done
                while time.monotonic() < deadline:
                    self.wfile.write(block)
                    self.wfile.flush()
                    time.sleep(pause)
        elif route == "slowheaders":  # the status line, then a header a byte at a time
            self.wfile.write(b"HTTP/1.0 200 OK\r\n")
            deadline = time.monotonic() + 20  # bounded, even if the client never gives up
            with contextlib.suppress(OSError):
                while time.monotonic() < deadline:
                    self.wfile.write(b"X")
                    self.wfile.flush()
                    time.sleep(0.05)
                self.wfile.write(b": 1\r\nContent-Length: 0\r\n\r\n")  # and no body
        elif route == "hang":  # half the body, then nothing until the test ends
            data = self._file(name)
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.server.release.wait(60)
        elif route == "huge":
            self.send_response(200)
            self.send_header("Content-Length", str(10**10))
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(self._file(name))
        elif route == "stall":
            data = self._file(name)
            if self.server.hits.count(self.path) > 1:
                return self._send(data)
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.server.stalled.set()
            self.server.release.wait(30)
        else:
            super().do_GET()

    def _file(self, name: str) -> bytes:
        return (Path(self.directory) / name).read_bytes()

    def _send(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(root))
    )
    httpd.hits, httpd.stalled, httpd.release = [], threading.Event(), threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield SimpleNamespace(
        root=root, url=f"http://127.0.0.1:{httpd.server_port}", hits=httpd.hits, stalled=httpd.stalled
    )
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()


BODY = b"molmo2 sample bytes " * 1000
BODY_SHA = hashlib.sha256(BODY).hexdigest()


def url_hash(url: str) -> str:
    """The rule: the first 8 hex digits of the sha256 of the whole URL."""
    return hashlib.sha256(url.encode()).hexdigest()[:8]


def jpeg_bytes(seed: int = 0) -> bytes:
    """A noisy JPEG: most of its bytes are image data, so any cut lands in the pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


def write_test_video(path: Path, options: dict | None = None, frames: int = 24) -> bytes:
    """A small H.264 video (MP4 or MKV by suffix); returns its bytes."""
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"preset": "veryfast", "x264-params": "keyint=6:bframes=2"}
        rng = np.random.default_rng(0)
        for _ in range(frames):
            pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return path.read_bytes()


def no_files(folder: Path) -> bool:
    """Nothing was cached, not even a hidden partial file."""
    return not folder.exists() or list(folder.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Cache names and hits


def test_download_and_cache_hit(server, tmp_path):
    (server.root / "clip.bin").write_bytes(BODY)
    cache = tmp_path / "cache"
    url = f"{server.url}/clip.bin"
    first = download(url, cache_dir=cache, progress=False)
    assert first == cache / f"clip-{url_hash(url)}.bin" and first.read_bytes() == BODY
    second = download(url, cache_dir=cache, progress=True)
    assert second == first
    assert server.hits == ["/clip.bin"]  # the second call did not touch the network
    assert [p.name for p in cache.iterdir()] == [first.name]


def test_download_default_cache_dir_and_filename(server, tmp_path, monkeypatch):
    # Updated for the URL-hash rule: the old expected names were "my_photo.jpg" and "escape_.jpg".
    monkeypatch.setattr(paths, "DATA_DIR", tmp_path / "data")
    (server.root / "my photo.jpg").write_bytes(jpeg_bytes())
    url = f"{server.url}/my%20photo.jpg?size=large"
    path = download(url, progress=False)
    assert path == tmp_path / "data" / "downloads" / f"my_photo-{url_hash(url)}.jpg"
    url = f"{server.url}/my%20photo.jpg"
    named = download(url, "../../escape?.jpg", progress=False)
    assert named == tmp_path / "data" / "downloads" / f"escape-{url_hash(url)}.jpg"


@pytest.mark.parametrize(
    "first, second, readable",
    [
        ("/get?file=a.jpg", "/get?file=b.jpg", "a"),  # same path, the query differs
        ("/dir1/image.jpg", "/dir2/image.jpg", "image"),  # same name, another folder
        ("/k%C3%A4tzchen.jpg", "/k%C3%A4se.jpg", "kätzchen"),  # non-ASCII names, %-encoded
        ("/猫.jpg", "/犬.jpg", "猫"),  # non-ASCII names as typed; both were "jpg" before
    ],
)
def test_cache_is_keyed_by_the_whole_url(server, tmp_path, first, second, readable):
    for i, path in enumerate((first, second)):
        files = urllib.parse.unquote(path.rpartition("=")[2] if "?" in path else path).lstrip("/")
        (server.root / files).parent.mkdir(parents=True, exist_ok=True)
        (server.root / files).write_bytes(jpeg_bytes(seed=i))
    cache = tmp_path / "cache"
    a = download(server.url + first, cache_dir=cache, progress=False)
    b = download(server.url + second, cache_dir=cache, progress=False)
    assert a != b
    assert a.read_bytes() == jpeg_bytes(seed=0) and b.read_bytes() == jpeg_bytes(seed=1)
    assert a.name == f"{readable}-{url_hash(server.url + first)}.jpg"
    assert len(server.hits) == 2


def test_explicit_filename_still_gets_the_url_hash(server, tmp_path):
    (server.root / "one.bin").write_bytes(b"one")
    (server.root / "two.bin").write_bytes(b"two")
    cache = tmp_path / "cache"
    one = download(f"{server.url}/one.bin", "clip.bin", cache_dir=cache, progress=False)
    two = download(f"{server.url}/two.bin", "clip.bin", cache_dir=cache, progress=False)
    assert (one.read_bytes(), two.read_bytes()) == (b"one", b"two")
    assert one.name == f"clip-{url_hash(server.url + '/one.bin')}.bin"


def test_force_downloads_again(server, tmp_path):
    (server.root / "clip.bin").write_bytes(b"version 1")
    cache = tmp_path / "cache"
    url = f"{server.url}/clip.bin"
    assert download(url, cache_dir=cache, progress=False).read_bytes() == b"version 1"
    (server.root / "clip.bin").write_bytes(b"version 2")
    assert download(url, cache_dir=cache, progress=False).read_bytes() == b"version 1"  # cached
    assert download(url, cache_dir=cache, progress=False, force=True).read_bytes() == b"version 2"
    assert len(server.hits) == 2


# ---------------------------------------------------------------------------------------------
# Checksums


def test_download_sha256_ok_and_stale_cache_replaced(server, tmp_path):
    (server.root / "clip.bin").write_bytes(BODY)
    cache = tmp_path / "cache"
    cache.mkdir()
    url = f"{server.url}/clip.bin"
    (cache / f"clip-{url_hash(url)}.bin").write_bytes(b"old damaged copy")
    path = download(url, sha256=BODY_SHA.upper(), cache_dir=cache, progress=False)
    assert path.read_bytes() == BODY and len(server.hits) == 1
    download(url, sha256=BODY_SHA, cache_dir=cache, progress=False)
    assert len(server.hits) == 1  # verified cache hit


def test_download_sha256_mismatch_leaves_nothing(server, tmp_path):
    (server.root / "clip.bin").write_bytes(BODY)
    cache = tmp_path / "cache"
    wrong = "0" * 64
    url = f"{server.url}/clip.bin"
    with pytest.raises(ValueError, match=f"{re.escape(url)}: expected sha256 {wrong}, got {BODY_SHA}"):
        download(url, sha256=wrong, cache_dir=cache, progress=False)
    assert no_files(cache)


@pytest.mark.parametrize("bad", ["abc", BODY_SHA[:63], "g" * 64, BODY_SHA + "0", ""])
def test_malformed_sha256_is_refused_before_any_request(server, tmp_path, bad):
    (server.root / "clip.bin").write_bytes(BODY)
    with pytest.raises(ValueError, match="sha256 must be 64 hexadecimal characters"):
        download(f"{server.url}/clip.bin", sha256=bad, cache_dir=tmp_path / "cache", progress=False)
    assert server.hits == []


# ---------------------------------------------------------------------------------------------
# Transfers cut short, and answers that are not the file


def test_interrupted_download_leaves_nothing(server, tmp_path):
    cache = tmp_path / "cache"
    url = f"{server.url}/cut/big.bin"
    with pytest.raises(
        DownloadError, match=f"{re.escape(url)} \\(connection closed after 1000 of 100000 bytes\\)"
    ):
        download(url, cache_dir=cache, progress=False)
    assert no_files(cache)


def test_image_cut_short_without_content_length(server, tmp_path, monkeypatch):
    (server.root / "photo.jpg").write_bytes(jpeg_bytes())
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as molmo_utils leaves it
    cache = tmp_path / "cache"
    url = f"{server.url}/close/photo.jpg"
    with pytest.raises(DownloadError, match=f"{re.escape(url)} did not deliver a complete image"):
        download(url, cache_dir=cache, progress=False)
    url = f"{server.url}/chunked/photo.jpg"  # http.client notices a missing last chunk itself
    with pytest.raises(DownloadError, match=f"{re.escape(url)} \\(connection closed before the end"):
        download(url, cache_dir=cache, progress=False)
    assert no_files(cache)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored after the check
    whole = download(f"{server.url}/close/photo.jpg?keep=1", cache_dir=cache, progress=False)
    assert whole.read_bytes() == jpeg_bytes()


@pytest.mark.parametrize("suffix, keep", [("png", 0.5), ("gif", 0.3), ("gif", 0.9), ("webp", 0.9)])
def test_other_images_cut_short(server, tmp_path, suffix, keep):
    frames = [Image.open(io.BytesIO(jpeg_bytes(seed))) for seed in range(3)]
    frames[0].save(server.root / f"anim.{suffix}", save_all=True, append_images=frames[1:])
    url = f"{server.url}/close/anim.{suffix}?keep={keep}"  # the GIF at 0.3 made Pillow raise IndexError
    with pytest.raises(DownloadError, match=f"{re.escape(url)} did not deliver a complete image"):
        download(url, cache_dir=tmp_path / "cache", progress=False)
    assert no_files(tmp_path / "cache")


def test_kind_comes_from_the_first_bytes_when_the_url_has_no_suffix(server, tmp_path):
    (server.root / "photo").write_bytes(jpeg_bytes())
    url = f"{server.url}/close/photo"
    with pytest.raises(DownloadError, match="did not deliver a complete image"):
        download(url, cache_dir=tmp_path / "cache", progress=False)
    assert no_files(tmp_path / "cache")


@pytest.mark.parametrize(
    "name, options, cuts",
    [
        ("faststart.mp4", {"movflags": "faststart"}, (0.3, 0.7, -1)),  # index first, frames after
        ("plain.mp4", {}, (0.5, 0.98, -1)),  # frames first, index last; -1 cuts metadata only
        ("clip.mkv", {}, (0.5, -1)),  # -1 cuts the cues only: every frame is still there
        ("clip.avi", {}, (0.5, -1)),  # -1 cuts the index only
    ],
)
def test_video_cut_short_is_refused(server, tmp_path, name, options, cuts):
    data = write_test_video(tmp_path / name, options)
    cache = tmp_path / "cache"
    for cut in cuts:
        end = cut if cut < 0 else int(len(data) * cut)
        (server.root / f"cut{end}{name}").write_bytes(data[:end])  # served with its full length
        url = f"{server.url}/cut{end}{name}"
        with pytest.raises(DownloadError, match=f"{re.escape(url)} did not deliver a complete video"):
            download(url, cache_dir=cache, progress=False)
    assert no_files(cache)
    (server.root / name).write_bytes(data)
    assert download(f"{server.url}/{name}", cache_dir=cache, progress=False).read_bytes() == data


def test_video_with_trailing_padding_is_accepted(server, tmp_path):
    data = write_test_video(tmp_path / "clip.mp4") + bytes(64)  # some writers pad with zeros
    (server.root / "clip.mp4").write_bytes(data)
    assert (
        download(f"{server.url}/clip.mp4", cache_dir=tmp_path / "cache", progress=False).read_bytes() == data
    )


def test_video_cut_short_without_content_length_with_kind(server, tmp_path):
    (server.root / "clip").write_bytes(write_test_video(tmp_path / "clip.mp4", {"movflags": "faststart"}))
    url = f"{server.url}/close/clip"
    with pytest.raises(DownloadError, match=f"{re.escape(url)} did not deliver a complete video"):
        download(url, cache_dir=tmp_path / "cache", progress=False, kind="video")
    assert no_files(tmp_path / "cache")


@pytest.mark.parametrize("route", ["html", "page"])
@pytest.mark.parametrize("name, kind", [("photo.jpg", None), ("clip.mp4", None), ("media", "video")])
def test_web_page_instead_of_media_is_refused(server, tmp_path, route, name, kind):
    url = f"{server.url}/{route}/{name}"
    with pytest.raises(DownloadError, match=f"{re.escape(url)} returned a web page, not the"):
        download(url, cache_dir=tmp_path / "cache", progress=False, kind=kind)
    assert no_files(tmp_path / "cache")


def test_image_where_a_video_was_asked_for(server, tmp_path):
    (server.root / "clip.mp4").write_bytes(jpeg_bytes())
    with pytest.raises(DownloadError, match="is an image, not the video asked for"):
        download(f"{server.url}/clip.mp4", cache_dir=tmp_path / "cache", progress=False)


def test_unknown_files_are_not_judged(server, tmp_path):
    url = f"{server.url}/html/notes"  # no suffix, no known first bytes, no kind asked for
    assert download(url, cache_dir=tmp_path / "cache", progress=False).read_bytes().startswith(b"\n  <!DOC")


def test_bad_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="kind must be None, 'image' or 'video', not 'photo'"):
        download("http://127.0.0.1:9/a.jpg", kind="photo", cache_dir=tmp_path)


def test_http_error(server, tmp_path):
    url = f"{server.url}/missing.mp4"
    with pytest.raises(DownloadError, match=f"{re.escape(url)} \\(HTTP 404"):
        download(url, cache_dir=tmp_path / "cache", progress=False)
    assert no_files(tmp_path / "cache")


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/photo.jpg"])
def test_redirects_only_to_http(server, tmp_path, target):
    url = f"{server.url}/redirect?to={urllib.parse.quote(target)}"
    with pytest.raises(
        DownloadError, match=f"{re.escape(url)}: the server redirected to {re.escape(target)}"
    ):
        download(url, "photo.jpg", cache_dir=tmp_path / "cache", progress=False)
    assert no_files(tmp_path / "cache")


def test_redirect_to_http_is_followed(server, tmp_path):
    (server.root / "clip.bin").write_bytes(BODY)
    url = f"{server.url}/redirect?to={urllib.parse.quote(server.url + '/clip.bin')}"
    assert download(url, cache_dir=tmp_path / "cache", progress=False).read_bytes() == BODY


def test_leftover_of_a_killed_download_is_removed(server, tmp_path):
    (server.root / "clip.bin").write_bytes(BODY)
    cache = tmp_path / "cache"
    url = f"{server.url}/stall/clip.bin"
    code = "import sys; from molmo_nb_utils.downloads import download as d; d(sys.argv[1], cache_dir=sys.argv[2])"
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        process = subprocess.Popen([sys.executable, "-c", code, url, str(cache)], stderr=stderr)
    try:
        hang_guard = time.monotonic() + 600  # only against a hang: a busy machine may take minutes to import
        while not (server.stalled.is_set() and any(cache.glob(".clip*.part.bin"))):
            assert process.poll() is None, f"the download process ended: {log.read_text()}"
            if time.monotonic() > hang_guard:
                pytest.fail("the download never started in 10 minutes (a hang, not a speed check)")
            time.sleep(0.05)
    finally:
        process.kill()
        process.wait()
    assert len(list(cache.glob(".clip*.part.bin"))) == 1  # what the killed process left
    path = download(url, cache_dir=cache, progress=False)
    assert path.read_bytes() == BODY
    assert [p.name for p in cache.iterdir()] == [path.name]


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
    assert str(cache / f"many_penguins-{url_hash(url)}.mp4") in message
    assert "input" in message and "local file" in message
    assert isinstance(caught.value, ConnectionError)
    assert no_files(cache)


def test_local_paths_are_returned(tmp_path):
    local = tmp_path / "mine.mp4"
    local.write_bytes(b"x")
    assert download(str(local)) == local
    assert download(local.as_uri()) == local
    with pytest.raises(FileNotFoundError, match="gone.mp4"):
        download((tmp_path / "gone.mp4").as_uri())
    with pytest.raises(ValueError, match="only http\\(s\\) URLs"):
        download("ftp://example.org/a.mp4")


def test_load_image_and_sample_frames_from_url(server, tmp_path, monkeypatch):
    video = write_video(tmp_path / "index.mp4")
    monkeypatch.setattr(paths, "DATA_DIR", tmp_path / "data")
    Image.new("RGB", (6, 4), (1, 2, 3)).save(server.root / "tiny.png")
    (server.root / "index.mp4").write_bytes(video.read_bytes())
    assert load_image(f"{server.url}/tiny.png").getpixel((0, 0)) == (1, 2, 3)
    frames = sample_frames(f"{server.url}/index.mp4", num_frames=2).frames
    assert [round((float(f.mean()) - 4) / 8) for f in frames] == [0, 29]


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


def test_unknown_checksum_is_documented_as_unverified():
    assert "None means unknown" in Asset.__doc__
    assert "not verified" in fetch_asset.__doc__


def test_fetch_asset(server, tmp_path, monkeypatch):
    (server.root / "boats.jpeg").write_bytes(jpeg_bytes())
    sha = hashlib.sha256(jpeg_bytes()).hexdigest()
    monkeypatch.setitem(
        ASSETS, "local_boats", Asset(f"{server.url}/boats.jpeg", "boats.jpeg", sha, "test", "test")
    )
    path = fetch_asset("local_boats", cache_dir=tmp_path / "cache", progress=False)
    assert path.read_bytes() == jpeg_bytes()
    assert path.name == f"boats-{url_hash(server.url + '/boats.jpeg')}.jpeg"


def test_fetch_unknown_asset_lists_names():
    with pytest.raises(ValueError, match="Unknown asset 'pengiuns'. Known assets: .*penguins"):
        fetch_asset("pengiuns")


# ---------------------------------------------------------------------------------------------
# Limits on the whole download


def test_a_trickling_server_stops_at_the_time_limit_and_says_so(server, tmp_path):
    with pytest.raises(
        DownloadError, match=r"took longer than the limit of 1 s \(max_seconds\).*Nothing was saved"
    ):  # the server trickles for 20 s: only the limit can stop the download before it ends
        download(
            f"{server.url}/trickle/slow.bin", cache_dir=tmp_path / "cache", progress=False, max_seconds=1
        )
    assert no_files(tmp_path / "cache")


@pytest.mark.parametrize("route", ["slowheaders", "hang"])
def test_the_time_limit_holds_while_headers_trickle_and_while_the_body_stalls(server, tmp_path, route):
    """Without the deadline, headers a byte at a time end in 20 s with an empty body, and a stalled body waits for
    the 30 s socket timeout and says "offline": neither says the limit was met."""
    (server.root / "photo.bin").write_bytes(BODY)
    with pytest.raises(DownloadError, match=r"took longer than the limit of 1 s \(max_seconds\)"):
        download(
            f"{server.url}/{route}/photo.bin", cache_dir=tmp_path / "cache", progress=False, max_seconds=1
        )
    assert no_files(tmp_path / "cache")


def test_an_endless_body_stops_at_the_size_limit_and_says_so(server, tmp_path):
    with pytest.raises(DownloadError, match=r"more than the limit of 1000000 bytes \(max_bytes\)") as err:
        download(
            f"{server.url}/endless/big.bin", cache_dir=tmp_path / "cache", progress=False, max_bytes=10**6
        )
    assert "offline" not in str(err.value) and "Without network" not in str(err.value)
    assert no_files(tmp_path / "cache")


def test_an_announced_size_over_the_limit_is_refused_before_reading(server, tmp_path):
    (server.root / "photo.bin").write_bytes(BODY)
    with pytest.raises(
        DownloadError, match=r"announces 10000000000 bytes, more than the limit of 1000000 bytes"
    ):
        download(
            f"{server.url}/huge/photo.bin", cache_dir=tmp_path / "cache", progress=False, max_bytes=10**6
        )
    assert no_files(tmp_path / "cache")


@pytest.mark.parametrize("bad", [0, -1, "10", True])
def test_bad_limits_are_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="must be a number > 0, or None"):
        download("http://127.0.0.1:9/x.bin", cache_dir=tmp_path, max_seconds=bad)


def test_a_jpeg_past_pillows_own_limit_downloads_and_a_cut_one_does_not(server, tmp_path, monkeypatch):
    """A 200 MP phone photo is past twice Pillow's limit; here 400x300 past 2 x 50,000 pixels."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(
        buffer, "JPEG"
    )
    (server.root / "phone.jpg").write_bytes(buffer.getvalue())
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)
    path = download(f"{server.url}/phone.jpg", cache_dir=tmp_path / "cache", progress=False)
    assert path.read_bytes() == buffer.getvalue()
    with pytest.raises(DownloadError, match="did not deliver a complete image"):
        download(f"{server.url}/close/phone.jpg?keep=0.6", cache_dir=tmp_path / "cut", progress=False)
    assert no_files(tmp_path / "cut")
