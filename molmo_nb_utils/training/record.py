"""What a run trained: the record its manifest keeps, so that a run folder answers a call only with the
adapter of the same training.

Why each rule is here:

* **Every TrainingArguments field, read off the dataclass.** A hand list of the fields that matter misses
  the ones nobody thought of (``lr_scheduler_kwargs``, ``neftune_noise_alpha``, ``optim_args``,
  ``dataloader_drop_last``...): a run killed and resumed with another would train on two schedules, and a
  finished one would hand back an adapter of other settings. So every field is recorded but the few in
  ``NOT_TRAINING``, which only watch or write the run or change its speed. A field a newer transformers
  adds is recorded until someone shows it changes nothing: a harmless change refused names its field,
  while a harmful one let through would mix without a word.
* **The media's content, not their names.** The items are recorded with each file's sha256: new photos
  under the old names are another training, as other weights are another model.
* **Validation on other files, not other keys.** A training and a validation item are apart only if their
  files' bytes differ: the same photo listed from two folders (``d0.png`` and ``photos/d0.png``), linked
  or copied, is refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import TrainingArguments

from molmo_nb_utils.paths import file_sha256
from molmo_nb_utils.training.targets import TrainingError, TrainingExample

__all__ = [
    "NOT_TRAINING",
    "arguments_record",
    "check_apart",
    "check_same_training",
    "items_digest",
    "media_digests",
]

# TrainingArguments' fields that cannot change the adapter a run trains, nor which checkpoint becomes it; every
# other field is recorded. A field here, changed between a killed run and its resume, is simply used.
NOT_TRAINING = frozenset({
    # watching the run: logs, reports, progress bars, the Hub
    "logging_strategy", "logging_steps", "logging_first_step", "log_on_each_node", "logging_nan_inf_filter",
    "include_num_input_tokens_seen", "log_level", "log_level_replica", "disable_tqdm", "report_to", "run_name",
    "project", "trackio_space_id", "trackio_bucket_id", "trackio_static_space_id", "skip_memory_metrics", "debug",
    "push_to_hub", "hub_token", "hub_private_repo", "hub_model_id", "hub_strategy", "hub_always_push",
    "hub_revision",
    # where and how often it is written (fine_tune chooses the folder; the best checkpoint is always kept)
    "output_dir", "save_strategy", "save_steps", "save_total_limit", "save_on_each_node", "enable_jit_checkpoint",
    "resume_from_checkpoint", "do_train", "do_eval", "do_predict",
    # one process's own (under torchrun each process has another)
    "local_rank",
    # speed and memory only: the same numbers, sooner or in less memory (checkpointed layers are recomputed
    # with their random state, so the lesson's advice to turn it on when memory runs out can resume a run)
    "dataloader_num_workers", "dataloader_pin_memory", "dataloader_persistent_workers", "dataloader_prefetch_factor",
    "dataloader_multiprocessing_context", "torch_empty_cache_steps", "ddp_timeout", "eval_accumulation_steps",
    "eval_do_concat_batches", "eval_use_gather_object", "activation_checkpointing", "activation_checkpointing_kwargs",
    "gradient_checkpointing", "gradient_checkpointing_kwargs",
})  # fmt: skip


def arguments_record(args: TrainingArguments) -> dict[str, Any]:
    """What ``args`` trains, as a run records it: every field but ``NOT_TRAINING``, and the processes (the
    data each sees), in the JSON the manifest stores (so a recorded run and a new call compare as equals)."""
    values = {k: v for k, v in args.to_dict().items() if k not in NOT_TRAINING}
    return json.loads(json.dumps({**values, "world_size": args.world_size}, default=str))


def media_digests(examples: Sequence[TrainingExample]) -> dict[Path, str]:
    """Each example's file and its sha256, read once (a file listed twice is read once)."""
    return {path: file_sha256(path) for path in dict.fromkeys(e.path for e in examples)}


def items_digest(examples: Sequence[TrainingExample], media: dict[Path, str]) -> str:
    """The examples as trained: keys, prompts, answers, a video's frames, and each file's content."""
    digest = hashlib.sha256()
    for example in examples:
        frames = example.frames.times if example.frames is not None else None
        digest.update(
            json.dumps([example.key, example.prompt, example.target, frames, media[example.path]]).encode()
        )
    return digest.hexdigest()[:16]


def check_apart(
    examples: Sequence[TrainingExample], held_out: Sequence[TrainingExample], media: dict[Path, str]
) -> None:
    """Refuse to validate on a file that is trained on, whatever its key: the same file listed from two folders,
    a link, or a copy of the same bytes."""
    trained = {media[e.path]: e.key for e in examples}
    for example in held_out:
        twin = trained.get(media[example.path])
        if twin == example.key:
            raise TrainingError(
                f"{twin} is both a training and a validation item: split them with split_items"
            )
        if twin is not None:
            raise TrainingError(
                f"training item {twin} and validation item {example.key} are the same file (the same bytes): a "
                "model validated on what it trained on looks better than it is. Keep each photo or video on one "
                "side (split_items splits one list)."
            )


def check_same_training(
    manifest: dict[str, Any], record: dict[str, Any], media: dict[str, str], root: Path
) -> None:
    """Refuse to resume or load a training with other settings, items or media than this call's, naming one."""
    recorded = manifest["settings"]
    changed = [k for k in sorted({*recorded, *record}) if recorded.get(k) != record.get(k)]
    if not changed:
        return
    key = changed[0]
    if key in ("examples", "validation"):
        files = sorted(k for k, sha in manifest.get("media", {}).items() if k in media and media[k] != sha)
        side = "training" if key == "examples" else "validation"
        differs = (
            f"the {side} files {', '.join(files[:5])} changed since it trained on them"
            if files
            else f"other {side} items, prompts, answers or files"
        )
    elif key not in recorded:
        differs = f"{key}: not recorded there (an older fine_tune), {record[key]!r} now"
    else:
        differs = f"{key}: {recorded.get(key)!r} there, {record.get(key)!r} now"
    raise TrainingError(
        f"{root} holds a training with other settings ({differs}). Resuming would mix them, and its adapter is "
        "not this training's: give this training a new folder, or pass resume=False to start over (fine_tune "
        "removes only what it wrote)."
    )
