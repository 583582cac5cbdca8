"""Encode video frames and image crops a few at a time, so that long videos fit on small GPUs.

transformers' ``Molmo2Model.get_image_features`` pushes every crop or frame through the ViT in one batch and
keeps the output of every ViT layer until the adapter has read two of them: for 121 frames of Molmo2-4B the
planner puts that at about 7 GiB in 16-bit, more than the KV cache of the whole prompt (`make gpu-check`
measured 1.30 GiB for 24 frames on a CPU, 0.44 GiB 8 at a time). Every crop or frame is encoded on its own
(ViT attention never crosses crops), and every visual token is pooled from its own few patches, so the same
work can be done a chunk of crops at a time with the same result: the peak is set by the chunk, not the video.

One subtlety: the adapter's ``image_token_pooling`` indices point into the patches of *all* crops, and the
pooling windows of an image's high-resolution crops straddle their overlap (one token can pool from crops 1
and 5). So a chunk ends only where no token pools from both sides; the indices are shifted to the chunk.

    chunk_vision(model)        # at most VISION_CHUNK crops or frames at a time
    chunk_vision(model, None)  # back to transformers' own all-at-once encoding
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from transformers import Molmo2Model
from transformers.modeling_outputs import BaseModelOutputWithPooling

from molmo_nb_utils.checks import positive_int_or_none

# Frames (or crops) per chunk: 8 frames of 729 patches are 5,832 positions per ViT batch, and a working set
# under 0.5 GiB in 16-bit. An image's 8 high-resolution crops (the default max_crops) fit one chunk.
VISION_CHUNK = 8
_ATTRIBUTE = "get_image_features"  # the one method we replace, on the instance (the class stays untouched)


def _inner_model(model: Any):
    """The Molmo2Model inside a Molmo2ForConditionalGeneration (or the Molmo2Model itself)."""
    inner = getattr(model, "model", model)
    if not isinstance(inner, Molmo2Model):
        raise TypeError(
            f"chunk_vision needs a Molmo2 model (Molmo2ForConditionalGeneration or Molmo2Model), got "
            f"{type(model).__name__}"
        )
    return inner


def check_vision_chunk(chunk_size: Any, name: str = "chunk_size") -> None:
    """Raise a clear error unless ``chunk_size`` is a whole number >= 1 or None (all at once): call it before
    a long model load, so that a bad value fails at once."""
    positive_int_or_none(chunk_size, name, "all crops or frames at once")


def chunk_vision(model: Any, chunk_size: int | None = VISION_CHUNK):
    """Make ``model`` encode at most ``chunk_size`` crops or frames at a time; None encodes all at once
    (transformers' own code). Outputs are the same either way; only the peak memory changes. Returns the model.

    An image's high-resolution crops are encoded together even if they are more than ``chunk_size`` (their
    pooling windows overlap), as is everything the adapter needs at once.
    """
    check_vision_chunk(chunk_size)
    inner = _inner_model(model)
    inner.__dict__.pop(_ATTRIBUTE, None)  # back to the class's method
    if chunk_size is not None:
        setattr(inner, _ATTRIBUTE, functools.partial(_chunked_image_features, inner, chunk_size))
    return model


def vision_chunk_size(model: Any) -> int | None:
    """The chunk size set by chunk_vision, or None when the model encodes all crops/frames at once."""
    method = _inner_model(model).__dict__.get(_ATTRIBUTE)
    return method.args[1] if isinstance(method, functools.partial) else None


def chunk_bounds(token_pooling: Any, num_crops: int, patches_per_crop: int, chunk_size: int) -> list[int]:
    """Crop indices where chunks start and end: ``[0, ..., num_crops]``. A chunk holds at most ``chunk_size``
    crops unless a token pools from crops further apart; it never cuts between two crops one token reads."""
    valid = token_pooling >= 0
    crop = torch.div(token_pooling.clamp(min=0), patches_per_crop, rounding_mode="floor").long()
    first = torch.where(valid, crop, num_crops).amin(-1)
    last = torch.where(valid, crop, -1).amax(-1)
    spanning = valid.any(-1) & (last > first)
    # tokens_across[k]: how many tokens pool from both crop k-1 and crop k, i.e. forbid a cut before crop k
    steps = torch.zeros(num_crops + 2, dtype=torch.long, device=crop.device)
    steps.index_add_(0, first[spanning] + 1, torch.ones_like(first[spanning]))
    steps.index_add_(0, last[spanning] + 1, -torch.ones_like(last[spanning]))
    tokens_across = steps.cumsum(0)[: num_crops + 1].tolist()
    cuts = [k for k in range(1, num_crops + 1) if tokens_across[k] == 0]  # num_crops is always one
    bounds = [0]
    while bounds[-1] < num_crops:
        later = [k for k in cuts if k > bounds[-1]]
        within = [k for k in later if k <= bounds[-1] + chunk_size]
        bounds.append(within[-1] if within else later[0])  # the largest chunk allowed, or the smallest
    return bounds


def _chunked_image_features(
    self: Any,
    chunk_size: int,
    pixel_values: Any,
    image_token_pooling: Any,
    image_grids: Any,
    image_num_crops: Any = None,
    **kwargs: Any,
):
    """``Molmo2Model.get_image_features``, a chunk of crops at a time (same arguments, same pooler_output).

    The ViT's last hidden state is not returned (last_hidden_state is None): keeping it for every crop is
    the memory this saves, and Molmo2's forward only reads the pooled features. Since transformers 5.25
    each image's (or video's) pooling indices count from its own first patch, with ``image_num_crops``
    telling where each starts; they are shifted to count over all crops, as transformers does.
    """
    kwargs.pop("return_dict", None)  # the ViT's output is read by attribute below
    pixel_values = pixel_values.reshape(-1, *pixel_values.shape[-2:])  # (batch,) crops, patches, pixels
    num_crops, patches = pixel_values.shape[:2]
    split_sizes = image_grids[:, 0] * image_grids[:, 1] + image_grids[:, 2] * image_grids[:, 3]
    if image_grids.shape[0] > 1 and image_num_crops is not None:
        per_image = image_num_crops * patches
        offsets = (per_image.cumsum(0) - per_image).repeat_interleave(
            split_sizes, output_size=image_token_pooling.shape[0]
        )
        image_token_pooling = torch.where(
            image_token_pooling >= 0, image_token_pooling + offsets[:, None], image_token_pooling
        )
    layers = [layer + 1 if layer >= 0 else layer for layer in self.config.adapter_config.vision_feature_layer]
    valid = image_token_pooling >= 0
    bounds = chunk_bounds(image_token_pooling, num_crops, patches, chunk_size)
    first_crop = (torch.where(valid, image_token_pooling, num_crops * patches).amin(-1) // patches).long()
    chunk_of_token = (
        torch.bucketize(first_crop, torch.tensor(bounds, device=first_crop.device), right=True) - 1
    )
    pooled = None
    for index, (start, end) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        rows = valid.any(-1) & (chunk_of_token == index)
        if not rows.any():  # crops no token reads
            continue
        vit = self.vision_tower(pixel_values[start:end], **{**kwargs, "output_hidden_states": True})
        features = torch.cat([vit.hidden_states[layer] for layer in layers], dim=-1)
        del vit  # the hidden states of every layer: free them before the adapter runs
        local = torch.where(valid[rows], image_token_pooling[rows] - start * patches, -1)
        out = self.multi_modal_projector(features, local).last_hidden_state
        if pooled is None:
            pooled = out.new_empty(image_token_pooling.shape[0], out.shape[-1])
        pooled[rows.to(pooled.device)] = out
        del features
    pooled = pooled[valid.any(-1).to(pooled.device)]
    return BaseModelOutputWithPooling(
        last_hidden_state=None, pooler_output=torch.split(pooled, split_sizes.tolist())
    )
