"""A long answer is shortened where a lesson shows it (streamed, or as a value), never in what is returned."""

from __future__ import annotations

import functools

from IPython.lib.pretty import pretty
from PIL import Image

from molmo_nb_utils import asking
from molmo_nb_utils.answer_display import DISPLAY_CHARS, DISPLAY_LINES, ShortenedStreamer, shorten_for_display
from molmo_nb_utils.asking import Answer, chat, user_message

NOTE = " more characters (not shown; the answer keeps them)"


def test_a_short_text_is_shown_whole():
    assert (
        shorten_for_display("Counting the coins shows a total of 3.")
        == "Counting the coins shows a total of 3."
    )
    assert shorten_for_display("x" * DISPLAY_CHARS) == "x" * DISPLAY_CHARS


def test_a_long_text_shows_its_start_and_how_much_is_left():
    text = "\ufffdords" * 340  # 1,700 characters, as the tiny model writes them
    assert shorten_for_display(text) == text[:500] + "\n... 1,200" + NOTE


def test_many_lines_are_cut_after_the_last_line_shown():
    text = "\n".join(f"line {k}" for k in range(40))
    shown = shorten_for_display(text)
    head = "\n".join(text.split("\n")[:DISPLAY_LINES])
    assert shown == head + f"\n... {len(text) - len(head):,}" + NOTE


def test_ipython_shows_an_answer_shortened_and_the_answer_keeps_every_character():
    text = "<points coords=" + "1 1 500 500 " * 200 + ">coins</points>"
    answer = Answer(text, images=[Image.new("RGB", (8, 8))])
    assert pretty(answer) == shorten_for_display(text) != text
    assert answer == text and str(answer) == text and answer.text == text and len(answer) == len(text)


def test_a_streamed_answer_is_printed_shortened_and_returned_whole(tiny_model, capsys, monkeypatch):
    model, processor = tiny_model
    monkeypatch.setattr(asking, "ShortenedStreamer", functools.partial(ShortenedStreamer, max_chars=20))
    messages = [user_message(Image.new("RGB", (64, 48), (200, 40, 40)), text="What is this?")]
    quiet = chat(model, processor, messages, max_new_tokens=40)
    capsys.readouterr()
    streamed = chat(model, processor, messages, max_new_tokens=40, stream=True)
    printed = capsys.readouterr().out
    assert streamed == quiet and len(streamed) > 20  # the answer returned is whole
    assert printed.rstrip("\n") == shorten_for_display(streamed, max_chars=20)
