"""The model's side of the plan: Molmo2's shapes offline, its parameters counted, what a weight costs.

Parameters are counted on the real Molmo2 modules built on PyTorch's meta device: no memory, no
download. ``KNOWN_CONFIGS`` holds the released checkpoints' shapes, so planning works before any
weights exist on the machine.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import torch
from transformers import Molmo2Config, Molmo2ForConditionalGeneration, PretrainedConfig

from molmo_nb_utils.architecture import lora_target_modules
from molmo_nb_utils.checks import positive_int

__all__ = [
    "GIB",
    "KNOWN_CONFIGS",
    "PRECISIONS",
    "PRECISION_RANK",
    "QUANT_BYTES",
    "check_counts",
    "count_parameters",
    "load_config",
    "lora_parameter_count",
    "module_counts",
]

GIB = 2**30
PRECISIONS = ("fp32", "bf16", "fp16", "8bit", "4bit")
# Bytes per weight of a quantized LLM linear layer (bitsandbytes): LLM.int8 stores int8 (+ an fp32 scale per
# row, negligible); NF4 with double quantization (as loading.py asks) stores 4 bits + an 8-bit absmax per
# block of 64 weights + an fp32 scale per 256 blocks.
QUANT_BYTES = {"8bit": 1.0, "4bit": 0.5 + 1 / 64 + 4 / (64 * 256)}
PRECISION_RANK = {"fp32": 0, "bf16": 1, "fp16": 1, "8bit": 2, "4bit": 3}  # weight memory, largest first

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
    return dict(module_counts(load_config(config).to_json_string())[0])


@functools.lru_cache(maxsize=32)
def module_counts(config_json: str) -> tuple[tuple[tuple[str, int], ...], int]:
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


def check_counts(precision: str, **counts: float) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    for name, value in counts.items():
        if name == "batch_size":
            positive_int(value, name)
        elif value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
