"""One run over several processes or GPUs: each process answers its share into its own shard file.

Why: one GPU answers one batch at a time; eight answer eight. Processes are started by an
existing launcher (accelerate's, or torchrun), which tells each one its place; accelerate's
``PartialState.split_between_processes`` gives each the same share every time, so a killed run
resumes shard by shard. Each process appends to its own file (``results.shard-1-of-2.jsonl``, with
the same guarantees as the results file: nothing lost, nothing duplicated), and the main process
merges the shards into the results file in the order of the items, then removes them. The merge is
deterministic and safe to repeat: a line already in the results file is not added twice.

From a terminal, one process per GPU::

    accelerate launch --num_processes 2 -m molmo_nb_utils.dataset.sharded \\
        input/coin_table.json downloaded_data/outputs/coins.jsonl --prompt "Point to the coins." --batch-size 8

``torchrun --nproc_per_node 2 -m molmo_nb_utils.dataset.sharded ...`` does the same, and without a GPU
runs the processes on the CPU (that is how the tests run it).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import torch
from accelerate import PartialState

from molmo_nb_utils.asking import DEFAULT_MAX_NEW_TOKENS, Answer, chat, chat_batch
from molmo_nb_utils.dataset.items import DEFAULT_PROMPT, DatasetItem, load_dataset
from molmo_nb_utils.dataset.results import (
    ItemResult,
    append_line,
    check_settings,
    encode_line,
    latest,
    open_results,
    read_lines,
    read_results,
    same_open_file,
)
from molmo_nb_utils.dataset.running import RunSettings, items_to_ask, run_items
from molmo_nb_utils.loading import load_model
from molmo_nb_utils.media import DEFAULT_FPS, DEFAULT_MAX_FRAMES, DEFAULT_MEDIA, MediaSettings
from molmo_nb_utils.paths import short_stem, try_lock

# How long a merge waits for another process's short write to the results file before refusing.
MERGE_WAIT_S = 30.0
# Bytes a shard adds to the results name: ".shard-" and two numbers of up to 6 digits with "-of-".
_SHARD_TAIL = len(".shard-") + 6 + len("-of-") + 6


def shard_path(results_path: str | os.PathLike, index: int, count: int) -> Path:
    """The shard file of process ``index`` (from 0) of ``count``: ``results.shard-1-of-2.jsonl``.

    A results name too long to take the ``.shard-1-of-2`` is shortened (its start and a hash), so
    every results name a file system allows also works sharded.
    """
    path = Path(results_path)
    return path.with_name(f"{_shard_stem(path)}.shard-{index + 1}-of-{count}{path.suffix}")


def _shard_stem(results_path: Path) -> str:
    return short_stem(results_path.stem, len(os.fsencode(results_path.suffix)) + _SHARD_TAIL)


def _shards(results_path: Path) -> list[Path]:
    stem = _shard_stem(results_path)
    pattern = re.compile(re.escape(stem) + r"\.shard-(\d+)-of-(\d+)" + re.escape(results_path.suffix))
    found = []
    for path in results_path.parent.glob(f"{glob.escape(stem)}.shard-*"):
        match = pattern.fullmatch(path.name)
        if match:
            found.append((int(match[2]), int(match[1]), path))
    return [path for *_, path in sorted(found)]


def _state():
    """accelerate's view of this process; without a GPU, processes that torchrun started on the CPU."""
    return PartialState(cpu=not torch.cuda.is_available())


def exit_with_launcher(interval_s: float = 0.5) -> bool:
    """In a process that torchrun or ``accelerate launch`` started, end it when the launcher dies.

    Why: the launchers start each worker in a session of its own, so killing the launcher (or
    its process group, as a terminal or a job scheduler does) leaves the workers running, holding
    GPUs and shard locks. A daemon thread watches the parent process; when it is gone (the worker
    is handed to another parent), the worker exits. Every answer it finished is on disk already,
    and the next run asks the rest. Returns whether it watches (not outside a launcher).
    """
    global _watching
    if _watching or not ("TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ):
        return _watching
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        print(
            f"molmo_nb_utils: the launcher (process {parent}) has gone; process {os.getpid()} stops too. "
            "Run the same command again to resume.",
            file=sys.stderr,
            flush=True,
        )
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-launcher", daemon=True).start()
    _watching = True
    return True


_watching = False


def run_sharded(
    model: Any,
    processor: Any,
    items: Sequence[DatasetItem],
    results_path: str | os.PathLike,
    *,
    state: Any = None,
    prompt: str | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    media: MediaSettings = DEFAULT_MEDIA,
    batch_size: int = 1,
    retry_failed: bool = False,
    ask: Callable[..., Answer] = chat,
    ask_batch: Callable[..., list[Answer]] = chat_batch,
) -> list[ItemResult]:
    """This process's share of ``run_dataset``; after all are done, the main process merges the shards.

    Call it in every process started by ``accelerate launch`` (or torchrun); ``state`` is
    accelerate's ``PartialState()`` unless given. The settings are ``run_dataset``'s, built once
    into one ``RunSettings`` that every shard records. Items already in the results file are not
    asked again. Returns the merged results, in the order of ``items``, in every process.
    """
    state = state or _state()
    if state.num_processes > 1:
        exit_with_launcher()
    results_path = Path(results_path)
    items = list(items)
    settings = RunSettings.for_model(model, prompt=prompt, max_new_tokens=max_new_tokens, media=media)
    if (
        state.is_main_process
    ):  # what an earlier run left in shards (with any number of processes) counts as done
        merge_shards(items, results_path)
    state.wait_for_everyone()
    earlier = read_results(results_path)
    check_settings(earlier, settings.record(), results_path)
    merged = latest(earlier)

    with state.split_between_processes(items) as share:
        mine, _ = items_to_ask(share, settings.prompt, merged, retry_failed, results_path)
        if mine:
            path = shard_path(results_path, state.process_index, state.num_processes)
            run_items(
                model,
                processor,
                mine,
                path,
                settings,
                retry_failed=retry_failed,
                batch_size=batch_size,
                ask=ask,
                ask_batch=ask_batch,
            )
    state.wait_for_everyone()
    if state.is_main_process:
        merge_shards(items, results_path)
    state.wait_for_everyone()
    merged = latest(read_results(results_path))
    return [merged[item.key] for item in items if item.key in merged]


def merge_shards(items: Sequence[DatasetItem], results_path: str | os.PathLike) -> Path:
    """Add the shard files' lines to the results file, item by item, then remove the shards.

    Deterministic: the new lines follow the order of ``items`` (and, for one item, the shards'
    order and their own). Safe to repeat after an interruption: a line already in the results file
    is not added again, and the shards are removed only once every line is on disk. Shards of
    another model or settings are refused, as a resumed run would be.

    A shard whose writer is still at work (a second launch of the same command, a merge from a
    notebook while a run goes on) holds its lock: it is left alone, with a warning, and merged by
    a later call. A merged shard stays locked until it is removed, so no writer appends to it in
    between: a merge never loses an answer.
    """
    results_path = Path(results_path)
    with contextlib.ExitStack() as held:
        shards, busy = [], []
        for path in _shards(results_path):
            file = _hold(path)
            if file is None:
                busy.append(path)
                continue
            held.enter_context(file)
            if not same_open_file(file, path):  # removed by another merge meanwhile
                continue
            shards.append((path, read_lines(file.read(), path)))
        if busy:
            warnings.warn(
                f"{len(busy)} shard(s) are being written by another run right now ({busy[0].name}, ...): "
                "they were left as they are. Run the same command again (or merge_shards) when that run "
                "has finished, to merge them.",
                stacklevel=2,
            )
        if not shards:
            return results_path
        with open_results(results_path, wait_s=MERGE_WAIT_S) as (file, earlier):
            reference = (
                earlier[0].settings if earlier else next((s[0].settings for _, s in shards if s), None)
            )
            if reference is not None:
                for path, results in shards:
                    check_settings(results, reference, path)
            present = {encode_line(r.to_record()) for r in earlier}
            by_key: dict[str, list[bytes]] = {}
            for _, results in shards:
                for r in results:
                    by_key.setdefault(r.key, []).append(encode_line(r.to_record()))
            new = [
                line
                for item in dict.fromkeys(i.key for i in items)
                for line in by_key.get(item, [])
                if line not in present
            ]
            if new:
                append_line(file, b"".join(new))
        for path, _ in shards:  # still locked: nobody appended since they were read
            path.unlink(missing_ok=True)
    return results_path


def _hold(path: Path) -> IO[bytes] | None:
    """The shard, open and locked by this process; None while another process holds its lock."""
    try:
        file = open(path, "rb")  # noqa: SIM115 (closed by the caller)
    except FileNotFoundError:
        return None
    if try_lock(file.fileno()) is False:
        file.close()
        return None
    return file


def main(argv: Sequence[str] | None = None) -> None:
    """``accelerate launch -m molmo_nb_utils.dataset.sharded DATASET RESULTS --prompt ...``"""
    parser = argparse.ArgumentParser(
        prog="accelerate launch --num_processes N -m molmo_nb_utils.dataset.sharded",
        description="Run a prompt over a dataset in several processes (one per GPU); merge the results.",
    )
    parser.add_argument("dataset", help="a folder, or a .json or .csv list (see load_dataset)")
    parser.add_argument("results", help="the results file (.jsonl); shard files are written beside it")
    parser.add_argument(
        "--prompt", default=None, help=f"asked of items without their own (default: {DEFAULT_PROMPT!r})"
    )
    parser.add_argument(
        "--model", default=None, help="Hub id or folder (default: MOLMO_MODEL_ID or Molmo2-4B)"
    )
    parser.add_argument("--dtype", default=None, choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--fps", type=float, default=DEFAULT_FPS)
    parser.add_argument("--max-frames", type=int, default=DEFAULT_MAX_FRAMES)
    parser.add_argument("--max-crops", type=int, default=None)
    parser.add_argument("--retry-failed", action="store_true")
    args = parser.parse_args(argv)
    try:  # before the model loads: a bad value fails at once
        media = MediaSettings(args.fps, args.max_frames, args.max_crops)
    except ValueError as err:
        parser.error(str(err))

    exit_with_launcher()
    state = _state()
    items = load_dataset(args.dataset)
    device = None if state.device.type == "cpu" else str(state.device)
    model, processor = load_model(args.model, dtype=args.dtype, device=device)
    results = run_sharded(
        model,
        processor,
        items,
        args.results,
        state=state,
        prompt=args.prompt,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        media=media,
        retry_failed=args.retry_failed,
    )
    if state.is_main_process:
        failed = sum(r.error is not None for r in results)
        print(f"{len(results)} of {len(items)} item(s) answered ({failed} failed) in {args.results}")


if __name__ == "__main__":
    main()
