"""Fine-tune on every GPU of a machine: the same fine_tune call, launched once per GPU.

    torchrun --nproc_per_node 4 scripts/fine_tune_ddp.py input/coin_table.json output/run \\
        --prompt "Point to the coins." --per_device_train_batch_size 2 --max_steps 400

(or ``accelerate launch --num_processes 4 scripts/fine_tune_ddp.py ...``). Each process loads the model
on its own GPU and trains on its share of every batch; the Trainer averages the gradients, so N GPUs
with ``--per_device_train_batch_size B`` train as one with B x N. Only the main process writes the
checkpoints and the adapter. Any other ``--name value`` is a TrainingArguments keyword. Without a GPU
the processes train on the CPU (gloo), as the tests do.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import warnings

import torch

from molmo_nb_utils.dataset import load_dataset
from molmo_nb_utils.loading import load_model, model_id
from molmo_nb_utils.training import fine_tune, split_items


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a word: "cosine", "tensorboard"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", help="load_dataset's source: a .json/.csv list or a folder")
    parser.add_argument("output_dir", help="the run folder (fine_tune's output_dir)")
    parser.add_argument("--model", default=None, help="model id or folder (default: model_id())")
    parser.add_argument("--prompt", default=None)
    parser.add_argument("--validation", type=float, default=0.0, help="share of items held out (split_items)")
    ours, rest = parser.parse_known_args(argv)
    if len(rest) % 2 or not all(name.startswith("--") for name in rest[::2]):
        parser.error(f"TrainingArguments come as --name value pairs, got {' '.join(rest)}")
    training_args = {name[2:]: _value(value) for name, value in zip(rest[::2], rest[1::2], strict=True)}
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = f"cuda:{local_rank}" if torch.cuda.is_available() else None  # one GPU per process
    model, processor = load_model(ours.model or model_id(), device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # items without ground truth are named by fine_tune's own warning
        items = [
            item for item in load_dataset(ours.dataset) if item.points is not None or item.truth is not None
        ]
    train, validation = split_items(items, validation=ours.validation)
    tuned = fine_tune(model, processor, train, ours.output_dir, prompt=ours.prompt, validation_items=validation,
                      progress=local_rank == 0, **training_args)  # fmt: skip
    if local_rank == 0:
        log = tuned.training_log
        print(
            f"{log.steps} steps; best checkpoint: {log.best_checkpoint}; adapter in {ours.output_dir}/adapter"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
