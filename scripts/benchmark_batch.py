"""How much batching buys: items/s of run_dataset at batch 1, 4 and 8, and decode tokens/s at batch 1 and 8.

Why: a GPU pays when it works on many questions at once, and decoding (one token per step, every
weight read once per step) is where a batch shows most. Two measurements, both offline:

1. ``run_dataset`` over one-image prompts on the tiny random Molmo2 (``molmo_nb_utils.tiny``) at
   batch 1, 4 and 8: the whole path (images read, processor, generate, results file). On a CPU the
   tiny model's work is mostly image preprocessing, which batching does not shorten.
2. Decode tokens/s of the Molmo2-4B *language model* (random weights of the real shapes,
   ``memory.KNOWN_CONFIGS``, built on the meta device and filled in place in bfloat16: no float32
   copy) for short text prompts at batch 1 and 8: (new tokens x batch) / (time of ``generate`` for
   1 + N new tokens - time for 1), so the prompt's prefill is not counted.

The goal of issue 17 (>= 4x items/s at batch 8 for one-image prompts on a GPU) is NOT measured
here: this script has only been run on a CPU. Run it on a CUDA machine to measure it
(``--device cuda``). Every figure it prints is measured on the machine it runs on; nothing is
estimated.

    .venv/bin/python scripts/benchmark_batch.py                # both parts, CPU
    .venv/bin/python scripts/benchmark_batch.py --part lm --layers 12   # a slice of the 4B LM
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from molmo_nb_utils.paths import INPUT_DIR  # noqa: E402

BATCHES = (1, 4, 8)
GOAL = "goal (issue 17): >= 4x items/s at batch 8 on a GPU; not measured by a CPU run"


def available_gib() -> float | None:
    """MemAvailable of /proc/meminfo, in GiB (None where there is no such file)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        return None
    return None


def tiny_items_per_second(folder: Path, n_items: int, new_tokens: int) -> list[dict]:
    """run_dataset over ``n_items`` one-image prompts at each batch size; items/s of the whole run."""
    from molmo_nb_utils.dataset import load_dataset, run_dataset
    from molmo_nb_utils.loading import load_model
    from molmo_nb_utils.tiny import build_tiny_molmo2

    model, processor = load_model(build_tiny_molmo2(folder / "tiny"), dtype="float32")
    photos = sorted((INPUT_DIR / "coin_table").glob("*.jpg"))
    images = folder / "images"
    images.mkdir()
    for k in range(n_items):
        shutil.copy(photos[k % len(photos)], images / f"{k:03d}.jpg")
    items = load_dataset(images)
    run_dataset(
        model, processor, items[:2], folder / "warm.jsonl", prompt="Point to the coins.", max_new_tokens=2
    )
    rows = []
    for batch in BATCHES:
        start = time.perf_counter()
        results = run_dataset(
            model,
            processor,
            items,
            folder / f"batch{batch}.jsonl",
            prompt="Point to the coins.",
            max_new_tokens=new_tokens,
            batch_size=batch,
        )
        seconds = time.perf_counter() - start
        assert all(r.error is None for r in results), [r.error for r in results if r.error]
        rows.append(
            {
                "batch": batch,
                "items": len(items),
                "seconds": round(seconds, 2),
                "items_per_s": round(len(items) / seconds, 2),
            }
        )
    base = rows[0]["items_per_s"]
    for row in rows:
        row["speedup"] = round(row["items_per_s"] / base, 2)
    return rows


def language_model(layers: int | None, device: str):
    """Molmo2-4B's language model and head with random weights in bfloat16 (the vision tower is not built)."""
    import torch
    from gpu_check import random_model  # the same random weights of the real shapes as make gpu-check
    from transformers import Molmo2Config

    from molmo_nb_utils.memory import KNOWN_CONFIGS

    spec = json.loads(json.dumps(KNOWN_CONFIGS["allenai/Molmo2-4B"]))
    if layers is not None:
        spec["text_config"]["num_hidden_layers"] = layers
    config = Molmo2Config(**spec, bos_token_id=1, eos_token_id=2, pad_token_id=0)  # text-only: any ids
    model = random_model(config, torch.bfloat16, device, text_only=True)
    params = sum(p.numel() for p in model.parameters())
    return model.eval(), config.text_config.num_hidden_layers, params


def _timed_generate(model, ids, mask, n: int, device: str) -> float:
    """Seconds for ``generate`` to write exactly ``n`` tokens after the prompt (greedy)."""
    import torch

    start = time.perf_counter()
    with torch.inference_mode():
        model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False
        )
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def decode_tokens_per_second(layers: int | None, device: str, prompt_tokens: int, new_tokens: int) -> dict:
    import torch

    model, built_layers, params = language_model(layers, device)
    rows = []
    for batch in (1, 8):
        ids = torch.randint(1000, 100000, (batch, prompt_tokens), device=device)
        mask = torch.ones_like(ids)

        _timed_generate(model, ids, mask, 1, device)  # warm-up
        prefill = _timed_generate(model, ids, mask, 1, device)
        total = _timed_generate(model, ids, mask, 1 + new_tokens, device)
        decode = total - prefill
        rows.append(
            {
                "batch": batch,
                "prompt_tokens": prompt_tokens,
                "new_tokens": new_tokens,
                "prefill_plus_1_s": round(prefill, 2),
                "generate_s": round(total, 2),
                "decode_s": round(decode, 2),
                "decode_tokens_per_s": round(batch * new_tokens / decode, 2),
            }
        )
    rows[1]["speedup"] = round(rows[1]["decode_tokens_per_s"] / rows[0]["decode_tokens_per_s"], 2)
    return {"layers": built_layers, "of_layers": 36, "parameters": params, "dtype": "bfloat16", "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["tiny", "lm", "all"], default="all")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--items", type=int, default=16, help="one-image prompts for the tiny model")
    parser.add_argument("--tiny-new-tokens", type=int, default=16)
    parser.add_argument(
        "--layers", type=int, default=None, help="decoder layers of the 4B LM (default: all 36)"
    )
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures here as JSON")
    args = parser.parse_args(argv)

    import torch

    report: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s), torch {torch.__version__}, threads {torch.get_num_threads()}",
        "device": args.device,
        "goal": GOAL,
    }
    print(report["machine"], "| device:", args.device, "|", GOAL)
    if args.part in ("tiny", "all"):
        with tempfile.TemporaryDirectory(prefix="benchmark-batch-") as folder:
            report["tiny_run_dataset"] = tiny_items_per_second(Path(folder), args.items, args.tiny_new_tokens)
        print(
            f"\nrun_dataset on the tiny model, {args.items} one-image prompts, {args.tiny_new_tokens} new tokens:"
        )
        for row in report["tiny_run_dataset"]:
            print(
                f"  batch {row['batch']}: {row['items_per_s']} items/s ({row['seconds']} s, x{row['speedup']})"
            )
    if args.part in ("lm", "all"):
        free = available_gib()
        need = 8.5 * (args.layers or 36) / 36 + 1.5
        if free is not None and free < need + 2:
            print(f"\nonly {free:.1f} GiB available, {need:.1f} GiB needed: pass --layers to measure a slice")
            return 1
        lm = decode_tokens_per_second(args.layers, args.device, args.prompt_tokens, args.new_tokens)
        report["molmo2_4b_language_model_decode"] = lm
        print(
            f"\nMolmo2-4B language model, random weights, bfloat16, {lm['layers']} of {lm['of_layers']} layers "
            f"({lm['parameters'] / 1e9:.2f} B parameters), {args.prompt_tokens}-token prompts:"
        )
        for row in lm["rows"]:
            print(
                f"  batch {row['batch']}: {row['decode_tokens_per_s']} decode tokens/s "
                f"({row['new_tokens']} tokens in {row['decode_s']} s)"
                + (f", x{row['speedup']}" if "speedup" in row else "")
            )
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
