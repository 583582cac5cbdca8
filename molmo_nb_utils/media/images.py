"""Images as Molmo2 sees them: upright (EXIF) and in RGB, the pixel grid its points are on.

A point that Molmo2 returns is only useful if it is drawn on the very pixels the model looked at. So
images are loaded upright (EXIF orientation applied) and in RGB (transparency on white, 16-bit grey
scaled to 8 bits). Images larger than ``MAX_IMAGE_PIXELS`` are decoded at a reduced scale (JPEG) or
refused before they are decoded.
"""

from __future__ import annotations

import io
import math
import os
import re
import urllib.parse
import warnings
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from molmo_nb_utils.downloads import download, local_path

__all__ = ["MAX_IMAGE_PIXELS", "image_size", "load_image"]

# Images up to this many pixels load in full: a 50 MP phone photo (8160x6120) does, a 108 MP one
# (12000x9000) too. Beyond it a JPEG (or MPO) is decoded at 1/2, 1/4 or 1/8 scale (libjpeg does that
# while decoding, so the full image is never in memory): a 200 MP phone photo loads at 1/2. Other formats
# are refused (past Pillow's own limit, about 179 MP, Pillow refuses them on opening): a 560 KB PNG of
# 12000x12000 would otherwise take gigabytes. Molmo2 itself sees at most a few 378 px crops.
MAX_IMAGE_PIXELS = 120_000_000


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
