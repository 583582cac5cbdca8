"""Molmo2's answer shapes as one regular expression per question: what ``parse_points`` reads, no more.

Why a regex: the shapes are regular once the question is known (which images, which frame times),
so a library compiles them into an automaton over the tokenizer's vocabulary (``automaton``), and
the same text is the documentation of what a constrained answer can be (``answer_pattern``).

The pieces follow AllenAI's ``point_formatter.py`` (allenai/molmo2): a group is ``PREFIX ID X Y
[ID X Y ...]``, groups joined by ``;`` (older checkpoints: a tab); PREFIX is an image number
(``1`` for a single image) or a frame time written as the prompt writes it (``%.1f``); ids are
whole numbers from 1; X and Y are ``%03d`` on the 0..1000 scale; an optional ``alt="..."`` comes
before ``coords``. What a regex cannot say (ids ascending, each object once per frame, points
sorted) is left to the model; the counting total can be made to equal the points written
(``Constraint.exact_total``, enforced by ``processor``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

TASKS = ("points", "count", "tracks")
# Other names a reader may reach for, each meaning one of TASKS (the playground's task names among them)
_TASK_NAMES = {
    "point": "points",
    "pointing": "points",
    "counting": "count",
    "track": "tracks",
    "tracking": "tracks",
}
NONE_ANSWER = "There are none."
COUNT_OPENING = "Counting the "
COUNT_TOTAL = " shows a total of "

_COORD = r"(?:[0-9]{3}|1000)"
_ID = r"[1-9][0-9]{0,3}"  # ids from 1; four digits are more points than any answer holds
_TOTAL = r"[1-9][0-9]{0,3}"
_SEPARATOR = r"(?:;|\t)"  # html-v2 (Molmo2) writes ";", html-v1 a tab: parse_points reads both
# Labels and alt texts are one line of printable text: no "<" (it would end the label), no control characters;
# an alt text has no "=" either, or an alt of 'coords="1 2 3 4' would be read as the coordinates.
_ALT = r'(?: alt="[^"<>=\x00-\x1f\x7f]*")?'
_LABEL = r"[^<\x00-\x1f\x7f]*"
# parse_points reads "<point", "<points" and "<tracks" in any case: in free text ("constrain=True")
# a "<" may only start something else, so the answer holds no tag the constraint did not write.
_KEYWORDS = ("point", "track")


@dataclass(frozen=True)
class Constraint:
    """What shape the answer must take: ``task`` is "points", "count", "tracks", or None for free text.

    ``None`` (what ``constrain=True`` means): the answer is free, but every ``<points``/``<tracks`` it
    opens is written whole and closed. ``exact_total``: for "count", the total the sentence states
    equals the number of points written (``count_points``), which Molmo2 itself does not promise.
    ``allow_none=False`` takes "There are none." away: the answer points at something (a test model
    whose random weights prefer that sentence then draws points; a real model is made to guess).
    """

    task: str | None = None
    exact_total: bool = False
    allow_none: bool = True

    def __post_init__(self) -> None:
        if self.task is not None and self.task not in TASKS:
            raise ValueError(
                f"constrain must be one of {', '.join(map(repr, TASKS))} or True, got {self.task!r}"
            )
        if self.exact_total and self.task != "count":
            raise ValueError(
                "exact_total is a rule of counting answers: use Constraint('count', exact_total=True)"
            )

    @property
    def name(self) -> str:
        """How a results file records it: "points", "count", "count, exact total", "tracks" or "tags"."""
        if self.task is None:
            return "tags"
        return ", ".join(
            [
                self.task,
                *(["exact total"] if self.exact_total else []),
                *([] if self.allow_none else ["no none"]),
            ]
        )


def as_constraint(value: object) -> Constraint | None:
    """``constrain=`` as given (None/False, True, a task name, a ``Constraint``) as a ``Constraint`` or None."""
    if value is None or value is False:
        return None
    if value is True:
        return Constraint()
    if isinstance(value, Constraint):
        return value
    if isinstance(value, str):
        if value == "tags":
            return Constraint()
        task, *options = [part.strip() for part in value.split(",")]
        task = _TASK_NAMES.get(task.lower(), task.lower())
        unknown = set(options) - {"exact total", "no none"}
        if not unknown:  # the names a results file records (Constraint.name) read back
            return Constraint(task, exact_total="exact total" in options, allow_none="no none" not in options)
    raise ValueError(
        f"constrain must be 'points', 'count', 'tracks', True, a Constraint or None, got {value!r}"
    )


def time_prefixes(timestamps: Iterable[float]) -> list[str]:
    """The frame times as the prompt writes them (``%.1f``, as Molmo2's processor does), each once."""
    return list(dict.fromkeys(f"{float(t):.1f}" for t in timestamps))


def prefixes(images: int, timestamps: Sequence[float] | None) -> list[str]:
    """The group prefixes an answer may use: the image numbers given, or the times of the frames shown."""
    if timestamps is not None:
        return time_prefixes(timestamps)
    return [str(i) for i in range(1, images + 1)]


def _literal(text: str) -> str:
    """``text`` as a regex that matches it, spaces left as they are (some regex engines reject an escaped space)."""
    return re.escape(text).replace("\\ ", " ")


def _alternation(words: Sequence[str]) -> str:
    return "(?:" + "|".join(_literal(w) for w in sorted(words, key=lambda w: (len(w), w))) + ")"


def tag_pattern(tag: str, group_prefixes: Sequence[str]) -> str:
    """``<points ...>label</points>`` (or tracks) whose groups start with one of ``group_prefixes``."""
    group = _alternation(group_prefixes) + f"(?: {_ID} {_COORD} {_COORD})+"
    coords = f"{group}(?:{_SEPARATOR}{group})*"
    return f'<{tag}{_ALT} coords="{coords}">{_LABEL}</{tag}>'


def _free_text(keywords: Sequence[str]) -> str:
    """One piece of free text: any character but "<", or a "<" that leaves every keyword before its end."""
    pieces = [r"[^<\x00]"]  # NUL: no answer writes it, and it marks the end of a pattern (``automaton``)
    for prefix in sorted({k[:i] for k in keywords for i in range(len(k))}):
        following = {k[len(prefix)] for k in keywords if k.startswith(prefix) and len(k) > len(prefix)}
        banned = "".join(sorted({c for f in following for c in (f, f.upper())})) + "<"
        pieces.append("<" + re.escape(prefix) + "[^" + re.escape(banned) + "\\x00]")
    return "(?:" + "|".join(pieces) + ")"


def answer_pattern(
    constraint: Constraint, *, images: int = 0, timestamps: Sequence[float] | None = None
) -> str:
    """The regular expression every constrained answer fully matches, for a question about ``images``
    images or about the video frames shown at ``timestamps`` (seconds)."""
    found = prefixes(images, timestamps)
    if constraint.task is None:
        tags = []
        if found:
            tags.append(tag_pattern("points", found))
            if timestamps is not None:
                tags.append(tag_pattern("tracks", found))
        return "(?:" + "|".join([_free_text(_KEYWORDS), *tags]) + ")*"
    if not found:
        raise ValueError(
            f"constrain={constraint.task!r} needs something to point at: ask about an image or a video "
            "(or use constrain=True, which only closes the tags an answer opens)"
        )
    if constraint.task == "tracks" and timestamps is None:
        raise ValueError("constrain='tracks' is for video questions: tracks are points over time")
    if constraint.task == "count":
        points = tag_pattern("points", found)
        shape = f"{_literal(COUNT_OPENING)}{points}{_literal(COUNT_TOTAL)}{_TOTAL}\\."
    else:
        shape = tag_pattern(constraint.task, found)
    return _either(shape, constraint)


def _either(shape: str, constraint: Constraint) -> str:
    """``shape``, or "There are none." where the constraint allows it."""
    return f"(?:{shape}|{_literal(NONE_ANSWER)})" if constraint.allow_none else f"(?:{shape})"


def counting_head(
    constraint: Constraint, *, images: int = 0, timestamps: Sequence[float] | None = None
) -> str:
    """A counting answer up to its closing ``</points>`` (or "There are none."): with ``exact_total`` the
    processor writes the rest, ``total_text(n)``, once the points are known."""
    found = prefixes(images, timestamps)
    if not found:
        return answer_pattern(constraint, images=images, timestamps=timestamps)  # raises
    return _either(f"{_literal(COUNT_OPENING)}{tag_pattern('points', found)}", constraint)


def total_text(count: int) -> str:
    """What follows ``</points>`` in a counting answer of ``count`` points."""
    return f"{COUNT_TOTAL}{count}."
