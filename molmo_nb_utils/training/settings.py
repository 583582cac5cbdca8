"""Settings: what fine_tune decides besides TrainingArguments, in one frozen dataclass; LoRA and QLoRA;
and the TrainingArguments of a run.

The optimizer, schedule, batch, steps, logging, evaluation and saving are TrainingArguments' own
(its names, its defaults where they suit a lesson: ``training_arguments``). What TrainingArguments has
no name for is here: the LoRA layers, how the media are shown (``MediaSettings``, the object
``run_dataset`` takes, so a video is trained at the frames a run shows), and whether the frozen vision
features are cached.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig
from transformers import BitsAndBytesConfig, TrainingArguments

from molmo_nb_utils.architecture import SIXTEEN_BIT_MODULES, lora_target_modules
from molmo_nb_utils.checks import positive_int
from molmo_nb_utils.media import DEFAULT_MEDIA, MediaSettings
from molmo_nb_utils.training.targets import TrainingError

__all__ = [
    "BASE_LEARNING_RATE",
    "BASE_WIDTH",
    "KEEP_CHECKPOINTS",
    "STEPS_PER_EXAMPLE",
    "FineTuneSettings",
    "check_qlora",
    "default_learning_rate",
    "default_steps",
    "lora_config",
    "qlora_config",
    "training_arguments",
]

# Passes over each example by default: what the tiny model needs to learn a handful of images by heart.
STEPS_PER_EXAMPLE = 200
MIN_STEPS, MAX_STEPS = 300, 2000
KEEP_CHECKPOINTS = 2  # save_total_limit by default: the last and the best are always kept
# fine_tune's old names, and TrainingArguments' own: named in the error that refuses them
RENAMED = {"steps": "max_steps", "save_every": "save_steps", "gradient_accumulation": "gradient_accumulation_steps",
           "keep_checkpoints": "save_total_limit", "validate_every": "eval_steps", "warmup": "warmup_steps",
           "gradient_checkpointing": "activation_checkpointing"}  # fmt: skip
# LoRA's usual rate for a 2,560-wide model (Molmo2-4B); Adam moves every weight by about the rate, so a
# layer's output moves with its width: the default scales the rate by 2560 / width (8B: 6e-5, tiny: 8e-3).
BASE_LEARNING_RATE, BASE_WIDTH = 1e-4, 2560


@dataclass(frozen=True)
class FineTuneSettings:
    """What fine_tune decides that TrainingArguments does not name; stored with every checkpoint.

    ``media`` says how the media are shown (``MediaSettings``: a video's frames as ``run_dataset``
    shows them with the same object, an image's crops as ``chat`` cuts them). ``cache_features``: the
    frozen vision features are computed once per example (not with ``train_connector``, whose connector
    trains).
    """

    rank: int = 16
    alpha: int | None = None  # None: twice the rank
    dropout: float = 0.0
    train_connector: bool = False
    media: MediaSettings = DEFAULT_MEDIA
    cache_features: bool = True

    def __post_init__(self) -> None:
        try:
            positive_int(self.rank, "rank")
        except ValueError as err:  # the rule and its words are checks'; the error is training's
            raise TrainingError(str(err)) from None
        if not 0 <= self.dropout < 1:
            raise TrainingError(f"dropout is a probability from 0 to below 1, got {self.dropout!r}")
        if not isinstance(self.media, MediaSettings):
            raise TrainingError(
                f"media must be a MediaSettings(fps=..., max_frames=..., max_crops=...), got {self.media!r}"
            )

    @property
    def caches_features(self) -> bool:
        return self.cache_features and not self.train_connector

    def record(self) -> dict[str, Any]:
        """The settings as every checkpoint stores them: flat, the media's three fields among them (as
        runs written before ``MediaSettings`` stored them, so those resume)."""
        record = asdict(self)
        media = record.pop("media")
        return {**record, **media}


def lora_config(
    *, rank: int = 16, alpha: int | None = None, dropout: float = 0.0, train_connector: bool = False
) -> LoraConfig:
    """peft's LoraConfig for Molmo2: the language model's linear layers and its head (and the connector's)."""
    settings = FineTuneSettings(rank=rank, alpha=alpha, dropout=dropout, train_connector=train_connector)
    return LoraConfig(
        r=settings.rank,
        lora_alpha=alpha if alpha is not None else 2 * rank,
        lora_dropout=dropout,
        target_modules=lora_target_modules(train_connector=train_connector),
        bias="none",
    )


def qlora_config(dtype: str = "bfloat16") -> BitsAndBytesConfig:
    """The bitsandbytes settings of QLoRA for Molmo2: NF4 with double quantization for the language model's
    linear layers, computing in ``dtype``; the vision tower, connector and head stay 16-bit (as 06 loads).

    Load with ``AutoModelForImageTextToText.from_pretrained(..., quantization_config=qlora_config())`` or
    ``load_model(quantization="4bit")``, which builds the same settings; both need a CUDA GPU.
    """
    if dtype not in ("bfloat16", "float16"):
        raise TrainingError(
            f"QLoRA computes in 'bfloat16' or 'float16' (a T4 has no bfloat16), got {dtype!r}"
        )
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=getattr(torch, dtype),
        bnb_4bit_use_double_quant=True,
        llm_int8_skip_modules=list(SIXTEEN_BIT_MODULES),
    )


def default_learning_rate(model: Any) -> float:
    """``BASE_LEARNING_RATE`` scaled to the language model's width: 1e-4 for Molmo2-4B."""
    width = model.config.get_text_config().hidden_size
    return BASE_LEARNING_RATE * BASE_WIDTH / width


def default_steps(examples: int, global_batch: int) -> int:
    """``STEPS_PER_EXAMPLE`` passes over ``examples`` in batches of ``global_batch``, 300 to 2,000 steps."""
    return min(max(STEPS_PER_EXAMPLE * examples // global_batch, MIN_STEPS), MAX_STEPS)


def check_qlora(model: Any, qlora: bool | None) -> bool:
    """Whether this is a QLoRA run (a 4-bit base); clear errors for what cannot work."""
    four_bit = bool(getattr(model, "is_loaded_in_4bit", False))
    if qlora and not torch.cuda.is_available():
        raise TrainingError(
            "QLoRA needs a CUDA GPU (bitsandbytes' 4-bit layers) and none was found. On this machine, "
            "fine-tune without qlora (LoRA on the 16- or 32-bit model), or switch to a GPU runtime."
        )
    if qlora and not four_bit:
        raise TrainingError(
            "qlora=True needs a model loaded in 4-bit: load_model(model_id(), quantization='4bit'), then "
            "fine_tune(model, ...)."
        )
    return four_bit


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
            "eval_steps": given.get("save_steps", 0.2) if validation else None,  # at each checkpoint
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
    if args.eval_strategy == "no" and validation:  # TrainingArguments' own default: it would never evaluate
        steps = args.save_steps if args.save_strategy == "steps" else "N"
        raise TrainingError(
            "validation_items are evaluated only when the TrainingArguments say when: pass "
            f"TrainingArguments(..., eval_strategy='steps', eval_steps={steps}, load_best_model_at_end=True, "
            f"metric_for_best_model='eval_loss'{', save_steps=N' if steps == 'N' else ''}) to evaluate at each "
            "checkpoint and keep the best, or fine_tune's keywords instead of args (they do this by default)."
        )
    keep = args.save_total_limit
    # ours, whatever was asked: checkpoints in our subfolder, rotated by us (only ours), the loss ours too
    args = replace(args, output_dir=str(output_dir), save_total_limit=None, remove_unused_columns=False,
                   label_names=["labels"], prediction_loss_only=True)  # fmt: skip
    return args, keep
