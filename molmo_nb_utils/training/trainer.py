"""Trainer glue: ``fine_tune`` on transformers' ``Trainer``, with Molmo2's batches and loss.

What the Trainer brings is what practitioners know from ``TrainingArguments``: batches and gradient
accumulation, the schedule, bf16/fp16 and loss scaling, data-parallel training under ``torchrun`` or
``accelerate launch`` (only the main process writes checkpoints), logging (``report_to``: TensorBoard,
W&B, ...), evaluation during training and the best checkpoint by validation loss. What is ours:

* **The loss** (``Molmo2Trainer.compute_loss``) is the mean of the examples' own losses (each the mean
  over its answer tokens), over the whole optimizer step: every micro-batch, every process. A batch of
  3 then trains as 3 steps of one averaged; a per-token mean would let long answers outweigh short ones.
* **The bookkeeping** (``checkpoints``): the checkpoints live in our own subfolder, each counted only
  when whole, removed only if ours, and tied to the base model's weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from peft import PeftModel, get_peft_model
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.modeling_outputs import BaseModelOutputWithPooling

from molmo_nb_utils.media import DEFAULT_MEDIA, MediaSettings
from molmo_nb_utils.training.checkpoints import (
    ADAPTER,
    CHECKPOINTS,
    base_identity,
    check_base,
    clean_up,
    finished_checkpoints,
    is_whole,
    load_adapter,
    mark_folder,
    open_run,
    read_manifest,
    read_mark,
    remove_ours,
    write_manifest,
)
from molmo_nb_utils.training.encoding import Molmo2Collator, example_losses, training_item
from molmo_nb_utils.training.settings import (
    FineTuneSettings,
    check_qlora,
    default_learning_rate,
    default_steps,
    lora_config,
)
from molmo_nb_utils.training.targets import TrainingError, TrainingExample, training_examples

__all__ = ["KEEP_CHECKPOINTS", "Molmo2Trainer", "TrainingLog", "fine_tune", "training_arguments"]

KEEP_CHECKPOINTS = 2  # save_total_limit by default: the last and the best are always kept
# fine_tune's old names, and TrainingArguments' own: named in the error that refuses them
RENAMED = {"steps": "max_steps", "save_every": "save_steps", "gradient_accumulation": "gradient_accumulation_steps",
           "keep_checkpoints": "save_total_limit", "validate_every": "eval_steps", "warmup": "warmup_steps",
           "gradient_checkpointing": "activation_checkpointing"}  # fmt: skip
# TrainingArguments that change what is trained: a resumed run must have the same
TRAINING_FIELDS = ("learning_rate", "max_steps", "num_train_epochs", "per_device_train_batch_size",
                   "gradient_accumulation_steps", "weight_decay", "warmup_steps", "lr_scheduler_type", "seed",
                   "data_seed", "optim", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm", "bf16",
                   "fp16", "world_size")  # fmt: skip


@dataclass(frozen=True)
class TrainingLog:
    """What happened, from the Trainer's ``log_history``: the losses, and which checkpoint is the adapter."""

    steps: int
    train_loss: tuple[tuple[int, float], ...]  # (step, mean training loss since the last log)
    validation_loss: tuple[tuple[int, float], ...]  # (step, mean loss over the validation examples)
    best_checkpoint: str | None  # the checkpoint the adapter is (lowest validation loss); None: the last step
    resumed_from: int  # 0: from the start
    log_history: tuple[dict[str, Any], ...]  # the Trainer's own, for plots and tables


def _log(history: Sequence[dict[str, Any]], steps: int, best: str | None, resumed_from: int) -> TrainingLog:
    return TrainingLog(
        steps=steps,
        train_loss=tuple((e["step"], e["loss"]) for e in history if "loss" in e),
        validation_loss=tuple((e["step"], e["eval_loss"]) for e in history if "eval_loss" in e),
        best_checkpoint=best,
        resumed_from=resumed_from,
        log_history=tuple(history),
    )


class Molmo2Trainer(Trainer):
    """``Trainer`` with the mean of the examples' losses, and the media features passed as the model's
    ``mm_encoder_outputs`` (cached) or its pixels (``train_connector``)."""

    loss_is_scaled_for_ga = True  # compute_loss divides by the examples of the whole optimizer step

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False  # Molmo2 filters its logits: the loss is ours

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """The adapter alone: peft would add the base's whole output head (1.5 GB for Molmo2-4B) to every
        checkpoint, since LoRA adapts it; the head itself never changes."""
        if self.args.should_save:
            model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
            model.save_pretrained(
                output_dir or self.args.output_dir, state_dict=state_dict, save_embedding_layers=False
            )

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The step's micro-batches, and how many examples they hold on all processes together."""
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        count = torch.tensor(sum(len(batch["labels"]) for batch in batches), device=device)
        if self.args.world_size > 1:
            count = self.accelerator.gather(count).sum()
        return batches, count

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The mean of the examples' losses: of this batch (evaluation), or of the whole optimizer step
        (``num_items_in_batch`` examples; the sum is scaled by the processes, whose gradients DDP averages)."""
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        keep = inputs.pop("logits_to_keep")
        features = inputs.pop("media_features", None)
        if features:
            inputs["mm_encoder_outputs"] = {
                "image": BaseModelOutputWithPooling(pooler_output=tuple(features))
            }
        dtype = self.accelerator.unwrap_model(model).dtype
        for key in ("pixel_values", "pixel_values_videos"):  # as chat casts them
            if key in inputs:
                inputs[key] = inputs[key].to(dtype)
        outputs = model(**inputs, logits_to_keep=keep, use_cache=False)
        losses = example_losses(outputs.logits, labels[:, -keep:])
        if num_items_in_batch is None:
            loss = losses.mean()
        else:
            loss = losses.sum() * self.accelerator.num_processes / num_items_in_batch
        return (loss, outputs) if return_outputs else loss


def _digest(examples: Sequence[TrainingExample]) -> str:
    digest = hashlib.sha256()
    for example in examples:
        frames = example.frames.times if example.frames is not None else None
        digest.update(json.dumps([example.key, example.prompt, example.target, frames]).encode())
    return digest.hexdigest()[:16]


def training_arguments(
    model: Any,
    output_dir: Path,
    *,
    examples: int,
    validation: bool,
    progress: bool,
    args: TrainingArguments | None,
    given: dict[str, Any],
) -> tuple[TrainingArguments, int | None]:
    """The TrainingArguments of a run, and the number of checkpoints to keep (``save_total_limit``).

    ``given`` are the caller's TrainingArguments keywords, ``args`` a whole TrainingArguments (not both).
    The lesson's defaults where the caller says nothing: one example per device and step;
    ``STEPS_PER_EXAMPLE`` passes over the data (300 to 2,000 steps); the width-scaled learning rate,
    warmed up over 5% of the steps, then a cosine; 50 logs, 5 checkpoints; with validation items an
    evaluation at each checkpoint and the best of them loaded at the end.
    """
    for old, new in RENAMED.items():
        if old in given:
            if old == "gradient_checkpointing":  # the deprecated alias: the current name, without its warning
                given.setdefault(new, given.pop(old))
                continue
            raise TrainingError(f"fine_tune takes TrainingArguments' names: {new}=... instead of {old}=...")
    if args is not None and given:
        raise TrainingError(
            f"pass either args=TrainingArguments(...) or TrainingArguments' keywords ({', '.join(sorted(given))}), "
            "not both"
        )
    cpu = model.device.type == "cpu"
    if args is None:
        batch = given.get("per_device_train_batch_size", 1)
        accumulate = given.get("gradient_accumulation_steps", 1)
        world = int(os.environ.get("WORLD_SIZE", "1"))
        defaults: dict[str, Any] = {
            "per_device_train_batch_size": 1,
            "per_device_eval_batch_size": batch,
            "learning_rate": default_learning_rate(model),
            "lr_scheduler_type": "cosine",
            "warmup_steps": 0.05,
            "logging_steps": 0.02,
            "save_strategy": "steps",
            "save_steps": 0.2,
            "eval_strategy": "steps" if validation else "no",
            "eval_steps": given.get("save_steps", 0.2),
            "load_best_model_at_end": validation,
            "metric_for_best_model": "eval_loss",
            "greater_is_better": False,
            "save_total_limit": KEEP_CHECKPOINTS,
            "disable_tqdm": not progress,
            "report_to": "none",
            "use_cpu": cpu,
            "dataloader_pin_memory": not cpu,
            "bf16": not cpu and model.dtype == torch.bfloat16,
            "fp16": not cpu and model.dtype == torch.float16,
        }
        if "max_steps" not in given and "num_train_epochs" not in given:
            defaults["max_steps"] = default_steps(examples, batch * accumulate * world)
        steps = given.get("max_steps", defaults.get("max_steps", -1))
        if steps > 0:  # in steps, not shares of the run: a resumed run's state then says the same
            for key in ("warmup_steps", "logging_steps", "save_steps", "eval_steps"):
                if isinstance(defaults[key], float):
                    defaults[key] = max(round(defaults[key] * steps), 1)
        try:
            args = TrainingArguments(output_dir=str(output_dir), **{**defaults, **given})
        except TypeError as err:
            known = ", ".join(f.name for f in fields(TrainingArguments) if f.init)[:300]
            raise TrainingError(
                f"{err}: fine_tune takes TrainingArguments' own names ({known}, ...)"
            ) from None
        except ValueError as err:
            raise TrainingError(f"these TrainingArguments do not fit together: {err}") from None
    if args.eval_strategy != "no" and not validation:
        raise TrainingError(
            f"eval_strategy={args.eval_strategy.value!r} needs validation_items (see split_items)"
        )
    keep = args.save_total_limit
    # ours, whatever was asked: checkpoints in our subfolder, rotated by us (only ours), the loss ours too
    args = replace(args, output_dir=str(output_dir), save_total_limit=None, remove_unused_columns=False,
                   label_names=["labels"], prediction_loss_only=True)  # fmt: skip
    return args, keep


class _Bookkeeping(TrainerCallback):
    """Marks each checkpoint the Trainer writes, records it, and keeps the last ``keep`` (and the best)."""

    def __init__(
        self, root: Path, manifest: dict[str, Any], record: dict[str, Any], keep: int | None
    ) -> None:
        self.root, self.manifest, self.record, self.keep = root, manifest, record, keep

    def on_step_end(self, args, state, control, **kwargs):
        name = f"checkpoint-{state.global_step}"
        if control.should_save and state.is_world_process_zero and name not in self.manifest["writing"]:
            self.manifest["writing"].append(name)  # before the Trainer writes it: a kill leaves it ours
            write_manifest(self.root, self.manifest)

    def on_save(self, args, state, control, **kwargs):
        PartialState().wait_for_everyone()  # every process has written its share (its random state)
        if not state.is_world_process_zero:
            return
        name = f"checkpoint-{state.global_step}"
        folder = self.root / CHECKPOINTS / name
        mark_folder(folder, self.manifest["run"], step=state.global_step, **self.record)
        self.manifest["checkpoints"] = [*(n for n in self.manifest["checkpoints"] if n != name), name]
        self.manifest["writing"] = [n for n in self.manifest["writing"] if n != name]
        write_manifest(self.root, self.manifest)
        if not self.keep or self.keep < 1:
            return
        finished = finished_checkpoints(self.root, self.manifest)
        best = Path(state.best_model_checkpoint).name if state.best_model_checkpoint else None
        removable = [f for f in finished[:-1] if f.name != best]
        for old in removable[: max(len(finished) - max(self.keep, 2 if best and best != name else 1), 0)]:
            remove_ours(self.root, self.manifest, old)


def _same_settings(recorded: dict[str, Any], record: dict[str, Any], root: Path) -> None:
    changed = [k for k in sorted({*recorded, *record}) if recorded.get(k) != record.get(k)]
    if changed:
        key = changed[0]
        raise TrainingError(
            f"{root} holds a training with other settings ({key}: {recorded.get(key)!r} there, {record.get(key)!r} "
            "now). Resuming would mix them: give this training a new folder, or pass resume=False to start over "
            "(fine_tune removes only what it wrote)."
        )


def _save_adapter(
    root: Path, manifest: dict[str, Any], model: PeftModel, record: dict[str, Any], **extra
) -> None:
    """The final adapter into ``root/adapter``: written under a hidden name the manifest records, marked, renamed."""
    if (root / ADAPTER).exists():
        if (read_mark(root / ADAPTER) or {}).get("run") != manifest["run"]:
            raise TrainingError(
                f"{root / ADAPTER} was not written by this run of fine_tune: move it away, then call fine_tune "
                "again (it resumes from its last checkpoint)"
            )
        remove_ours(root, manifest, root / ADAPTER)
    partial = f".{ADAPTER}-{uuid.uuid4().hex[:8]}"
    manifest["removing"][partial] = partial  # removed by clean_up if this call is killed
    write_manifest(root, manifest)
    model.save_pretrained(root / partial, save_embedding_layers=False)  # the base's head and embeddings stay
    mark_folder(root / partial, manifest["run"], **record, **extra)
    os.replace(root / partial, root / ADAPTER)
    del manifest["removing"][partial]
    manifest["adapter"] = extra
    write_manifest(root, manifest)


def fine_tune(
    model: Any,
    processor: Any,
    items: Sequence[Any],
    output_dir: str | os.PathLike,
    *,
    prompt: str | None = None,
    validation_items: Sequence[Any] = (),
    rank: int = 16,
    alpha: int | None = None,
    dropout: float = 0.0,
    train_connector: bool = False,
    media: MediaSettings = DEFAULT_MEDIA,
    cache_features: bool = True,
    resume: bool = True,
    qlora: bool | None = None,
    progress: bool = True,
    args: TrainingArguments | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    **training_args: Any,
) -> PeftModel:
    """Fine-tune ``model`` with LoRA on the items' ground truth; return the model with its adapter (a peft
    ``PeftModel``, in eval mode) that ``chat``, ``run_dataset`` and the playground take as they are.

    Each item becomes an example of ``training_examples(items, prompt=prompt, media=media)``: asked as
    ``run_dataset`` asks it, its media shown as ``run_dataset(..., media=media)`` shows them (``MediaSettings``). The training is
    transformers' ``Trainer``: pass ``TrainingArguments``' own keywords (``per_device_train_batch_size=4``,
    ``max_steps``, ``num_train_epochs``, ``learning_rate``, ``bf16``, ``report_to="tensorboard"``,
    ``activation_checkpointing=True``, ...) or a whole ``args=TrainingArguments(...)``; the defaults
    (``training_arguments``) memorise a handful of photos. ``validation_items`` (see ``split_items``) are
    never trained on: their loss is evaluated at every checkpoint, and the best checkpoint is the adapter
    returned (``load_best_model_at_end``). LoRA has rank ``rank`` (alpha twice that by default) on the
    language model's projections and its head, and the connector's with ``train_connector``.

    ``output_dir`` gets a manifest, the Trainer's checkpoints in ``checkpoints/`` and the final adapter in
    ``adapter/`` (``load_adapter(model, output_dir)`` loads it); nothing else there is touched. With
    ``resume`` a run continues from its last whole checkpoint, or loads its adapter if it finished, on the
    same base weights and settings only; ``resume=False`` removes this code's earlier checkpoints and starts
    over. ``qlora``: the model was loaded in 4-bit (detected when None). Under ``torchrun`` or
    ``accelerate launch`` it trains data-parallel and only the main process writes. The log is
    ``model.training_log``.
    """
    if hasattr(model, "peft_config"):
        raise TrainingError(
            "this model already carries a LoRA adapter: fine-tune the base model (load_model again), or resume "
            "an interrupted run by calling fine_tune with the same output_dir"
        )
    settings = FineTuneSettings(rank=rank, alpha=alpha, dropout=dropout, train_connector=train_connector,
                                media=media, cache_features=cache_features)  # fmt: skip
    four_bit = check_qlora(model, qlora)
    examples = training_examples(items, prompt=prompt, media=media)
    held_out = training_examples(validation_items, prompt=prompt, media=media) if validation_items else []
    overlap = sorted({e.key for e in examples} & {e.key for e in held_out})
    if overlap:
        raise TrainingError(
            f"{overlap[0]} is both a training and a validation item: split them with split_items"
        )
    root = Path(output_dir)
    args, keep = training_arguments(model, root / CHECKPOINTS, examples=len(examples), validation=bool(held_out),
                                    progress=progress, args=args, given=dict(training_args))  # fmt: skip
    identity = base_identity(model)
    record = {
        "base": identity,
        "settings": {
            **settings.record(), "qlora": four_bit, "examples": _digest(examples), "validation": _digest(held_out),
            **{k: getattr(args, k) for k in TRAINING_FIELDS},
        },
    }  # fmt: skip
    state = PartialState()
    manifest = None
    if state.is_main_process:
        manifest = open_run(root)
        clean_up(root, manifest)
        if not resume:  # start over: this code's earlier checkpoints and adapter, nothing else
            manifest.pop("finished", None)  # first: killed during the removals, nothing counts as finished
            write_manifest(root, manifest)
            for folder in [
                *([root / ADAPTER] if manifest["adapter"] else []),
                *finished_checkpoints(root, manifest),
            ]:
                remove_ours(root, manifest, folder)
    state.wait_for_everyone()
    manifest = manifest or read_manifest(root)
    checkpoint = None
    if resume:
        if manifest.get("base"):
            check_base(manifest["base"], identity, root, "Resuming")
        if manifest.get("settings"):
            _same_settings(manifest["settings"], record["settings"], root)
        if manifest.get("finished") and is_whole(root / ADAPTER, manifest["run"]):
            tuned = load_adapter(model, root)  # finished earlier: the adapter it trained
            finished = manifest["finished"]
            tuned.training_log = _log(
                finished["log_history"], finished["steps"], finished["best"], finished["steps"]
            )
            return tuned
        found = finished_checkpoints(root, manifest)
        checkpoint = found[-1] if found else None
    if state.is_main_process:
        manifest.update(base=identity, settings=record["settings"])
        write_manifest(root, manifest)

    if four_bit:  # the 4-bit base is frozen; inputs need gradients for checkpointed layers to pass them on
        model.enable_input_require_grads()
    set_seed(args.seed)  # LoRA's random start: the same adapter from the same seed, in any process
    with warnings.catch_warnings():
        # peft 0.21 still reads transformers' deprecated `is_gradient_checkpointing` while wrapping a model
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        peft_model = get_peft_model(model, lora_config(rank=rank, alpha=alpha, dropout=dropout,
                                                       train_connector=train_connector))  # fmt: skip
    peft_model.eval()  # the features are computed as at inference
    cache = settings.caches_features
    train_set = [training_item(peft_model, processor, e, cache_features=cache) for e in examples]
    eval_set = [training_item(peft_model, processor, e, cache_features=cache) for e in held_out] or None
    trainer = Molmo2Trainer(
        model=peft_model,
        args=args,
        data_collator=Molmo2Collator(pad_id=processor.tokenizer.pad_token_id),
        train_dataset=train_set,
        eval_dataset=eval_set,
        callbacks=[_Bookkeeping(root, manifest, record, keep), *callbacks],
    )
    if not progress:
        trainer.remove_callback(PrinterCallback)  # without a progress bar, the Trainer prints every log
    resumed_from = int(checkpoint.name.rsplit("-", 1)[1]) if checkpoint is not None else 0
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
    best = (
        Path(trainer.state.best_model_checkpoint).name
        if args.load_best_model_at_end and trainer.state.best_model_checkpoint
        else None
    )
    history = trainer.state.log_history
    if state.is_main_process:
        step = int(best.rsplit("-", 1)[1]) if best else trainer.state.global_step
        _save_adapter(root, manifest, peft_model, record, step=step, checkpoint=best)
        manifest["finished"] = {"steps": trainer.state.global_step, "best": best, "log_history": history}
        write_manifest(root, manifest)
    state.wait_for_everyone()
    peft_model.eval()
    peft_model.training_log = _log(history, trainer.state.global_step, best, resumed_from)
    return peft_model
