"""``load_benchmark``: a benchmark's rows as the dataset runner's own items, each with its prompt and truth.

Why the runner's items: ``run_dataset`` (resumable results, batches), ``score_results``, ``draw_result``
and ``worst_items`` then work on a benchmark as on a reader's own data, and only the scoring by
AllenAI's rules (``scoring``) is new. What each benchmark's rows become:

* countbench: the row's image (stored in the parquet file), its question, its count;
* pixmo_count: the image at the row's URL, "How many <label> are there?", its count (and points);
* pixmo_points: the image at the row's URL, a pointing prompt with the label, the true points in
  pixels (the rows give them on a 0-100 scale of the mask's size) and each point's mask;
* point_bench: the image and mask from the zips, the row's ``user_input``, the category as the
  item's ``label``, the mask as the item's one mask (and, for pictures, its innermost pixel as a point).
"""

from __future__ import annotations

import math
import numbers
import os
import warnings
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from molmo_nb_utils.benchmarks.files import benchmark_folder, read_json_rows, read_parquet_rows
from molmo_nb_utils.benchmarks.images import (
    SHA256,
    fetch_images,
    fit_mask,
    image_suffix,
    mask_of,
    pick_member,
    png_mask,
    read_member,
    write_once,
    zip_members,
)
from molmo_nb_utils.benchmarks.specs import (
    COUNT_TEMPLATE,
    POINT_BENCH_CATEGORIES,
    POINT_TEMPLATE,
    Benchmark,
    benchmark,
    check_split,
)
from molmo_nb_utils.dataset.items import DatasetItem
from molmo_nb_utils.grounding import Point
from molmo_nb_utils.media import image_size
from molmo_nb_utils.paths import DATA_DIR

__all__ = ["BenchmarkItems", "load_benchmark"]


class BenchmarkItems(list):
    """The items of one benchmark: a list of ``DatasetItem`` (pass it wherever items go), which also
    says where they came from and what was left out.

    ``total``: rows in the split; ``sampled``: the rows taken (all, or ``limit`` of them);
    ``left_out``: ``(row, reason)`` for each sampled row whose image is gone or changed.
    """

    def __init__(
        self,
        items: Iterable[DatasetItem],
        *,
        name: str,
        split: str,
        total: int,
        sampled: int,
        left_out: tuple[tuple[int, str], ...],
        folder: Path,
    ):
        super().__init__(items)
        self.name, self.split, self.total, self.sampled = name, split, total, sampled
        self.left_out, self.folder = left_out, folder

    def __repr__(self) -> str:
        return f"<{self.name} {self.split}: {self.summary()}>"

    def summary(self) -> str:
        """ "48 of 50 items (2 left out: image gone or changed; the test split has 540)"."""
        out = f"{len(self)} of {self.sampled} items"
        if self.left_out:
            out += f" ({len(self.left_out)} left out: image gone or changed"
            return out + f"; the {self.split} split has {self.total})"
        return out + f" (the {self.split} split has {self.total})"


def _bad(spec: Benchmark, split: str, row: int, what: str) -> ValueError:
    return ValueError(
        f"{spec.repo_id}, {split} row {row}: {what}. Is the copy complete, and of this dataset's files?"
    )


def _text(spec: Benchmark, split: str, row: int, record: dict[str, Any], field: str) -> str:
    value = record.get(field)
    if not isinstance(value, str) or not value.strip():
        raise _bad(spec, split, row, f"{field} must be a non-empty text, got {value!r}")
    return value


def _whole(spec: Benchmark, split: str, row: int, record: dict[str, Any], field: str) -> int:
    value = record.get(field)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise _bad(spec, split, row, f"{field} must be a whole number >= 0, got {value!r}")
    return int(value)


def _pairs(spec: Benchmark, split: str, row: int, value: Any) -> list[tuple[float, float]] | None:
    """Points as (x, y): a list of {x, y} (pixmo-points-eval) or {x: [...], y: [...]} (pixmo-count)."""
    if value is None:
        return None
    try:
        if isinstance(value, dict):
            xs, ys = value["x"], value["y"]
            if len(xs) != len(ys):
                raise ValueError("x and y of different lengths")
            pairs = list(zip(xs, ys, strict=True))
        else:
            pairs = [(p["x"], p["y"]) for p in value]
        pairs = [(float(x), float(y)) for x, y in pairs]
    except (KeyError, TypeError, ValueError):
        raise _bad(spec, split, row, f"points must be a list of {{x, y}}, got {str(value)[:80]}") from None
    if not all(math.isfinite(v) for p in pairs for v in p):
        raise _bad(spec, split, row, "a point is not a finite number")
    return pairs


def _url_rows(
    spec: Benchmark, split: str, rows: list[tuple[int, dict[str, Any]]]
) -> list[tuple[int, str, str]]:
    wanted = []
    for row, record in rows:
        url = _text(spec, split, row, record, "image_url")
        sha = str(record.get("image_sha256") or "").strip().lower()
        if not SHA256.fullmatch(sha):
            raise _bad(
                spec,
                split,
                row,
                f"image_sha256 must be 64 hexadecimal digits, got {record.get('image_sha256')!r}",
            )
        wanted.append((row, url, sha))
    return wanted


Built = tuple[int, list[tuple[int, dict[str, Any]]], list[DatasetItem], list[tuple[int, str]]]


def _countbench(
    spec: Benchmark, split: str, folder: Path, out: Path, cache: Path, limit: int | None
) -> Built:
    total, rows = read_parquet_rows(folder, split, ("image", "question", "number"), limit)
    items, left_out = [], []
    for row, record in rows:
        question = _text(spec, split, row, record, "question")
        count = _whole(spec, split, row, record, "number")
        image = record.get("image")  # datasets' Image feature: {bytes, path}; plain bytes are read too
        data = image.get("bytes") if isinstance(image, dict) else image if isinstance(image, bytes) else None
        suffix = image_suffix(data) if data else None
        if suffix is None:  # AllenAI's CountBench builder skips rows without an image too
            left_out.append((row, "gone: the row holds no readable image"))
            continue
        path = write_once(out / f"{row:05d}{suffix}", data)
        items.append(_item(spec, split, path, label="object", prompt=question, count=count))
    return total, rows, items, left_out


def _pixmo_count(
    spec: Benchmark, split: str, folder: Path, out: Path, cache: Path, limit: int | None
) -> Built:
    columns = ("image_url", "image_sha256", "count", "label")
    total, rows = read_parquet_rows(folder, split, columns, limit, optional=("points",))
    truth = {}
    for row, record in rows:
        label = _text(spec, split, row, record, "label")
        truth[row] = (
            label,
            _whole(spec, split, row, record, "count"),
            _pairs(spec, split, row, record.get("points")),
        )
    files = fetch_images(_url_rows(spec, split, rows), cache, out)
    items, left_out = [], []
    for row, _ in rows:
        if isinstance(files[row], str):
            left_out.append((row, files[row]))
            continue
        label, count, pairs = truth[row]
        width, height = image_size(files[row])
        inside = pairs and len(pairs) == count and all(0 <= x <= width and 0 <= y <= height for x, y in pairs)
        points = tuple(Point(k, x, y, image=1) for k, (x, y) in enumerate(pairs, start=1)) if inside else None
        prompt = COUNT_TEMPLATE.format(label=label.lower())
        items.append(_item(spec, split, files[row], label=label, prompt=prompt, count=count, points=points))
    return total, rows, items, left_out


def _pixmo_points(
    spec: Benchmark, split: str, folder: Path, out: Path, cache: Path, limit: int | None
) -> Built:
    columns = ("image_url", "image_sha256", "label", "points", "masks")
    total, rows = read_parquet_rows(folder, split, columns, limit)
    truth = {}
    for row, record in rows:
        label = _text(spec, split, row, record, "label")
        pairs = _pairs(spec, split, row, record["points"]) or []
        masks = record["masks"]
        if isinstance(masks, str):
            raise _bad(spec, split, row, f"masks: {masks}")
        if len(masks) != len(pairs) and not (not pairs and len(masks) == 1):  # no point: one empty mask
            raise _bad(
                spec, split, row, f"{len(pairs)} points but {len(masks)} masks: give one mask per point"
            )
        if not all(0 <= v <= 100 for p in pairs for v in p):
            raise _bad(
                spec, split, row, "points must be on a 0-100 scale of the image, as AllenAI reads them"
            )
        truth[row] = (label, pairs, masks)
    files = fetch_images(_url_rows(spec, split, rows), cache, out)
    items, left_out, fitted = [], [], 0
    for row, _ in rows:
        if isinstance(files[row], str):
            left_out.append((row, files[row]))
            continue
        label, pairs, masks = truth[row]
        size = image_size(files[row])
        mask_h, mask_w = masks.shape[1:]
        fitted += (mask_w, mask_h) != size
        # AllenAI: points * (mask width, mask height) / 100
        points = tuple(
            Point(k, x * mask_w / 100, y * mask_h / 100, image=1) for k, (x, y) in enumerate(pairs, 1)
        )
        shapes = tuple(mask_of(fit_mask(m, size)) for m in masks) if pairs else ()
        prompt = POINT_TEMPLATE.format(label=label.lower())
        items.append(
            _item(
                spec,
                split,
                files[row],
                label=label,
                prompt=prompt,
                count=len(points),
                points=points,
                masks=shapes,
            )
        )
    _warn_fitted(spec, fitted)
    return total, rows, items, left_out


def _point_bench(
    spec: Benchmark, split: str, folder: Path, out: Path, cache: Path, limit: int | None
) -> Built:
    total, rows = read_json_rows(folder / "data.json", limit)
    items, left_out, fitted = [], [], 0
    with (
        zipfile.ZipFile(folder / "selected_images.zip") as images,
        zipfile.ZipFile(folder / "selected_masks.zip") as mask_zip,
    ):
        image_members, mask_members = zip_members(images), zip_members(mask_zip)
        for row, entry in rows:
            if not isinstance(entry, dict):
                raise _bad(spec, split, row, f"an entry of data.json must be an object, got {entry!r}")
            prompt = _text(spec, split, row, entry, "user_input")
            category = entry.get("category")
            if category not in POINT_BENCH_CATEGORIES:
                raise _bad(
                    spec,
                    split,
                    row,
                    f"category must be one of {', '.join(POINT_BENCH_CATEGORIES)}, got {category!r}",
                )
            image_name = _text(spec, split, row, entry, "image_filename")
            mask_name = _text(spec, split, row, entry, "mask_filename")
            image = pick_member(image_members, image_name, category, "selected_images.zip")
            mask = pick_member(mask_members, mask_name, category, "selected_masks.zip")
            if isinstance(image, str) or isinstance(mask, str):
                left_out.append((row, image if isinstance(image, str) else mask))
                continue
            data = read_member(images, image)
            suffix = image_suffix(data)
            if suffix is None:
                left_out.append((row, f"gone: {image_name} is not a readable image"))
                continue
            try:
                pixels = png_mask(read_member(mask_zip, mask))
            except (OSError, ValueError) as err:
                left_out.append((row, f"gone: its mask {mask_name} is unreadable ({err})"))
                continue
            path = write_once(out / f"{row:05d}{suffix}", data)
            size = image_size(path)
            fitted += pixels.shape[::-1] != size
            pixels = fit_mask(pixels, size)
            region = mask_of(pixels)
            inner = (Point(1, *region.inner_point(size), image=1),) if pixels.any() else ()
            items.append(
                _item(
                    spec,
                    split,
                    path,
                    label=category,
                    prompt=prompt,
                    points=inner,
                    masks=(region,) if inner else (),
                )
            )
    _warn_fitted(spec, fitted)
    return total, rows, items, left_out


def _item(spec: Benchmark, split: str, path: Path, **fields: Any) -> DatasetItem:
    return DatasetItem(key=f"{spec.name}/{split}/{path.name}", path=path, kind="image", **fields)


def _warn_fitted(spec: Benchmark, fitted: int) -> None:
    if fitted:
        warnings.warn(
            f"{spec.name}: {fitted} mask(s) are not the size of their image; each was cropped or padded to it, "
            "which is how AllenAI's evaluation reads them (a point where the mask has no pixel is outside).",
            UserWarning,
            stacklevel=3,
        )


BUILDERS: dict[str, Callable[..., Built]] = {
    "countbench": _countbench,
    "pixmo_count": _pixmo_count,
    "pixmo_points": _pixmo_points,
    "point_bench": _point_bench,
}


def load_benchmark(
    name: str,
    split: str | None = None,
    *,
    source: str | os.PathLike | None = None,
    limit: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> BenchmarkItems:
    """The items of benchmark ``name`` (``BENCHMARKS``), each with the benchmark's prompt and truth.

    ``split``: the benchmark's default (``BENCHMARKS[name].splits[0]``) or another of its splits.
    ``source``: a folder holding the same files as the dataset's Hugging Face repository (what
    ``huggingface_hub.snapshot_download(repo_id, repo_type="dataset")`` puts there); None: they are
    downloaded from the Hub into its usual cache, once. ``limit``: a fixed sample of that many rows,
    spread evenly over the split (row ``k * rows // limit``): the same items every time.

    Images given by URL are downloaded (cached under ``cache_dir``, default
    ``downloaded_data/benchmarks/``) and checked against the row's sha256: a row whose image is gone or
    changed is left out with a ``UserWarning`` that says how many and why, and ``BenchmarkItems`` says
    "n of N items". A malformed row or a copy that lacks a file raises, naming it.
    """
    spec = benchmark(name)
    split = check_split(spec, split)
    folder = benchmark_folder(spec, split, source)
    root = Path(cache_dir) if cache_dir is not None else DATA_DIR / "benchmarks"
    total, rows, items, left_out = BUILDERS[name](
        spec, split, folder, root / name / split, root / "downloads", limit
    )
    if left_out:
        gone = sum(reason.startswith("gone") for _, reason in left_out)
        shown = "; ".join(f"row {row}: {reason}" for row, reason in left_out[:3])
        more = f"; and {len(left_out) - 3} more" if len(left_out) > 3 else ""
        warnings.warn(
            f"{name} {split}: left out {len(left_out)} of {len(rows)} items, whose image is gone ({gone}) or "
            f"changed ({len(left_out) - gone}); scores count the other {len(items)}. {shown}{more}",
            UserWarning,
            stacklevel=2,
        )
    return BenchmarkItems(
        items, name=name, split=split, total=total, sampled=len(rows), left_out=tuple(left_out), folder=folder
    )
