"""Batches and processes: the same answers as one item at a time, the same resume and failure behaviour."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from conftest import FakeAsk
from molmo_nb_utils.asking import chat_batch
from molmo_nb_utils.dataset import load_dataset, load_results, merge_shards, run_dataset, run_sharded
from molmo_nb_utils.dataset.sharded import shard_path
from molmo_nb_utils.media import load_image
from molmo_nb_utils.paths import INPUT_DIR, REPO_ROOT

SAME = (
    "answer",
    "points",
    "tracks",
    "size",
    "times",
    "frame_indices",
    "prompt_tokens",
    "visual_tokens",
    "error",
)


def _images(folder: Path, n: int) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        Image.new("RGB", (40 + k, 30), (10 * k, 0, 0)).save(folder / f"img_{k}.png")
    return load_dataset(folder)


def _same(a, b) -> bool:
    return all(getattr(a, k) == getattr(b, k) for k in ("key", *SAME))


def test_batched_answers_equal_one_at_a_time_on_the_tiny_model(tiny_model, tmp_path):
    model, processor = tiny_model
    assert str(model.dtype) == "torch.float32"
    keys = [
        "coin_table/table_02.jpg",
        "coins.jpg",
        "counting.mp4",
        "coin_table/table_04.jpg",
        "moving_objects.mp4",
    ]
    items = [i for i in load_dataset(INPUT_DIR / "coin_table.json") if i.key in keys]
    assert len({load_image(i.path).size for i in items if i.kind == "image"}) == 2  # 640x360 and 384x303
    sizes = []

    def counted_batch(*args, **kwargs):
        sizes.append(len(args[2]))
        return chat_batch(*args, **kwargs)

    settings = {"prompt": "Point to the coins.", "max_new_tokens": 6}
    one = run_dataset(model, processor, items, tmp_path / "one.jsonl", **settings)
    many = run_dataset(
        model, processor, items, tmp_path / "many.jsonl", batch_size=4, ask_batch=counted_batch, **settings
    )
    assert sorted(sizes) == [2, 3]  # three images in one generate call, the two videos in another
    assert all(r.error is None for r in one) and [r.key for r in many] == [r.key for r in one]
    for a, b in zip(one, many, strict=True):
        assert _same(a, b), a.key


def test_a_broken_file_inside_a_batch_fails_alone_through_the_real_path(tiny_model, tmp_path):
    model, processor = tiny_model
    good = tmp_path / "good.png"
    Image.new("RGB", (60, 40), (200, 10, 10)).save(good)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is not a JPEG")
    items = load_dataset([good, broken])
    results = run_dataset(
        model, processor, items, tmp_path / "out.jsonl", prompt="Point.", max_new_tokens=4, batch_size=2
    )
    assert results[0].error is None and results[0].answer is not None
    assert results[1].error.startswith(("ValueError", "UnidentifiedImageError", "OSError")), results[1].error


def test_a_failing_item_in_a_batch_is_retried_alone_and_recorded_on_its_own(tmp_path):
    items = _images(tmp_path / "data", 5)
    ask = FakeAsk(fail_on={"img_1.png"})
    results = run_dataset(
        None, None, items, tmp_path / "out.jsonl", prompt="Point.", batch_size=2, ask=ask, ask_batch=ask.batch
    )
    assert ask.batches == [["img_2.png", "img_3.png"]]  # the first batch failed as a whole
    assert ask.asked == ["img_0.png", "img_1.png", "img_4.png"]  # ... so its items were asked alone
    assert [r.error is None for r in results] == [True, False, True, True, True]
    assert results[1].error == "RuntimeError: cannot read img_1.png (simulated)"


def test_stopping_mid_run_with_batches_resumes_without_repeats(tmp_path):
    items = _images(tmp_path / "data", 7)
    out = tmp_path / "out.jsonl"
    ask = FakeAsk(stop_at_batch=1)
    with pytest.raises(KeyboardInterrupt):
        run_dataset(None, None, items, out, prompt="Point.", batch_size=3, ask=ask, ask_batch=ask.batch)
    assert [r.key for r in load_results(out)] == ["img_0.png", "img_1.png", "img_2.png"]
    again = FakeAsk()
    results = run_dataset(
        None, None, items, out, prompt="Point.", batch_size=3, ask=again, ask_batch=again.batch
    )
    assert again.batches == [["img_3.png", "img_4.png", "img_5.png"]] and again.asked == ["img_6.png"]
    assert [r.key for r in results] == [i.key for i in items] and out.read_bytes().count(b"\n") == 7


def test_merging_shards_is_deterministic_and_safe_to_repeat(tmp_path):
    items = _images(tmp_path / "data", 5)
    out = tmp_path / "out.jsonl"
    run_dataset(None, None, items[:1], out, prompt="Point.", ask=FakeAsk())  # merged by an earlier run
    for index, share in ((1, items[3:]), (0, items[1:3])):  # in any order, as processes finish
        run_dataset(None, None, share, shard_path(out, index, 2), prompt="Point.", ask=FakeAsk())
    saved = tmp_path / "saved"
    saved.mkdir()
    for index in (0, 1):
        shutil.copy(shard_path(out, index, 2), saved)
    merge_shards(items, out)
    assert [r.key for r in load_results(out)] == [i.key for i in items]
    assert not shard_path(out, 0, 2).exists() and not shard_path(out, 1, 2).exists()
    merged = out.read_bytes()
    for copy in saved.iterdir():  # a merge interrupted before the shards were removed, run again
        shutil.copy(copy, out.parent)
    merge_shards(items, out)
    assert out.read_bytes() == merged


def test_two_processes_merge_to_what_one_process_writes(tiny_model, tiny_model_path, tmp_path):
    items = [i for i in load_dataset(INPUT_DIR / "coin_table.json") if i.kind == "image"][:3]
    listed = tmp_path / "list.json"
    listed.write_text("[" + ", ".join(f'{{"file": "{i.path}"}}' for i in items) + "]")
    items = load_dataset(listed)
    two = tmp_path / "two.jsonl"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",  # torchrun, from any venv
        "-m", "molmo_nb_utils.dataset.sharded", str(listed), str(two),
        "--prompt", "Point to the coins.", "--max-new-tokens", "6", "--batch-size", "2",
    ]  # fmt: skip
    env = {**os.environ, "MOLMO_MODEL_ID": str(tiny_model_path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list(tmp_path.glob("two.shard-*"))  # merged, then removed
    model, processor = tiny_model
    one = run_dataset(
        model, processor, items, tmp_path / "one.jsonl", prompt="Point to the coins.", max_new_tokens=6
    )
    merged = load_results(two)
    assert [r.key for r in merged] == [i.key for i in items]
    assert merged[0].settings == one[0].settings
    for a, b in zip(one, merged, strict=True):
        assert _same(a, b), a.key


class OneOfTwo:
    """accelerate's PartialState as process 1 of 2 sees it, without starting any process."""

    num_processes, process_index, is_main_process = 2, 0, True

    @contextlib.contextmanager
    def split_between_processes(self, items):
        yield items[: (len(items) + 1) // 2]  # accelerate gives the first process the first half

    def wait_for_everyone(self):
        pass


def test_a_sharded_run_resumes_from_shards_of_an_earlier_run_and_refuses_other_models(tmp_path):
    items = _images(tmp_path / "data", 6)
    out = tmp_path / "out.jsonl"
    # An earlier run with 4 processes died before merging: its shard 3 holds items 4 and 5.
    run_dataset(None, None, items[4:], shard_path(out, 2, 4), prompt="Point.", ask=FakeAsk())
    ask = FakeAsk()
    results = run_sharded(None, None, items, out, state=OneOfTwo(), prompt="Point.", ask=ask)
    assert ask.asked == ["img_0.png", "img_1.png", "img_2.png"]  # this process's half; nothing asked twice
    assert [r.key for r in results] == ["img_0.png", "img_1.png", "img_2.png", "img_4.png", "img_5.png"]
    assert not list(tmp_path.glob("out.shard-*"))
    other = SimpleNamespace(name_or_path="someone/else")
    run_dataset(other, None, items[3:4], shard_path(out, 1, 2), prompt="Point.", ask=FakeAsk())
    with pytest.raises(ValueError, match=r"another model \(model: 'someone/else' there, None now\)"):
        merge_shards(items, out)
