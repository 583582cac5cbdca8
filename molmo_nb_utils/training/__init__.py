"""Teach Molmo2 your own objects: LoRA fine-tuning on pointing, counting and tracking data, on transformers' Trainer.

One concern a module:

* ``targets``: the exact text Molmo2 writes for a prompt (``training_examples``, ``target_text``,
  ``tracks_text``), asked as ``run_dataset`` asks (``item_prompt``) and, for a video, at the frames
  it shows; ``split_items``; ``TrainingError``.
* ``encoding``: an example as model inputs with labels on the answer only (``encode_example``,
  ``masking_table``), the frozen vision features computed once, and ``Molmo2Collator``, which pads
  several examples into one batch.
* ``settings``: ``FineTuneSettings`` (what TrainingArguments has no name for), ``lora_config``,
  ``qlora_config``, and ``training_arguments``: the TrainingArguments of a run, with the lesson's defaults.
* ``record``: what a run trained (every TrainingArguments field that changes it, the items with their
  files' content), so that a run folder answers only with the adapter of the same training; validation
  on other files than training.
* ``checkpoints``: the run folder's manifest, marks and lock: what fine_tune wrote (and may remove),
  which checkpoint is whole, which base it was trained on, who trains there now; ``load_adapter``,
  ``latest_checkpoint``.
* ``trainer``: ``fine_tune`` and ``Molmo2Trainer`` (the mean of the examples' losses).

The lesson is ``09_fine_tune.ipynb``; ``scripts/fine_tune_ddp.py`` trains on several GPUs.
"""

from molmo_nb_utils.dataset.items import DEFAULT_PROMPT
from molmo_nb_utils.training.checkpoints import latest_checkpoint, load_adapter
from molmo_nb_utils.training.encoding import (
    Molmo2Collator,
    encode_example,
    eos_id,
    example_losses,
    masking_table,
)
from molmo_nb_utils.training.settings import (
    FineTuneSettings,
    default_learning_rate,
    lora_config,
    qlora_config,
)
from molmo_nb_utils.training.targets import (
    TrainingError,
    TrainingExample,
    is_counting_prompt,
    split_items,
    target_text,
    tracks_text,
    training_examples,
)
from molmo_nb_utils.training.trainer import Molmo2Trainer, TrainingLog, fine_tune, training_arguments

__all__ = [
    "DEFAULT_PROMPT",
    "FineTuneSettings",
    "Molmo2Collator",
    "Molmo2Trainer",
    "TrainingError",
    "TrainingExample",
    "TrainingLog",
    "default_learning_rate",
    "encode_example",
    "eos_id",
    "example_losses",
    "fine_tune",
    "is_counting_prompt",
    "latest_checkpoint",
    "load_adapter",
    "lora_config",
    "masking_table",
    "qlora_config",
    "split_items",
    "target_text",
    "tracks_text",
    "training_arguments",
    "training_examples",
]
