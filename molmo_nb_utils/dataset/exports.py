"""Exports that other tools read: per-item and per-point CSV (pandas, spreadsheets), COCO keypoints.

Why here: an export is only useful if the tool at the other end accepts it. COCO keypoints carry
the ``bbox``, ``area`` and ``segmentation`` that CVAT's importer and pycocotools' ``COCOeval``
require, and every image has its own ``file_name``. CSV cells that a spreadsheet would run as a
formula (the model's own text goes there) are neutralised as OWASP recommends, and more
(``safe_cell`` says why).
"""

from __future__ import annotations

import csv
import json
import math
import os
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from molmo_nb_utils.coco_images import frame_images, picture_image
from molmo_nb_utils.dataset.items import DatasetItem
from molmo_nb_utils.dataset.results import ItemResult, latest, now
from molmo_nb_utils.dataset.scoring import DatasetScore
from molmo_nb_utils.evaluation import distance_threshold
from molmo_nb_utils.grounding import Point
from molmo_nb_utils.paths import atomic_path

CSV_FIELDS = [
    "key", "kind", "prompt", "true_count", "predicted_count", "count_error", "tp", "fp", "fn",
    "precision", "recall", "f1", "mean_error_px", "threshold_px", "id_consistency", "seconds", "error", "answer",
]  # fmt: skip
POINT_FIELDS = ["key", "kind", "tag", "image", "time", "frame", "id", "x", "y"]


# A cell a spreadsheet may run: its first visible character is one of these (OWASP, CWE-1236) ...
_FORMULA_STARTS = ("=", "+", "-", "@")
# ... or it starts with a character OWASP and ASVS name on their own: tab, carriage return (and
# line feed, its twin), NUL.
_CONTROL_STARTS = ("\t", "\r", "\n", "\0")


def safe_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text, never runs: OWASP's advice against formula injection.

    A text gets a leading ``'`` (spreadsheets show it as text and hide the quote) when it starts
    with a tab, carriage return, line feed or NUL, or when its first visible character is ``=``,
    ``+``, ``-`` or ``@``, read as NFKC reads it: leading spaces, newlines and invisible
    characters are looked through, and the full-width ``＝＋－＠`` count as ``=+-@``. Why so wide:
    spreadsheets differ in what they trim before deciding that a cell is a formula (an import that
    trims spaces, an East Asian input method's full-width ``＝``), and the model writes the text,
    so nobody checks it first. A quote too many costs nothing visible; a formula too many runs.
    Numbers stay numbers: ``-3`` is written as ``-3``, whether it came as a number or as a text
    that reads as one.
    """
    if not isinstance(value, str) or _is_number(value):
        return value
    if value.startswith(_CONTROL_STARTS) or _first_visible(value) in _FORMULA_STARTS:
        return "'" + value
    return value


def _first_visible(text: str) -> str:
    """The first character that is not white space or invisible (control, format), in NFKC form."""
    for character in text:
        if not (character.isspace() or unicodedata.category(character) in ("Cc", "Cf")):
            return unicodedata.normalize("NFKC", character)[:1]
    return ""


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text)) and text.strip() == text
    except ValueError:
        return False


def _write_csv(path: str | os.PathLike, fields: list[str], rows: Iterable[dict[str, Any]]) -> Path:
    """UTF-8 CSV, written whole or not at all; a file name that is not valid UTF-8 is written escaped."""
    path = Path(path)
    with (
        atomic_path(path) as tmp,
        tmp.open("w", newline="", encoding="utf-8", errors="backslashreplace") as file,
    ):
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        writer.writerows({k: safe_cell(v) for k, v in row.items()} for row in rows)
    return path


def export_csv(score: DatasetScore, results: Iterable[ItemResult], path: str | os.PathLike) -> Path:
    """One row per item: counts, matched/extra/missed points, precision, recall, F1, time, error, answer.

    Read it with ``csv.DictReader`` or ``pandas.read_csv``; empty cells are values that do not apply.
    """
    by_key = latest(results)
    rows = []
    for s in score.items:
        r, p = by_key.get(s.key), s.points
        rows.append(
            {
                "key": s.key,
                "kind": s.kind,
                "prompt": r.prompt if r else None,
                "true_count": s.true_count,
                "predicted_count": s.predicted_count,
                "count_error": s.count_error,
                "tp": p and p.tp,
                "fp": p and p.fp,
                "fn": p and p.fn,
                "precision": p and round(p.precision, 4),
                "recall": p and round(p.recall, 4),
                "f1": p and round(p.f1, 4),
                "mean_error_px": p and p.mean_error_px and round(p.mean_error_px, 2),
                "threshold_px": s.threshold_px and round(s.threshold_px, 2),
                "id_consistency": s.tracks and round(s.tracks.id_consistency, 4),
                "seconds": r.seconds if r else None,
                "error": s.error,
                "answer": r.answer if r else None,
            }
        )
    return _write_csv(path, CSV_FIELDS, rows)


def export_points_csv(
    items: Sequence[DatasetItem], results: Iterable[ItemResult], path: str | os.PathLike
) -> Path:
    """One row per predicted point: item, tag (points or tracks), image or time and frame index, id, x, y.

    Only items of ``items`` are exported (in their order): results of items since removed from
    the dataset stay in the results file, not in the export.
    """
    by_key = latest(results)
    rows = []
    for r in (by_key[item.key] for item in items if item.key in by_key):
        plan = r.plan
        for tag, points in (("points", r.points), ("tracks", r.tracks)):
            for p in points:
                rows.append(
                    {
                        "key": r.key,
                        "kind": r.kind,
                        "tag": tag,
                        "image": p.image,
                        "time": p.time,
                        "frame": plan.frame_at(p.time) if p.time is not None and plan else None,
                        "id": p.id,
                        "x": round(p.x, 2),
                        "y": round(p.y, 2),
                    }
                )
    return _write_csv(path, POINT_FIELDS, rows)


def export_coco(items: Sequence[DatasetItem], results: Iterable[ItemResult], path: str | os.PathLike) -> Path:
    """The predicted points as COCO keypoints JSON (CVAT, FiftyOne and pycocotools read it).

    One category per label, with one keypoint; each point is an annotation with
    ``keypoints: [x, y, 2]`` (2: visible), ``num_keypoints: 1`` and ``score: 1.0`` (Molmo2 gives
    no confidence). A point has no extent, so its ``bbox`` is the square it may be matched within
    (the hit rule of 04_video_pointing: 5% of the diagonal either side), clipped to the picture,
    with that ``area`` and the square as its ``segmentation`` polygon; pycocotools takes the area as
    the object's scale. For ``COCOeval(gt, dt, "keypoints")`` set ``params.kpt_oks_sigmas`` to one
    value (e.g. ``np.array([0.1])``): its default has COCO's 17 body keypoints.

    Images are named and numbered as ``coco_images`` says (an image item's key; each frame a video
    answer was given ``<video key>/<frame index, 6 digits>.jpg``, ``clip.mp4/000008.jpg``, with
    ``video``, ``frame_index`` and ``time``), the names and ids ``masks.to_coco`` gives the same frames.
    Image ids depend only on the item's place in ``items`` and the frame's place among those shown,
    so the export of the ground truth (``results_from_answers`` of ``worked_answer``) and of the
    answers share them.
    ``point_id`` keeps the answer's id; tracks add ``track_id``. Failed items are left out.
    """
    by_key = {key: r for key, r in latest(results).items() if r.error is None}
    labels = sorted({item.label for item in items if item.key in by_key})
    categories = [
        {"id": k, "name": label, "supercategory": label, "keypoints": [label], "skeleton": []}
        for k, label in enumerate(labels, start=1)
    ]
    category_of = {c["name"]: c["id"] for c in categories}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []

    def annotate(image: dict[str, Any], item: DatasetItem, point: Point, track: bool) -> None:
        width, height = image["width"], image["height"]
        half = distance_threshold(width, height)
        x0, y0 = max(0.0, point.x - half), max(0.0, point.y - half)
        x1, y1 = min(float(width), point.x + half), min(float(height), point.y + half)
        box = [round(x0, 2), round(y0, 2), round(max(x1 - x0, 0.0), 2), round(max(y1 - y0, 0.0), 2)]
        annotation = {
            "id": len(annotations) + 1,
            "image_id": image["id"],
            "category_id": category_of[item.label],
            "keypoints": [round(point.x, 2), round(point.y, 2), 2],
            "num_keypoints": 1,
            "bbox": box,
            "area": round(box[2] * box[3], 2),
            "segmentation": [[box[0], box[1], box[0] + box[2], box[1], box[0] + box[2], box[1] + box[3],
                              box[0], box[1] + box[3]]],
            "iscrowd": 0,
            "score": 1.0,
            "point_id": point.id,
        }  # fmt: skip
        if track:
            annotation["track_id"] = point.id
        annotations.append(annotation)

    for position, item in enumerate(items, start=1):
        r = by_key.get(item.key)
        if r is None:
            continue
        if item.kind == "image":
            image = picture_image(item.key, r.size, position)
            images.append(image)
            for p in r.points:
                annotate(image, item, p, track=False)
            continue
        image_of = {image["time"]: image for image in frame_images(item.key, r.plan, position).values()}
        images.extend(image_of.values())
        for track, points in ((False, r.points), (True, r.tracks)):
            for p in points:
                if p.time in image_of:
                    annotate(image_of[p.time], item, p, track)
    coco = {
        "info": {
            "description": "Molmo2 answers, from molmo_nb_utils.dataset.export_coco",
            "date_created": now(),
        },
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(coco, indent=1), encoding="utf-8")
    return Path(path)
