"""Teach Molmo2 your own objects: LoRA fine-tuning on pointing and counting data, resumably.

Why each piece is here:

* **Targets** (``training_examples``) are the exact text Molmo2 writes for the prompt, built from the ground
  truth with the grammar writer the lessons use (``grounding.format_points``) and the rules of AllenAI's
  training code (``olmo/preprocessing/point_formatter.py`` in allenai/molmo2): coordinates on the 0..1000
  scale written ``%03d``, points sorted by (x, y) after scaling and numbered 1, 2, ... in that order; a
  pointing prompt is answered ``<points coords="1 1 x y 2 x y">label</points>``, a counting prompt
  "Counting the <points ...>label</points> shows a total of N.", and nothing there "There are none.".
  Training on any other spelling teaches the model a second grammar.
* **The loss** is taken on the answer only: prompt, image or video and padding tokens are labelled -100
  (``encode_example``), so the model learns to answer, not to predict its own prompt. The answer ends with
  the end-of-turn token, so the fine-tuned model also learns to stop.
* **LoRA** (peft) on the language model's linear layers and its output head: a few MB of weights to train and
  save, the base weights untouched (and 4-bit for QLoRA), the vision tower and connector frozen unless asked.
* **Checkpoints** (adapter, optimizer, scheduler and random state) every ``save_every`` steps, each written to
  a temporary folder and renamed, so an interrupted training resumes from the last one and ends with the same
  adapter as an uninterrupted run. The settings are stored with them: resuming with other settings raises.

The lesson is ``09_fine_tune.ipynb``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from molmo_nb_utils.evaluation import load_ground_truth
from molmo_nb_utils.grounding import Point, format_points, on_scale
from molmo_nb_utils.media import DEFAULT_FPS, DEFAULT_MAX_FRAMES, load_image, sample_frames

__all__ = [
    "DEFAULT_PROMPT",
    "TrainingError",
    "TrainingExample",
    "default_learning_rate",
    "encode_example",
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
    "training_examples",
]

# Asked of an item that has no prompt of its own when none is given.
DEFAULT_PROMPT = "Point to the {label}."
# A counting question, after AllenAI's detect_counting_question (its main patterns): Molmo2 answers those with
# "Counting the <points ...> shows a total of N." instead of the bare points.
_COUNTING = re.compile(r"\bhow ?many\b|\b(count|tally)\b|\b(total|number) of\b", re.IGNORECASE)
# A tracking prompt ("Track the coins."): a video item is trained on its tracks.
_TRACKING = re.compile(r"\btrack", re.IGNORECASE)
# The language model's linear layers (attention and MLP projections) and the output head. The vision
# connector's are added with train_connector=True; the ViT stays frozen.
LANGUAGE_MODULES = r"model\.language_model\.layers\.\d+\.(self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj|lm_head"
CONNECTOR_MODULES = r"model\.multi_modal_projector\.[\w.]*_proj"
# Steps per training example by default: what the tiny model needs to learn a handful of images by heart.
STEPS_PER_EXAMPLE = 200
# LoRA's usual rate for a 2,560-wide model (Molmo2-4B); Adam moves every weight by about the rate, so a
# layer's output moves with its width: the default scales the rate by 2560 / width (8B: 6e-5, tiny: 8e-3).
BASE_LEARNING_RATE, BASE_WIDTH = 1e-4, 2560
CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = (
    "training_state.pt"  # optimizer, scheduler, random state: what resuming needs besides the adapter
)
INFO_FILE = "trainer_state.json"  # step, losses and the settings, readable without torch


class TrainingError(ValueError):
    """Fine-tuning cannot start as asked; the message says what to change."""


@dataclass(frozen=True)
class TrainingExample:
    """One training pair: the media, the prompt, and the answer Molmo2 should write."""

    key: str  # the item's key in the dataset
    kind: str  # "image" or "video"
    path: Path
    prompt: str
    target: str  # the answer in Molmo2's own words and grammar
    size: tuple[int, int]  # (width, height) of the image or video, which the coordinates are relative to


# ---------------------------------------------------------------------------------------------
# Targets


def is_counting_prompt(prompt: str) -> bool:
    """Whether Molmo2 answers ``prompt`` with a count ("How many ...?", "Count the ...") or with points."""
    return bool(_COUNTING.search(prompt))


def target_text(points: Sequence[Point], size: tuple[float, float], label: str, *, counting: bool) -> str:
    """The answer Molmo2 writes for ``points`` (pixels on one image of ``size``) as AllenAI trains it.

    Points are sorted by their (x, y) on the 0..1000 scale (after rounding, so ties sort as the text reads)
    and numbered from 1; the given ids are not kept. No points: "There are none.".
    """
    width, height = size
    points = list(points)
    if not points:
        return "There are none."

    ordered = sorted(points, key=lambda p: on_scale(p, width, height))
    ordered = [replace(p, id=n, image=1, time=None) for n, p in enumerate(ordered, 1)]
    tag = format_points(ordered, (width, height), label=label.lower())
    return f"Counting the {tag} shows a total of {len(ordered)}." if counting else tag


def tracks_text(points: Sequence[Point], size: tuple[float, float], label: str) -> str:
    """The ``<tracks>`` answer for the true positions at the frames shown, as AllenAI trains it.

    Frame by frame in time order, each frame's points sorted by (x, y) on the 0..1000 scale; objects are
    numbered 1, 2, ... in the order they are first met that way, and each frame lists them by that number.
    Nothing to track: "No tracks available.".
    """
    width, height = size
    numbers: dict[int, int] = {}
    ordered: list[Point] = []
    for moment in sorted({p.time for p in points if p.time is not None}):
        frame = sorted((p for p in points if p.time == moment), key=lambda p: on_scale(p, width, height))
        for p in frame:
            numbers.setdefault(p.id, len(numbers) + 1)
        ordered += sorted((replace(p, id=numbers[p.id], image=None) for p in frame), key=lambda p: p.id)
    if not ordered:
        return "No tracks available."
    return format_points(ordered, (width, height), label=label.lower(), tag="tracks")


def _item_prompt(item: Any, prompt: str | None) -> str:
    text = item.prompt or prompt or DEFAULT_PROMPT
    return text.replace("{label}", item.label)


def training_examples(items: Sequence[Any], *, prompt: str | None = None) -> list[TrainingExample]:
    """One example per image item with ground truth: its prompt and the answer Molmo2 should give.

    ``items`` are ``load_dataset``'s. An item's own prompt wins, then ``prompt``, then ``DEFAULT_PROMPT``
    ("{label}" is replaced by the item's label). A counting prompt ("How many ...") gets the counting
    answer, any other the points. An image needs its true points (or a count of 0). A video needs its
    ground-truth file and a tracking prompt ("Track the coins."): its target is the tracks at the frames
    ``run_dataset`` shows by default (``sample_frames``' 2 fps). Items without these are left out with a
    warning that names them; none left raises ``TrainingError``.
    """
    items = list(items)
    if not items:
        raise TrainingError("no items to train on: pass load_dataset(...)'s items with points")
    examples, left_out = [], []
    for item in items:
        if not all(hasattr(item, field) for field in ("key", "kind", "path", "points", "count", "label")):
            raise TrainingError(f"{item!r} is not a dataset item: pass the items of load_dataset(...)")
        text = _item_prompt(item, prompt)
        if item.kind == "video":
            if getattr(item, "truth", None) is None or not _TRACKING.search(text):
                left_out.append(item.key)
                continue
            shown = sample_frames(item.path, DEFAULT_MAX_FRAMES, DEFAULT_FPS)  # what run_dataset shows
            truth = load_ground_truth(item.truth).at_frames(list(shown.indices), list(shown.timestamps))
            target = tracks_text(truth, shown.size, item.label)
            examples.append(TrainingExample(item.key, item.kind, Path(item.path), text, target, shown.size))
            continue
        points = item.points if item.points is not None else () if item.count == 0 else None
        if points is None:
            left_out.append(item.key)
            continue
        size = load_image(item.path).size
        target = target_text(points, size, item.label, counting=is_counting_prompt(text))
        examples.append(TrainingExample(item.key, item.kind, Path(item.path), text, target, size))
    if left_out:
        names = ", ".join(left_out[:5]) + (f" and {len(left_out) - 5} more" if len(left_out) > 5 else "")
        message = (
            f"{len(left_out)} item(s) have no true points to write an answer from (videos: a ground-truth "
            f"file and a tracking prompt, such as 'Track the {{label}}.', are needed): {names}"
        )
        if not examples:
            raise TrainingError(
                f"{message}. Nothing is left to train on: give images with 'points' (or 'count': 0) in the list."
            )
        warnings.warn(f"{message}; left out of training.", stacklevel=2)
    return examples


def split_items(items: Sequence[Any], *, validation: float = 0.25, seed: int = 0) -> tuple[list, list]:
    """(training, validation) items: a seeded shuffle of the items by key, ``validation`` of them held out.

    Splitting by item keeps every image on one side; the same keys and seed give the same split whatever
    the order of ``items``. At least one item goes to each side when there are two or more.
    """
    items = list(items)
    if not 0 <= validation < 1:
        raise ValueError(f"validation is the share of items held out, from 0 to below 1, got {validation!r}")
    keys = sorted(item.key for item in items)
    random.Random(seed).shuffle(keys)
    held = min(max(round(len(keys) * validation), 1 if validation > 0 else 0), max(len(keys) - 1, 0))
    held_out = set(keys[:held])
    return [i for i in items if i.key not in held_out], [i for i in items if i.key in held_out]


# ---------------------------------------------------------------------------------------------
# Tokens and labels


def _eos_id(model: Any, processor: Any) -> int:
    """The token that ends an answer: the first of generate's end tokens (what stops chat)."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(eos, (list, tuple)):
        eos = eos[0] if eos else None
    return int(eos if eos is not None else processor.tokenizer.eos_token_id)


def encode_example(
    model: Any, processor: Any, example: TrainingExample, *, max_crops: int | None = None
) -> dict[str, Any]:
    """Model inputs for one example: the prompt as ``chat`` sends it, then the answer and the end token.

    ``labels`` are the answer's token ids (end token included) and -100 everywhere else (prompt, media);
    ``answer_start`` is the first answer position. The prompt goes through ``asking.prepare_inputs``, so the
    model trains on exactly the tokens it is later asked with.
    """
    import torch

    from molmo_nb_utils.asking import prepare_inputs, user_message

    message = [user_message(example.path, text=example.prompt)]
    inputs = dict(prepare_inputs(processor, message, max_crops=max_crops))
    ids = processor.tokenizer(example.target, add_special_tokens=False)["input_ids"]
    answer = torch.tensor([[*ids, _eos_id(model, processor)]], dtype=inputs["input_ids"].dtype)
    start = inputs["input_ids"].shape[1]
    inputs["input_ids"] = torch.cat([inputs["input_ids"], answer], dim=1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    if "mm_token_type_ids" in inputs:  # answer tokens are text
        inputs["mm_token_type_ids"] = torch.cat(
            [inputs["mm_token_type_ids"], torch.zeros_like(answer)], dim=1
        )
    labels = torch.full_like(inputs["input_ids"], -100)
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
        return "loss" if labels[i] != -100 else "media" if ids[i] >= text_vocab else "prompt"

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
    counted = sum(label != -100 for label in labels)
    lines.append(f"{len(ids):,} tokens, {counted} of them with a label: the loss is theirs alone")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# LoRA, QLoRA


def lora_config(
    *, rank: int = 16, alpha: int | None = None, dropout: float = 0.0, train_connector: bool = False
):
    """peft's LoraConfig for Molmo2: the language model's linear layers and its head (and the connector's)."""
    from peft import LoraConfig

    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise TrainingError(f"rank must be a whole number >= 1, got {rank!r}")
    modules = LANGUAGE_MODULES + (f"|{CONNECTOR_MODULES}" if train_connector else "")
    return LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else 2 * rank,
        lora_dropout=dropout,
        target_modules=rf"^({modules})$",
        bias="none",
    )


def qlora_config(dtype: str = "bfloat16"):
    """The bitsandbytes settings of QLoRA for Molmo2: NF4 with double quantization for the language model's
    linear layers, computing in ``dtype``; the vision tower, connector and head stay 16-bit (as 06 loads).

    Load with ``AutoModelForImageTextToText.from_pretrained(..., quantization_config=qlora_config())`` or
    ``load_model(quantization="4bit")``, which builds the same settings; both need a CUDA GPU.
    """
    import torch
    from transformers import BitsAndBytesConfig

    if dtype not in ("bfloat16", "float16"):
        raise TrainingError(
            f"QLoRA computes in 'bfloat16' or 'float16' (a T4 has no bfloat16), got {dtype!r}"
        )
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=getattr(torch, dtype),
        bnb_4bit_use_double_quant=True,
        llm_int8_skip_modules=["vision_tower", "multi_modal_projector", "lm_head"],
    )


def default_learning_rate(model: Any) -> float:
    """``BASE_LEARNING_RATE`` scaled to the language model's width: 1e-4 for Molmo2-4B."""
    width = model.config.get_text_config().hidden_size
    return BASE_LEARNING_RATE * BASE_WIDTH / width


def _check_qlora(model: Any, qlora: bool | None) -> bool:
    """Whether this is a QLoRA run (a 4-bit base); clear errors for what cannot work."""
    import torch

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


# ---------------------------------------------------------------------------------------------
# Checkpoints


def _checkpoints(output_dir: Path) -> list[Path]:
    """Finished checkpoints (their info file is written last), oldest first."""
    found = []
    for folder in output_dir.glob(f"{CHECKPOINT_PREFIX}*"):
        step = folder.name[len(CHECKPOINT_PREFIX) :]
        if folder.is_dir() and step.isdigit() and (folder / INFO_FILE).is_file():
            found.append((int(step), folder))
    return [folder for _, folder in sorted(found)]


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The last finished checkpoint under ``output_dir`` (the final adapter after a finished run), or None."""
    found = _checkpoints(Path(output_dir))
    return found[-1] if found else None


def _save_checkpoint(model, optimizer, scheduler, step: int, info: dict, output_dir: Path, keep: int) -> Path:
    """Write adapter, optimizer, scheduler and random state to a temporary folder, then rename it."""
    import torch

    final = output_dir / f"{CHECKPOINT_PREFIX}{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=output_dir))
    try:
        model.save_pretrained(
            tmp, save_embedding_layers=False
        )  # the base's head and embeddings are unchanged
        state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "step": step,
        }
        torch.save(state, tmp / STATE_FILE)
        (tmp / INFO_FILE).write_text(json.dumps({**info, "step": step}, indent=1) + "\n")
        tmp.chmod(0o755)
        if final.exists():  # a checkpoint of this step from an earlier run with the same settings
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in _checkpoints(output_dir)[:-keep] if keep else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _check_resume(checkpoint: Path, settings: dict) -> dict:
    info = json.loads((checkpoint / INFO_FILE).read_text())
    earlier = info.get("settings", {})
    changed = [k for k in sorted({*settings, *earlier}) if earlier.get(k) != settings.get(k)]
    if changed:
        k = changed[0]
        raise TrainingError(
            f"{checkpoint.parent} holds a training with other settings ({k}: {earlier.get(k)!r} there, "
            f"{settings.get(k)!r} now). Resuming would mix them: give this training a new output_dir, or "
            "delete that one to start over (or pass resume=False)."
        )
    return info


def load_adapter(model: Any, path: str | os.PathLike, *, trainable: bool = False):
    """``model`` with the LoRA adapter saved at ``path`` (a checkpoint folder, or a fine_tune output_dir: its
    last checkpoint); it answers as the model ``fine_tune`` returned. Returns the peft ``PeftModel``."""
    from peft import PeftModel

    path = Path(path)
    if not (path / "adapter_config.json").is_file():
        checkpoint = latest_checkpoint(path) if path.is_dir() else None
        if checkpoint is None:
            raise TrainingError(
                f"No adapter at {path}: give a folder with adapter_config.json (a checkpoint-NNNNNN folder) "
                "or the output_dir of fine_tune"
            )
        path = checkpoint
    if hasattr(model, "peft_config"):
        raise TrainingError(
            "this model already carries a LoRA adapter: load the base model again (load_model) and pass that"
        )
    adapted = PeftModel.from_pretrained(model, str(path), is_trainable=trainable)
    return adapted.eval()


# ---------------------------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class TrainingLog:
    """What happened: losses per optimizer step, validation losses, time."""

    steps: int
    train_loss: tuple[float, ...]  # per optimizer step
    validation_loss: tuple[tuple[int, float], ...]  # (step, mean loss over the validation examples)
    seconds: float
    resumed_from: int  # 0: from the start


def _with_media_features(model: Any, encoded: dict[str, Any]) -> dict[str, Any]:
    """``encoded`` with the image or video features computed once, in place of the pixels.

    Why: the vision tower and connector are frozen (unless train_connector), so their output is the same at
    every step; computing it once takes the ViT out of every training step (most of a step on the tiny
    model) and out of the training memory.
    """
    import torch
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    inner = model.get_base_model().model if hasattr(model, "get_base_model") else model.model
    for kind, pixels, pooling, grids, encode in (
        ("image", "pixel_values", "image_token_pooling", "image_grids", inner.get_image_features),
        ("video", "pixel_values_videos", "video_token_pooling", "video_grids", inner.get_video_features),
    ):
        if pixels in encoded:
            with torch.no_grad():
                features = encode(
                    encoded[pixels].to(model.device, model.dtype),
                    encoded[pooling].to(model.device),
                    encoded[grids].to(model.device),
                ).pooler_output
            out = {k: v for k, v in encoded.items() if k not in (pixels, pooling, grids, "image_num_crops")}
            # kept on the CPU: the cache of a few hundred photos would otherwise sit on the GPU all run
            cached = BaseModelOutputWithPooling(pooler_output=tuple(f.cpu() for f in features))
            out["mm_encoder_outputs"] = {kind: cached}
            return out
    return encoded


def _example_loss(model: Any, encoded: dict[str, Any]):
    """Mean cross-entropy over the answer tokens; logits only where a label follows (not the whole prompt)."""
    import torch

    inputs = {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in encoded.items()}
    if "mm_encoder_outputs" in inputs:  # image features cached on the CPU (_with_media_features)
        inputs["mm_encoder_outputs"] = {
            kind: type(out)(pooler_output=tuple(f.to(model.device) for f in out.pooler_output))
            for kind, out in inputs["mm_encoder_outputs"].items()
        }
    inputs.pop("labels")
    start = inputs.pop("answer_start")
    for key in ("pixel_values", "pixel_values_videos"):  # as chat casts them
        if key in inputs:
            inputs[key] = inputs[key].to(model.dtype)
    # logits from the last prompt position (it predicts the first answer token) to the end
    keep = inputs["input_ids"].shape[1] - start + 1
    logits = model(**inputs, logits_to_keep=keep, use_cache=False).logits
    labels = encoded["labels"][:, -keep:].to(logits.device)
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
    )


def _settings_hash(examples: Sequence[TrainingExample]) -> str:
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps([example.key, example.prompt, example.target]).encode())
    return digest.hexdigest()[:16]


def fine_tune(
    model: Any,
    processor: Any,
    items: Sequence[Any],
    output_dir: str | os.PathLike,
    *,
    prompt: str | None = None,
    validation_items: Sequence[Any] = (),
    steps: int | None = None,
    rank: int = 16,
    alpha: int | None = None,
    learning_rate: float | None = None,
    warmup_steps: int | None = None,
    gradient_accumulation: int = 1,
    gradient_checkpointing: bool = False,
    train_connector: bool = False,
    dropout: float = 0.0,
    weight_decay: float = 0.0,
    max_crops: int | None = None,
    save_every: int = 200,
    keep_checkpoints: int = 2,
    validate_every: int | None = None,
    seed: int = 0,
    resume: bool = True,
    qlora: bool | None = None,
    progress: bool = True,
):
    """Fine-tune ``model`` with LoRA on the items' ground truth; return the model with its adapter (a peft
    ``PeftModel``, in eval mode) that ``chat``, ``run_dataset`` and the playground take as they are.

    Each item becomes an example of ``training_examples(items, prompt=prompt)``. Every optimizer step
    averages ``gradient_accumulation`` examples (one forward each, so images of any size mix). ``steps``
    defaults to ``STEPS_PER_EXAMPLE`` (200) per example, at least 300 and at most 2,000 optimizer steps: enough
    to learn a small set by heart; on a large set, pass ``steps`` for the passes you want. The learning rate
    (default ``default_learning_rate``: 1e-4 for Molmo2-4B) warms up over ``warmup_steps`` (default 5% of the
    steps) and decays on a cosine to 0. LoRA has rank ``rank`` (alpha twice that by default) on the language
    model's projections and its head, and the connector's with ``train_connector``. ``validation_items``
    (see ``split_items``) are never trained on; their loss is reported every ``validate_every`` steps (default
    ``save_every``) and at the end. ``gradient_checkpointing`` trades compute for memory (see
    ``memory.estimate_training_memory``). A checkpoint is saved every ``save_every`` steps and at the end
    under ``output_dir/checkpoint-NNNNNN`` (the last ``keep_checkpoints`` kept); with ``resume`` a run
    continues from the last one (``resume=False`` removes them and starts over). ``qlora``: the model was loaded in 4-bit (``load_model(...,
    quantization='4bit')``; detected when None). The log is ``model.training_log``.
    """
    import torch
    from peft import get_peft_model, set_peft_model_state_dict
    from peft.utils import load_peft_weights
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    if hasattr(model, "peft_config"):
        raise TrainingError(
            "this model already carries a LoRA adapter: fine-tune the base model (load_model again), or resume "
            "an interrupted run by calling fine_tune with the same output_dir"
        )
    for name, value in (("gradient_accumulation", gradient_accumulation), ("save_every", save_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TrainingError(f"{name} must be a whole number >= 1, got {value!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise TrainingError(f"steps must be a whole number >= 1 or None (the default), got {steps!r}")
    if learning_rate is None:
        learning_rate = default_learning_rate(model)
    if not learning_rate > 0:
        raise TrainingError(f"learning_rate must be > 0, got {learning_rate!r}")
    four_bit = _check_qlora(model, qlora)
    examples = training_examples(items, prompt=prompt)
    held_out = training_examples(validation_items, prompt=prompt) if validation_items else []
    overlap = sorted({e.key for e in examples} & {e.key for e in held_out})
    if overlap:
        raise TrainingError(
            f"{overlap[0]} is both a training and a validation item: split them with split_items"
        )
    if steps is None:
        steps = min(max(STEPS_PER_EXAMPLE * len(examples) // gradient_accumulation, 300), 2000)
    warmup = warmup_steps if warmup_steps is not None else max(steps // 20, 1)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for partial in output_dir.glob(f".{CHECKPOINT_PREFIX}*"):  # a checkpoint a killed run was writing
        shutil.rmtree(partial, ignore_errors=True)
    settings = {
        "base_model": str(getattr(model, "name_or_path", "") or ""),  # another base: another training
        "examples": _settings_hash(examples),
        "validation": _settings_hash(held_out),
        "steps": steps, "rank": rank, "alpha": alpha, "learning_rate": learning_rate, "warmup_steps": warmup,
        "gradient_accumulation": gradient_accumulation, "train_connector": train_connector, "dropout": dropout,
        "weight_decay": weight_decay, "max_crops": max_crops, "seed": seed, "qlora": four_bit,
    }  # fmt: skip
    if not resume:  # start over: an earlier run's checkpoints would outrank (and outlive) this run's
        for old in _checkpoints(output_dir):
            shutil.rmtree(old)
    checkpoint = latest_checkpoint(output_dir) if resume else None
    info = _check_resume(checkpoint, settings) if checkpoint is not None else {}

    torch.manual_seed(seed)
    if gradient_checkpointing:  # transformers >= 5.2x names it activation checkpointing
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if four_bit:  # the 4-bit base is frozen; inputs need gradients for checkpointed layers to pass them on
        model.enable_input_require_grads()
    peft_model = get_peft_model(model, lora_config(rank=rank, alpha=alpha, dropout=dropout,
                                                   train_connector=train_connector))  # fmt: skip
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, steps)
    scaler = (
        torch.amp.GradScaler("cuda") if model.dtype == torch.float16 and torch.cuda.is_available() else None
    )

    done, losses, validation = (
        0,
        list(info.get("train_loss", [])),
        [tuple(v) for v in info.get("validation_loss", [])],
    )
    if checkpoint is not None:
        set_peft_model_state_dict(peft_model, load_peft_weights(str(checkpoint), device=str(model.device)))
        state = torch.load(checkpoint / STATE_FILE, weights_only=False, map_location="cpu")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        done = int(state["step"])
    resumed_from = done

    cache: dict[tuple[str, int], dict[str, Any]] = {}

    def encoded(pool: str, index: int) -> dict[str, Any]:
        """An example's tensors, made once (the processor is slow next to a tiny model's step)."""
        if (pool, index) not in cache:
            example = (examples if pool == "train" else held_out)[index]
            tensors = encode_example(peft_model, processor, example, max_crops=max_crops)
            cache[pool, index] = tensors if train_connector else _with_media_features(peft_model, tensors)
        return cache[pool, index]

    def validation_loss() -> float:
        peft_model.eval()
        with torch.no_grad():
            value = sum(
                float(_example_loss(peft_model, encoded("validation", i))) for i in range(len(held_out))
            )
        peft_model.train()
        return value / len(held_out)

    info = {"settings": settings, "examples": len(examples), "validation_examples": len(held_out)}
    validate_every = validate_every or save_every
    start_time = time.perf_counter()
    draws = _draw_order(
        len(examples), seed, done * gradient_accumulation, (steps - done) * gradient_accumulation
    )
    peft_model.train()
    with tqdm(total=steps, initial=done, desc="fine-tuning", unit="step", disable=not progress) as bar:
        while done < steps:
            total = 0.0
            for _ in range(gradient_accumulation):
                index = next(draws)
                autocast = (
                    torch.autocast("cuda", dtype=model.dtype)
                    if model.device.type == "cuda" and model.dtype in (torch.float16, torch.bfloat16)
                    else contextlib.nullcontext()
                )
                with autocast:
                    loss = _example_loss(peft_model, encoded("train", index)) / gradient_accumulation
                (scaler.scale(loss) if scaler else loss).backward()
                total += loss.item()
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            done += 1
            losses.append(round(total, 6))
            bar.update()
            bar.set_postfix(loss=f"{total:.4f}", lr=f"{scheduler.get_last_lr()[0]:.1e}")
            if held_out and (done % validate_every == 0 or done == steps):
                validation.append((done, round(validation_loss(), 6)))
                bar.set_postfix(loss=f"{total:.4f}", validation=f"{validation[-1][1]:.4f}")
            if done % save_every == 0 or done == steps:
                log = {**info, "train_loss": losses, "validation_loss": validation}
                _save_checkpoint(peft_model, optimizer, scheduler, done, log, output_dir, keep_checkpoints)
    peft_model.eval()
    peft_model.training_log = TrainingLog(
        steps, tuple(losses), tuple(validation), time.perf_counter() - start_time, resumed_from
    )
    return peft_model


def _draw_order(n_examples: int, seed: int, start: int, count: int):
    """Example indices for draws ``start`` .. ``start + count - 1``: a seeded shuffle per pass over the data,
    made from the seed and the pass alone, so a resumed run draws exactly what an uninterrupted one would."""
    import torch

    order: list[int] = []
    for draw in range(start, start + count):
        epoch, position = divmod(draw, n_examples)
        if position == 0 or not order:
            order = torch.randperm(
                n_examples, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            ).tolist()
        yield order[position]
