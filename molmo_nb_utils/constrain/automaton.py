"""A pattern compiled over the vocabulary: which tokens may come next, and how few can still finish.

Why outlines-core: it turns a regex into a token-level automaton over the tokenizer's own bytes
(in Rust, once per pattern) and hands the automaton over whole (``Index.get_transitions``). With
the whole automaton in hand, the fewest tokens that still complete an answer from any state is a
breadth-first search, so the processor can keep exactly enough room to close the tags before
``max_new_tokens`` runs out, and never cut an answer that would have fitted. xgrammar's matcher
answers only "which tokens next": its reserve would have to be a bound (every byte a token), which
cuts in early on answers that would have fitted, so a valid answer near the budget would change.

Measured by ``scripts/benchmark_constrained.py`` on a 152k-token byte-level BPE trained offline (a
shared 2-core CPU, load 6 to 9, so the figures are rough): outlines-core compiles a question's
pattern in 2 to 4 s (once per shape: cached) against xgrammar's 0.02 to 0.4 s, and its mask step then
takes 0.4 to 0.7 ms a token against xgrammar's 0.8 to 0.9 ms, about one softmax over the logits.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from outlines_core import Index, Vocabulary

from molmo_nb_utils.constrain.vocabulary import TokenBytes

UNREACHABLE = 1 << 30


@dataclass(frozen=True, eq=False)
class Automaton:
    """A pattern's token-level automaton: ``distance[state]`` is the fewest tokens from ``state`` to a
    complete answer (0 in a complete state, where the answer may end); ``tokens[state]`` the ids allowed
    there and ``reach[state]`` the distance after each of them."""

    initial: int
    complete: frozenset[int]
    distance: dict[int, int]
    tokens: dict[int, np.ndarray]
    reach: dict[int, np.ndarray]
    _next: dict[int, dict[int, int]] = field(repr=False)
    _allowed: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False)

    def next_state(self, state: int, token: int) -> int | None:
        """The state after ``token``, or None when the pattern does not allow it there."""
        return self._next.get(state, {}).get(token)

    def allowed(self, state: int, budget: int) -> tuple[int, np.ndarray]:
        """Token ids allowed in ``state`` after which a complete answer still fits in ``budget`` more tokens,
        and the budget that decided it (any budget at least the farthest next state's distance gives all)."""
        reach = self.reach.get(state)
        if reach is None or not len(reach):
            return 0, np.zeros(0, dtype=np.int64)
        budget = min(budget, int(reach.max()))
        key = (state, budget)
        found = self._allowed.get(key)
        if found is None:
            found = self.tokens[state][reach <= budget]
            self._allowed[key] = found
        return budget, found


# Where an answer may end is marked by one more character, NUL, written by a token of our own beyond the
# vocabulary. Why: outlines-core (0.2.14) keeps, in a state where the pattern may end, only the tokens that
# lead to another such state, so free text ("(a|<b)*") could never open a tag. With the mark, no state before
# it is final; a state is complete when the mark leads from it to a final one. Real tokens holding a NUL
# are left out: no answer writes one (labels and free text exclude it).
END = "\x00"


def sentinel(vocab: TokenBytes) -> int:
    """The id of the end mark: one past the vocabulary, so no real token is ever taken for it."""
    return len(vocab.tokens)


@lru_cache(maxsize=4)
def _vocabulary(vocab: TokenBytes) -> Vocabulary:
    ids = {b: i for b, i in vocab.ids_by_bytes().items() if END.encode() not in b}
    ids[END.encode()] = [sentinel(vocab)]
    return Vocabulary(vocab.eos[0], ids)


def _distances(finals: frozenset[int], edges: dict[int, np.ndarray]) -> dict[int, int]:
    """Fewest steps from each state to one of ``finals`` (breadth-first over the reversed edges)."""
    into: dict[int, list[int]] = {}
    for state, targets in edges.items():
        for target in targets.tolist():
            into.setdefault(target, []).append(state)
    distance = dict.fromkeys({*edges, *finals, *into}, UNREACHABLE)
    queue = deque(finals)
    for state in finals:
        distance[state] = 0
    while queue:
        state = queue.popleft()
        for before in into.get(state, ()):
            if distance[before] == UNREACHABLE:
                distance[before] = distance[state] + 1
                queue.append(before)
    return distance


@lru_cache(maxsize=64)
def compile_pattern(pattern: str, vocab: TokenBytes) -> Automaton:
    """``pattern`` over ``vocab``'s tokens, once per (pattern, vocabulary): a dataset asks the same shape often."""
    index = Index(f"(?:{pattern}){END}", _vocabulary(vocab))
    transitions = index.get_transitions()
    finals = frozenset(index.get_final_states())
    end = sentinel(vocab)
    complete = frozenset(s for s, moves in transitions.items() if moves.get(end) in finals)
    tokens, targets = {}, {}
    leave_out = np.array([*vocab.eos, end], dtype=np.int64)  # the processor decides where an answer ends
    for state, moves in transitions.items():
        ids = np.fromiter(moves.keys(), dtype=np.int64, count=len(moves))
        to = np.fromiter(moves.values(), dtype=np.int64, count=len(moves))
        keep = ~np.isin(ids, leave_out)
        tokens[state], targets[state] = ids[keep], to[keep]
    distance = _distances(complete, {s: np.unique(t) for s, t in targets.items()})
    states = np.array(sorted(distance), dtype=np.int64)
    far = np.array([distance[s] for s in states.tolist()], dtype=np.int64)
    reach = {state: far[np.searchsorted(states, to)] for state, to in targets.items()}
    return Automaton(index.get_initial_state(), complete, distance, tokens, reach, transitions)
