"""Settings: what fine_tune decides besides TrainingArguments, in one frozen dataclass; LoRA and QLoRA.

The optimizer, schedule, batch, steps, logging, evaluation and saving are TrainingArguments' own
(its names, its defaults where they suit a lesson, see ``trainer.training_arguments``). What
TrainingArguments has no name for is here: the LoRA layers, how the media are shown (``MediaSettings``,
the object ``run_dataset`` takes, so a video is trained at the frames a run shows), and whether the frozen
vision features are cached.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from peft import LoraConfig
from transformers import BitsAndBytesConfig

from molmo_nb_utils.architecture import SIXTEEN_BIT_MODULES, lora_target_modules
from molmo_nb_utils.checks import positive_int
from molmo_nb_utils.media import DEFAULT_MEDIA, MediaSettings
from molmo_nb_utils.training.targets import TrainingError

__all__ = [
    "BASE_LEARNING_RATE",
    "BASE_WIDTH",
    "STEPS_PER_EXAMPLE",
    "FineTuneSettings",
    "check_qlora",
    "default_learning_rate",
    "default_steps",
    "lora_config",
    "qlora_config",
]

# Passes over each example by default: what the tiny model needs to learn a handful of images by heart.
STEPS_PER_EXAMPLE = 200
MIN_STEPS, MAX_STEPS = 300, 2000
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
