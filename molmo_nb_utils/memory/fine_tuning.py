"""GPU memory of one LoRA or QLoRA training step (``training.fine_tune``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from molmo_nb_utils.checks import positive_int
from molmo_nb_utils.memory.configs import GIB, QUANT_BYTES, check_counts, load_config, lora_parameter_count
from molmo_nb_utils.memory.inference import OVERHEAD_GB, estimate_memory
from molmo_nb_utils.vision_chunks import VISION_CHUNK

__all__ = ["TrainingMemoryEstimate", "estimate_training_memory"]


@dataclass(frozen=True)
class TrainingMemoryEstimate:
    """An estimate of the GPU memory of one LoRA training step (``training.fine_tune``) on ``batch_size``
    examples of the same length (a padded batch).

    The frozen base weights; the LoRA weights with their gradients and AdamW's two moments (all float32, as
    peft keeps adapters of a 16-bit model); the activations the backward pass needs (with gradient
    checkpointing: one hidden state per layer plus one layer recomputed); and the vision encoder, which runs
    once per image under no_grad (fine_tune caches its features), so its working set never meets the
    activations. The peak is weights + LoRA state + overhead + the larger of the two.
    """

    weights_gb: float
    lora_gb: float  # LoRA weights, gradients and AdamW moments
    activations_gb: float  # kept for backward, and the largest temporary
    vision_gb: float  # the vision encoder's working set, once per image
    overhead_gb: float
    total_gb: float
    precision: str
    lora_parameters: int
    prompt_tokens: int
    answer_tokens: int
    num_crops: int
    gradient_checkpointing: bool
    num_frames: int = 0
    batch_size: int = 1

    def table(self) -> str:
        rows = [
            ("base weights", self.weights_gb, f"{self.precision}, frozen"),
            ("LoRA state", self.lora_gb, f"{self.lora_parameters:,} parameters: weights, gradients, AdamW (fp32)"),
            ("activations", self.activations_gb,
             f"{self.batch_size} x ({self.prompt_tokens:,} + {self.answer_tokens}) tokens, "
             + ("activation checkpointing" if self.gradient_checkpointing else "no checkpointing")),
            ("vision encoder", self.vision_gb,
             f"{self.num_frames} frames, once per video (no gradients)" if self.num_frames
             else f"{self.num_crops} crops, once per image (no gradients)"),
            ("overhead", self.overhead_gb, "CUDA context, allocator"),
            ("peak total", self.total_gb, "an estimate: check it against torch.cuda.max_memory_allocated()"),
        ]  # fmt: skip
        return "\n".join(f"{name:<15}{gb:7.2f} GiB  {note}" for name, gb, note in rows)

    def __str__(self) -> str:
        return self.table()


def estimate_training_memory(
    config: Any,
    *,
    precision: str = "4bit",
    prompt_tokens: int,
    answer_tokens: int = 64,
    num_crops: int = 0,
    num_frames: int = 0,
    rank: int = 16,
    gradient_checkpointing: bool = True,
    train_connector: bool = False,
    vision_chunk: int | None = VISION_CHUNK,
    batch_size: int = 1,
) -> TrainingMemoryEstimate:
    """Estimated peak GPU memory of a ``fine_tune`` step on one example of ``prompt_tokens`` (media included,
    from count_prompt_tokens or image_tokens_estimate) plus ``answer_tokens``, with ``num_crops`` image crops
    or ``num_frames`` video frames, ``batch_size`` such examples per step (``per_device_train_batch_size``:
    the activations grow with it; the vision features are computed once per example, before training).
    ``precision`` is the base model's: "4bit" is QLoRA. With ``train_connector`` the vision features are
    recomputed with gradients every step; that working set is counted at inference size (a lower bound)."""
    check_counts(precision, prompt_tokens=prompt_tokens, answer_tokens=answer_tokens, num_crops=num_crops,
                 num_frames=num_frames)  # fmt: skip
    positive_int(batch_size, "batch_size")
    molmo = load_config(config)
    text = molmo.text_config
    value_bytes = 4 if precision == "fp32" else 2
    inference = estimate_memory(molmo, precision=precision, prompt_tokens=prompt_tokens, new_tokens=0,
                                num_crops=num_crops, num_frames=num_frames, vision_chunk=vision_chunk)  # fmt: skip
    lora = lora_parameter_count(molmo, rank=rank, train_connector=train_connector)
    lora_bytes = lora * (4 + 4 + 8)  # fp32 weights, gradients, AdamW's two moments
    tokens, hidden, layers = prompt_tokens + answer_tokens, text.hidden_size, text.num_hidden_layers
    query_width, kv_width = text.num_attention_heads * text.head_dim, text.num_key_value_heads * text.head_dim
    intermediate = text.intermediate_size
    # what one decoder layer keeps for backward: norms and residuals, q/k/v and their rotated copies, the
    # attention output, the MLP's gate, up, activation and product; plus the rank-wide LoRA intermediates
    per_layer = tokens * (4 * hidden + 3 * query_width + 3 * kv_width + 4 * intermediate) * value_bytes
    per_layer += tokens * rank * 7 * 4
    # the bool mask over every pair of tokens, SDPA's additive copies
    mask = tokens * tokens * (1 + 2 * value_bytes)
    if gradient_checkpointing:  # each layer's input, and one layer recomputed at a time
        kept = layers * tokens * hidden * value_bytes + per_layer
    else:
        kept = layers * per_layer
    # the logits of the answer, their fp32 copy and gradient
    logits = (answer_tokens + 1) * text.vocab_size * (value_bytes + 4 + 4)
    # bitsandbytes dequantizes one weight at a time
    dequantized = intermediate * hidden * value_bytes if precision in QUANT_BYTES else 0
    # + embeddings and the pooled features; every example of the batch keeps its own
    activations = batch_size * (kept + mask + logits + tokens * hidden * value_bytes * 2) + dequantized
    weights = inference.weights_gb * GIB
    peak = weights + lora_bytes + max(activations, inference.vision_gb * GIB)
    return TrainingMemoryEstimate(
        weights_gb=weights / GIB, lora_gb=lora_bytes / GIB, activations_gb=activations / GIB,
        vision_gb=inference.vision_gb, overhead_gb=OVERHEAD_GB, total_gb=peak / GIB + OVERHEAD_GB,
        precision=precision, lora_parameters=lora, prompt_tokens=prompt_tokens, answer_tokens=answer_tokens,
        num_crops=num_crops, gradient_checkpointing=gradient_checkpointing, num_frames=num_frames,
        batch_size=batch_size,
    )  # fmt: skip
