"""Trainer glue: ``fine_tune`` on transformers' ``Trainer``, with Molmo2's batches and loss.

What the Trainer brings is what practitioners know from ``TrainingArguments``: batches and gradient
accumulation, the schedule, bf16/fp16 and loss scaling, data-parallel training under ``torchrun`` or
``accelerate launch`` (only the main process writes checkpoints), logging (``report_to``: TensorBoard,
W&B, ...), evaluation during training and the best checkpoint by validation loss. What is ours:

* **The loss** (``Molmo2Trainer.compute_loss``) is the mean of the examples' own losses (each the mean
  over its answer tokens), over the whole optimizer step: every micro-batch, every process. A batch of
  3 then trains as 3 steps of one averaged; a per-token mean would let long answers outweigh short ones.
* **Uneven splits** (``Molmo2Trainer.get_batch_samples``): under ``torchrun``, accelerate fills the last
  batch of an epoch on every process with repeats from its start (3 examples on 2 processes: the third
  is paired with the first again). A repeat is weighted 0, as accelerate's own ``gather_for_metrics``
  drops it: each example trains once an epoch, and N processes train what one does with the same global
  batch. (The validation loss is the Trainer's: with more than one example per process and batch, the
  last batch's repeat can still count in it.)
* **The bookkeeping** (``checkpoints``): the checkpoints live in our own subfolder, each counted only
  when whole, removed only if every file is ours, and tied to the base model's weights; one call at a
  time in a folder.
* **What was trained** (the manifest's ``settings``): the LoRA and media settings, every TrainingArguments
  field that changes the training (``record``), and the items with their files' content: the same call in the same folder loads the adapter of that training only.
"""

from __future__ import annotations

import contextlib
import os
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
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
    locked_run,
    mark_folder,
    not_ours,
    open_run,
    read_manifest,
    read_mark,
    refuse_theirs,
    remove_ours,
    write_manifest,
)
from molmo_nb_utils.training.encoding import Molmo2Collator, example_losses, training_item
from molmo_nb_utils.training.record import (
    arguments_record,
    check_apart,
    check_same_training,
    items_digest,
    media_digests,
)
from molmo_nb_utils.training.settings import (
    KEEP_CHECKPOINTS,
    FineTuneSettings,
    check_qlora,
    lora_config,
    training_arguments,
)
from molmo_nb_utils.training.targets import TrainingError, TrainingExample, training_examples

__all__ = ["KEEP_CHECKPOINTS", "Molmo2Trainer", "TrainingLog", "fine_tune", "training_arguments"]


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

    def _save_checkpoint(self, model, trial):
        """Call the callbacks' ``on_checkpoint_begin`` before a checkpoint is written, whatever decided it
        (steps, an epoch's end, a new best): transformers' own ``on_save`` comes only after."""
        for callback in self.callback_handler.callbacks:
            if hasattr(callback, "on_checkpoint_begin"):
                callback.on_checkpoint_begin(self.args, self.state, self.control)
        super()._save_checkpoint(model, trial)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The step's micro-batches, each example weighted (0: a repeat filling the epoch's last batch), and
        how many examples they train on all processes together."""
        batches = []
        for _ in range(num_batches):
            try:
                batch = next(epoch_iterator)
            except StopIteration:
                break
            batch["weights"] = self._weights(len(batch["labels"]))
            batches.append(batch)
        count = torch.tensor(sum(int(batch["weights"].sum()) for batch in batches), device=device)
        if self.args.world_size > 1:
            count = self.accelerator.gather(count).sum()
        return batches, count

    def _weights(self, rows: int) -> torch.Tensor:
        """1 for each example of this batch, 0 for accelerate's repeats: in an epoch's last batch, only the first
        ``remainder`` examples of all processes in turn are real (what ``gather_for_metrics`` keeps)."""
        weights = torch.ones(rows)
        loader = self.accelerator.gradient_state
        if loader.end_of_dataloader and loader.remainder > 0:
            weights[max(loader.remainder - self.accelerator.process_index * rows, 0) :] = 0
        return weights

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The mean of the examples' losses: of this batch (evaluation), or of the whole optimizer step
        (``num_items_in_batch`` examples; the sum is scaled by the processes, whose gradients DDP averages)."""
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        weights = inputs.pop("weights", None)  # training batches; evaluation weighs every example
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
        if weights is not None:
            losses = losses * weights.to(losses.device, losses.dtype)
        if num_items_in_batch is None:
            loss = losses.mean()
        else:
            loss = losses.sum() * self.accelerator.num_processes / num_items_in_batch
        return (loss, outputs) if return_outputs else loss


class _Bookkeeping(TrainerCallback):
    """Marks each checkpoint the Trainer writes, records it, and keeps the last ``keep`` (and the best)."""

    def __init__(
        self, root: Path, manifest: dict[str, Any], record: dict[str, Any], keep: int | None
    ) -> None:
        self.root, self.manifest, self.record, self.keep = root, manifest, record, keep
        self.kept: set[str] = set()  # checkpoints kept for the user's files in them

    def on_checkpoint_begin(self, args, state, control, **kwargs):
        name = f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and name not in self.manifest["writing"]:
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
            theirs = not_ours(old, self.manifest["run"])
            if not theirs:
                remove_ours(self.root, self.manifest, old, checked=True)
            elif old.name not in self.kept:
                self.kept.add(old.name)
                warnings.warn(
                    f"{old} holds files fine_tune did not write ({', '.join(theirs[:5])}): kept, with fine_tune's "
                    "own files in it, beyond save_total_limit",
                    stacklevel=2,
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
    never trained on, nor any file with the same bytes: their loss is evaluated at every checkpoint, and the
    best checkpoint is the adapter returned (``load_best_model_at_end``; a whole ``args`` must say when to
    evaluate, or it is refused). LoRA has rank ``rank`` (alpha twice that by default) on the language
    model's projections and its head, and the connector's with ``train_connector``.

    ``output_dir`` gets a manifest, the Trainer's checkpoints in ``checkpoints/`` and the final adapter in
    ``adapter/`` (``load_adapter(model, output_dir)`` loads it); nothing else there is touched, nor any
    file you add inside those two. With ``resume`` a run continues from its last whole checkpoint, or loads
    its adapter if it finished, only for the same base weights, settings (every TrainingArguments field that
    changes the training) and items (their files' content too); ``resume=False`` removes this code's earlier
    checkpoints and adapter and starts over. One call at a time trains in a folder: another is refused
    while it runs. ``qlora``: the model was loaded in 4-bit (detected when None). Under ``torchrun`` or
    ``accelerate launch`` it trains data-parallel (each example once an epoch, however they split) and
    only the main process writes. The log is ``model.training_log``.
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
    digests = media_digests([*examples, *held_out])
    check_apart(examples, held_out, digests)
    root = Path(output_dir)
    args, keep = training_arguments(model, root / CHECKPOINTS, examples=len(examples), validation=bool(held_out),
                                    progress=progress, args=args, given=dict(training_args))  # fmt: skip
    record = {
        "base": base_identity(model),
        "settings": {
            **settings.record(), "qlora": four_bit, "examples": items_digest(examples, digests),
            "validation": items_digest(held_out, digests), **arguments_record(args),
        },
    }  # fmt: skip
    with locked_run(root) if PartialState().is_main_process else contextlib.nullcontext():
        return _train(model, processor, root, examples=examples, held_out=held_out, settings=settings, args=args,
                      keep=keep, record=record, digests={e.key: digests[e.path] for e in [*examples, *held_out]},
                      resume=resume, callbacks=callbacks, progress=progress, four_bit=four_bit)  # fmt: skip


def _train(
    model: Any,
    processor: Any,
    root: Path,
    *,
    examples: Sequence[TrainingExample],
    held_out: Sequence[TrainingExample],
    settings: FineTuneSettings,
    args: TrainingArguments,
    keep: int | None,
    record: dict[str, Any],
    digests: dict[str, str],
    resume: bool,
    callbacks: Sequence[TrainerCallback],
    progress: bool,
    four_bit: bool,
) -> PeftModel:
    """fine_tune in its run folder (held by this process): clean up, resume or start over, train, save."""
    state = PartialState()
    identity = record["base"]
    manifest = None
    if state.is_main_process:
        manifest = open_run(root)
        clean_up(root, manifest)
        if not resume:  # start over: this code's earlier checkpoints and adapter, nothing else
            ours = [
                *([root / ADAPTER] if (root / ADAPTER).exists() else []),
                *finished_checkpoints(root, manifest),
            ]
            refuse_theirs(root, ours, manifest["run"], "Starting over (resume=False)")  # before any removal
            manifest.pop("finished", None)  # first: killed during the removals, nothing counts as finished
            write_manifest(root, manifest)
            for folder in ours:
                remove_ours(root, manifest, folder, checked=True)
    state.wait_for_everyone()
    manifest = manifest or read_manifest(root)
    checkpoint = None
    if resume:
        if manifest.get("base"):
            check_base(manifest["base"], identity, root, "Resuming")
        if manifest.get("settings"):
            check_same_training(manifest, record["settings"], digests, root)
        if manifest.get("finished") and is_whole(root / ADAPTER, manifest["run"]):
            tuned = load_adapter(model, root)  # finished earlier: the adapter it trained
            finished = manifest["finished"]
            tuned.training_log = _log(
                finished["log_history"], finished["steps"], finished["best"], finished["steps"]
            )
            return tuned
        if state.is_main_process and (root / ADAPTER).exists():  # replaced at the end: refused now, if at all
            refuse_theirs(
                root, [root / ADAPTER], manifest["run"], "Replacing the adapter when this training ends"
            )
        found = finished_checkpoints(root, manifest)
        checkpoint = found[-1] if found else None
    if state.is_main_process:
        manifest.update(base=identity, settings=record["settings"], media=digests)
        write_manifest(root, manifest)

    if four_bit:  # the 4-bit base is frozen; inputs need gradients for checkpointed layers to pass them on
        model.enable_input_require_grads()
    set_seed(args.seed)  # LoRA's random start: the same adapter from the same seed, in any process
    with warnings.catch_warnings():
        # peft 0.21 still reads transformers' deprecated `is_gradient_checkpointing` while wrapping a model
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        peft_model = get_peft_model(model, lora_config(rank=settings.rank, alpha=settings.alpha,
                                                       dropout=settings.dropout,
                                                       train_connector=settings.train_connector))  # fmt: skip
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
