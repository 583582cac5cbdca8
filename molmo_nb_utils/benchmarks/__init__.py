"""The paper's benchmarks: run Molmo2 on CountBench, PixMo-Count, PixMo-Points and Point-Bench, score as
AllenAI scores, and put the figures beside the Molmo2 report's with their uncertainty.

Why: "do I get the published numbers?" needs the benchmarks themselves, AllenAI's scoring rules, and an
honest comparison (a sample of 50 items has a wide interval). One module per concern:

* ``specs``: the four benchmarks as data (``BENCHMARKS``): Hub repository, splits, prompt, AllenAI's
  evaluator and metric names;
* ``files``: a benchmark's files from a local copy (``source``) or the Hub (``huggingface_hub``), read as
  the Hub stores them (parquet through pyarrow, Point-Bench's json), and the fixed sample of ``limit``;
* ``images``: images by URL downloaded with the package's rules and checked against their sha256 (gone
  or changed: left out, with a warning), images and masks from the parquet files and zips, masks as
  ``Mask``;
* ``loading``: ``load_benchmark``, the rows as the dataset runner's ``DatasetItem``s (``BenchmarkItems``),
  so ``run_dataset``, ``score_results``, ``draw_result`` and ``worst_items`` work on them unchanged;
* ``scoring``: ``score_benchmark`` by AllenAI's ``PointCountEval``, ``PointingEval`` and
  ``PointBenchEval`` (``BenchmarkScore``, a mapping of their metric names);
* ``paper``: the report's figures (``PAPER_SCORES``) and ``paper_table``: ours beside them, with a 95%
  interval (Wilson or bootstrap);
* ``samples``: small local copies in the Hub's exact layouts, made offline (``make_sample_benchmarks``;
  ``benchmark_sources`` picks them for the tiny test model);
* ``pictures``: an item with its truth, masks shaded (``draw_benchmark_item``).

The lesson is ``11_paper_benchmarks.ipynb``.
"""

from molmo_nb_utils.benchmarks.loading import BenchmarkItems, load_benchmark
from molmo_nb_utils.benchmarks.paper import (
    PAPER_MODELS,
    PAPER_SCORES,
    PAPER_SOURCE,
    PaperScore,
    interval,
    paper_table,
)
from molmo_nb_utils.benchmarks.pictures import draw_benchmark_item
from molmo_nb_utils.benchmarks.samples import benchmark_sources, make_sample_benchmarks
from molmo_nb_utils.benchmarks.scoring import BenchmarkScore, ItemOutcome, score_benchmark
from molmo_nb_utils.benchmarks.specs import BENCHMARKS, POINT_BENCH_CATEGORIES, Benchmark, benchmark

__all__ = [
    "BENCHMARKS",
    "PAPER_MODELS",
    "PAPER_SCORES",
    "PAPER_SOURCE",
    "POINT_BENCH_CATEGORIES",
    "Benchmark",
    "BenchmarkItems",
    "BenchmarkScore",
    "ItemOutcome",
    "PaperScore",
    "benchmark",
    "benchmark_sources",
    "draw_benchmark_item",
    "interval",
    "load_benchmark",
    "make_sample_benchmarks",
    "paper_table",
    "score_benchmark",
]
