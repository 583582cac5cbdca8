"""Long answers are shortened where they are shown, never where they are kept.

Why: a model can write thousands of characters (the tiny test model writes walls of repeated tokens
and U+FFFD; a tracking answer at 8 fps runs to pages), and a wall of text pushes the picture under it
off the screen. The lessons show an answer in two ways: as it streams (``chat(..., stream=True)``,
with ``ShortenedStreamer``) and as a value (an ``Answer`` shown by IPython: ``display(answer)``, or
the last line of a cell). Both cut here, after the same number of characters and lines, and say how
many characters are left. The ``Answer`` itself, and everything that parses, stores or scores it,
keeps every character.
"""

from __future__ import annotations

from transformers import TextStreamer

DISPLAY_CHARS = 500  # a few sentences, or a pointing answer with a few dozen points
DISPLAY_LINES = 12


def shorten_for_display(text: str, max_chars: int = DISPLAY_CHARS, max_lines: int = DISPLAY_LINES) -> str:
    """``text`` as a notebook should show it: at most ``max_chars`` characters and ``max_lines`` lines,
    then, on a line of its own, how many characters were left out ("... 1,200 more characters")."""
    shown = _head(text, max_chars, max_lines)
    return shown + _more(len(text) - len(shown))


def _head(text: str, max_chars: int, max_lines: int) -> str:
    """The part of ``text`` that is shown: its first ``max_chars`` characters, cut after ``max_lines`` lines."""
    head = text[:max_chars]
    lines = head.split("\n")
    return "\n".join(lines[:max_lines]) if len(lines) > max_lines else head


def _more(hidden: int) -> str:
    return f"\n... {hidden:,} more characters (not shown; the answer keeps them)" if hidden > 0 else ""


class ShortenedStreamer(TextStreamer):
    """transformers' ``TextStreamer`` (prints the answer as it is written, the prompt left out) that
    stops printing where ``shorten_for_display`` cuts, and at the end says how many characters followed."""

    def __init__(self, tokenizer, max_chars: int = DISPLAY_CHARS, max_lines: int = DISPLAY_LINES) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.max_chars, self.max_lines = max_chars, max_lines
        self.written = ""  # everything the streamer was given
        self.shown = ""  # what was printed of it

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.written += text
        head = _head(self.written, self.max_chars, self.max_lines)
        if len(head) > len(self.shown):
            print(head[len(self.shown) :], end="", flush=True)
            self.shown = head
        if stream_end:
            print(_more(len(self.written.rstrip()) - len(self.shown)), flush=True)
