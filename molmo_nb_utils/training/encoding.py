"""Encoding: an example as model inputs with labels on the answer only, and batches of them.

The loss is taken on the answer only: prompt, image or video and padding tokens are labelled -100,
so the model learns to answer, not to predict its own prompt. The answer ends with the end-of-turn
token, so the fine-tuned model also learns to stop. The prompt goes through
``asking.prepare_inputs``, so the model trains on exactly the tokens it is later asked with.

Since the vision tower and connector are frozen (unless ``train_connector``), their output is the
same at every step: ``media_features`` computes it once per example, in place of the pixels (the same
losses to the last digit; measured on the tiny model, CPU, 100 steps in batches of 3, a whole
``fine_tune`` took about half the time with the cache as without), and
``Molmo2Collator`` pads several examples into one batch (right padding: a causal model's answer
never sees the padding after it, so each example's loss is what it is alone).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from molmo_nb_utils.asking import prepare_inputs, user_message
from molmo_nb_utils.training.targets import TrainingError, TrainingExample

__all__ = [
    "IGNORE",
    "Molmo2Collator",
    "encode_example",
    "eos_id",
    "example_losses",
    "masking_table",
    "media_features",
    "training_item",
]

IGNORE = -100  # the label cross-entropy skips: prompt, media and padding positions
# The processor's pixel inputs, per kind of media: what media_features replaces with the features.
PIXELS = {
    "image": ("pixel_values", "image_token_pooling", "image_grids", "image_num_crops"),
    "video": ("pixel_values_videos", "video_token_pooling", "video_grids"),
}


def eos_id(model: Any, processor: Any) -> int:
    """The token that ends an answer: the first of generate's end tokens (what stops chat)."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(eos, (list, tuple)):
        eos = eos[0] if eos else None
    return int(eos if eos is not None else processor.tokenizer.eos_token_id)


def encode_example(model: Any, processor: Any, example: TrainingExample) -> dict[str, Any]:
    """Model inputs for one example (a batch of one): the prompt as ``chat`` sends it, then the answer
    and the end token.

    ``labels`` are the answer's token ids (end token included) and -100 everywhere else (prompt, media);
    ``answer_start`` is the first answer position. The media are shown as the example's own ``media``
    says: a video at the frames its target was written for, an image cut into its crops.
    """
    message = [user_message(example.path, text=example.prompt)]
    inputs = dict(prepare_inputs(processor, message, **example.media.keywords()))
    ids = processor.tokenizer(example.target, add_special_tokens=False)["input_ids"]
    answer = torch.tensor([[*ids, eos_id(model, processor)]], dtype=inputs["input_ids"].dtype)
    start = inputs["input_ids"].shape[1]
    inputs["input_ids"] = torch.cat([inputs["input_ids"], answer], dim=1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    if "mm_token_type_ids" in inputs:  # answer tokens are text
        inputs["mm_token_type_ids"] = torch.cat(
            [inputs["mm_token_type_ids"], torch.zeros_like(answer)], dim=1
        )
    labels = torch.full_like(inputs["input_ids"], IGNORE)
    labels[:, start:] = answer
    inputs["labels"] = labels
    inputs["answer_start"] = start
    return inputs


def masking_table(model: Any, processor: Any, encoded: dict[str, Any]) -> str:
    """An encoded example as runs of tokens: image or video tokens, prompt text (label -100), answer (loss)."""
    ids = encoded["input_ids"][0].tolist()
    labels = encoded["labels"][0].tolist()
    text_vocab = model.config.get_text_config().vocab_size  # Molmo2's media tokens come after the text's

    def kind(i: int) -> str:
        return "loss" if labels[i] != IGNORE else "media" if ids[i] >= text_vocab else "prompt"

    runs: list[list[int]] = []
    for i in range(len(ids)):
        if runs and kind(runs[-1][-1]) == kind(i):
            runs[-1].append(i)
        else:
            runs.append([i])
    lines = [f"{'tokens':>13}  {'label':<6} text"]
    for run in runs:
        what = kind(run[0])
        if what == "media":
            text = f"{len(run):,} image/video tokens (patches, columns, starts and ends)"
        else:
            text = repr(processor.tokenizer.decode([ids[i] for i in run]))
        label = "-100" if what != "loss" else "= token"
        lines.append(f"{run[0]:>5} - {run[-1]:>5}  {label:<7} {text}")
    counted = sum(label != IGNORE for label in labels)
    lines.append(f"{len(ids):,} tokens, {counted} of them with a label: the loss is theirs alone")
    return "\n".join(lines)


def _inner(model: Any) -> Any:
    """The ``Molmo2Model`` inside a transformers or peft model (what computes the media features)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model


def media_features(model: Any, encoded: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    """The frozen vision tower's and connector's output for the example's image or video: one
    ``(tokens, hidden)`` tensor per image or video, in the model's dtype, kept on the CPU (the cache of
    a few hundred photos would otherwise sit on the GPU all run)."""
    inner = _inner(model)
    device, dtype = model.device, model.dtype
    with torch.no_grad():
        if "pixel_values" in encoded:
            pixels, pooling, grids, crops = (encoded[k] for k in PIXELS["image"])
            out = inner.get_image_features(
                pixels.to(device, dtype), pooling.to(device), grids.to(device), crops.to(device)
            )
        elif "pixel_values_videos" in encoded:
            pixels, pooling, grids = (encoded[k] for k in PIXELS["video"])
            out = inner.get_video_features(pixels.to(device, dtype), pooling.to(device), grids.to(device))
        else:
            return ()
    return tuple(f.detach().to("cpu", dtype) for f in out.pooler_output)


def training_item(
    model: Any, processor: Any, example: TrainingExample, *, cache_features: bool
) -> dict[str, Any]:
    """One example as the collator takes it: 1-D token rows, and the media features (``cache_features``)
    or the processor's pixel inputs."""
    encoded = encode_example(model, processor, example)
    item: dict[str, Any] = {
        "kind": example.kind,
        "input_ids": encoded["input_ids"][0],
        "labels": encoded["labels"][0],
        "mm_token_type_ids": encoded["mm_token_type_ids"][0],
        "answer_start": int(encoded["answer_start"]),
    }
    if cache_features:
        item["media_features"] = media_features(model, encoded)
    else:
        item.update({k: encoded[k] for k in PIXELS[example.kind] if k in encoded})
    return item


@dataclass(frozen=True)
class Molmo2Collator:
    """Pads ``training_item``s into one batch: token rows padded on the right (``pad_id``, attention 0,
    labels -100), media features (or pixel inputs) concatenated in example order, and
    ``logits_to_keep``: the positions from the earliest answer's last prompt token on, so the output head
    never runs over the prompts."""

    pad_id: int

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        length = max(len(item["input_ids"]) for item in items)
        shape = (len(items), length)
        input_ids = torch.full(shape, self.pad_id, dtype=items[0]["input_ids"].dtype)
        attention_mask = torch.zeros(shape, dtype=torch.long)
        labels = torch.full(shape, IGNORE, dtype=items[0]["labels"].dtype)
        mm_token_type_ids = torch.zeros(shape, dtype=items[0]["mm_token_type_ids"].dtype)
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            input_ids[row, :n] = item["input_ids"]
            attention_mask[row, :n] = 1
            labels[row, :n] = item["labels"]
            mm_token_type_ids[row, :n] = item["mm_token_type_ids"]
        batch: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "mm_token_type_ids": mm_token_type_ids,
            "labels": labels,
            "logits_to_keep": length - min(item["answer_start"] for item in items) + 1,
        }
        if "media_features" in items[0]:
            batch["media_features"] = tuple(f for item in items for f in item["media_features"])
            return batch
        kinds = {item["kind"] for item in items}
        if len(kinds) > 1:
            raise TrainingError(
                "a batch mixes images and videos, which Molmo2 cannot encode in one pass when the vision "
                "features are recomputed (train_connector=True): train images and videos separately, or pass "
                "per_device_train_batch_size=1"
            )
        for key in PIXELS[kinds.pop()]:
            if key in items[0]:
                batch[key] = torch.cat([item[key] for item in items])
        return batch


def example_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each example's mean cross-entropy over its own answer tokens (``labels`` aligned with ``logits``;
    position t predicts label t + 1): one value per example, so a long answer weighs as much as a short
    one, and padding none."""
    targets = labels[:, 1:].to(logits.device)
    losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction="none"
    ).view(targets.shape)
    counted = targets.ne(IGNORE)
    return (losses * counted).sum(1) / counted.sum(1).clamp(min=1)
