"""A benchmark's files, from a local copy or the Hub, and its rows, read as the Hub stores them.

Why one path for both: a local copy (``source``) is read exactly like the Hub's files, because it is a
folder laid out like the dataset's repository (what ``huggingface_hub.snapshot_download`` puts in its
cache). So tests and offline lessons, which use local copies, run the code that reads the real data.

Rows are read with pyarrow, the Hub's own parquet format: only the sampled rows are turned into Python
objects, and a mask column of hundreds of millions of booleans is read as numpy, not as lists.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

from molmo_nb_utils.benchmarks.specs import Benchmark
from molmo_nb_utils.checks import positive_int_or_none

__all__ = ["benchmark_folder", "read_json_rows", "read_parquet_rows", "sample_rows"]


def _patterns(spec: Benchmark, split: str) -> list[str]:
    return list(spec.files) if spec.files else [f"data/{split}-*.parquet"]


def _missing(spec: Benchmark, split: str, folder: Path) -> str | None:
    """What the folder lacks for this split, or None."""
    if spec.files:
        gone = [f for f in spec.files if not (folder / f).is_file()]
        return ", ".join(gone) if gone else None
    return None if sorted(folder.glob(f"data/{split}-*.parquet")) else f"data/{split}-*.parquet"


def benchmark_folder(spec: Benchmark, split: str, source: str | os.PathLike | None) -> Path:
    """The folder holding the benchmark's files: ``source``, or the Hub's cached copy (downloaded once,
    with a progress bar, only the files this split needs)."""
    if source is not None:
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(
                f"source={str(source)!r} is not a folder: give the folder holding a copy of {spec.repo_id} "
                f"(its files as on the Hub: {', '.join(_patterns(spec, split))}), or source=None to download it"
            )
        where = f"source={str(source)!r}"
    else:
        try:
            folder = Path(
                snapshot_download(spec.repo_id, repo_type="dataset", allow_patterns=_patterns(spec, split))
            )
        except (OfflineModeIsEnabled, LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
            raise ConnectionError(
                f"Could not get {spec.repo_id} from the Hugging Face Hub ({type(err).__name__}: {err}). Online "
                "and HF_HUB_OFFLINE unset? Or download it elsewhere (huggingface-cli download "
                f"{spec.repo_id} --repo-type dataset) and pass that folder as source=."
            ) from None
        where = f"the Hub's copy of {spec.repo_id} ({folder})"
    missing = _missing(spec, split, folder)
    if missing:
        raise FileNotFoundError(
            f"{where} has no {missing}: a copy of {spec.repo_id} holds the files as the Hub names them "
            f"({', '.join(_patterns(spec, split))}), as huggingface_hub.snapshot_download puts them."
        )
    return folder


def sample_rows(total: int, limit: int | None) -> list[int]:
    """The rows a ``limit`` takes: ``limit`` rows spread evenly over the split, row ``k * total // limit``
    for k = 0, 1, ...; all rows without a limit. The same rows every time, on any machine, and from
    every part of the file (a file sorted by category or count still gives a sample of all of them)."""
    limit = positive_int_or_none(limit, "limit", "every item")
    if limit is None or limit >= total:
        return list(range(total))
    return [k * total // limit for k in range(limit)]


def read_parquet_rows(
    folder: Path, split: str, columns: tuple[str, ...], limit: int | None, optional: tuple[str, ...] = ()
) -> tuple[int, list[tuple[int, dict[str, Any]]]]:
    """(rows in the split, [(row number, row), ...] for the sampled rows), from ``data/{split}-*.parquet``.

    ``optional`` columns are read where the files have them. ``masks`` (a list of 2-D boolean lists) comes back as a numpy (n, H, W) array, or the text of what is
    wrong with it; every other column as Python values.
    """
    files = sorted(folder.glob(f"data/{split}-*.parquet"))
    try:
        table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"{folder / 'data'}: cannot read the {split} parquet files ({err})") from None
    absent = [c for c in columns if c not in table.column_names]
    if absent:
        raise ValueError(
            f"{', '.join(f.name for f in files)} lacks the column(s) {absent}; it has {table.column_names}. "
            "Is it the right dataset?"
        )
    columns = (*columns, *(c for c in optional if c in table.column_names))
    rows = sample_rows(table.num_rows, limit)
    picked = table.select(list(columns)).take(pa.array(rows, type=pa.int64()))
    plain = [c for c in columns if c != "masks"]
    records = picked.select(plain).to_pylist()
    if "masks" in columns:
        masks = picked.column("masks").combine_chunks()
        for k, record in enumerate(records):
            record["masks"] = _masks(masks[k])
    return table.num_rows, list(zip(rows, records, strict=True))


def _masks(value: pa.Scalar) -> Any:
    """A row's masks (list of H lists of W booleans each) as an (n, H, W) bool array, or why not."""
    if not value.is_valid:
        return "no masks (null)"
    masks = value.values  # one entry per mask
    if masks.null_count:
        return "a mask is null"
    if len(masks) == 0:
        return "no masks (an empty list)"
    heights = masks.value_lengths().to_numpy(zero_copy_only=False)
    rows = masks.flatten()
    widths = rows.value_lengths().to_numpy(zero_copy_only=False) if len(rows) else []
    if rows.null_count or len(set(heights.tolist())) != 1 or len(set(list(widths))) != 1 or not len(rows):
        return "the masks are not rectangles of one size (every mask H rows of W booleans)"
    bits = rows.flatten()
    if bits.null_count or not pa.types.is_boolean(bits.type):
        return f"mask values must be true/false, got {bits.type}"
    return bits.to_numpy(zero_copy_only=False).reshape(len(masks), int(heights[0]), int(widths[0]))


def read_json_rows(path: Path, limit: int | None) -> tuple[int, list[tuple[int, Any]]]:
    """(entries, [(entry number, entry), ...] for the sampled entries) of a json list (Point-Bench's
    ``data.json``). AllenAI's and PointArena's evaluations skip entries without a ``mask_filename``; so
    do we, before sampling, so a row number counts the entries evaluated."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a readable json file ({err})") from None
    if not isinstance(data, list):
        raise ValueError(f"{path} should hold a list of items, got {type(data).__name__}")
    kept = [(n, e) for n, e in enumerate(data) if not (isinstance(e, dict) and "mask_filename" not in e)]
    return len(kept), [kept[k] for k in sample_rows(len(kept), limit)]
