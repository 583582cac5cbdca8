"""Answers that always parse: constrained decoding of Molmo2's pointing, counting and tracking answers.

Why: an answer that breaks its own grammar (a cut-off ``coords``, a four-digit coordinate, a
missing quote) loses its points. With ``chat(..., constrain="points")`` (also ``"count"``,
``"tracks"``, or ``True``: free text whose tags are closed) every token the model writes keeps the
answer inside Molmo2's grammar, so ``parse_points``/``parse_tracks`` read every point. It checks
the format, never the content: a constrained point is well written, not necessarily right.

One concern a module:

* ``grammar``: the answer shapes as one regex per question (``answer_pattern``), from AllenAI's
  ``point_formatter.py``: image numbers given or frame times shown, ids from 1, ``%03d``
  coordinates, label, closing tag; ``Constraint`` (``exact_total`` for counts).
* ``vocabulary``: the bytes each token writes (``token_bytes``), special tokens left out.
* ``automaton``: the regex compiled over those bytes by outlines-core, with the fewest tokens that
  finish an answer from each state (``compile_pattern``), cached per pattern.
* ``processor``: ``ConstrainedAnswers``, the transformers ``LogitsProcessor`` (``answer_processor``,
  ``with_constraint``): room kept to close before ``max_new_tokens``, one pattern per batch row.

The lesson is ``03_pointing.ipynb`` ("Answers that always parse"); the cost is measured by
``scripts/benchmark_constrained.py``.
"""

from molmo_nb_utils.constrain.automaton import Automaton, compile_pattern
from molmo_nb_utils.constrain.grammar import Constraint, answer_pattern, as_constraint
from molmo_nb_utils.constrain.processor import (
    ConstrainedAnswers,
    Question,
    answer_processor,
    with_constraint,
)
from molmo_nb_utils.constrain.vocabulary import TokenBytes, token_bytes

__all__ = [
    "Automaton",
    "ConstrainedAnswers",
    "Constraint",
    "Question",
    "TokenBytes",
    "answer_pattern",
    "answer_processor",
    "as_constraint",
    "compile_pattern",
    "token_bytes",
    "with_constraint",
]
