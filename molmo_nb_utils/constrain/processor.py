"""The logits processor: at each step, only tokens that keep each answer on Molmo2's grammar.

Why each rule is here:

* A token is allowed only if a complete answer still fits in the tokens left after it (the
  automaton's ``distance``), so an answer cut by ``max_new_tokens`` still parses: the tags are
  closed in time. An answer that would have fitted is never touched: its own remaining tokens are
  a way to finish, so the fewest is no more than it needs.
* The end-of-answer tokens are allowed exactly where the answer is complete, and only the ids that
  ``generate`` stops on: a row that has ended is padded by ``generate`` and left alone.
* Every allowed logit keeps its value: the model's choice among the allowed tokens is unchanged, so a
  greedy answer that already follows the grammar comes out token for token the same, and sampling
  (temperature, top-k, top-p, which ``generate`` applies after this processor) samples from the
  model's own distribution restricted to valid continuations.
* Each row of a batch follows its own question's pattern (its images, its frame times), so a batch
  answers as one question at a time would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from molmo_nb_utils.constrain.automaton import UNREACHABLE, Automaton, compile_pattern
from molmo_nb_utils.constrain.grammar import (
    COUNT_TOTAL,
    Constraint,
    answer_pattern,
    counting_head,
    total_text,
)
from molmo_nb_utils.constrain.vocabulary import TokenBytes, token_bytes
from molmo_nb_utils.grounding import count_points, parse_points

_CLOSED = b"</points>"


@dataclass(frozen=True)
class Question:
    """What a question showed: ``images`` images, or the video frames at ``timestamps`` (seconds)."""

    images: int = 0
    timestamps: tuple[float, ...] | None = None


@lru_cache(maxsize=256)
def _shortest(literal: bytes, vocab: TokenBytes) -> int:
    """The fewest tokens that write exactly ``literal``."""
    ids = _ids_by_bytes(vocab)
    longest = max(map(len, ids))
    best = [0] + [UNREACHABLE] * len(literal)
    for end in range(1, len(literal) + 1):
        for start in range(max(0, end - longest), end):
            if literal[start:end] in ids and best[start] + 1 < best[end]:
                best[end] = best[start] + 1
    return best[-1]


@lru_cache(maxsize=8)
def _ids_by_bytes(vocab: TokenBytes) -> dict[bytes, list[int]]:
    return vocab.ids_by_bytes()


@dataclass
class _Row:
    """One answer being written: its automaton and state; for an exact total, its text and the rest to write."""

    automaton: Automaton
    question: Question
    exact_total: bool
    margin: int = 0  # exact total: room kept for the rest after </points>
    state: int | None = None  # None: ended (or left the pattern: then it is left alone)
    text: bytearray = field(default_factory=bytearray)
    tail: bytes | None = None  # exact total: what is left to write after </points>


class ConstrainedAnswers(LogitsProcessor):
    """A ``transformers`` logits processor that keeps each answer of a ``generate`` call in Molmo2's grammar.

    Build it with ``answer_processor``; it serves one ``generate`` call (it remembers where the prompts end).
    """

    def __init__(self, rows: Sequence[_Row], vocab: TokenBytes, max_new_tokens: int) -> None:
        self.questions = list(rows)  # one per question; ``rows`` are the answers of the current generate call
        self.rows: list[_Row] = []
        self.vocab = vocab
        self.max_new_tokens = max_new_tokens
        self.width: int | None = None
        self._eos = np.array(vocab.eos, dtype=np.int64)
        self._masks: dict[tuple, torch.Tensor] = {}

    # --- state -------------------------------------------------------------------------------

    def _start(self, input_ids: torch.Tensor) -> None:
        self.width = input_ids.shape[1]
        batch = input_ids.shape[0]
        if batch % len(self.questions):
            raise ValueError(f"constrained generation got {batch} rows for {len(self.questions)} questions")
        copies = batch // len(self.questions)  # num_return_sequences: each question's answers side by side
        self.rows = [
            _Row(q.automaton, q.question, q.exact_total, q.margin, q.automaton.initial)
            for q in self.questions
            for _ in range(copies)
        ]

    def _advance(self, row: _Row, token: int) -> None:
        if row.state is None:
            return
        if token in self.vocab.eos:
            row.state = None
            return
        if row.tail is not None:  # exact total: writing the literal rest
            written = self.vocab.tokens[token] or b""
            row.tail = row.tail[len(written) :] if row.tail.startswith(written) else None
            if row.tail is None:
                row.state = None
            return
        target = row.automaton.next_state(row.state, token)
        if target is None:  # not ours (another processor, a stopping criterion's padding): leave it be
            row.state = None
            return
        row.state = target
        if row.exact_total:
            row.text += self.vocab.tokens[token] or b""
            if target in row.automaton.complete and row.text.endswith(_CLOSED):
                row.tail = total_text(self._count(row)).encode()

    def _count(self, row: _Row) -> int:
        text = row.text.decode("utf-8", errors="ignore")
        q = row.question
        if q.timestamps is not None:
            return count_points(parse_points(text, (1000, 1000), video=True))
        return count_points(parse_points(text, [(1000, 1000)] * max(q.images, 1), video=False))

    # --- what may come next ------------------------------------------------------------------

    def _allowed(self, row: _Row, budget: int) -> tuple[tuple, np.ndarray | None, bool]:
        """A cache key, the token ids allowed for ``row`` with ``budget`` tokens left after this one (None: any),
        and whether the answer may end here."""
        if row.state is None:
            return ("free",), None, False
        if row.tail is not None:
            if not row.tail:
                return ("eos",), np.zeros(0, dtype=np.int64), True
            ids = _ids_by_bytes(self.vocab)
            found = [
                i
                for end in range(1, len(row.tail) + 1)
                if _shortest(row.tail[end:], self.vocab) <= budget
                for i in ids.get(row.tail[:end], ())
            ]
            return ("tail", row.tail, budget), np.array(found, dtype=np.int64), False
        automaton, state = row.automaton, row.state
        budget, ids = automaton.allowed(state, budget - row.margin)
        end = state in automaton.complete and not (row.exact_total and row.text.endswith(_CLOSED))
        return (id(automaton), state, budget, end), ids, end

    def _mask(self, key: tuple, ids: np.ndarray | None, end: bool, width: int, device) -> torch.Tensor:
        """The allowed tokens as a boolean row of ``width``, built once per key and generate call."""
        mask = self._masks.get(key)
        if mask is None:
            if ids is None:
                mask = torch.ones(width, dtype=torch.bool)
            else:
                mask = torch.zeros(width, dtype=torch.bool)
                mask[torch.from_numpy(ids[ids < width])] = True
                if end:
                    mask[torch.from_numpy(self._eos[self._eos < width])] = True
            mask = mask.to(device)
            if key[0] != "tail":
                self._masks[key] = mask
        return mask

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.width is None:
            self._start(input_ids)
        else:
            for row, token in zip(self.rows, input_ids[:, -1].tolist(), strict=True):
                self._advance(row, token)
        budget = self.max_new_tokens - (input_ids.shape[1] - self.width) - 1
        masks = torch.stack(
            [self._mask(*self._allowed(row, budget), scores.shape[-1], scores.device) for row in self.rows]
        )
        masked = scores.masked_fill(~masks, -float("inf"))
        # Another processor before this one (min_new_tokens, bad_words_ids, ...) may have ruled out every token
        # the grammar allows: then the grammar wins, its tokens equally likely, so the answer still parses.
        stuck = masked.amax(-1) == -float("inf")
        if stuck.any():
            masked[stuck] = torch.zeros_like(masked[stuck]).masked_fill(~masks[stuck], -float("inf"))
        return masked


def _pattern(constraint: Constraint, question: Question) -> str:
    kwargs = {"images": question.images, "timestamps": question.timestamps}
    if constraint.exact_total:
        return counting_head(constraint, **kwargs)
    return answer_pattern(constraint, **kwargs)


def answer_processor(
    constraint: Constraint,
    questions: Sequence[Question],
    vocab: TokenBytes,
    max_new_tokens: int,
) -> ConstrainedAnswers:
    """The processor for one ``generate`` call of ``questions`` (one per row); refuses a ``max_new_tokens``
    too small for even the shortest valid answer, before any token is written."""
    # Exact total: room for the rest after </points> with any count that fits (digits and "." one token
    # each at worst), kept from the start, so the room never runs short as points are added.
    margin = (
        _shortest(COUNT_TOTAL.encode(), vocab) + len(str(max_new_tokens)) + 1 if constraint.exact_total else 0
    )
    rows = []
    for question in questions:
        automaton = compile_pattern(_pattern(constraint, question), vocab)
        need = automaton.distance.get(automaton.initial, UNREACHABLE) + margin
        if need > max_new_tokens:
            raise ValueError(
                f"max_new_tokens={max_new_tokens} cannot hold even the shortest answer that constrain="
                f"{constraint.name!r} allows ({need} tokens with this tokenizer): give max_new_tokens of at least "
                f"{need}, and room for the points you expect (about 10 tokens a point)"
            )
        rows.append(_Row(automaton, question, constraint.exact_total, margin))
    return ConstrainedAnswers(rows, vocab, max_new_tokens)


def eos_ids(model, generate_kwargs: dict) -> tuple[int, ...]:
    """The ids ``generate`` stops on: the call's ``eos_token_id``, else the model's generation config's."""
    eos = generate_kwargs.get("eos_token_id", getattr(model.generation_config, "eos_token_id", None))
    if eos is None:
        raise ValueError(
            "the model's generation config names no eos_token_id: a constrained answer needs one to end"
        )
    return tuple(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]))


def with_constraint(
    model,
    processor,
    constraint: Constraint,
    questions: Sequence[Question],
    max_new_tokens: int,
    generate_kwargs: dict,
) -> dict:
    """``generate_kwargs`` with the constraint's processor added to any ``logits_processor`` already given."""
    if generate_kwargs.get("num_beams", 1) != 1:
        raise ValueError(
            "constrain= works with greedy or sampled decoding, not beam search: leave num_beams at 1"
        )
    vocab = token_bytes(getattr(processor, "tokenizer", processor), eos_ids(model, generate_kwargs))
    constrained = answer_processor(constraint, questions, vocab, max_new_tokens)
    return {
        **generate_kwargs,
        "logits_processor": LogitsProcessorList([*generate_kwargs.get("logits_processor", []), constrained]),
    }
