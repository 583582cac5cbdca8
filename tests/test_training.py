"""Fine-tuning: Molmo2's own answer format, labels on the answer only, batches whose loss is the mean of their
examples', resumable checkpoints on transformers' Trainer, and the proof that it all fits together: the tiny model
learns the coin tables by heart. The deletion and wrong-base cases are in test_training_safety.py, two processes
in test_training_ddp.py."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from peft.utils import load_peft_weights
from transformers import Trainer, TrainingArguments

from molmo_nb_utils import INPUT_DIR, load_image, load_model, parse_points
from molmo_nb_utils.asking import chat, prepare_inputs, user_message
from molmo_nb_utils.dataset import load_dataset, run_dataset, score_results
from molmo_nb_utils.evaluation import distance_threshold, load_ground_truth
from molmo_nb_utils.grounding import Point, count_points, group_by_id, parse_tracks
from molmo_nb_utils.media import DEFAULT_MAX_FRAMES, MediaSettings, plan_frames
from molmo_nb_utils.playground import Playground
from molmo_nb_utils.training import (
    Molmo2Collator,
    Molmo2Trainer,
    TrainingError,
    encode_example,
    eos_id,
    fine_tune,
    is_counting_prompt,
    latest_checkpoint,
    load_adapter,
    masking_table,
    qlora_config,
    split_items,
    target_text,
    training_examples,
)
from molmo_nb_utils.training.encoding import IGNORE, training_item

PROMPT = "Point to the coins."


@pytest.fixture
def base(tiny_model_path):
    """A fresh base model: fine_tune puts its LoRA layers into the model it is given."""
    return load_model(tiny_model_path)


# ---------------------------------------------------------------------------------------------
# Targets


def test_target_is_written_as_allenai_trains_it():
    # 200x100 image: (100, 50) -> 500 500, (20, 80) -> 100 800; sorted by x, y after scaling, ids from 1
    points = [Point(7, 100, 50, image=1), Point(3, 20, 80, image=1)]
    assert target_text(points, (200, 100), "Coin", counting=False) == (
        '<points coords="1 1 100 800 2 500 500">coin</points>'
    )
    assert target_text(points, (200, 100), "coin", counting=True) == (
        'Counting the <points coords="1 1 100 800 2 500 500">coin</points> shows a total of 2.'
    )
    assert target_text([], (200, 100), "coin", counting=True) == "There are none."
    assert target_text([], (200, 100), "coin", counting=False) == "There are none."
    # sorted after rounding, as the text reads: on 250 px x=0.9 and x=1.1 both become 004, so y decides
    tied = [Point(1, 0.9, 9, image=1), Point(2, 1.1, 5, image=1)]
    assert (
        target_text(tied, (250, 1000), "c", counting=False)
        == '<points coords="1 1 004 005 2 004 009">c</points>'
    )


@pytest.mark.parametrize("prompt", [PROMPT, "How many coins are there?", "Count the coins."])
def test_targets_round_trip_through_parse_points(coin_tables, prompt):
    examples = training_examples(coin_tables, prompt=prompt)
    assert [e.key for e in examples] == [item.key for item in coin_tables]
    for item, example in zip(coin_tables, examples, strict=True):
        assert example.prompt == prompt and example.size == load_image(item.path).size
        parsed = parse_points(example.target, example.size)
        assert count_points(parsed) == len(item.points) == item.count
        assert [p.id for p in parsed] == list(range(1, len(parsed) + 1))
        rounding = max(example.size) / 1000  # 0..1000 scale
        got = sorted((p.x, p.y) for p in parsed)
        want = sorted((p.x, p.y) for p in item.points)
        assert all(
            abs(a - c) <= rounding and abs(b - d) <= rounding
            for (a, b), (c, d) in zip(got, want, strict=True)
        )
        if not item.points:
            assert example.target == "There are none."
        elif is_counting_prompt(prompt):
            assert example.target.startswith("Counting the <points") and example.target.endswith(
                f"shows a total of {item.count}."
            )
        else:
            assert example.target.startswith('<points coords="1 ') and example.target.endswith("</points>")


def test_prompts_items_own_then_given_then_default(tmp_path):
    image = tmp_path / "a.png"
    load_image(INPUT_DIR / "cat.jpg").save(image)
    items = load_dataset([{"file": str(image), "points": [[1, 2]], "label": "cat"}])
    assert training_examples(items)[0].prompt == "Point to the cat."
    assert training_examples(items, prompt="Where is the {label}?")[0].prompt == "Where is the cat?"
    own = load_dataset(
        [{"file": str(image), "points": [[1, 2]], "label": "cat", "prompt": "Count the cats."}]
    )
    assert training_examples(own, prompt=PROMPT)[0].target.startswith("Counting the <points")
    assert is_counting_prompt("How many cats are there?") and not is_counting_prompt("Point to the cats.")


def test_items_without_ground_truth_are_left_out_or_refused(tmp_path):
    items = load_dataset(INPUT_DIR / "coin_table.json")
    with pytest.warns(UserWarning, match=r"coins\.jpg, counting\.mp4; left out"):
        examples = training_examples(items)
    assert {e.key for e in examples} == {item.key for item in items if item.points is not None} | {
        "moving_objects.mp4"  # a video with its truth file and its own prompt, "Track the coins."
    }
    with pytest.raises(TrainingError, match="Nothing is left to train on"):
        training_examples(load_dataset(INPUT_DIR / "coin_table"))  # a folder: no truth at all
    with pytest.raises(TrainingError, match="no items"):
        training_examples([])
    with pytest.raises(TrainingError, match="not a dataset item"):
        training_examples(["input/cat.jpg"])


def test_split_is_seeded_by_item_and_disjoint(coin_tables):
    train, val = split_items(coin_tables, validation=0.34, seed=1)
    assert len(val) == 2 and len(train) == 4
    assert not {i.key for i in train} & {i.key for i in val}
    again = split_items(list(reversed(coin_tables)), validation=0.34, seed=1)
    assert {i.key for i in again[1]} == {i.key for i in val}
    assert split_items(coin_tables, validation=0)[1] == []
    with pytest.raises(ValueError, match="validation"):
        split_items(coin_tables, validation=1.0)


# ---------------------------------------------------------------------------------------------
# Labels


def test_only_answer_tokens_carry_labels(tiny_model, coin_tables):
    model, processor = tiny_model
    example = training_examples(coin_tables[2:3], prompt=PROMPT)[0]
    encoded = encode_example(model, processor, example)
    ids, labels, start = encoded["input_ids"][0], encoded["labels"][0], encoded["answer_start"]
    eos = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")  # the tiny model's end of turn
    assert eos_id(model, processor) == eos == model.generation_config.eos_token_id
    answer = processor.tokenizer(example.target, add_special_tokens=False)["input_ids"] + [eos]
    assert labels[:start].eq(-100).all()
    assert labels[start:].tolist() == ids[start:].tolist() == answer
    assert processor.tokenizer.decode(labels[start:]) == example.target + "<|im_end|>"
    patch = model.config.image_patch_id
    assert ids.eq(patch).sum() > 100 and labels[ids == patch].eq(-100).all()
    # the prompt part is exactly what chat sends
    prompt = prepare_inputs(processor, [user_message(example.path, text=PROMPT)])
    assert ids[:start].tolist() == prompt["input_ids"][0].tolist()
    assert encoded["mm_token_type_ids"][0, start:].eq(0).all()
    table = masking_table(model, processor, encoded).splitlines()
    assert table[-1].startswith(f"{len(ids):,} tokens, {len(answer)} of them with a label")
    media = int((ids >= model.config.text_config.vocab_size).sum())
    kinds = [("media" if "image/video tokens" in line else "loss" if "= token" in line else "prompt")
             for line in table[1:-1]]  # fmt: skip
    assert kinds == ["prompt", "media", "prompt", "loss"]  # the processor's start token, then the image first
    assert f"{media:,} image/video tokens" in table[2]
    assert repr(example.target + "<|im_end|>") in table[-2]


@pytest.fixture(scope="module")
def video():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [
            item for item in load_dataset(INPUT_DIR / "coin_table.json") if item.key == "moving_objects.mp4"
        ]


def _adapter(folder):
    return load_peft_weights(str(folder))


def _assert_same_adapter(a, b):
    a, b = _adapter(a), _adapter(b)
    assert a.keys() == b.keys() and len(a) > 10
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Batches: padding, and the mean of the examples' losses


def test_a_batch_trains_on_the_mean_of_its_examples_losses(tiny_model, coin_tables, video, tmp_path):
    model, processor = tiny_model
    examples = training_examples([*coin_tables[:3], *video], prompt=PROMPT)
    items = [training_item(model, processor, e, cache_features=True) for e in examples]
    collate = Molmo2Collator(pad_id=processor.tokenizer.pad_token_id)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    trainer = Molmo2Trainer(model=model, args=args, data_collator=collate)
    batch = collate(items)
    lengths = [len(item["input_ids"]) for item in items]
    assert len(set(lengths)) > 1 and batch["input_ids"].shape == (4, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths  # padded on the right, not attended
    for row, n in enumerate(lengths):
        assert batch["labels"][row, n:].eq(IGNORE).all() and batch["input_ids"][row, n:].eq(0).all()
    model.eval()
    with torch.no_grad():
        alone = torch.stack([trainer.compute_loss(model, collate([item])) for item in items])
        together = trainer.compute_loss(model, batch)
        # an optimizer step of 2 micro-batches: each scaled by the step's 4 examples, they add up to the mean
        step = sum(
            trainer.compute_loss(model, collate(part), num_items_in_batch=4)
            for part in (items[:1], items[1:])
        )
    answer_tokens = batch["labels"][:, 1:].ne(IGNORE).sum(1).float()
    per_token = (alone * answer_tokens).sum() / answer_tokens.sum()  # what the model's own loss would take
    assert float(together) == pytest.approx(float(alone.mean()), rel=1e-5)
    assert float(step) == pytest.approx(float(alone.mean()), rel=1e-5)
    assert abs(float(per_token) - float(alone.mean())) > 1e-3  # a video's long answer would outweigh the rest


def test_accumulated_steps_train_as_one_batch(tiny_model_path, coin_tables, tmp_path):
    items = coin_tables[1:4]
    for name, batch, accumulate in (("batch", 3, 1), ("accumulated", 1, 3)):
        model, processor = load_model(tiny_model_path)
        fine_tune(model, processor, items, tmp_path / name, prompt=PROMPT, per_device_train_batch_size=batch,
                  gradient_accumulation_steps=accumulate, max_steps=2, save_steps=2, progress=False)  # fmt: skip
    _assert_same_adapter(tmp_path / "batch" / "adapter", tmp_path / "accumulated" / "adapter")


# ---------------------------------------------------------------------------------------------
# Videos: the frames run_dataset shows


def test_a_video_is_trained_at_the_frames_run_dataset_shows(tiny_model, video):
    model, processor = tiny_model
    shown = {}
    for fps in (2.0, 8.0):
        media = MediaSettings(fps=fps)
        example = training_examples(video, media=media)[0]
        plan = plan_frames(video[0].path, DEFAULT_MAX_FRAMES, fps)  # what run_dataset(media=media) shows
        assert example.frames == plan and example.media == media
        parsed = parse_tracks(example.target, example.size)
        assert len(parsed) == len(load_ground_truth(video[0].truth).at_plan(plan))
        assert all(
            min(abs(p.time - t) for t in plan.times) <= 0.05 + 1e-9 for p in parsed
        )  # written to 0.1 s
        encoded = encode_example(model, processor, example)
        assert int(encoded["video_grids"][0, 0]) == len(plan.times)  # the model is shown those frames
        shown[fps] = len(plan.times)
    assert shown[8.0] > shown[2.0]


def test_video_tracks_round_trip_and_train(tiny_model_path, video, tmp_path):
    """A video with its truth file and a tracking prompt: the tracks at the frames run_dataset shows."""
    example = training_examples(video)[0]
    assert example.kind == "video" and example.prompt == "Track the coins."
    assert example.target.startswith('<tracks coords="0.0 1 ') and example.target.endswith(">coin</tracks>")
    truth = load_ground_truth(video[0].truth).at_plan(example.frames)
    parsed = parse_tracks(example.target, example.size)
    assert len(parsed) == len(truth) == 21  # 08 counts them: coin 1 in 9 frames, coin 2 in 8, coin 3 in 4
    rounding = max(example.size) / 1000
    pairs = set()  # every true object is one track, and each track follows one object
    for p in parsed:
        near = [
            t for t in truth if t.time == p.time and abs(t.x - p.x) <= rounding and abs(t.y - p.y) <= rounding
        ]
        assert len(near) == 1
        pairs.add((p.id, near[0].id))
    assert len(pairs) == len({i for i, _ in pairs}) == len({j for _, j in pairs}) == 3
    assert sorted(group_by_id(parsed)) == [1, 2, 3]

    model, processor = load_model(tiny_model_path)
    tuned = fine_tune(model, processor, video, tmp_path / "run", max_steps=3, progress=False)
    assert [step for step, _ in tuned.training_log.train_loss][-1] == 3
    assert str(chat(tuned, processor, [user_message(video[0].path, text=example.prompt)], max_new_tokens=8))


# ---------------------------------------------------------------------------------------------
# Checkpoints, resume, reload


def test_resume_after_an_interruption_gives_the_same_adapter(
    tiny_model_path, coin_tables, tmp_path, monkeypatch, interrupt
):
    items = coin_tables[1:4]
    settings = dict(prompt=PROMPT, max_steps=6, save_steps=2, per_device_train_batch_size=2, progress=False)
    model, processor = load_model(tiny_model_path)
    whole = fine_tune(model, processor, items, tmp_path / "whole", **settings)
    manifest = json.loads((tmp_path / "whole" / "fine_tune.json").read_text())
    assert manifest["checkpoints"] == ["checkpoint-4", "checkpoint-6"]  # save_total_limit 2 by default
    final = latest_checkpoint(tmp_path / "whole")
    assert (
        final.name == "checkpoint-6"
        and json.loads((final / "trainer_state.json").read_text())["global_step"] == 6
    )
    assert {"adapter_config.json", "adapter_model.safetensors", "optimizer.pt", "fine_tune_mark.json"} <= {
        p.name for p in final.iterdir()
    }
    _assert_same_adapter(final, tmp_path / "whole" / "adapter")  # no validation: the adapter is the last step

    model, processor = load_model(tiny_model_path)
    with pytest.raises(KeyboardInterrupt):
        fine_tune(model, processor, items, tmp_path / "cut", callbacks=[interrupt(5)], **settings)
    assert latest_checkpoint(tmp_path / "cut").name == "checkpoint-4"
    assert not (tmp_path / "cut" / "adapter").exists()
    model, processor = load_model(tiny_model_path)
    resumed = fine_tune(model, processor, items, tmp_path / "cut", **settings)
    assert resumed.training_log.resumed_from == 4
    later = [loss for step, loss in whole.training_log.train_loss if step > 4]
    assert [loss for step, loss in resumed.training_log.train_loss if step > 4] == pytest.approx(
        later, rel=1e-4
    )
    _assert_same_adapter(final, latest_checkpoint(tmp_path / "cut"))
    _assert_same_adapter(tmp_path / "whole" / "adapter", tmp_path / "cut" / "adapter")

    # finished: the same call loads the adapter it trained instead of training again
    monkeypatch.setattr(Trainer, "train", lambda *a, **k: pytest.fail("trained again"))
    model, processor = load_model(tiny_model_path)
    again = fine_tune(model, processor, items, tmp_path / "cut", **settings)
    assert again.training_log.steps == 6
    _assert_same_adapter(tmp_path / "cut" / "adapter", tmp_path / "whole" / "adapter")
    # other settings in the same folder would mix two trainings
    model, processor = load_model(tiny_model_path)
    with pytest.raises(TrainingError, match="other settings.*max_steps"):
        fine_tune(model, processor, items, tmp_path / "cut", **{**settings, "max_steps": 8})


def test_validation_loss_picks_the_adapter(tiny_model_path, coin_tables, tmp_path):
    train, validation = coin_tables[:4], coin_tables[4:]
    model, processor = load_model(tiny_model_path)
    tuned = fine_tune(model, processor, train, tmp_path / "run", prompt=PROMPT, validation_items=validation,
                      max_steps=40, save_steps=10, per_device_train_batch_size=2, progress=False)  # fmt: skip
    log = tuned.training_log
    assert [step for step, _ in log.validation_loss] == [10, 20, 30, 40]
    best_step = min(log.validation_loss, key=lambda entry: entry[1])[0]
    assert log.best_checkpoint == f"checkpoint-{best_step}"
    manifest = json.loads((tmp_path / "run" / "fine_tune.json").read_text())
    assert manifest["adapter"] == {"step": best_step, "checkpoint": f"checkpoint-{best_step}"}
    assert f"checkpoint-{best_step}" in manifest["checkpoints"] and "checkpoint-40" in manifest["checkpoints"]
    _assert_same_adapter(
        tmp_path / "run" / "adapter", tmp_path / "run" / "checkpoints" / f"checkpoint-{best_step}"
    )
    base, _ = load_model(tiny_model_path)
    reloaded = load_adapter(base, tmp_path / "run")
    message = [user_message(validation[0].path, text=PROMPT)]
    assert str(chat(reloaded, processor, message, max_new_tokens=30)) == str(
        chat(tuned, processor, message, max_new_tokens=30)
    )


def test_reloaded_adapter_answers_as_the_model_fine_tune_returned(tiny_model_path, coin_tables, tmp_path):
    items = coin_tables[:3]
    model, processor = load_model(tiny_model_path)
    tuned = fine_tune(model, processor, items, tmp_path / "run", prompt=PROMPT, max_steps=30, progress=False)
    assert hasattr(tuned, "peft_config") and tuned.name_or_path == str(tiny_model_path)
    base, _ = load_model(tiny_model_path)
    reloaded = load_adapter(base, tmp_path / "run")
    for item in items:
        message = [user_message(item.path, text=PROMPT)]
        assert str(chat(tuned, processor, message, max_new_tokens=40)) == str(
            chat(reloaded, processor, message, max_new_tokens=40)
        )
    merged = reloaded.merge_and_unload()  # for deployment: a plain Molmo2 that answers the same
    assert not hasattr(merged, "peft_config")
    message = [user_message(items[1].path, text=PROMPT)]
    assert str(chat(merged, processor, message, max_new_tokens=40)) == str(
        chat(tuned, processor, message, max_new_tokens=40)
    )
    with pytest.raises(TrainingError, match="No adapter"):
        load_adapter(load_model(tiny_model_path)[0], tmp_path / "nothing-here")
    with pytest.raises(TrainingError, match="already carries a LoRA adapter"):
        fine_tune(tuned, processor, items, tmp_path / "again", prompt=PROMPT)


def test_a_fine_tuned_model_goes_into_the_playground(tiny_model_path, coin_tables, tmp_path, capsys):
    model, processor = load_model(tiny_model_path)
    tuned = fine_tune(
        model, processor, coin_tables[:2], tmp_path / "run", prompt=PROMPT, max_steps=5, progress=False
    )
    answer = Playground(tuned, processor).run()
    assert answer is not None and answer.image_sizes
    assert "Points found:" in capsys.readouterr().out


def test_bad_settings_get_clear_errors(tiny_model_path, coin_tables, tmp_path):
    model, processor = load_model(tiny_model_path)
    with pytest.raises(TrainingError, match="no items"):
        fine_tune(model, processor, [], tmp_path)
    with pytest.raises(TrainingError, match="Nothing is left"):
        fine_tune(model, processor, load_dataset(INPUT_DIR / "coin_table"), tmp_path, prompt=PROMPT)
    with pytest.raises(TrainingError, match="QLoRA needs a CUDA GPU"):
        fine_tune(model, processor, coin_tables, tmp_path, qlora=True)
    with pytest.raises(TrainingError, match="both a training and a validation item"):
        fine_tune(model, processor, coin_tables, tmp_path, validation_items=coin_tables[:1])
    with pytest.raises(TrainingError, match="max_steps=... instead of steps="):
        fine_tune(model, processor, coin_tables, tmp_path, steps=10)
    with pytest.raises(TrainingError, match="TrainingArguments' own names"):
        fine_tune(model, processor, coin_tables, tmp_path, bogus_setting=1)
    with pytest.raises(TrainingError, match="either args="):
        fine_tune(model, processor, coin_tables, tmp_path, args=TrainingArguments(), max_steps=3)
    with pytest.raises(TrainingError, match="needs validation_items"):
        fine_tune(model, processor, coin_tables, tmp_path, eval_strategy="steps")
    with pytest.raises(TrainingError, match="rank"):
        fine_tune(model, processor, coin_tables, tmp_path, rank=0)
    assert not any(tmp_path.iterdir())


def test_qlora_configuration_keeps_vision_and_connector_in_16_bit():
    config = qlora_config("float16")
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.float16
    assert {"vision_tower", "multi_modal_projector", "lm_head"} <= set(config.llm_int8_skip_modules)
    with pytest.raises(TrainingError, match="bfloat16"):
        qlora_config("float32")


def test_checkpointing_and_the_connector_option_train(tiny_model_path, coin_tables, tmp_path):
    """The other code paths: activation checkpointing, LoRA on the connector (pixels batched, features
    recomputed every step), with no deprecation warning from transformers."""
    model, processor = load_model(tiny_model_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tuned = fine_tune(model, processor, coin_tables[1:3], tmp_path / "run", prompt=PROMPT, max_steps=4,
                          save_steps=2, per_device_train_batch_size=2, activation_checkpointing=True,
                          train_connector=True, progress=False)  # fmt: skip
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]
    names = [name for name, p in tuned.named_parameters() if p.requires_grad]
    assert any("multi_modal_projector" in name for name in names) and any("lm_head" in name for name in names)
    assert not any("vision_tower" in name for name in names)
    assert all("lora_" in name for name in names)
    assert len(tuned.training_log.train_loss) >= 1 and all(
        loss > 0 for _, loss in tuned.training_log.train_loss
    )


def test_starting_over_replaces_this_codes_earlier_checkpoints(tiny_model_path, coin_tables, tmp_path):
    """resume=False after a longer run: the earlier run's later checkpoints must not outrank this run's."""
    items, run = coin_tables[1:2], tmp_path / "run"
    model, processor = load_model(tiny_model_path)
    fine_tune(model, processor, items, run, prompt=PROMPT, max_steps=6, save_steps=2, progress=False)
    model, processor = load_model(tiny_model_path)
    fine_tune(
        model, processor, items, run, prompt=PROMPT, max_steps=3, save_steps=2, resume=False, progress=False
    )
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-3"]
    assert latest_checkpoint(run).name == "checkpoint-3"
    assert json.loads((run / "fine_tune.json").read_text())["adapter"]["step"] == 3


# ---------------------------------------------------------------------------------------------
# The proof: the tiny model memorises the coin tables, in batches of three


def test_tiny_model_memorises_the_coin_tables(tiny_model_path, coin_tables, tmp_path):
    """Format, labels, batches and adapter wiring are right only if training on the answers makes the model
    give them; the adapter reloaded answers the same."""
    model, processor = load_model(tiny_model_path)
    before = score_results(coin_tables, run_dataset(model, processor, coin_tables, tmp_path / "before.jsonl",
                                                    prompt=PROMPT, max_new_tokens=96))  # fmt: skip
    tuned = fine_tune(model, processor, coin_tables, tmp_path / "run", prompt=PROMPT, per_device_train_batch_size=3,
                      progress=False)  # fmt: skip
    results = run_dataset(
        tuned, processor, coin_tables, tmp_path / "after.jsonl", prompt=PROMPT, max_new_tokens=96
    )
    after = score_results(coin_tables, results)
    print(f"fine_tune: {tuned.training_log.steps} steps of 3; before: {before}; after: {after}")
    assert before.mean_image_f1 < 0.5
    assert after.mean_image_f1 >= 0.9 and after.counts.accuracy >= 0.9
    assert {s.threshold_px for s in after.items} == {distance_threshold(640, 360)}  # 08's hit rule
    base, _ = load_model(tiny_model_path)
    reloaded = load_adapter(base, tmp_path / "run")
    for item, result in zip(coin_tables, results, strict=True):
        answer = chat(reloaded, processor, [user_message(item.path, text=PROMPT)], max_new_tokens=96)
        assert str(answer) == result.answer
