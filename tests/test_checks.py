"""checks.py: the "whole number >= 1" rule, written once and used everywhere."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from molmo_nb_utils.checks import positive_int, positive_int_or_none

PACKAGE = Path(__file__).resolve().parent.parent / "molmo_nb_utils"


@pytest.mark.parametrize("good", [1, 7, np.int64(3)])
def test_whole_numbers_from_one_pass_as_ints(good):
    assert positive_int(good, "n") == good and type(positive_int(good, "n")) is int
    assert positive_int_or_none(good, "n", "all") == good


@pytest.mark.parametrize("bad", [0, -2, 2.0, 2.5, "3", True, None])
def test_anything_else_is_refused_by_name_with_an_example(bad):
    with pytest.raises(ValueError, match=r"batch_size must be a whole number >= 1 \(e\.g\. batch_size=1\)"):
        positive_int(bad, "batch_size")


def test_none_passes_where_it_means_something_and_the_error_says_what():
    assert positive_int_or_none(None, "max_crops", "the processor's default") is None
    with pytest.raises(ValueError, match=r"max_crops must be .* or None \(the processor's default\), got 0"):
        positive_int_or_none(0, "max_crops", "the processor's default")


WHOLE = {"int", "numbers.Integral", "Integral", "(int, np.integer)", "(numbers.Integral, np.integer)"}


def _copies_of_the_rule(tree: ast.Module) -> list[int]:
    """Lines of an ``isinstance(v, bool) or not isinstance(v, int) or v < 1`` check: the rule written again."""
    inner = {id(c) for n in ast.walk(tree) if isinstance(n, ast.BoolOp) for c in ast.walk(n) if c is not n}
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.BoolOp) or id(node) in inner:
            continue
        calls = [
            p
            for p in ast.walk(node)
            if isinstance(p, ast.Call) and getattr(p.func, "id", None) == "isinstance"
        ]
        types = {ast.unparse(c.args[1]) for c in calls if len(c.args) == 2}
        below_one = any(
            (isinstance(op, (ast.Lt, ast.GtE)) and isinstance(c, ast.Constant) and c.value == 1)
            or (isinstance(op, ast.LtE) and isinstance(c, ast.Constant) and c.value == 0)
            for p in ast.walk(node)
            if isinstance(p, ast.Compare)
            for op, c in zip(p.ops, p.comparators, strict=True)
        )
        if "bool" in types and types & WHOLE and below_one:  # a whole number, not a positive real (fps)
            lines.append(node.lineno)
    for node in ast.walk(tree):  # ... or its message: `if n < 1: raise ValueError("n must be >= 1")`
        if isinstance(node, ast.If) and any(isinstance(n, ast.Raise) for n in node.body):
            compares = [c for c in ast.walk(node.test) if isinstance(c, ast.Compare)]
            below = any(
                isinstance(op, ast.Lt) and isinstance(c, ast.Constant) and c.value == 1
                for cmp in compares
                for op, c in zip(cmp.ops, cmp.comparators, strict=True)
            )
            said = " ".join(ast.unparse(n) for n in node.body if isinstance(n, ast.Raise))
            if below and (">= 1" in said or "whole number" in said):
                lines.append(node.lineno)
    return sorted(set(lines))


def test_the_rule_is_not_written_out_again_in_the_package():
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{line}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "checks.py"
        for line in _copies_of_the_rule(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert not found, "use checks.positive_int instead of:\n" + "\n".join(found)


def test_a_copy_of_the_rule_is_found():
    tree = ast.parse(
        "def f(rank, fps):\n"
        "    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:\n        raise ValueError\n"
        "    if isinstance(fps, bool) or not isinstance(fps, float) or not fps > 0:\n        raise ValueError\n"
    )
    assert _copies_of_the_rule(tree) == [2]
    tree = ast.parse(
        "def g(cols, index):\n"
        "    if cols < 1:\n        raise ValueError(f'cols must be >= 1, got {cols}')\n"
        "    if index < 1:\n        raise ValueError('image indices start at 1')\n"  # a rule of the data
    )
    assert _copies_of_the_rule(tree) == [2]
