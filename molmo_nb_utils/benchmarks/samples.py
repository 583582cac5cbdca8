"""Small local copies of the four benchmarks, made offline in the exact layouts of their Hub repositories.

Why: the lesson must run without a network on the tiny test model, and tests must read benchmark files
through the same code as the Hub's copies. So the copies hold the files the Hub holds, named as it
names them (``data/test-00000-of-00001.parquet``; Point-Bench's ``data.json`` and two zips), with the
same columns and types, made from the sample coin photos in ``input/`` whose truth is exact (each coin
is a disc of known size, ``dataset.coin_masks``). Image URLs point at files beside the copies
(``file://``), or wherever ``url_for`` says (tests serve them over HTTP); one URL of each URL-based
benchmark leads nowhere and one serves a changed image, so the left-out warning is seen.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from molmo_nb_utils.benchmarks.images import write_once
from molmo_nb_utils.benchmarks.specs import BENCHMARKS
from molmo_nb_utils.dataset.coin_masks import COIN_DIAMETERS, disc_polygon
from molmo_nb_utils.dataset.items import load_dataset
from molmo_nb_utils.loading import model_id
from molmo_nb_utils.masks import mask_from_coco
from molmo_nb_utils.paths import INPUT_DIR, atomic_path, output_path
from molmo_nb_utils.tiny import TINY_NAME, is_tiny_molmo2

__all__ = ["benchmark_sources", "make_sample_benchmarks"]

SIZE = (640, 360)  # the sample photos'
PHOTOS = [f"coin_table/table_0{k}.jpg" for k in range(1, 7)]


def _photos() -> dict[str, tuple[bytes, list[tuple[float, float, float]]]]:
    """Sample photo -> (its bytes, [(x, y, diameter) of each coin])."""
    items = {item.key: item for item in load_dataset(INPUT_DIR / "coin_table.json")}
    return {
        key: (
            items[key].path.read_bytes(),
            [(p.x, p.y, d) for p, d in zip(items[key].points, COIN_DIAMETERS[key], strict=True)],
        )
        for key in PHOTOS
    }


def _disc(x: float, y: float, diameter: float) -> np.ndarray:
    return mask_from_coco(disc_polygon(x, y, diameter)).decode(SIZE)


def _write_parquet(path: Path, table: pa.Table, features: dict) -> None:
    """A parquet file as ``datasets`` writes one: its features in the schema's ``huggingface`` metadata."""
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _countbench(root: Path, photos) -> None:
    rows = [(key, data, len(coins)) for key, (data, coins) in photos.items() if coins]
    coins_jpg = (INPUT_DIR / "coins.jpg").read_bytes()
    rows.append(("coins.jpg", coins_jpg, 24))
    table = pa.table(
        {
            "image": pa.array(
                [{"bytes": data, "path": Path(key).name} for key, data, _ in rows],
                pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
            ),
            "text": pa.array(["coins on a cafe table"] * len(rows), pa.string()),
            "question": pa.array(["How many coins are on the table?"] * len(rows), pa.string()),
            "number": pa.array([n for *_, n in rows], pa.int32()),
        }
    )
    features = {
        "image": {"_type": "Image"},
        "text": {"dtype": "string", "_type": "Value"},
        "question": {"dtype": "string", "_type": "Value"},
        "number": {"dtype": "int32", "_type": "Value"},
    }
    _write_parquet(root / "data" / "test-00000-of-00001.parquet", table, features)


def _web(web: Path, photos, url_for: Callable[[str], str]) -> list[tuple[str, str, str]]:
    """(key, url, sha256) of each photo served from ``web``; then one URL to nothing, one to a changed image."""
    served = []
    for key, (data, _) in photos.items():
        write_once(web / key, data)
        served.append((key, url_for(key), _sha(data)))
    key, (data, _) = next(iter(photos.items()))
    served.append((key, url_for("gone/table_09.jpg"), _sha(data)))  # the URL leads nowhere
    changed = io.BytesIO()
    Image.open(io.BytesIO(photos["coin_table/table_02.jpg"][0])).save(changed, "JPEG", quality=40)
    write_once(web / "changed" / "table_02.jpg", changed.getvalue())
    served.append(
        (
            "coin_table/table_02.jpg",
            url_for("changed/table_02.jpg"),
            _sha(photos["coin_table/table_02.jpg"][0]),
        )
    )
    return served


def _pixmo_count(root: Path, photos, served) -> None:
    for split, picked in (("test", served), ("validation", served[1:3])):
        rows = [(url, sha, photos[key][1]) for key, url, sha in picked]
        table = pa.table(
            {
                "image_url": pa.array([url for url, _, _ in rows], pa.string()),
                "image_sha256": pa.array([sha for _, sha, _ in rows], pa.string()),
                "count": pa.array([len(coins) for *_, coins in rows], pa.int32()),
                # datasets stores a Sequence of {x, y} as one list per field
                "points": pa.array(
                    [{"x": [c[0] for c in coins], "y": [c[1] for c in coins]} for *_, coins in rows],
                    pa.struct([("x", pa.list_(pa.float32())), ("y", pa.list_(pa.float32()))]),
                ),
                "label": pa.array(["coins"] * len(rows), pa.string()),
            }
        )
        features = {
            "image_url": {"dtype": "string", "_type": "Value"},
            "image_sha256": {"dtype": "string", "_type": "Value"},
            "count": {"dtype": "int32", "_type": "Value"},
            "points": {
                "feature": {
                    "x": {"dtype": "float32", "_type": "Value"},
                    "y": {"dtype": "float32", "_type": "Value"},
                },
                "_type": "Sequence",
            },
            "label": {"dtype": "string", "_type": "Value"},
        }
        _write_parquet(root / "data" / f"{split}-00000-of-00001.parquet", table, features)


def _pixmo_points(root: Path, photos, served) -> None:
    width, height = SIZE
    urls = {key: (url, sha) for key, url, sha in served[: len(photos)]}
    rows = []  # (url, sha, label, coins)
    for key in ("coin_table/table_01.jpg", "coin_table/table_03.jpg", "coin_table/table_04.jpg"):
        rows.append((*urls[key], "coins", photos[key][1]))
    largest = max(photos["coin_table/table_04.jpg"][1], key=lambda c: c[2])
    rows.append((*urls["coin_table/table_04.jpg"], "largest coin", [largest]))  # a URL asked twice
    rows += [(url, sha, "coins", photos[key][1]) for key, url, sha in served[len(photos) :]]
    masks = [[_disc(*c) for c in coins] or [np.zeros((height, width), bool)] for *_, coins in rows]
    table = pa.table(
        {
            "image_url": pa.array([r[0] for r in rows], pa.string()),
            "image_sha256": pa.array([r[1] for r in rows], pa.string()),
            "label": pa.array([r[2] for r in rows], pa.string()),
            # on a 0-100 scale of the image, whatever the card says (AllenAI multiplies by size / 100)
            "points": pa.array(
                [[{"x": c[0] / width * 100, "y": c[1] / height * 100} for c in r[3]] for r in rows],
                pa.list_(pa.struct([("x", pa.float64()), ("y", pa.float64())])),
            ),
            "masks": pa.array(
                [[m.tolist() for m in ms] for ms in masks], pa.list_(pa.list_(pa.list_(pa.bool_())))
            ),
        }
    )
    features = {
        "image_url": {"dtype": "string", "_type": "Value"},
        "image_sha256": {"dtype": "string", "_type": "Value"},
        "label": {"dtype": "string", "_type": "Value"},
        "points": [{"x": {"dtype": "float64", "_type": "Value"}, "y": {"dtype": "float64", "_type": "Value"}}],
        "masks": {"feature": {"feature": {"feature": {"dtype": "bool", "_type": "Value"}, "_type": "Sequence"},
                              "_type": "Sequence"}, "_type": "Sequence"},
    }  # fmt: skip
    _write_parquet(root / "data" / "test-00000-of-00001.parquet", table, features)


# (category, photo, query, which coins the mask covers: None = all)
POINT_BENCH_ROWS = (
    ("affordable", "coin_table/table_05.jpg", "Point to something you could pay for a coffee with.", None),
    ("counting", "coin_table/table_05.jpg", "Point to each coin on the table.", None),
    (
        "reasoning",
        "coin_table/table_04.jpg",
        "Point to the coin worth picking up first: the largest one.",
        "largest",
    ),
    ("spatial", "coin_table/table_06.jpg", "Point to the leftmost coin of the top row.", 0),
    ("steerable", "coin_table/table_02.jpg", "Point to the coin.", None),
)


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8) * 255, mode="L").save(out, "PNG")
    return out.getvalue()


def _point_bench(root: Path, photos) -> None:
    entries = []
    images = io.BytesIO()
    masks = io.BytesIO()
    with zipfile.ZipFile(images, "w") as image_zip, zipfile.ZipFile(masks, "w") as mask_zip:
        for k, (category, key, query, which) in enumerate(POINT_BENCH_ROWS):
            data, coins = photos[key]
            chosen = (
                coins
                if which is None
                else [max(coins, key=lambda c: c[2])]
                if which == "largest"
                else [coins[which]]
            )
            pixels = np.any([_disc(*c) for c in chosen], axis=0)
            name, mask_name = Path(key).name, f"mask_{k:03d}.png"
            image_zip.writestr(f"selected_images/{category}/{name}", data)
            mask_zip.writestr(f"selected_masks/{category}/{mask_name}", _png(pixels))
            entries.append(
                {
                    "image_filename": name,
                    "mask_filename": mask_name,
                    "category": category,
                    "user_input": query,
                }
            )
    # an entry still being annotated: no mask, so AllenAI's and PointArena's evaluations skip it
    entries.append(
        {"image_filename": "table_03.jpg", "category": "spatial", "user_input": "Point to the middle coin."}
    )
    write_once(root / "data.json", json.dumps(entries, indent=1).encode())
    write_once(root / "selected_images.zip", images.getvalue())
    write_once(root / "selected_masks.zip", masks.getvalue())


def make_sample_benchmarks(
    folder: str | os.PathLike, *, url_for: Callable[[str], str] | None = None
) -> dict[str, Path]:
    """Small copies of the four benchmarks in ``folder``, one subfolder per Hub repository (``allenai--pixmo-count``
    ...), laid out as the Hub lays them out; returns benchmark name -> its folder, to pass as ``source=``.

    ``url_for(relative path)`` is the URL an image under ``folder/web/`` is served at (default: its
    ``file://`` URL); the copies of pixmo_count and pixmo_points each hold one URL that leads nowhere and
    one whose image has changed since its sha256 was taken. Made from ``input/``'s coin photos, offline.
    """
    folder = Path(folder)
    web = folder / "web"
    url_for = url_for or (lambda rel: (web / rel).resolve().as_uri())
    photos = _photos()
    roots = {name: folder / spec.repo_id.replace("/", "--") for name, spec in BENCHMARKS.items()}
    served = _web(web, photos, url_for)
    _countbench(roots["countbench"], photos)
    _pixmo_count(roots["pixmo_count"], photos, served)
    _pixmo_points(roots["pixmo_points"], photos, served)
    _point_bench(roots["point_bench"], photos)
    return roots


def benchmark_sources(folder: str = "11_paper_benchmarks/local_copies") -> dict[str, Path | None]:
    """Where each benchmark comes from: the Hub (None) for a real model; for the tiny test model, which
    runs offline, the small local copies of ``make_sample_benchmarks`` (under ``downloaded_data/outputs/``)."""
    molmo = model_id()
    if molmo == TINY_NAME or (Path(molmo).is_dir() and is_tiny_molmo2(molmo)):
        return make_sample_benchmarks(output_path(folder))
    return dict.fromkeys(BENCHMARKS)
