"""Downloads with a cache, and the registry of the official Molmo2 demo media.

Why: notebooks re-run many times, often offline or on a flaky Colab connection. A file is
fetched once into ``downloaded_data/downloads/`` and served from there afterwards; nothing
half-written or wrong is ever cached. "Wrong" includes what HTTP cannot tell: a body cut short
without a Content-Length, or a login page served instead of a photo; so images and videos are
checked before they get their cache name.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import av
from PIL import Image, ImageFile, ImageSequence, JpegImagePlugin
from tqdm.auto import tqdm

from molmo_nb_utils import paths

__all__ = ["ASSETS", "Asset", "DownloadError", "download", "fetch_asset"]

_TIMEOUT_S = 30  # per network operation, not for the whole file
MAX_SECONDS = 30 * 60  # for the whole file: a server that trickles a byte at a time is given up on
MAX_BYTES = 20 * 2**30  # an endless body stops here instead of filling the disk
_CHUNK = 1 << 16
_KINDS = (None, "image", "video")
_SUFFIX_KINDS = {
    **dict.fromkeys((".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"), "image"),
    **dict.fromkeys((".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"), "video"),
}

# ---------------------------------------------------------------------------------------------
# Downloads


class DownloadError(ConnectionError):
    """The network did not deliver the file (offline, HTTP error, cut short, a web page instead)."""


def download(
    url: str,
    filename: str | None = None,
    *,
    sha256: str | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
    force: bool = False,
    kind: str | None = None,
    max_seconds: float | None = MAX_SECONDS,
    max_bytes: int | None = MAX_BYTES,
) -> Path:
    """Download ``url`` once into ``downloaded_data/downloads/`` and return the local path.

    A file already in the cache (with the right ``sha256`` when one is given) is returned without
    touching the network, so notebooks re-run offline; ``force=True`` fetches it again. The cache
    name is ``filename`` (or the URL's file name) plus a short hash of the whole URL, so two URLs
    never share a file. The body goes to a temporary file in the same folder and is renamed only
    when complete and verified: an interrupted download never leaves a broken file behind.

    ``kind`` ("image" or "video") says what the URL must deliver; by default it follows the suffix,
    else the file's first bytes. An image must decode and a video must have all its frames' data,
    and a web page is refused: these catch bodies cut short and captive-portal pages.

    ``max_seconds`` limits the whole download (each network operation also times out after 30 s)
    and ``max_bytes`` its size: a server that sends a byte every few seconds, or a body that never
    ends, stops there with a message that names the limit, and nothing is saved. None: no limit.

    For convenience a local path (or a ``file://`` URL) is returned as it is when the file exists,
    so a reader can swap a URL for their own file without changing the code.
    """
    if sha256 is not None and not (isinstance(sha256, str) and re.fullmatch(r"[0-9a-fA-F]{64}", sha256)):
        raise ValueError(
            f"sha256 must be 64 hexadecimal characters, not {sha256!r}. Compute it with "
            "hashlib.sha256(open(path, 'rb').read()).hexdigest(), or pass sha256=None to skip the check."
        )
    if kind not in _KINDS:
        raise ValueError(f"kind must be None, 'image' or 'video', not {kind!r}.")
    for name, limit in (("max_seconds", max_seconds), ("max_bytes", max_bytes)):
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit <= 0
        ):
            raise ValueError(f"{name} must be a number > 0, or None for no limit; got {limit!r}.")
    local = local_path(url)
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
    dest = folder / _cache_name(url, filename)
    expected = sha256.lower() if sha256 else None
    if not force and dest.is_file() and (expected is None or paths.file_sha256(dest) == expected):
        return dest

    paths.remove_partial_files(dest)  # what a killed earlier attempt left behind
    with paths.atomic_path(dest) as tmp:  # also on Ctrl-C: never a half-written file
        with tmp.open("wb") as out:
            actual, content_type = _fetch(url, out, dest, progress, max_seconds, max_bytes)
        if expected is not None and actual != expected:
            raise ValueError(
                f"Checksum mismatch for {url}: expected sha256 {expected}, got {actual}. "
                "The file was not saved; the server may have changed it or the transfer was corrupted."
            )
        _check_body(url, tmp, kind or _SUFFIX_KINDS.get(dest.suffix.lower()), content_type)
    return dest


def _cache_name(url: str, filename: str | None) -> str:
    """A readable name with the suffix, plus a hash of the whole URL: ``cat-3f2a9c1b.jpg``."""
    parts = urllib.parse.urlsplit(url)
    name = filename or _basename(parts.path)
    if not filename and not Path(name).suffix:  # /get?file=cat.jpg: the name is in the query
        values = [_basename(v) for _, v in urllib.parse.parse_qsl(parts.query)]
        name = next((v for v in values if Path(v).suffix), name)
    clean = Path(paths.clean_filename(name, default="download"))
    return f"{clean.stem}-{hashlib.sha256(url.encode()).hexdigest()[:8]}{clean.suffix}"


def _basename(path: str) -> str:
    return urllib.parse.unquote(path.rstrip("/").rpartition("/")[2])


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """urllib follows redirects to ftp:// too; a download must stay on http(s)."""

    def http_error_302(self, req, fp, code, msg, headers):
        target = urllib.parse.urljoin(req.full_url, headers.get("location") or headers.get("uri") or "")
        if urllib.parse.urlsplit(target).scheme.lower() not in ("http", "https"):
            fp.close()
            raise DownloadError(
                f"Could not download {req.full_url}: the server redirected to {target}, and only "
                "http(s) redirects are followed. Nothing was saved; check the URL in a browser."
            )
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


class _Deadline:
    """The whole download's time limit, kept while anything at all is awaited.

    Why: a socket timeout bounds one wait (30 s), not the download: a server that sends its headers
    a byte at a time, or stalls in the body, would hold a download far past ``max_seconds``. A
    timer shuts the connection's sockets when the limit passes, which ends any read waiting on
    them at once; the download then says which limit it met.
    """

    def __init__(self, seconds: float | None):
        self.seconds, self.expired = seconds, False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire) if seconds is not None else None
        self._end = time.monotonic() + seconds if seconds is not None else None

    def __enter__(self) -> _Deadline:
        if self._timer is not None:
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def timeout(self) -> float:
        """Seconds one network operation may wait: 30, or what is left of the limit."""
        if self._end is None:
            return _TIMEOUT_S
        return max(0.01, min(_TIMEOUT_S, self._end - time.monotonic()))

    def passed(self) -> bool:
        return self.expired or (self._end is not None and time.monotonic() > self._end)

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _watched(base: type[http.client.HTTPConnection], deadline: _Deadline) -> type:
    """``base`` whose socket the deadline can shut once connected."""

    class Watched(base):
        def connect(self) -> None:
            super().connect()
            deadline.watch(self.sock)

    return Watched


class _HttpHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self.deadline = deadline

    def http_open(self, req):
        return self.do_open(_watched(http.client.HTTPConnection, self.deadline), req)


class _HttpsHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self.deadline = deadline

    def https_open(self, req):
        return self.do_open(_watched(http.client.HTTPSConnection, self.deadline), req, context=self._context)


def _fetch(
    url: str, out, dest: Path, progress: bool, max_seconds: float | None = None, max_bytes: int | None = None
) -> tuple[str, str]:
    """Stream ``url`` into ``out``; return the sha256 of what was written and the Content-Type."""
    digest = hashlib.sha256()
    received = 0
    total = None

    def too_slow() -> DownloadError:
        return DownloadError(
            f"Could not download {url}: it took longer than the limit of {max_seconds:g} s "
            f"(max_seconds) and had sent {received} bytes{f' of {total}' if total else ''}. Nothing "
            "was saved. The server or the connection is very slow: try again later, or pass a "
            "larger max_seconds (None: no limit)."
        )

    # Browsers let people copy URLs with spaces or non-ASCII letters; HTTP needs them %-encoded.
    sendable = re.sub(r"[^\x21-\x7e]+", lambda m: urllib.parse.quote(m.group(), safe=""), url)
    request = urllib.request.Request(sendable, headers={"User-Agent": "molmo-nb-utils"})
    with _Deadline(max_seconds) as deadline:
        try:
            # per call: proxies come from the env; the handlers let the deadline shut the sockets
            opener = urllib.request.build_opener(
                _HttpOnlyRedirects, _HttpHandler(deadline), _HttpsHandler(deadline)
            )
            with opener.open(request, timeout=deadline.timeout()) as response:
                content_type = response.headers.get("Content-Type", "")
                total = int(response.headers.get("Content-Length") or 0) or None
                if max_bytes is not None and total is not None and total > max_bytes:
                    raise DownloadError(_too_big(url, f"the server announces {total} bytes", max_bytes))
                with tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=dest.name,
                    disable=not progress,
                ) as bar:
                    while chunk := response.read1(_CHUNK):  # what has arrived, up to _CHUNK
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                        if max_bytes is not None and received > max_bytes:
                            raise DownloadError(
                                _too_big(url, f"it had sent {received} bytes and was not done", max_bytes)
                            )
                        if deadline.passed():
                            raise too_slow()
        except DownloadError:
            raise
        except (OSError, http.client.HTTPException) as err:  # URLError, HTTPError, timeouts, resets
            if deadline.passed():
                raise too_slow() from None
            raise DownloadError(_offline_message(url, dest, _reason(err))) from err
        if deadline.passed():  # a shut socket reads as the end of the body: it was not
            raise too_slow()
    if total is not None and received != total:
        # urllib does not complain when a server closes the connection early; we must.
        raise DownloadError(
            _offline_message(url, dest, f"connection closed after {received} of {total} bytes")
        )
    return digest.hexdigest(), content_type


def _too_big(url: str, what: str, max_bytes: int) -> str:
    return (
        f"Could not download {url}: {what}, more than the limit of {max_bytes} bytes (max_bytes). Nothing "
        "was saved. If the file really is that large, pass a larger max_bytes (None: no limit); a body "
        "that never ends is a broken server or the wrong URL."
    )


def _reason(err: BaseException) -> str:
    reason = getattr(err, "reason", None)
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, http.client.IncompleteRead):
        return "connection closed before the end of the file"
    return str(reason if reason is not None else err) or type(err).__name__


def _offline_message(url: str, dest: Path, reason: str) -> str:
    return (
        f"Could not download {url} ({reason}). Without network, copy the file to {dest} "
        f"(it is then used as is) or pass the path of a local file instead; sample media that "
        f"works offline is in {paths.INPUT_DIR}/."
    )


# ---------------------------------------------------------------------------------------------
# Is the body what was asked for? HTTP cannot tell when a body without a Content-Length was cut
# short, and captive portals answer any URL with "200 OK" and a login page.


def _check_body(url: str, path: Path, kind: str | None, content_type: str) -> None:
    with open(path, "rb") as f:
        head = f.read(64)
    sniffed = sniff_kind(head)
    kind = kind or sniffed
    if kind is None:
        return  # some other file: nothing to check it against
    page = head.lstrip(b"\xef\xbb\xbf \t\r\n\f").lower().startswith((b"<!doctype", b"<html"))
    if page or (sniffed is None and content_type.split(";")[0].strip().lower() == "text/html"):
        raise DownloadError(
            f"{url} returned a web page, not the {kind} asked for: a login or captive-portal page "
            "(public Wi-Fi), or an error page. Nothing was saved. Open the URL in a browser to see "
            "it, sign in to the network if asked, then run this again."
        )
    if sniffed is not None and sniffed != kind:
        found = "an image" if sniffed == "image" else "a video"
        raise DownloadError(f"{url} is {found}, not the {kind} asked for. Nothing was saved.")
    problem = _image_problem(path) if kind == "image" else _video_problem(path)
    if problem:
        raise DownloadError(
            f"{url} did not deliver a complete {kind} ({problem}): the transfer was cut short, or "
            "the URL serves something else. Nothing was saved: run this again, and if it keeps "
            "failing, open the URL in a browser to check it."
        )


def sniff_kind(head: bytes) -> str | None:
    """ "image", "video" or None, from a file's first bytes."""
    riff = head[8:12] if head[:4] == b"RIFF" else b""
    if head[4:8] == b"ftyp":  # MP4 and MOV; HEIC and AVIF photos use the same boxes
        return None if head[8:12] in (b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1") else "video"
    if head.startswith(b"\x1a\x45\xdf\xa3") or riff == b"AVI ":  # Matroska/WebM, AVI
        return "video"
    if (
        head.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"II*\x00", b"MM\x00*"))
        or (head[:2] == b"BM" and head[6:10] == b"\0\0\0\0")  # BMP: its reserved bytes are zero
        or riff == b"WEBP"
    ):
        return "image"
    return None


def _image_problem(path: Path) -> str | None:
    """Why Pillow cannot decode every frame of the image, or None.

    JPEG pictures (an MPO holds several) are decoded at 1/8 scale: libjpeg still reads every byte
    (a cut shows) without the full pixels in memory. A JPEG past Pillow's own size limit (a 200 MP
    phone photo), which ``Image.open`` refuses, is read by Pillow's JPEG reader itself.
    """
    # molmo_utils turns this on for the whole process; here a cut-off image must fail.
    saved, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        try:
            image = Image.open(path)
        except Image.DecompressionBombError:
            with open(path, "rb") as f:
                if f.read(3) != b"\xff\xd8\xff":
                    raise  # complete, but too large to open safely: Pillow's message says what to do
            image = JpegImagePlugin.JpegImageFile(path)
        with image:
            for frame in ImageSequence.Iterator(image):
                if frame.format in ("JPEG", "MPO"):
                    frame.draft("RGB", (max(1, frame.size[0] // 8), max(1, frame.size[1] // 8)))
                frame.load()
    except Image.DecompressionBombError:
        raise
    except Exception as err:  # broken files raise many types (OSError, SyntaxError, IndexError...)
        return str(err) or type(err).__name__
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved
    return None


def _video_problem(path: Path) -> str | None:
    """Why the video is incomplete, or None. Reads the packets, decodes nothing.

    Two checks, measured on H.264 MP4 (with and without faststart), MOV, MKV, WebM and AVI cut at
    200 points each. A cut in the frames leaves fewer packets than the index lists (MP4, MOV, AVI)
    or a last packet marked corrupt; a cut in the index (``moov`` at the end) makes the file
    unreadable. But a cut in trailing metadata (MP4 ``udta``, the AVI index, Matroska cues) keeps
    every frame, and Matroska states no frame count: what catches those is that MP4/MOV boxes, AVI
    chunks and the Matroska Segment state their own sizes, which then run past the end of the file.
    """
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return "no video stream"
            stream = container.streams.video[0]
            count = 0
            for packet in container.demux(stream):
                if packet.is_corrupt:
                    return f"frame {count + 1} is cut off"
                if packet.size or packet.dts is not None:  # not the empty packet that ends demux
                    count += 1
            if count == 0 or count < stream.frames:
                return f"{count} of {stream.frames or 'some'} frames"
    except (av.FFmpegError, OSError, ValueError) as err:
        return str(err) or type(err).__name__
    missing = _stated_end(path) - path.stat().st_size
    return f"{missing} bytes missing at the end" if missing > 0 else None


def _stated_end(path: Path) -> int:
    """Where the file should end, by the sizes its container states (other containers: its size)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(1024)
        if head.startswith(b"\x1a\x45\xdf\xa3"):  # Matroska: the EBML header, then the Segment
            header_size, width = _ebml_size(head, 4)
            pos = 4 + width + (header_size or 0)
            segment_size, width = _ebml_size(head, pos + 4)
            known = header_size is not None and segment_size is not None  # unknown: a live stream
            return pos + 4 + width + segment_size if known else size
        riff = head[:4] == b"RIFF"
        if not (riff or head[4:8] == b"ftyp"):
            return size
        pos = 0  # walk the top-level MP4 boxes or RIFF chunks
        while pos < size:
            f.seek(pos)
            header = f.read(16)
            if len(header) < 8 or not re.fullmatch(rb"[A-Za-z0-9 ]{4}", header[:4] if riff else header[4:8]):
                return size  # not a box: bytes some writers leave at the end
            if riff:
                n = int.from_bytes(header[4:8], "little")
                n = 8 + n + n % 2  # chunks are padded to an even size
            else:
                n = int.from_bytes(header[:4], "big")
                n = int.from_bytes(header[8:16], "big") if n == 1 else n  # 1: a 64-bit size follows
                if n < 8:  # 0: the box runs to the end of the file
                    return size
            pos += n
        return pos


def _ebml_size(data: bytes, pos: int) -> tuple[int | None, int]:
    """An EBML variable-length size at ``pos``: (value or None if unknown, its width in bytes)."""
    first = data[pos] if pos < len(data) else 0
    width = 9 - first.bit_length()  # the number of leading zero bits says the width
    if not 1 <= width <= 8 or pos + width > len(data):
        return None, 1
    value = int.from_bytes(data[pos : pos + width], "big") & ((1 << (7 * width)) - 1)
    return (None if value == (1 << (7 * width)) - 1 else value), width


def local_path(src: str | os.PathLike) -> Path | None:
    """The local path that ``src`` names (``file://`` URL or an existing file), else None."""
    if isinstance(src, os.PathLike):
        return Path(src)
    if src.lower().startswith("file://"):
        return Path(urllib.request.url2pathname(urllib.parse.urlsplit(src).path))
    if "://" not in src and Path(src).exists():
        return Path(src)
    return None


# ---------------------------------------------------------------------------------------------
# The official Molmo2 demo media


@dataclass(frozen=True)
class Asset:
    """One demo file: where it lives, what to call it locally, and what it is.

    ``sha256`` None means unknown, so the file is not verified; never fill in a guessed hash.
    """

    url: str
    filename: str
    sha256: str | None  # None: unknown, not verified
    description: str
    licence: str


_CARD = "Molmo2-4B / Molmo2-8B model cards on Hugging Face (Quick Start)"
_NOT_STATED = "not stated by Ai2; used in the official examples, fine for trying the model"

# Every URL below is copied from the Quick Start examples of the allenai/Molmo2-4B and
# allenai/Molmo2-8B model cards (https://huggingface.co/allenai/Molmo2-8B, README.md), sections
# "General Video QA" / "Pointing Video QA" (penguins), "Tracking Video QA" (basketball),
# "Multi-image QA" (dog, cherry blossom) and "Multi-Image Point QA" (boats). The penguins video and
# the dog and cherry-blossom images are also used by allenai/molmo2's HF test script.
# Checksums are unknown (None: not verified): the files are not mirrored here, so nothing could
# be hashed.
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
    """Download (once) one of the official demo files in ``ASSETS`` and return its local path.

    The file is checked against the asset's sha256 when the registry has one; where it says None
    the checksum is unknown and the file is not verified (it is still checked to be a complete
    image or video).
    """
    asset = ASSETS.get(name)
    if asset is None:
        raise ValueError(f"Unknown asset {name!r}. Known assets: {', '.join(sorted(ASSETS))}.")
    return download(asset.url, asset.filename, sha256=asset.sha256, cache_dir=cache_dir, progress=progress)
