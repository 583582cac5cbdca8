"""Is the body what was asked for? Checked before a download gets its cache name.

HTTP cannot tell when a body without a Content-Length was cut short, and captive portals answer any
URL with "200 OK" and a login page. So an image must decode, a video must have all its frames' data,
and a web page is refused.
"""

from __future__ import annotations

import re
from pathlib import Path

import av
from PIL import Image, ImageFile, ImageSequence, JpegImagePlugin

from molmo_nb_utils.downloads.network import DownloadError

__all__ = ["check_body", "sniff_kind"]


def check_body(url: str, path: Path, kind: str | None, content_type: str) -> None:
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
