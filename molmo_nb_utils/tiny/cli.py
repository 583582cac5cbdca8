"""``python -m molmo_nb_utils.tiny``: build the tiny Molmo2 (or SAM 2) that the tests and offline notebooks use."""

from __future__ import annotations

import argparse

from molmo_nb_utils.tiny.folders import TinyModelError
from molmo_nb_utils.tiny.molmo2 import build_tiny_molmo2
from molmo_nb_utils.tiny.sam2 import build_tiny_sam2

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """``python -m molmo_nb_utils.tiny [FOLDER] [--segmenter] [--overwrite] [--seed N]``; prints the folder."""
    parser = argparse.ArgumentParser(
        prog="python -m molmo_nb_utils.tiny",
        description="Build the tiny random Molmo2 (or, with --segmenter, SAM 2) that the tests and the "
        "offline notebooks use.",
    )
    parser.add_argument(
        "folder", nargs="?", default=None,
        help="a new or empty folder, or one this command built before (default: downloaded_data/tiny-molmo2, "
        "or downloaded_data/tiny-sam2 with --segmenter)",
    )  # fmt: skip
    parser.add_argument("--segmenter", action="store_true", help="build the tiny SAM 2 instead of Molmo2")
    parser.add_argument("--overwrite", action="store_true", help="rebuild a finished build in FOLDER")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the random weights (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    build = build_tiny_sam2 if args.segmenter else build_tiny_molmo2
    folder = args.folder or ("downloaded_data/tiny-sam2" if args.segmenter else "downloaded_data/tiny-molmo2")
    try:
        print(build(folder, seed=args.seed, overwrite=args.overwrite))
    except TinyModelError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    return 0
