"""GPU memory of one ``chat`` call: weights, the vision encoder, the prefill and the KV cache.

Three phases never overlap: the vision encoder, the prefill (the LLM reads the prompt) and the end of
decoding; the peak is weights + overhead + the largest of them. Every figure is arithmetic on the
architecture in transformers' ``models/molmo2/modeling_molmo2.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from molmo_nb_utils.media import DEFAULT_MAX_CROPS
from molmo_nb_utils.memory.configs import (
    GIB,
    QUANT_BYTES,
    check_counts,
    count_parameters,
    load_config,
    module_counts,
)
from molmo_nb_utils.vision_chunks import VISION_CHUNK, check_vision_chunk

__all__ = ["IMAGE_CROPS", "OVERHEAD_GB", "MemoryEstimate", "estimate_memory"]

# Crops per image that the vision encoder takes together whatever the chunk: the high-resolution crops at the
# released max_crops (their pooling windows overlap, see vision_chunks).
IMAGE_CROPS = DEFAULT_MAX_CROPS
# CUDA context (~0.3-0.5 GiB outside PyTorch), cuBLAS workspaces and allocator fragmentation.
OVERHEAD_GB = 0.75


@dataclass(frozen=True)
class MemoryEstimate:
    """GPU memory of one generate() call. Three phases never overlap: the vision encoder, the prefill (the LLM
    reads the prompt) and the end of decoding; the peak is weights + overhead + the largest of them."""

    weights_gb: float
    kv_cache_gb: float  # at the end: prompt + new tokens (on the CPU when kv_offload)
    vision_gb: float  # vision encoder working set (0 without media)
    prefill_gb: float  # LLM working set while reading the prompt, its KV cache not included
    overhead_gb: float
    total_gb: float
    peak_phase: str
    precision: str
    prompt_tokens: int
    new_tokens: int
    num_crops: int
    num_frames: int
    batch_size: int
    attn_implementation: str
    vision_chunk: int | None = None  # crops/frames encoded at once; None: all
    attention_mask_gb: float = 0.0  # the part of prefill_gb that grows with tokens squared
    kv_offload: bool = False  # KV cache kept on the CPU, a few layers at a time on the GPU

    @property
    def activations_gb(self) -> float:
        return max(self.vision_gb, self.prefill_gb)

    def table(self) -> str:
        media = f"{self.num_frames} frames" if self.num_frames else f"{self.num_crops} crops"
        if self.num_frames + self.num_crops:
            media += f", {self.vision_chunk} at a time" if self.vision_chunk else ", all at once"
        kv_note = f"{self.prompt_tokens:,} prompt + {self.new_tokens:,} new tokens"
        rows = [
            ("weights", self.weights_gb, self.precision),
            ("KV cache", self.kv_cache_gb, kv_note + (", offloaded to the CPU" if self.kv_offload else "")),
            ("vision encoder", self.vision_gb, f"working set for {media}"),
            ("prefill", self.prefill_gb, f"working set, batch {self.batch_size}, {self.attn_implementation}"),
            ("  of which mask", self.attention_mask_gb, "attention masks over every pair of prompt tokens"),
            ("overhead", self.overhead_gb, "CUDA context, allocator"),
            ("peak total", self.total_gb, f"reached during {self.peak_phase}"),
        ]
        return "\n".join(f"{name:<15}{gb:7.2f} GiB  {note}" for name, gb, note in rows)

    def __str__(self) -> str:
        return self.table()


def estimate_memory(
    config: Any,
    *,
    precision: str = "bf16",
    prompt_tokens: int,
    new_tokens: int = 256,
    num_crops: int = 0,
    num_frames: int = 0,
    batch_size: int = 1,
    attn_implementation: str = "sdpa",
    vision_chunk: int | None = VISION_CHUNK,
    kv_offload: bool = False,
) -> MemoryEstimate:
    """Peak GPU memory of a `chat` call (model.generate with the pixels in the model's dtype) for
    `prompt_tokens` input ids per sequence (from count_prompt_tokens) with `num_crops` image crops (all
    images, global crops included) or `num_frames`. `vision_chunk`: crops or frames the vision encoder
    takes at a time (chunk_vision; what load_model sets), None for transformers' all-at-once encoding.
    `kv_offload`: generate(cache_implementation="offloaded"), the KV cache on the CPU but for a few layers."""
    counts = dict(
        prompt_tokens=prompt_tokens, new_tokens=new_tokens, num_crops=num_crops, num_frames=num_frames
    )
    check_counts(precision, batch_size=batch_size, **counts)
    check_vision_chunk(vision_chunk, "vision_chunk")
    if num_crops and num_frames:
        raise ValueError("Molmo2 takes images or one video per prompt, not both: set num_crops or num_frames")
    if attn_implementation not in ("sdpa", "eager"):
        raise ValueError(f"attn_implementation must be 'sdpa' or 'eager', got {attn_implementation!r}")
    molmo = load_config(config)
    text, vit = molmo.text_config, molmo.vision_config
    params = count_parameters(molmo)["total"]
    # bytes per activation or KV value; 8-bit and 4-bit weights compute in 16-bit
    value_bytes = 4 if precision == "fp32" else 2
    weights = params * value_bytes
    if precision in QUANT_BYTES:
        # only the decoder's linear layers are quantized; ViT, adapter, embeddings and lm_head stay 16-bit
        quantized = module_counts(molmo.to_json_string())[1]
        weights = quantized * QUANT_BYTES[precision] + (params - quantized) * value_bytes
    batch, tokens = batch_size, prompt_tokens
    hidden, intermediate = text.hidden_size, text.intermediate_size
    # K and V of every layer
    kv_per_token = 2 * text.num_hidden_layers * text.num_key_value_heads * text.head_dim * value_bytes * batch
    # crops or frames of the batch, patches per crop or frame, and the ViT's width
    pictures = batch * (num_crops + num_frames)
    patches, width = vit.num_position_embeddings, vit.hidden_size
    # crops or frames in the vision encoder at once; an image's high-resolution crops always go together
    chunk = pictures
    if vision_chunk is not None:
        chunk = min(pictures, max(vision_chunk, IMAGE_CROPS if num_crops else 1))
    # chat casts the processor's pixels to the model's dtype; generate keeps them for the whole call
    inputs = pictures * patches * vit.patch_size**2 * vit.num_channels * value_bytes
    # the pooled visual features (at most one per prompt token), and their concatenation in the forward
    pooled = 2 * batch * tokens * hidden * value_bytes if pictures else 0
    # transformers returns the ViT's last hidden state of every crop with the model outputs: it lives
    # through the prefill (chunk_vision does not keep it)
    last_hidden = pictures * patches * width * value_bytes if vision_chunk is None else 0
    vision = 0.0
    if pictures:
        # + the prompt embeddings, computed before the vision
        vision = inputs + pooled + batch * tokens * hidden * value_bytes
        # the ViT keeps every layer's output (filter_output_hidden_states) until the adapter has read two
        vision += (vit.num_hidden_layers + 1) * chunk * patches * width * value_bytes
        # the largest temporary: ViT MLP (fc1 output + GELU + LayerNorm) or the adapter's gathered patches/k/v
        vision += chunk * patches * max(2 * vit.intermediate_size + width, 8 * width) * value_bytes
        if attn_implementation == "eager":  # scores, fp32 softmax and its cast; SDPA never stores them
            vision += chunk * vit.num_attention_heads * patches * patches * (2 * value_bytes + 4)
    # per decoder layer, freed before the next: MLP gate activation, up projection and their product ...
    mlp = 3 * batch * tokens * intermediate * value_bytes
    mlp += batch * tokens * intermediate * 4 if precision == "8bit" else 0  # int8 -> int32
    # ... or attention: q/k/v, normed and rotated copies, k/v repeated for grouped-query heads, output
    heads = text.num_attention_heads + text.num_key_value_heads
    attn = batch * tokens * 4 * heads * text.head_dim * value_bytes
    if attn_implementation == "sdpa":
        # image/frame tokens attend both ways, so a bool mask is built (no is_causal shortcut), and SDPA turns
        # it into an additive mask (+ a padded copy) at every layer
        mask, attn = batch * tokens**2, attn + 2 * batch * tokens**2 * value_bytes
        masks = mask + 2 * batch * tokens**2 * value_bytes
    else:  # float mask; scores in the activation dtype and the fp32 softmax
        mask = batch * tokens**2 * value_bytes
        attn += batch * text.num_attention_heads * tokens**2 * (value_bytes + 4)
        masks = mask
    prefill = inputs + pooled + last_hidden + mask + max(mlp, attn)
    # + embeddings, layer input, residual and its normed copy; RoPE cos/sin
    prefill += batch * tokens * (4 * hidden + 4 * text.head_dim) * value_bytes
    # + one dequantized weight at a time (bitsandbytes)
    prefill += intermediate * hidden * value_bytes if precision in QUANT_BYTES else 0
    # + last-token logits (generate passes logits_to_keep=1) and their fp32 copy
    prefill += batch * text.vocab_size * (value_bytes + 4)
    kv_prompt, kv_full = kv_per_token * tokens, kv_per_token * (tokens + new_tokens)
    on_gpu_prompt, on_gpu_full = kv_prompt, kv_full
    if kv_offload:  # the layer being computed, a copy growing by the new token, the next layer prefetched
        on_gpu_prompt, on_gpu_full = (
            min(kv, 3 * kv // text.num_hidden_layers) for kv in (kv_prompt, kv_full)
        )
    phases = {
        "the vision encoder": vision,
        "prefill": on_gpu_prompt + prefill,
        "decoding": on_gpu_full + inputs,
    }
    peak = max(phases, key=phases.get)
    return MemoryEstimate(
        weights_gb=weights / GIB, kv_cache_gb=kv_full / GIB, vision_gb=vision / GIB, prefill_gb=prefill / GIB,
        overhead_gb=OVERHEAD_GB, total_gb=(weights + phases[peak]) / GIB + OVERHEAD_GB, peak_phase=peak,
        precision=precision, batch_size=batch, attn_implementation=attn_implementation, vision_chunk=vision_chunk,
        attention_mask_gb=masks / GIB, kv_offload=kv_offload, **counts,
    )  # fmt: skip
