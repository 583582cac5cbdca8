"""GPU memory planner for Molmo2: will this model, precision and video or image setting fit on my GPU?

Every figure is arithmetic on the architecture in transformers' `models/molmo2/modeling_molmo2.py` (5.x), so
it works offline, before any weights are downloaded (parameters are counted on the real modules built on the
meta device). Sizes are GiB (2**30 bytes), the unit torch.cuda and Colab report. These are estimates:
`make gpu-check` (scripts/gpu_check.py) measures them against real runs and writes notebooks/gpu_check.json.
Keep some headroom on a tight budget.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Molmo2Config, Molmo2ForConditionalGeneration, PretrainedConfig
from transformers.models.molmo2.image_processing_molmo2 import compute_crop_geometry

from molmo_nb_utils.architecture import lora_target_modules
from molmo_nb_utils.checks import positive_int
from molmo_nb_utils.media import DEFAULT_FPS, DEFAULT_MAX_FRAMES, frame_times
from molmo_nb_utils.media import planned_frames as planned_frames  # media's; still importable from here
from molmo_nb_utils.vision_chunks import VISION_CHUNK, check_vision_chunk

GIB = 2**30
# The one budget for a free Colab T4 (README, 06, 09; planning on a machine without a GPU). NVIDIA sells it as
# 16 GB; with ECC on, as on Colab, CUDA reports 15,843,721,216 bytes ("15110 MBytes" in a published T4
# deviceQuery, not measured here: no T4 in this project's CI). That is 14.76 GiB (2**30 bytes, the unit
# torch.cuda and these estimates use), or 15.8 GB (10**9 bytes), and the whole estimate must fit in it.
T4_MEMORY_BYTES = 15_843_721_216
T4_GIB = T4_MEMORY_BYTES / GIB
# Crops per image that the vision encoder takes together whatever the chunk: the high-resolution crops at the
# released max_crops (their pooling windows overlap, see vision_chunks).
IMAGE_CROPS = 8
# CUDA context (~0.3-0.5 GiB outside PyTorch), cuBLAS workspaces and allocator fragmentation.
OVERHEAD_GB = 0.75
# Planning allowance for the chat template and a question, in tokens.
PROMPT_TEXT_TOKENS = 100
PRECISIONS = ("fp32", "bf16", "fp16", "8bit", "4bit")
# Bytes per weight of a quantized LLM linear layer (bitsandbytes): LLM.int8 stores int8 (+ an fp32 scale per
# row, negligible); NF4 with double quantization (as loading.py asks) stores 4 bits + an 8-bit absmax per
# block of 64 weights + an fp32 scale per 256 blocks.
QUANT_BYTES = {"8bit": 1.0, "4bit": 0.5 + 1 / 64 + 4 / (64 * 256)}
_RANK = {"fp32": 0, "bf16": 1, "fp16": 1, "8bit": 2, "4bit": 3}  # weight memory, largest first
# Settings to try, largest first: video sampling rate and frame cap, image crops (the released defaults lead).
FPS_STEPS, MAX_FRAMES_STEPS = (DEFAULT_FPS, 1, 0.5), (DEFAULT_MAX_FRAMES, 128, 64, 32, 16, 8)
MAX_CROPS_STEPS = (8, 6, 4, 2, 1)

# The SigLIP-so400m/14 ViT at 378 px of all three models: 27 layers declared, 25 built (the adapter reads
# layers 24 and 18).
_VIT = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
            num_key_value_heads=16, head_dim=72, image_default_input_size=[378, 378], image_patch_size=14,
            image_num_pos=729)  # fmt: skip


def _known(text_hidden: int, layers: int, kv_heads: int, intermediate: int, vocab: int, **text: Any) -> dict:
    adapter = dict(vit_layers=[-3, -9], hidden_size=1152, num_attention_heads=16, num_key_value_heads=16,
                   head_dim=72, intermediate_size=intermediate, text_hidden_size=text_hidden)  # fmt: skip
    text = dict(hidden_size=text_hidden, num_hidden_layers=layers, num_attention_heads=32, head_dim=128,
                num_key_value_heads=kv_heads, intermediate_size=intermediate, vocab_size=vocab,
                additional_vocab_size=128, max_position_embeddings=36864, **text)  # fmt: skip
    return {"vit_config": _VIT, "adapter_config": adapter, "text_config": text}


# Shapes of the released checkpoints in their hub config.json layout, so planning works offline. Sources:
# 4B: huggingface.co/allenai/Molmo2-4B config.json (copy: github.com/albud1978/CV src/models/Molmo2-4B/);
#     it gives 4,850,869,200 parameters, "total_parameters" in that checkpoint's model.safetensors.index.json.
# 8B: huggingface.co/allenai/Molmo2-8B config.json (mirror smamooler/Molmo2-8B: text hidden 4096, intermediate
#     12288, adapter 12288 -> 4096); layers, heads, vocabulary as QWEN3_8B in allenai/molmo2 model_configs.py.
# O-7B: its config.json was not found; derived from OLMO3_7B_INSTRUCT in allenai/molmo2 olmo/model_configs.py
#     through convert_molmo2_to_hf.convert_config (kv heads = heads, 22016 // 2, vocab 100278, OLMo q/k norm).
_OLMO_NORMS = dict(qk_norm_type="olmo", norm_after=True)  # q/k norm over the projection, post-norm blocks
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    "allenai/Molmo2-4B": _known(2560, 36, 8, 9728, 151936, rope_theta=5e6),
    "allenai/Molmo2-8B": _known(4096, 36, 8, 12288, 151936, rope_theta=1e6),
    "allenai/Molmo2-O-7B": _known(4096, 32, 32, 11008, 100278, rope_theta=5e5, **_OLMO_NORMS),
}


def load_config(config: Any):
    """A Molmo2Config from a KNOWN_CONFIGS id, a folder or config.json path, a dict, or a config object."""
    if isinstance(config, Molmo2Config):
        return config
    if isinstance(config, PretrainedConfig):
        kind = type(config).__name__
        raise ValueError(f"expected a Molmo2 config, got {kind}: pass model.config of a Molmo2 model")
    if isinstance(config, dict):
        return Molmo2Config(**config)
    if isinstance(config, str) and config in KNOWN_CONFIGS:
        return Molmo2Config(**KNOWN_CONFIGS[config])
    if isinstance(config, (str, Path)):
        path = Path(config) / "config.json" if Path(config).is_dir() else Path(config)
        if path.is_file():
            return Molmo2Config(**json.loads(path.read_text()))
    raise ValueError(
        f"cannot read a Molmo2 config from {config!r}: give one of {sorted(KNOWN_CONFIGS)}, a folder with "
        "config.json, a dict, or model.config"
    )


def count_parameters(config: Any) -> dict[str, int]:
    """Parameters per part (text_embeddings, llm_layers, lm_head, vision_tower, adapter) and their total,
    counted on the real Molmo2 modules built on PyTorch's meta device: no memory, no download, ~0.1 s."""
    return dict(_module_counts(load_config(config).to_json_string())[0])


@functools.lru_cache(maxsize=32)
def _module_counts(config_json: str) -> tuple[tuple[tuple[str, int], ...], int]:
    """(parameters per part, weights of the language model's linear layers: what bitsandbytes quantizes).
    Keyed by the config's JSON, so the planner's loops build each model once."""
    with torch.device("meta"):  # shapes only: no memory is allocated and nothing is initialised
        model = Molmo2ForConditionalGeneration(Molmo2Config(**json.loads(config_json)))

    def n(module) -> int:
        return sum(p.numel() for p in module.parameters())

    lm = model.model.language_model
    parts = {
        "text_embeddings": n(lm.embed_tokens),  # the text vocabulary and Molmo2's additional tokens
        "llm_layers": n(lm) - n(lm.embed_tokens),  # decoder layers and the final norm
        "lm_head": n(model.lm_head),
        "vision_tower": n(model.model.vision_tower),
        "adapter": n(model.model.multi_modal_projector),
    }
    parts["total"] = n(model)
    if parts["total"] != sum(parts.values()) - parts["total"]:
        raise RuntimeError("Molmo2's modules changed: count_parameters' parts no longer add up to the model")
    quantized = sum(m.weight.numel() for m in lm.modules() if isinstance(m, torch.nn.Linear))
    return tuple(parts.items()), quantized


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


def _check(precision: str, **counts: float) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    for name, value in counts.items():
        if name == "batch_size":
            positive_int(value, name)
        elif value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


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
    _check(precision, batch_size=batch_size, **counts)
    check_vision_chunk(vision_chunk, "vision_chunk")
    if num_crops and num_frames:
        raise ValueError("Molmo2 takes images or one video per prompt, not both: set num_crops or num_frames")
    if attn_implementation not in ("sdpa", "eager"):
        raise ValueError(f"attn_implementation must be 'sdpa' or 'eager', got {attn_implementation!r}")
    c = load_config(config)
    t, v = c.text_config, c.vision_config
    params = count_parameters(c)["total"]
    a = 4 if precision == "fp32" else 2  # bytes per activation / KV value; 8-bit and 4-bit compute in 16-bit
    weights = params * a
    if precision in QUANT_BYTES:
        # only the decoder's linear layers are quantized; ViT, adapter, embeddings and lm_head stay 16-bit
        quantized = _module_counts(c.to_json_string())[1]
        weights = quantized * QUANT_BYTES[precision] + (params - quantized) * a
    b, n_tok, h, inter = batch_size, prompt_tokens, t.hidden_size, t.intermediate_size
    # K and V of every layer
    kv_per_token = 2 * t.num_hidden_layers * t.num_key_value_heads * t.head_dim * a * b
    n, p, d = b * (num_crops + num_frames), v.num_position_embeddings, v.hidden_size  # crops, patches, width
    # crops or frames in the vision encoder at once; an image's high-resolution crops always go together
    chunk = n if vision_chunk is None else min(n, max(vision_chunk, IMAGE_CROPS if num_crops else 1))
    # chat casts the processor's pixels to the model's dtype; generate keeps them for the whole call
    inputs = n * p * v.patch_size**2 * v.num_channels * a
    # the pooled visual features (at most one per prompt token), and their concatenation in the forward
    pooled = 2 * b * n_tok * h * a if n else 0
    # transformers returns the ViT's last hidden state of every crop with the model outputs: it lives
    # through the prefill (chunk_vision does not keep it)
    last_hidden = n * p * d * a if vision_chunk is None else 0
    vision = 0.0
    if n:
        vision = inputs + pooled + b * n_tok * h * a  # + the prompt embeddings, computed before the vision
        # the ViT keeps every layer's output (filter_output_hidden_states) until the adapter has read two
        vision += (v.num_hidden_layers + 1) * chunk * p * d * a
        # the largest temporary: ViT MLP (fc1 output + GELU + LayerNorm) or the adapter's gathered patches/k/v
        vision += chunk * p * max(2 * v.intermediate_size + d, 8 * d) * a
        if attn_implementation == "eager":  # scores, fp32 softmax and its cast; SDPA never stores them
            vision += chunk * v.num_attention_heads * p * p * (2 * a + 4)
    # per decoder layer, freed before the next: MLP gate activation, up projection and their product ...
    mlp = 3 * b * n_tok * inter * a + (b * n_tok * inter * 4 if precision == "8bit" else 0)  # int8 -> int32
    # ... or attention: q/k/v, normed and rotated copies, k/v repeated for grouped-query heads, output
    attn = b * n_tok * 4 * (t.num_attention_heads + t.num_key_value_heads) * t.head_dim * a
    if attn_implementation == "sdpa":
        # image/frame tokens attend both ways, so a bool mask is built (no is_causal shortcut), and SDPA turns
        # it into an additive mask (+ a padded copy) at every layer
        mask, attn = b * n_tok**2, attn + 2 * b * n_tok**2 * a
        masks = mask + 2 * b * n_tok**2 * a
    else:  # float mask; scores in the activation dtype and the fp32 softmax
        mask, attn = b * n_tok**2 * a, attn + b * t.num_attention_heads * n_tok**2 * (a + 4)
        masks = mask
    prefill = inputs + pooled + last_hidden + mask + max(mlp, attn)
    # + embeddings, layer input, residual and its normed copy; RoPE cos/sin
    prefill += b * n_tok * (4 * h + 4 * t.head_dim) * a
    # + one dequantized weight at a time (bitsandbytes)
    prefill += inter * h * a if precision in QUANT_BYTES else 0
    # + last-token logits (generate passes logits_to_keep=1) and their fp32 copy
    prefill += b * t.vocab_size * (a + 4)
    kv_prompt, kv_full = kv_per_token * n_tok, kv_per_token * (n_tok + new_tokens)
    on_gpu_prompt, on_gpu_full = kv_prompt, kv_full
    if kv_offload:  # the layer being computed, a copy growing by the new token, the next layer prefetched
        on_gpu_prompt, on_gpu_full = (min(kv, 3 * kv // t.num_hidden_layers) for kv in (kv_prompt, kv_full))
    phases = {
        "the vision encoder": vision,
        "prefill": on_gpu_prompt + prefill,
        "decoding": on_gpu_full + inputs,
    }
    peak = max(phases, key=phases.get)
    return MemoryEstimate(
        weights_gb=weights / GIB, kv_cache_gb=kv_full / GIB, vision_gb=vision / GIB, prefill_gb=prefill / GIB,
        overhead_gb=OVERHEAD_GB, total_gb=(weights + phases[peak]) / GIB + OVERHEAD_GB, peak_phase=peak,
        precision=precision, batch_size=b, attn_implementation=attn_implementation, vision_chunk=vision_chunk,
        attention_mask_gb=masks / GIB, kv_offload=kv_offload, **counts,
    )  # fmt: skip


def image_tokens_estimate(height: int | None = None, width: int | None = None, *, max_crops: int = 8) -> int:
    """Prompt tokens of one image, for planning (count_prompt_tokens gives the real number). Uses the
    processor's own tiling code; without a size, the worst case over all tilings."""
    return _image_plan(height, width, max_crops)[0]


def _image_plan(height: int | None, width: int | None, max_crops: int) -> tuple[int, int]:
    """(tokens, crops) of one image with the released processor settings: 378 px crops, 14 px patches, 2x2
    pooling, 4-patch overlap margins, column tokens after high-res rows only, start/end tokens per view."""
    positive_int(max_crops, "max_crops")
    if height is None or width is None:  # a canvas of exactly h x w crops for every allowed tiling
        tilings = [(h, w) for h in range(1, max_crops + 1) for w in range(1, max_crops // h + 1)]
        return max(_image_plan(h * 266 + 112, w * 266 + 112, max_crops) for h, w in tilings)
    positive_int(height, "height"), positive_int(width, "width")
    tiling_h, tiling_w, canvas_h, canvas_w = compute_crop_geometry(height, width, max_crops, [4, 4], 378, 14)
    rows, cols = math.ceil(canvas_h // 14 / 2), math.ceil(canvas_w // 14 / 2)
    low_res = 1 + 14 * 14 + 1  # the global crop: start, 14x14 pooled patches, end
    return low_res + 1 + rows * (cols + 1) + 1, tiling_h * tiling_w + 1


def video_tokens_estimate(num_frames: int, *, fps: float = DEFAULT_FPS) -> int:
    """Prompt tokens of `num_frames` frames sampled `fps` apart, for planning before the video exists: per
    frame 81 pooled patches (27x27 patches, 3x3 pooling), start and end tokens, and its timestamp text
    (" 12.5 " is one token per digit, dot and space in Qwen's tokenizer)."""
    if num_frames < 0 or not fps > 0:
        raise ValueError(f"num_frames must be >= 0 and fps > 0, got {num_frames} and {fps}")
    return _video_tokens([k / fps for k in range(num_frames)])


def _video_tokens(times: Sequence[float]) -> int:
    """Prompt tokens of the frames shown at these prompt times (see ``video_tokens_estimate``)."""
    return sum(81 + 2 + len(f"{t:.1f}") + (2 if k else 1) for k, t in enumerate(times))


def count_prompt_tokens(processor: Any, messages_or_inputs: Any, **template_kwargs: Any) -> int:
    """The real prompt length: input_ids of what the processor returned (a BatchFeature or dict), or of chat
    messages, which go through processor.apply_chat_template (extra keyword arguments are passed on)."""
    if isinstance(messages_or_inputs, Mapping):
        if "input_ids" not in messages_or_inputs:
            raise ValueError("processor output has no 'input_ids': pass what the processor returned")
        ids = messages_or_inputs["input_ids"]
    elif isinstance(messages_or_inputs, list):
        if processor is None:
            raise ValueError("a processor is needed to count the tokens of chat messages")
        kwargs = dict(tokenize=True, add_generation_prompt=True, return_dict=True, return_tensors="pt")
        ids = processor.apply_chat_template(messages_or_inputs, **{**kwargs, **template_kwargs})["input_ids"]
    else:
        kind = type(messages_or_inputs).__name__
        raise ValueError(f"expected chat messages (a list) or processor output (a dict), got {kind}")
    if hasattr(ids, "shape"):
        return int(ids.shape[-1])
    return len(ids[0]) if len(ids) and isinstance(ids[0], (list, tuple)) else len(ids)


@dataclass(frozen=True)
class Suggestion:
    """The largest setting that fits. Pass fps as the video processor's max_fps and max_frames as its
    num_frames (frames = min(max_frames, duration x fps)), max_crops as the image processor's max_crops."""

    fps: float | None
    max_frames: int | None
    max_crops: int | None
    precision: str
    estimate: MemoryEstimate
    fits: bool
    advice: str


def suggest_settings(
    config: Any,
    budget_gb: float,
    *,
    precision: str = "bf16",
    duration_s: float | None = None,
    image_count: int = 0,
    image_size: tuple[int, int] | None = None,
    new_tokens: int = 256,
    candidates_fps: tuple[float, ...] = FPS_STEPS,
    candidates_max_frames: tuple[int, ...] = MAX_FRAMES_STEPS,
    candidates_max_crops: tuple[int, ...] = MAX_CROPS_STEPS,
    vision_chunk: int | None = VISION_CHUNK,
    kv_offload: bool = False,
) -> Suggestion:
    """Most frames (a video of `duration_s` seconds) or crops (`image_count` images of `image_size` (height,
    width); worst case when None) whose estimate fits `budget_gb`; if none fits, which precision would.
    `vision_chunk` and `kv_offload` as in estimate_memory."""
    _check(precision, image_count=image_count, new_tokens=new_tokens)
    if not budget_gb > 0:
        raise ValueError(f"budget_gb must be > 0 GiB, got {budget_gb}")
    if duration_s is not None and (not duration_s > 0 or image_count):
        raise ValueError(
            f"give a video duration_s > 0 or an image_count, not both: {duration_s}, {image_count}"
        )
    if not (candidates_fps and candidates_max_frames and candidates_max_crops):
        raise ValueError("candidate lists must not be empty")
    c = load_config(config)
    options = []  # (preference, fps, max_frames, max_crops, estimate)
    for fps in candidates_fps if duration_s else [None]:
        for max_frames in candidates_max_frames if duration_s else [None]:
            for max_crops in candidates_max_crops if image_count else [None]:
                tokens, crops, frames = PROMPT_TEXT_TOKENS, 0, 0
                if duration_s:  # the frames shown, by media's one rule, and their times' tokens
                    times = frame_times(duration_s, fps=fps, max_frames=max_frames)
                    frames, tokens = len(times), tokens + _video_tokens(times)
                if image_count:
                    one_tokens, one_crops = _image_plan(*(image_size or (None, None)), max_crops)
                    tokens, crops = tokens + image_count * one_tokens, image_count * one_crops
                est = estimate_memory(c, precision=precision, prompt_tokens=tokens, new_tokens=new_tokens,
                                      num_crops=crops, num_frames=frames, vision_chunk=vision_chunk,
                                      kv_offload=kv_offload)  # fmt: skip
                preference = (frames, fps or 0, max_frames or 0, max_crops or 0)
                options.append((preference, fps, max_frames, max_crops, est))
    options.sort(key=lambda option: option[0], reverse=True)
    fitting = [option for option in options if option[4].total_gb <= budget_gb]
    _, fps, max_frames, max_crops, est = (fitting or options[-1:])[0]
    what = f"a text prompt ({est.prompt_tokens:,} tokens)"
    if max_frames:
        what = f"fps={fps:g}, max_frames={max_frames} ({est.num_frames} frames, {est.prompt_tokens:,} tokens)"
    elif max_crops:
        what = f"max_crops={max_crops} ({est.num_crops} crops, {est.prompt_tokens:,} tokens)"
    need = f"about {est.total_gb:.1f} GiB"
    if fitting:
        advice = f"Fits: {what}: {need} of {budget_gb:.1f} GiB, peak during {est.peak_phase}."
        return Suggestion(fps, max_frames, max_crops, precision, est, True, advice)
    advice = f"Does not fit: even {what} needs {need} at {precision}, more than {budget_gb:.1f} GiB."
    for smaller in [p for p in ("bf16", "8bit", "4bit") if _RANK[p] > _RANK[precision]]:
        kwargs = dict(
            duration_s=duration_s, image_count=image_count, image_size=image_size, new_tokens=new_tokens,
            vision_chunk=vision_chunk, kv_offload=kv_offload,
        )  # fmt: skip
        other = suggest_settings(c, budget_gb, precision=smaller, candidates_fps=candidates_fps,
                                 candidates_max_frames=candidates_max_frames,
                                 candidates_max_crops=candidates_max_crops, **kwargs)  # fmt: skip
        if other.fits:
            advice += f" Load the model in {smaller} instead: {other.advice.removeprefix('Fits: ')}"
            return Suggestion(fps, max_frames, max_crops, precision, est, False, advice)
    advice += (
        " No precision fits: use a GPU with more memory, a shorter clip, fewer images or a smaller Molmo2."
    )
    return Suggestion(fps, max_frames, max_crops, precision, est, False, advice)


def gpu_budget_gb(*, free: bool = False) -> float | None:
    """Total memory of the current CUDA device in GiB, what a whole estimate (CUDA context included) must fit;
    with free=True, what is free right now. None without a GPU."""
    if not torch.cuda.is_available():
        return None
    free_bytes, total_bytes = torch.cuda.mem_get_info()
    return (free_bytes if free else total_bytes) / GIB


def next_setting_advice(
    fps: float | None, max_frames: int | None, max_crops: int | None, precision: str
) -> str:
    """What to try after a CUDA out-of-memory error, one step at a time: fewer frames, a lower frame rate,
    fewer crops, then 4-bit weights. Pass None for the knobs that do not apply."""
    _check(precision)
    if max_frames is not None and max_frames > 8:
        step = f"fewer frames: max_frames={max(f for f in MAX_FRAMES_STEPS if f < max_frames)}"
    elif fps is not None and fps > 0.5:
        step = f"a lower frame rate: fps={max(f for f in FPS_STEPS if f < fps):g}"
    elif max_crops is not None and max_crops > 1:
        step = f"fewer image crops: max_crops={max(n for n in MAX_CROPS_STEPS if n < max_crops)}"
    elif precision != "4bit":
        step = "loading the model in 4-bit (bitsandbytes NF4), about half the memory of bf16 weights"
    else:
        return (
            "Out of GPU memory even at the smallest settings: restart the runtime to free memory, or use a "
            "shorter clip, fewer images or a GPU with more memory."
        )
    return f"Out of GPU memory. Free it (gc.collect(); torch.cuda.empty_cache()), then try {step}."


def video_prompt_tokens(
    processor: Any,
    seconds: float,
    *,
    fps: float | None = DEFAULT_FPS,
    max_frames: int = DEFAULT_MAX_FRAMES,
    video_fps: float = 30.0,
) -> int:
    """Prompt tokens of a question about a ``seconds``-long video, counted by the real processor.

    Frames are sampled as ``molmo_utils`` samples a real file (``fps`` up to ``max_frames``, first and
    last frame included); they are blank, which costs the same tokens as a real video of any size.
    """
    times = np.asarray(frame_times(seconds, fps=fps, max_frames=max_frames))
    frames = np.zeros((len(times), 28, 28, 3), np.uint8)
    metadata = {
        "fps": video_fps,
        "total_num_frames": int(seconds * video_fps),
        "duration": seconds,
        "frames_indices": times * video_fps,
    }
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(
        text=text, videos=[frames], video_metadata=[metadata], do_sample_frames=False, return_tensors="pt"
    )
    return count_prompt_tokens(processor, inputs)


def choose_quantization(config: Any, budget_gb: float, *, half: str = "bf16") -> str | None:
    """The lightest-touch precision whose estimate for one full-size image fits ``budget_gb``.

    Returns None (16-bit, no quantization), "8bit" or "4bit"; "4bit" when nothing fits, as the best
    chance. One image at 9 crops is the smallest job every notebook runs; videos need more, which
    suggest_settings plans.
    """
    if not budget_gb > 0:
        raise ValueError(f"budget_gb must be > 0 GiB, got {budget_gb}")
    tokens = image_tokens_estimate(max_crops=8) + PROMPT_TEXT_TOKENS
    for precision in (half, "8bit"):
        if (
            estimate_memory(config, precision=precision, prompt_tokens=tokens, num_crops=9).total_gb
            <= budget_gb
        ):
            return None if precision == half else precision
    return "4bit"


# ---------------------------------------------------------------------------------------------
# Training (09_fine_tune): LoRA or QLoRA


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


def lora_parameter_count(config: Any, *, rank: int = 16, train_connector: bool = False) -> int:
    """Parameters of the LoRA adapter ``fine_tune`` adds (rank x (in + out) per adapted linear layer: the
    language model's projections and its head, and the connector's with ``train_connector``)."""
    return _lora_count(load_config(config).to_json_string(), rank, train_connector)


@functools.lru_cache(maxsize=32)
def _lora_count(config_json: str, rank: int, train_connector: bool) -> int:
    positive_int(rank, "rank")
    pattern = re.compile(lora_target_modules(train_connector=train_connector))
    with torch.device("meta"):
        model = Molmo2ForConditionalGeneration(Molmo2Config(**json.loads(config_json)))
    return sum(
        rank * (m.in_features + m.out_features)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and pattern.match(name)
    )


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
    _check(precision, prompt_tokens=prompt_tokens, answer_tokens=answer_tokens, num_crops=num_crops,
           num_frames=num_frames)  # fmt: skip
    positive_int(batch_size, "batch_size")
    c = load_config(config)
    t = c.text_config
    a = 4 if precision == "fp32" else 2
    inference = estimate_memory(c, precision=precision, prompt_tokens=prompt_tokens, new_tokens=0,
                                num_crops=num_crops, num_frames=num_frames, vision_chunk=vision_chunk)  # fmt: skip
    lora = lora_parameter_count(c, rank=rank, train_connector=train_connector)
    lora_bytes = lora * (4 + 4 + 8)  # fp32 weights, gradients, AdamW's two moments
    n, h, layers = prompt_tokens + answer_tokens, t.hidden_size, t.num_hidden_layers
    q, kv, inter = t.num_attention_heads * t.head_dim, t.num_key_value_heads * t.head_dim, t.intermediate_size
    # what one decoder layer keeps for backward: norms and residuals, q/k/v and their rotated copies, the
    # attention output, the MLP's gate, up, activation and product; plus the rank-wide LoRA intermediates
    per_layer = n * (4 * h + 3 * q + 3 * kv + 4 * inter) * a + n * rank * 7 * 4
    mask = n * n * (1 + 2 * a)  # the bool mask over every pair of tokens, SDPA's additive copies
    if gradient_checkpointing:  # each layer's input, and one layer recomputed at a time
        kept = layers * n * h * a + per_layer
    else:
        kept = layers * per_layer
    logits = (answer_tokens + 1) * t.vocab_size * (a + 4 + 4)  # logits of the answer, fp32 copy, gradient
    dequantized = inter * h * a if precision in QUANT_BYTES else 0  # bitsandbytes: one weight at a time
    # + embeddings and the pooled features; every example of the batch keeps its own
    activations = batch_size * (kept + mask + logits + n * h * a * 2) + dequantized
    weights = inference.weights_gb * GIB
    peak = weights + lora_bytes + max(activations, inference.vision_gb * GIB)
    return TrainingMemoryEstimate(
        weights_gb=weights / GIB, lora_gb=lora_bytes / GIB, activations_gb=activations / GIB,
        vision_gb=inference.vision_gb, overhead_gb=OVERHEAD_GB, total_gb=peak / GIB + OVERHEAD_GB,
        precision=precision, lora_parameters=lora, prompt_tokens=prompt_tokens, answer_tokens=answer_tokens,
        num_crops=num_crops, gradient_checkpointing=gradient_checkpointing, num_frames=num_frames,
        batch_size=batch_size,
    )  # fmt: skip
