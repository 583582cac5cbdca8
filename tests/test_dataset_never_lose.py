"""Never lose, never mix: the reproducers of issue 22 (items 1-5, 12, 13) for the dataset runner.

Processes are real processes here (a writer holding its shard, a launcher killed); every wait has a
generous limit that fails the test only when something never happens, and no test times anything.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import peft
import pytest
import torch
from PIL import Image

from conftest import FakeAsk
from molmo_nb_utils.dataset import (
    export_csv,
    load_dataset,
    load_results,
    merge_shards,
    run_dataset,
    score_results,
)
from molmo_nb_utils.dataset.sharded import run_sharded, shard_path
from molmo_nb_utils.paths import REPO_ROOT, atomic_path

WAIT_S = 120  # for something that takes a second: only a hang reaches it


def _images(folder: Path, n: int):
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        Image.new("RGB", (40, 30), (10 * k, 0, 0)).save(folder / f"img_{k}.png")
    return load_dataset(folder)


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {WAIT_S} s")
        time.sleep(0.05)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}


# ---------------------------------------------------------------------------------------------
# 1. A merge respects the writer's lock


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from molmo_nb_utils.asking import Answer
    from molmo_nb_utils.dataset import load_dataset, run_dataset
    from molmo_nb_utils.media import load_image

    folder, shard, ready, go = map(Path, sys.argv[1:5])

    def ask(model, processor, messages, **settings):
        path = Path(messages[0]["content"][0]["image"])
        if path.name == "img_1.png":  # the first answer is on disk: let the merge try, then go on
            ready.touch()
            while not go.exists():
                time.sleep(0.02)
        return Answer('<points coords="1 1 500 500">dot</points>', images=[load_image(path)])

    run_dataset(None, None, load_dataset(folder), shard, prompt="Point.", ask=ask)
    """
)


def test_a_merge_leaves_a_shard_alone_while_its_writer_holds_it(tmp_path):
    items = _images(tmp_path / "data", 2)
    out = tmp_path / "out.jsonl"
    shard = shard_path(out, 0, 2)
    ready, go = tmp_path / "ready", tmp_path / "go"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    writer = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "data"), str(shard), str(ready), str(go)],
        env=_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: ready.exists() or writer.poll() is not None, "the writer's first answer")
        assert writer.poll() is None, writer.stderr.read()
        with pytest.warns(UserWarning, match="being written by another run"):
            merge_shards(items, out)  # a notebook merging while the run goes on
        assert shard.exists()  # not read and removed under its writer
        go.touch()
        assert writer.wait(timeout=WAIT_S) == 0, writer.stderr.read()
    finally:
        go.touch()
        if writer.poll() is None:
            writer.kill()
        writer.wait()
    merge_shards(items, out)  # once the writer is done
    assert [r.key for r in load_results(out)] == ["img_0.png", "img_1.png"]  # no answer lost
    assert not shard.exists()


# ---------------------------------------------------------------------------------------------
# 2. A whole last record without its newline


def test_a_whole_last_record_without_its_newline_is_kept_and_a_cut_one_is_asked_again(tmp_path):
    items = _images(tmp_path / "data", 3)
    out = tmp_path / "out.jsonl"
    run_dataset(None, None, items[:2], out, prompt="Point.", ask=FakeAsk())
    out.write_bytes(out.read_bytes().rstrip(b"\n"))  # as an editor or a copy leaves it
    assert [r.key for r in load_results(out)] == ["img_0.png", "img_1.png"]
    ask = FakeAsk()
    run_dataset(None, None, items, out, prompt="Point.", ask=ask)
    assert ask.asked == ["img_2.png"]  # img_1 was not asked again
    lines = out.read_bytes().split(b"\n")
    assert len(lines) == 4 and lines[-1] == b"" and all(json.loads(line) for line in lines[:-1])
    out.write_bytes(out.read_bytes()[:-20])  # a record cut off by a killed run
    ask = FakeAsk()
    run_dataset(None, None, items, out, prompt="Point.", ask=ask)
    assert ask.asked == ["img_2.png"] and len(load_results(out)) == 3


# ---------------------------------------------------------------------------------------------
# 3-5. Weights, not paths, name the model


def _net(seed: int = 0, name: str = "/models/final") -> torch.nn.Module:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    net.name_or_path = name
    return net


def _run(model, items, out, ask=None):
    return run_dataset(model, None, items, out, prompt="Point.", ask=ask or FakeAsk())


def test_another_model_saved_in_the_same_folder_does_not_mix(tmp_path):
    items = _images(tmp_path / "data", 1)
    out = tmp_path / "out.jsonl"
    _run(_net(seed=0), items, out)
    ask = FakeAsk()
    _run(_net(seed=0), items, out, ask)  # the same weights again: resumes
    assert ask.asked == []
    with pytest.raises(ValueError, match=r"another model \(weights: .*new results file"):
        _run(_net(seed=1), items, out)  # other weights under the same path


def test_a_merged_adapter_is_not_handed_its_base_models_answers(tmp_path):
    items = _images(tmp_path / "data", 1)
    out = tmp_path / "out.jsonl"
    base = _net()
    _run(base, items, out)
    lora = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=2, target_modules=["0", "2"]))
    with torch.no_grad():  # trained: B is no longer zero
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn_like(param) * 0.1)
    merged = lora.merge_and_unload()
    merged.name_or_path = base.name_or_path
    with pytest.raises(ValueError, match=r"another model \(weights: "):
        _run(merged, items, out)


def test_precision_and_quantization_are_part_of_what_answered(tmp_path):
    items = _images(tmp_path / "data", 1)
    out = tmp_path / "out.jsonl"
    _run(_net(), items, out)
    half = _net().to(torch.bfloat16)
    half.name_or_path = "/models/final"
    with pytest.raises(ValueError, match=r"another model \(weights: "):
        _run(half, items, out)
    config = SimpleNamespace(quantization_config={"quant_method": "bitsandbytes", "load_in_4bit": True})
    four = SimpleNamespace(name_or_path="/models/final", dtype=torch.bfloat16, config=config)
    plain = SimpleNamespace(name_or_path="/models/final", dtype=torch.bfloat16)
    _run(plain, items, tmp_path / "stand-in.jsonl")
    with pytest.raises(
        ValueError, match=r"another model \(quantization: None there, 'bitsandbytes-4bit-fp4' now\)"
    ):
        _run(four, items, tmp_path / "stand-in.jsonl")
    settings = load_results(out)[0].settings
    assert settings["dtype"] == "torch.float32" or settings["dtype"] is None  # a Sequential has no dtype
    assert load_results(tmp_path / "stand-in.jsonl")[0].settings["dtype"] == "torch.bfloat16"


# ---------------------------------------------------------------------------------------------
# 12. Long names


class OneProcess:
    """accelerate's PartialState of a single process, without starting anything."""

    num_processes, process_index, is_main_process = 1, 0, True

    def split_between_processes(self, items):
        return contextlib.nullcontext(items)

    def wait_for_everyone(self):
        pass


def test_names_as_long_as_the_file_system_allows_work_for_exports_and_shards(tmp_path):
    items = _images(tmp_path / "data", 2)
    long_export = tmp_path / ("e" * 246 + ".csv")  # 250 bytes
    results = run_dataset(None, None, items, tmp_path / "out.jsonl", prompt="Point.", ask=FakeAsk())
    export_csv(score_results(items, results), results, long_export)
    assert long_export.read_text(encoding="utf-8").startswith("key,")
    with atomic_path(tmp_path / ("é" * 124 + ".jsonl")) as tmp:  # 254 bytes: é is 2 bytes in UTF-8
        tmp.write_text("x")
    long_results = tmp_path / ("r" * 240 + ".jsonl")  # 246 bytes
    got = run_sharded(None, None, items, long_results, state=OneProcess(), prompt="Point.", ask=FakeAsk())
    assert [r.key for r in got] == [i.key for i in items]
    assert [r.key for r in load_results(long_results)] == [i.key for i in items]
    assert len(os.fsencode(shard_path(long_results, 9, 16).name)) <= 255
    assert not list(tmp_path.glob("r*.shard-*"))  # merged and removed


# ---------------------------------------------------------------------------------------------
# 13. No orphans when the launcher is killed


WORKER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from molmo_nb_utils.asking import Answer
    from molmo_nb_utils.dataset import load_dataset
    from molmo_nb_utils.dataset.sharded import run_sharded

    folder, out, pids = map(Path, sys.argv[1:4])

    def ask(model, processor, messages, **settings):
        (pids / str(os.getpid())).touch()
        while True:  # a long answer: the launcher is killed meanwhile
            time.sleep(0.1)

    run_sharded(None, None, load_dataset(folder), out, prompt="Point.", ask=ask)
    """
)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has exited already


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_killing_the_launcher_leaves_no_worker_behind(tmp_path):
    _images(tmp_path / "data", 4)
    pids = tmp_path / "pids"
    pids.mkdir()
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    torchrun = [sys.executable, "-m", "torch.distributed.run"]  # the `torchrun` script, from any venv
    launcher = subprocess.Popen(
        [*torchrun, "--nproc_per_node", "2", str(script), str(tmp_path / "data"), str(tmp_path / "out.jsonl"),
         str(pids)],
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    workers: list[int] = []
    try:
        _wait_for(lambda: len(list(pids.iterdir())) == 2 or launcher.poll() is not None, "two workers asking")
        assert launcher.poll() is None, "the launcher ended before its workers asked"
        workers = [int(p.name) for p in pids.iterdir()]
        launcher.send_signal(signal.SIGKILL)  # as an out-of-memory killer or `kill -9` does
        launcher.wait()
        _wait_for(lambda: not any(_alive(pid) for pid in workers), "the workers' exit")
    finally:
        for pid in workers:  # ours: started by this test's launcher
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if launcher.poll() is None:
            launcher.kill()
