"""What answered, by its weights: a cheap fingerprint of a model's tensors, and its precision.

Why: a folder path does not name weights. Another model saved into the same folder, a base model
after ``merge_and_unload`` of a trained LoRA, the same checkpoint in float32 or in 4-bit: each
answers differently, so results, adapters and checkpoints must tell them apart by what the model
computes with. Hashing every byte of a 4B model would take a minute; this reads, per tensor, its
name, shape and dtype, a fixed strided sample of its raw bits (a few thousand elements, gathered on
the tensor's own device, so only the sample travels to the CPU), and an exact integer sum of all
its raw bits computed where the tensor lives (milliseconds on a GPU, seconds on a CPU for billions
of weights, and no copy of the tensor). The sum is exact integer arithmetic, so the same weights
give the same fingerprint on any device, while a change to any one weight changes it.

bitsandbytes models are read through ``state_dict``, which holds their packed 4-bit or 8-bit data
and quantization state (absmax, scales) as tensors. Tensors on the ``meta`` device (a model built
without weights, or offloaded by accelerate) have no values here: offloaded ones are read from
accelerate's weight map where it holds them; otherwise only their name, shape and dtype count,
and the fingerprint says so (it ends in ``-shapes``), so it never passes for one of real weights.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["SAMPLE_PER_TENSOR", "weights_fingerprint", "weights_precision"]

# Elements read from each tensor (evenly strided over it, the first and last included).
SAMPLE_PER_TENSOR = 4096
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}  # raw view by element size


def weights_fingerprint(model: Any) -> str:
    """24 hex digits that change when any weight, the dtype or the quantization of ``model`` changes.

    ``model`` is a ``torch.nn.Module`` (a transformers or peft model, adapters included: a model
    with an adapter is another model than its base). Parameters and buffers count, by name.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"weights_fingerprint takes a torch model (nn.Module), got {type(model).__name__}")
    digest = hashlib.sha256()
    complete = True
    for name, tensor in _named_tensors(model):
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}\n".encode())
        if tensor.is_meta:
            complete = False
            continue
        sample, total = _sample_and_sum(tensor)
        digest.update(sample)
        digest.update(total.to_bytes(8, "little", signed=True))
    return digest.hexdigest()[:24] + ("" if complete else "-shapes")


def weights_precision(model: Any) -> dict[str, Any]:
    """``{"dtype": "torch.bfloat16", "quantization": None | "bitsandbytes-4bit-nf4" | ...}``.

    Part of what answered: the same weights in float32, bfloat16 or 4-bit give different answers.
    """
    dtype = getattr(model, "dtype", None)
    config = getattr(getattr(model, "config", None), "quantization_config", None)
    quantization = None
    if config is not None:
        get = (
            config.get
            if isinstance(config, dict)
            else lambda key, default=None: getattr(config, key, default)
        )
        method = str(get("quant_method", "quantized"))
        if get("load_in_4bit", False):
            quantization = f"{method}-4bit-{get('bnb_4bit_quant_type', 'fp4')}"
        elif get("load_in_8bit", False):
            quantization = f"{method}-8bit"
        else:
            quantization = method
    elif getattr(model, "is_loaded_in_4bit", False):
        quantization = "bitsandbytes-4bit"
    elif getattr(model, "is_loaded_in_8bit", False):
        quantization = "bitsandbytes-8bit"
    return {"dtype": str(dtype) if dtype is not None else None, "quantization": quantization}


def _named_tensors(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of the state dict, by name, in a fixed order; offloaded ones from accelerate's map."""
    offloaded = _offloaded(model)
    state = model.state_dict()  # views of the weights (no copies); bitsandbytes adds its quant state
    for name in sorted(state):
        tensor = state[name]
        if tensor.is_meta and name in offloaded:
            tensor = offloaded[name]
        yield name, tensor


def _offloaded(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Weights accelerate keeps off the model (CPU or disk offload), by state-dict name."""
    found: dict[str, torch.Tensor] = {}
    for prefix, module in model.named_modules():
        weights = getattr(getattr(module, "_hf_hook", None), "weights_map", None)
        if weights is None:
            continue
        for name, _ in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            try:
                value = weights[name]
            except (KeyError, TypeError):
                continue
            if isinstance(value, torch.Tensor) and not value.is_meta:
                found[f"{prefix}.{name}" if prefix else name] = value
    return found


def _sample_and_sum(tensor: torch.Tensor) -> tuple[bytes, int]:
    """The raw bytes of a strided sample of ``tensor``, and the exact sum of all its raw bits."""
    flat = tensor.detach()
    flat = flat.view(-1) if flat.is_contiguous() else flat.reshape(-1)
    if flat.numel() == 0:
        return b"", 0
    bits = flat.view(_BITS.get(flat.element_size(), torch.uint8)) if flat.dtype != torch.bool else flat.byte()
    step = max(1, (bits.numel() - 1) // (SAMPLE_PER_TENSOR - 1))
    sample = torch.cat([bits[::step][:SAMPLE_PER_TENSOR], bits[-1:]]).cpu()
    total = int(bits.sum(dtype=torch.int64).item())
    return sample.numpy().tobytes(), total
