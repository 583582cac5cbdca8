"""Constrained answers (issue 35): every answer parses, answers that already did are unchanged, batches
answer as one question at a time, and a budget too small is refused in words.

Two kinds of model: a stand-in that draws random logits over a vocabulary whose tokens run across every
boundary of the grammar (quick, thousands of answers), and the tiny Molmo2 through ``chat``/``chat_batch``
as a reader calls them, on random prompts and seeds, greedy and sampled.
"""

from __future__ import annotations

import random
import re
import warnings

import pytest
import torch

from molmo_nb_utils import (
    INPUT_DIR,
    Point,
    count_points,
    fine_tune,
    format_points,
    load_dataset,
    load_model,
    parse_points,
    parse_tracks,
)
from molmo_nb_utils.asking import chat, chat_batch, prepare_inputs, user_message
from molmo_nb_utils.constrain import (
    Constraint,
    Question,
    TokenBytes,
    answer_pattern,
    answer_processor,
    as_constraint,
    with_constraint,
)
from molmo_nb_utils.constrain.grammar import COUNT_OPENING, COUNT_TOTAL, NONE_ANSWER
from molmo_nb_utils.dataset import run_dataset
from molmo_nb_utils.media import sample_frames
from molmo_nb_utils.playground import Playground

IMAGE, IMAGES = (
    INPUT_DIR / "coins.jpg",
    [INPUT_DIR / "coins.jpg", INPUT_DIR / "cat.jpg", INPUT_DIR / "rocket.jpg"],
)
VIDEO = INPUT_DIR / "moving_objects.mp4"
TIMES = (0.0, 0.5, 1.0, 1.5, 2.0, 12.5)


# ---------------------------------------------------------------------------------------------
# What a valid answer is


def _valid(text: str, constraint: Constraint, question: Question) -> bool:
    """The answer is one the constraint allows (its pattern), and every point in it is read, none skipped."""
    pattern = answer_pattern(constraint, images=question.images, timestamps=question.timestamps)
    if re.fullmatch(pattern, text) is None:
        return False
    skipped: list[str] = []
    video = question.timestamps is not None
    sizes = (640, 480) if video else [(640, 480)] * max(question.images, 1)
    points = parse_points(text, sizes, video=video, skipped=skipped)
    tracks = parse_tracks(text, (640, 480), skipped=skipped) if video else []
    if skipped:
        return False
    if constraint.task is None:
        return True
    if constraint.exact_total and text != NONE_ANSWER:
        return text.endswith(f"{COUNT_TOTAL}{count_points(points)}.")
    return text == NONE_ANSWER or bool(points or tracks)


def test_molmo2_answers_match_the_pattern():
    """What AllenAI's formatter writes (format_points writes the same) is what the pattern allows."""
    one = format_points([Point(1, 10, 20, image=1), Point(2, 639, 479, image=1)], (640, 480), "coins")
    assert re.fullmatch(answer_pattern(Constraint("points"), images=1), one)
    counted = f"{COUNT_OPENING}{one}{COUNT_TOTAL}2."
    assert re.fullmatch(answer_pattern(Constraint("count"), images=1), counted)
    several = format_points([Point(1, 5, 5, image=1), Point(2, 5, 5, image=3)], [(10, 10)] * 3, "cats")
    assert re.fullmatch(answer_pattern(Constraint("points"), images=3), several)
    tracks = format_points(
        [Point(1, 0, 0, time=0.5), Point(2, 640, 480, time=12.5)], (640, 480), "a", tag="tracks"
    )
    assert tracks == '<tracks coords="0.5 1 000 000;12.5 2 1000 1000">a</tracks>'
    assert re.fullmatch(answer_pattern(Constraint("tracks"), timestamps=TIMES), tracks)
    assert re.fullmatch(
        answer_pattern(Constraint("points"), timestamps=TIMES), tracks.replace("tracks", "points")
    )
    assert re.fullmatch(answer_pattern(Constraint("points"), images=1), NONE_ANSWER)
    alt = '<points alt="two coins" coords="1 1 308 305\t1 2 752 377">coins</points>'  # html-v1's tab
    assert re.fullmatch(answer_pattern(Constraint("points"), images=1), alt)
    free = answer_pattern(Constraint(), images=1)
    assert re.fullmatch(free, f"Here: {one} and a < b, <p>, <trace>.")


@pytest.mark.parametrize(
    "text",
    [
        '<points coords="1 1 308 1001">coins</points>',  # beyond 1000
        '<points coords="1 1 308 30">coins</points>',  # not three digits
        '<points coords="1 0 308 305">coins</points>',  # ids start at 1
        '<points coords="2 1 308 305">coins</points>',  # only one image given
        '<points coords="1 1 308 305">coins',  # never closed
        '<points coords="1 1 308 305>coins</points>',  # missing quote
        '<points coords="1 1 308">coins</points>',  # not a whole point
        "There are 3.",
    ],
)
def test_broken_answers_do_not_match(text):
    assert re.fullmatch(answer_pattern(Constraint("points"), images=1), text) is None


def test_video_answers_use_only_the_times_shown():
    pattern = answer_pattern(Constraint("tracks"), timestamps=[0.0, 0.25, 0.5])  # 0.25 is written "0.2"
    assert re.fullmatch(pattern, '<tracks coords="0.2 1 100 100">x</tracks>')
    assert re.fullmatch(pattern, '<tracks coords="0.3 1 100 100">x</tracks>') is None
    with pytest.raises(ValueError, match="video questions"):
        answer_pattern(Constraint("tracks"), images=1)
    with pytest.raises(ValueError, match="needs something to point at"):
        answer_pattern(Constraint("points"))
    assert re.fullmatch(answer_pattern(Constraint()), "text only, no <tags>")
    assert re.fullmatch(answer_pattern(Constraint()), '<points coords="1 1 100 100">x</points>') is None


def test_constrain_values():
    assert as_constraint(None) is None and as_constraint(False) is None
    assert as_constraint(True) == Constraint() == as_constraint("tags")
    assert as_constraint("count") == Constraint("count")
    exact = Constraint("count", exact_total=True)
    assert as_constraint(exact) is exact and as_constraint(exact.name) == exact
    assert as_constraint("points, no none") == Constraint("points", allow_none=False)
    assert as_constraint("Track") == Constraint("tracks") and as_constraint("point") == Constraint("points")
    for bad in ("segment", 3, "count, exactly"):
        with pytest.raises(ValueError, match="constrain must be"):
            as_constraint(bad)
    with pytest.raises(ValueError, match="exact_total"):
        Constraint("points", exact_total=True)


# ---------------------------------------------------------------------------------------------
# A stand-in model: random logits over a vocabulary whose tokens run across the grammar's boundaries


def _nasty_vocabulary(seed: int = 0) -> TokenBytes:
    """Every byte, plus tokens cut at random from valid answers: `">co`, `</points> shows`, ` 1000;0.`, ..."""
    rng = random.Random(seed)
    answers = [
        f'{COUNT_OPENING}<points alt="two é" coords="1 1 308 305 2 1000 000;12.5 3 007 999">coins</points>'
        f"{COUNT_TOTAL}3.",
        '<tracks coords="0.0 1 635 522;0.5 1 606 490 2 511 124">player</tracks>',
        '<points coords="1 1 308 305\t2 2 752 377">cat</points> There are none. <p>',
    ]
    pieces = {bytes([b]) for b in range(256)}
    for _ in range(600):
        text = rng.choice(answers).encode()
        start = rng.randrange(len(text))
        pieces.add(text[start : start + rng.randint(2, 24)])
    tokens = [*sorted(pieces), None, None]  # then the end of answer and the padding
    return TokenBytes(tuple(tokens), eos=(len(tokens) - 2,))


def _random_walks(constraint, questions, vocab, max_new_tokens, seed, greedy=False):
    """What ``generate`` does with the processor: scores, mask, pick, pad ended rows; the answers' text."""
    processor = answer_processor(constraint, questions, vocab, max_new_tokens)
    gen = torch.Generator().manual_seed(seed)
    eos, pad = vocab.eos[0], len(vocab.tokens) - 1
    ids = torch.zeros(len(questions), 3, dtype=torch.long)
    done = torch.zeros(len(questions), dtype=torch.bool)
    for _ in range(max_new_tokens):
        scores = processor(ids, torch.randn(len(questions), len(vocab.tokens), generator=gen) * 4)
        picked = (
            scores.argmax(-1) if greedy else torch.multinomial(scores.softmax(-1), 1, generator=gen)[:, 0]
        )
        picked = torch.where(done, pad, picked)
        ids = torch.cat([ids, picked[:, None]], 1)
        done |= picked == eos
        if done.all():
            break
    return [b"".join(vocab.tokens[i] or b"" for i in row[3:].tolist()).decode("utf-8") for row in ids]


@pytest.mark.parametrize(
    "constraint",
    [
        Constraint("points"),
        Constraint("count"),
        Constraint("count", exact_total=True),
        Constraint("tracks"),
        Constraint(),
        Constraint("points", allow_none=False),
    ],  # fmt: skip
    ids=lambda c: c.name,
)
def test_random_logits_always_give_valid_answers(constraint):
    vocab = _nasty_vocabulary()
    rng = random.Random(constraint.name)
    for seed in range(12):
        if constraint.task == "tracks" or seed % 2:
            questions = [Question(timestamps=TIMES)] * 3
        else:
            questions = [Question(images=1), Question(images=3), Question(images=2)]
        budget = rng.choice([30, 45, 60, 200])
        for text, question in zip(
            _random_walks(constraint, questions, vocab, budget, seed), questions, strict=True
        ):
            assert _valid(text, constraint, question), (budget, text)


VALID = [
    (Constraint("points"), Question(images=1), '<points coords="1 1 308 305 2 752 377">curb ramp</points>'),
    (Constraint("points"), Question(images=1), '<points alt="a ramp" coords="1 1 308 305\t1 2 1000 000">é</points>'),
    (Constraint("points"), Question(images=3), '<points coords="1 1 555 169;3 2 649 154 3 709 162">boats</points>'),
    (Constraint("points"), Question(images=1), NONE_ANSWER),
    (Constraint("count"), Question(images=2), f'{COUNT_OPENING}<points coords="2 1 001 999">coins</points>{COUNT_TOTAL}1.'),
    (Constraint("count", exact_total=True), Question(images=1),
     f'{COUNT_OPENING}<points coords="1 1 001 999 2 5 5">x</points>{COUNT_TOTAL}2.'.replace(" 5 5", " 005 005")),
    (Constraint("tracks"), Question(timestamps=TIMES), '<tracks coords="0.0 1 635 522;0.5 1 606 490 2 511 124">player</tracks>'),
    (Constraint("points"), Question(timestamps=TIMES), '<points coords="12.5 1 635 522">a dog</points>'),
    (Constraint(), Question(images=1), 'Yes: <points coords="1 1 308 305">cat</points>, a < b and <p> <trick>.'),
    (Constraint(), Question(timestamps=TIMES), 'It moves <tracks coords="0.0 1 635 522">ball</tracks> then stops'),
    (Constraint(), Question(), "Plain text, no media, 3 < 4."),
]  # fmt: skip


def _segmentations(text: bytes, vocab: TokenBytes, rng: random.Random, n: int):
    """``n`` random ways to write ``text`` with the vocabulary's tokens (every byte is one, so one always exists)."""
    ids = vocab.ids_by_bytes()
    for _ in range(n):
        out, at = [], 0
        while at < len(text):
            ends = [end for end in range(at + 1, min(len(text), at + 24) + 1) if text[at:end] in ids]
            end = rng.choice(ends)
            out.append(rng.choice(ids[text[at:end]]))
            at = end
        yield out


@pytest.mark.parametrize(("constraint", "question", "text"), VALID, ids=[t[:24] for _, _, t in VALID])
def test_a_valid_answer_is_never_changed_however_it_is_spelled(constraint, question, text):
    """A model that means to write a valid answer, in any tokenization, writes it unchanged, even when
    ``max_new_tokens`` holds exactly that answer: the reserve to close never cuts in early."""
    assert _valid(text, constraint, question)
    if constraint.exact_total:  # it writes the total itself, with room to spare: its promise is the total
        return
    vocab = _nasty_vocabulary()
    eos = vocab.eos[0]
    for tokens in _segmentations(text.encode(), vocab, random.Random(text), 8):
        for budget, ending in ((len(tokens), []), (len(tokens) + 5, [eos])):
            processor = answer_processor(constraint, [question], vocab, budget)
            ids = torch.zeros(1, 2, dtype=torch.long)
            for want in [*tokens, *ending]:
                scores = torch.zeros(1, len(vocab.tokens))
                scores[0, want] = 10.0  # the model's choice
                picked = processor(ids, scores).argmax(-1)
                assert picked.item() == want, (text, tokens)
                ids = torch.cat([ids, picked[:, None]], 1)


def test_a_cut_answer_still_closes_its_tags():
    """At every budget from the least that holds an answer up, the answer is complete when the budget ends."""
    vocab = _nasty_vocabulary(1)
    constraint = Constraint("count", exact_total=True)
    questions = [Question(images=2)] * 4
    least = None
    for budget in range(1, 60):
        try:
            texts = _random_walks(constraint, questions, vocab, budget, budget)
        except ValueError as error:
            assert least is None and "cannot hold even the shortest answer" in str(error)
            continue
        least = least or budget
        assert all(_valid(t, constraint, q) for t, q in zip(texts, questions, strict=True)), texts
    assert least is not None and least > 1


# ---------------------------------------------------------------------------------------------
# The tiny Molmo2, as a reader asks it

OBJECTS = ["coins", "cats", "rockets", "red cars", "the person on the left", "birds", "cups", "ramps"]
PROMPTS = [
    "Point to the {}.",
    "How many {} are there?",
    "Track the {}.",
    "Where are the {}?",
    "Find all {} now",
]


def _conversations(rng, media, n):
    return [[user_message(*media, text=rng.choice(PROMPTS).format(rng.choice(OBJECTS)))] for _ in range(n)]


def _sampling(rng) -> dict:
    kwargs = {"do_sample": True, "temperature": rng.choice([0.7, 1.0, 1.5])}
    kwargs.update(rng.choice([{}, {"top_k": 20}, {"top_p": 0.9}]))
    return kwargs


@pytest.mark.parametrize(
    ("kind", "media", "constraints"),
    [
        ("image", [IMAGE], ["points", "count", True, Constraint("count", exact_total=True)]),
        ("multi-image", IMAGES[:2], ["points", "count", True]),
        ("video", [VIDEO], ["points", "tracks", "count", True]),
    ],
)
def test_sampled_answers_of_the_tiny_model_always_parse(tiny_model, kind, media, constraints, capsys):
    model, processor = tiny_model
    rng = random.Random(kind)
    if kind == "video":
        media = [sample_frames(VIDEO, 6)]
        question = Question(timestamps=tuple(media[0].timestamps))
    else:
        question = Question(images=len(media))
    asked = parsed = 0
    free_parsed: dict[str, list[int]] = {}
    totals: list[bool] = []  # constrain="count": does the stated total equal the points written?
    for round_ in range(2):
        for constrain in constraints:
            constraint = as_constraint(constrain)
            conversations = _conversations(rng, media, 6)
            sampling = _sampling(rng)
            budget = rng.choice([24, 40, 64])
            torch.manual_seed(round_)
            answers = chat_batch(
                model, processor, conversations, max_new_tokens=budget, constrain=constrain, **sampling
            )
            torch.manual_seed(round_)
            free = chat_batch(model, processor, conversations, max_new_tokens=budget, **sampling)
            for answer, unconstrained in zip(answers, free, strict=True):
                asked += 1
                parsed += _valid(str(answer), constraint, question)
                free_parsed.setdefault(constraint.name, []).append(
                    _valid(str(unconstrained), constraint, question)
                )
                if (
                    constraint == Constraint("count") and str(answer) != NONE_ANSWER
                ):  # Molmo2 promises no total
                    totals.append(str(answer).endswith(f"{COUNT_TOTAL}{count_points(answer.points())}."))
                skipped: list[str] = []
                if constraint.task == "tracks":
                    answer.tracks(skipped=skipped)
                else:
                    answer.points(skipped=skipped)
                assert not skipped, (str(answer), skipped)
    with capsys.disabled():
        rates = ", ".join(f"{name} {sum(v)}/{len(v)}" for name, v in free_parsed.items())
        print(f"\n{kind}: {parsed}/{asked} constrained answers valid; the same without the constraint: {rates}; "
              f"constrain='count' answers whose total equals their points: {sum(totals)}/{len(totals)}")  # fmt: skip
    assert parsed == asked


def test_one_answer_at_a_time_too(tiny_model):
    """chat, greedy and sampled: the shortest budget that holds an answer, and a generous one."""
    model, processor = tiny_model
    message = [user_message(IMAGE, text="Point to the coins.")]
    with pytest.raises(ValueError, match=r"max_new_tokens=2 cannot hold even the shortest answer"):
        chat(model, processor, message, max_new_tokens=2, constrain="points")
    least = next(n for n in range(3, 40) if _fits(model, processor, message, n))
    answer = chat(model, processor, message, max_new_tokens=least, constrain="points")
    assert _valid(str(answer), Constraint("points"), Question(images=1))
    for seed in range(3):
        torch.manual_seed(seed)
        answer = chat(model, processor, message, max_new_tokens=50, constrain="count", do_sample=True)
        assert _valid(str(answer), Constraint("count"), Question(images=1)), str(answer)
    with pytest.raises(ValueError, match="beam search"):
        chat(model, processor, message, constrain="points", num_beams=2)
    # another processor that rules out what the grammar needs (here the end, before 30 tokens): the grammar wins
    answer = chat(model, processor, message, max_new_tokens=40, constrain="points", min_new_tokens=30)
    assert _valid(str(answer), Constraint("points"), Question(images=1)), str(answer)


def test_several_samples_of_one_question(tiny_model):
    """num_return_sequences: the rows generate adds are answers to the same question, each kept valid."""
    model, processor = tiny_model
    inputs = prepare_inputs(processor, [user_message(*IMAGES, text="Point to the cats.")])
    kwargs = with_constraint(
        model, processor, Constraint("points", allow_none=False), [Question(images=3)], 40, {}
    )
    torch.manual_seed(0)
    output = model.generate(**inputs, max_new_tokens=40, do_sample=True, num_return_sequences=4, **kwargs)
    width = inputs["input_ids"].shape[1]
    texts = [processor.decode(row[width:], skip_special_tokens=True) for row in output]
    assert len(set(texts)) > 1
    assert all(_valid(t, Constraint("points", allow_none=False), Question(images=3)) for t in texts), texts


def _fits(model, processor, message, n) -> bool:
    try:
        chat(model, processor, message, max_new_tokens=n, constrain="points")
    except ValueError:
        return False
    return True


def test_a_batch_answers_as_one_question_at_a_time(tiny_model):
    model, processor = tiny_model
    forced = Constraint("points", allow_none=False)  # the random weights prefer "There are none."
    for conversations, constrain in [
        ([[user_message(IMAGE, text="Point to the coins.")], [user_message(*IMAGES, text="Point to a cat.")],
          [user_message(*IMAGES[:2], text="How many coins?")]], forced),
        ([[user_message(VIDEO, text="Track the balls.")], [user_message(VIDEO, text="Track it.")]], "tracks"),
        ([[user_message(IMAGE, text="Describe it.")], [user_message(*IMAGES, text="What is this?")]], True),
    ]:  # fmt: skip
        batch = chat_batch(
            model, processor, conversations, max_new_tokens=48, constrain=constrain, max_frames=4
        )
        alone = [
            chat(model, processor, c, max_new_tokens=48, constrain=constrain, max_frames=4)
            for c in conversations
        ]
        assert [str(a) for a in batch] == [str(a) for a in alone]


# ---------------------------------------------------------------------------------------------
# An answer that already parses is not changed


@pytest.fixture(scope="module")
def taught(tiny_model_path, tmp_path_factory):
    """The tiny model fine-tuned by 09's code until it writes the coin tables' true answers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # table_01 has no coins, and says so
        items = [item for item in load_dataset(INPUT_DIR / "coin_table.json") if item.points][:3]
    model, processor = load_model(tiny_model_path)
    folder = tmp_path_factory.mktemp("taught")
    tuned = fine_tune(
        model,
        processor,
        items,
        folder,
        prompt="Point to the coins.",
        per_device_train_batch_size=3,
        progress=False,
    )
    return tuned, processor, items


def test_an_answer_that_parses_is_unchanged_token_for_token(taught):
    model, processor, items = taught
    for item in items:
        inputs = prepare_inputs(processor, [user_message(item.path, text="Point to the coins.")])
        width = inputs["input_ids"].shape[1]
        free = model.generate(**inputs, max_new_tokens=80, do_sample=False)[0, width:]
        text = processor.decode(free, skip_special_tokens=True)
        assert _valid(text, Constraint("points"), Question(images=1)), (
            text
        )  # it learned to write valid answers
        for constraint in (Constraint("points"), Constraint()):
            kwargs = with_constraint(model, processor, constraint, [Question(images=1)], 80, {})
            constrained = model.generate(**inputs, max_new_tokens=80, do_sample=False, **kwargs)[0, width:]
            assert torch.equal(constrained, free), (text, processor.decode(constrained))
        # a budget that holds the answer and not one token more: the reserve never cuts it short
        length = len(free) - int(free[-1] == model.generation_config.eos_token_id)
        kwargs = with_constraint(model, processor, Constraint("points"), [Question(images=1)], length, {})
        tight = model.generate(**inputs, max_new_tokens=length, do_sample=False, **kwargs)[0, width:]
        assert torch.equal(tight, free[:length])


# ---------------------------------------------------------------------------------------------
# run_dataset and the playground


def test_run_dataset_records_only_answers_that_parse(tiny_model, tmp_path):
    model, processor = tiny_model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # table_01 has no coins, and says so
        items = load_dataset(INPUT_DIR / "coin_table.json")[:3]
    path = tmp_path / "run.jsonl"
    forced = Constraint("points", allow_none=False)
    results = run_dataset(model, processor, items, path, max_new_tokens=40, batch_size=2, constrain=forced)
    assert [r.error for r in results] == [None] * 3
    assert all(r.points and not r.skipped for r in results), [r.answer for r in results]
    assert {r.settings["constrain"] for r in results} == {"points, no none"}
    with pytest.raises(ValueError, match="other settings .constrain"):
        run_dataset(
            model, processor, items, path, max_new_tokens=40
        )  # unconstrained answers are not mixed in


def test_the_playground_constrains_each_task(tiny_model, capsys):
    model, processor = tiny_model
    playground = Playground(model, processor, constrain=True)
    assert playground.constrain.value
    playground.task.value = "count"
    answer = playground.run()
    assert _valid(str(answer), Constraint("count"), Question(images=1)), str(answer)
    playground.constrain.value = False
    assert "Points found" in capsys.readouterr().out
