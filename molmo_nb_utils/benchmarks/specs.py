"""The four public benchmarks the Molmo2 report uses for image counting and pointing, as data.

Why one table: where each benchmark lives on the Hub, which files it holds, how an item is asked and
which of AllenAI's evaluators scores it are facts that loading, scoring, the lesson and the paper
table all need. Each is written here once (checked against allenai/molmo2, ``olmo/data`` and
``olmo/eval``, and the datasets' cards) and looked up by name.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BENCHMARKS", "POINT_BENCH_CATEGORIES", "Benchmark", "benchmark"]

# AllenAI's PointBenchEval.CATEGORIES; the average is their mean (olmo/eval/inf_evaluator.py).
POINT_BENCH_CATEGORIES = ("affordable", "counting", "reasoning", "spatial", "steerable")

# The first template of AllenAI's lists (olmo/preprocessing/data_formatter.py, GENERAL_PROMPTS_V1
# "point_count" and "pointing"), which their formatter's debug mode always picks; the label goes in
# lower-cased, as their formatter puts it. Their evaluation picks one of ~50 templates per item with a
# generator seeded by the item's position in their own copy of the data (after the images they could
# not download were dropped), which a copy made later cannot reproduce; one fixed template can be.
COUNT_TEMPLATE = "How many {label} are there?"
POINT_TEMPLATE = "Point to {label}\nPlease say 'There are none.' if it is not in the image."

COUNT_RULES = {
    "correct": "PointCountEval: the answer's number of points equals the true count",
    "close": "PointCountEval: the answer's number of points is within 1 of the true count",
    "valid": "PointCountEval: an answer was given (its number of points is its count, 0 for none)",
}
POINTING_RULES = {
    "precision": "PointingEval: matched points inside their object's mask / points given, averaged per image",
    "recall": "PointingEval: matched points inside their object's mask / true objects, averaged per image",
    "f1": "PointingEval: 2PR/(P+R) per image, averaged (no true object: 1 if no point given, else 0)",
}
_BENCH_RULE = "PointBenchEval: at least one point, and every point in the mask (pixel = int(x), int(y))"
POINT_BENCH_RULES = {
    **{c: f"{_BENCH_RULE}, {c} items" for c in POINT_BENCH_CATEGORIES},
    "average": "the mean of the five categories (AllenAI's Point-Bench average)",
}


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: where it lives, how its items are asked and scored."""

    name: str
    title: str
    repo_id: str  # the Hugging Face dataset
    splits: tuple[str, ...]  # the first is the default
    measures: str  # what it measures, for the lesson
    prompt: str  # how an item is asked
    evaluator: str  # AllenAI's evaluator class
    rules: dict[str, str]  # metric -> the rule that computes it, in AllenAI's names
    max_new_tokens: int  # AllenAI's budget for the task (olmo/eval/eval_utils.py)
    files: tuple[str, ...] = ()  # files the repository must hold besides data/{split}-*.parquet

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(self.rules)

    @property
    def parquet(self) -> bool:
        """Rows in ``data/{split}-*.parquet`` (as the Hub names them), not a json list."""
        return not self.files


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            name="countbench",
            title="CountBench (CountBenchQA)",
            repo_id="vikhyatk/CountBenchQA",
            splits=("test",),
            measures="counting 2 to 10 objects in web photos, asked in plain language",
            prompt="the row's question, verbatim",
            evaluator="PointCountEval",
            rules=COUNT_RULES,
            max_new_tokens=192,
        ),
        Benchmark(
            name="pixmo_count",
            title="PixMo-Count",
            repo_id="allenai/pixmo-count",
            splits=("test", "validation"),
            measures="counting 2 to 10 objects of a named kind in web images (human-verified counts)",
            prompt=f"{COUNT_TEMPLATE!r} with the row's label, lower-cased",
            evaluator="PointCountEval",
            rules=COUNT_RULES,
            max_new_tokens=192,
        ),
        Benchmark(
            name="pixmo_points",
            title="PixMo-Points (pixmo-points-eval)",
            repo_id="allenai/pixmo-points-eval",
            splits=("test",),
            measures="pointing at every object a phrase names, judged against each object's mask",
            prompt=f"{POINT_TEMPLATE!r} with the row's label, lower-cased",
            evaluator="PointingEval",
            rules=POINTING_RULES,
            max_new_tokens=192,
        ),
        Benchmark(
            name="point_bench",
            title="Point-Bench (PointArena)",
            repo_id="PointArena/pointarena-data",
            splits=("test",),
            measures="pointing after reasoning: affordances, counting, spatial relations, steering by a "
            "marked point, and other reasoning",
            prompt="the row's user_input, verbatim",
            evaluator="PointBenchEval",
            rules=POINT_BENCH_RULES,
            max_new_tokens=256,
            files=("data.json", "selected_images.zip", "selected_masks.zip"),
        ),
    )
}


def benchmark(name: str) -> Benchmark:
    """The benchmark called ``name`` (a key of ``BENCHMARKS``); an unknown name says which exist."""
    if not isinstance(name, str) or name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}: choose one of {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def check_split(spec: Benchmark, split: str | None) -> str:
    """The split to read: ``split``, or the benchmark's default; an unknown one says which exist."""
    if split is None:
        return spec.splits[0]
    if split not in spec.splits:
        raise ValueError(f"{spec.name} has no split {split!r}: choose one of {', '.join(spec.splits)}")
    return split
