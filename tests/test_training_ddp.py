"""Data-parallel fine-tuning: two CPU processes (gloo) under torchrun train the adapter that one process
trains with the same global batch, also when the examples do not split evenly (3 on 2 processes: the last
batch of an epoch is filled up with a repeat that must not train), and only the main process writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from peft.utils import load_peft_weights

from molmo_nb_utils import REPO_ROOT, load_dataset, load_model
from molmo_nb_utils.training import fine_tune

PROMPT = "Point to the coins."
STEPS = 3


@pytest.fixture
def three_tables(coin_tables, tmp_path):
    tables = coin_tables[:3]  # uneven: each epoch's second step has one example for two processes
    listing = tmp_path / "tables.json"
    entries = [
        {
            "file": str(t.path),
            "label": t.label,
            "count": len(t.points),
            "points": [[p.x, p.y] for p in t.points],
        }
        for t in tables
    ]
    listing.write_text(json.dumps(entries))
    return listing


def test_two_processes_train_the_adapter_of_one_with_the_same_global_batch(
    tiny_model_path, three_tables, tmp_path
):
    env = {
        **os.environ,
        "MOLMO_MODEL_ID": str(tiny_model_path),
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(REPO_ROOT / "scripts" / "fine_tune_ddp.py"), str(three_tables), str(tmp_path / "two"),
               "--prompt", PROMPT, "--per_device_train_batch_size", "1", "--max_steps", str(STEPS),
               "--save_steps", str(STEPS), "--disable_tqdm", "True"]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{STEPS} steps" in done.stdout

    model, processor = load_model(tiny_model_path)
    items = load_dataset(three_tables)
    fine_tune(model, processor, items, tmp_path / "one", prompt=PROMPT, per_device_train_batch_size=2,
              max_steps=STEPS, save_steps=STEPS, progress=False)  # fmt: skip
    two, one = (load_peft_weights(str(tmp_path / run / "adapter")) for run in ("two", "one"))
    assert two.keys() == one.keys() and len(one) > 10
    moved = 0
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-6)
        moved += int(not torch.equal(one[name], torch.zeros_like(one[name])))
    assert moved > len(one) // 3  # trained, not just both at their start (lora_B starts at zero)

    # one writer: one run, one checkpoint with one trainer state, the Trainer's random state per process
    manifest = json.loads((tmp_path / "two" / "fine_tune.json").read_text())
    assert manifest["checkpoints"] == [f"checkpoint-{STEPS}"] and manifest["settings"]["world_size"] == 2
    checkpoint = tmp_path / "two" / "checkpoints" / f"checkpoint-{STEPS}"
    assert {"rng_state_0.pth", "rng_state_1.pth", "trainer_state.json", "fine_tune_mark.json"} <= {
        p.name for p in checkpoint.iterdir()
    }
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "adapter",
        "checkpoints",
        "fine_tune.json",
    ]
