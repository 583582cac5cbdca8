"""Molmo2's module names, stated once: what LoRA adapts, what stays 16-bit under QLoRA.

Why a module of its own: training (which layers get LoRA), memory (how many LoRA weights that is)
and loading (what bitsandbytes must not quantize) all name the same modules of
``Molmo2ForConditionalGeneration``; written in one place they cannot drift apart when transformers
renames a layer. The names are those of transformers 5.2x's ``modeling_molmo2``.
"""

from __future__ import annotations

__all__ = [
    "CONNECTOR_MODULES",
    "LANGUAGE_MODULES",
    "SIXTEEN_BIT_MODULES",
    "lora_target_modules",
]

# The language model's linear layers (attention and MLP projections) and the output head: what LoRA adapts.
LANGUAGE_MODULES = r"model\.language_model\.layers\.\d+\.(self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj|lm_head"
# The vision connector's projections: adapted too with train_connector=True. The ViT itself stays frozen.
CONNECTOR_MODULES = r"model\.multi_modal_projector\.[\w.]*_proj"
# Kept 16-bit when the language model is quantized (QLoRA, 8-bit): the ViT, the connector and the head.
SIXTEEN_BIT_MODULES = ("vision_tower", "multi_modal_projector", "lm_head")


def lora_target_modules(*, train_connector: bool = False) -> str:
    """The full-name regular expression of the layers LoRA adapts (peft's ``target_modules``)."""
    modules = LANGUAGE_MODULES + (f"|{CONNECTOR_MODULES}" if train_connector else "")
    return rf"^({modules})$"
