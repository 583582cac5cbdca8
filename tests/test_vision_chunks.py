"""Chunked vision encoding: the same logits and tokens as transformers' all-at-once encoding, less memory."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from molmo_nb_utils import INPUT_DIR, prepare_inputs, user_message
from molmo_nb_utils.vision_chunks import (
    VISION_CHUNK,
    check_vision_chunk,
    chunk_bounds,
    chunk_vision,
    vision_chunk_size,
)


@contextmanager
def _chunked(model, chunk_size):
    """chunk_vision for the test, then the model as it was (the tiny model is shared by the session)."""
    before = vision_chunk_size(model)
    try:
        yield chunk_vision(model, chunk_size)
    finally:
        chunk_vision(model, before)


def _vit_batches(model, inputs, chunk_size) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """(last-position logits, 12 greedy new tokens, crops per vision tower call) with ``chunk_size``."""
    sizes: list[int] = []
    hook = model.model.vision_tower.register_forward_hook(lambda m, args, out: sizes.append(args[0].shape[0]))
    try:
        with _chunked(model, chunk_size), torch.inference_mode():
            logits = model(**inputs).logits[0, -1]
            tokens = model.generate(**inputs, max_new_tokens=12, min_new_tokens=12, do_sample=False)
    finally:
        hook.remove()
    return logits, tokens, sizes


def _same_outputs(model, inputs, chunk_size) -> list[int]:
    logits, tokens, whole_sizes = _vit_batches(model, inputs, None)
    chunk_logits, chunk_tokens, sizes = _vit_batches(model, inputs, chunk_size)
    # fp32 on the CPU: a matrix product over fewer rows may round its last bit differently, nothing more
    torch.testing.assert_close(chunk_logits, logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(chunk_tokens, tokens) and tokens.shape[1] == inputs["input_ids"].shape[1] + 12
    crops = (inputs.get("pixel_values", inputs.get("pixel_values_videos"))).shape[0]
    assert whole_sizes == [crops, crops]  # the forward and generate's prefill, all crops at once
    assert sum(sizes) == 2 * crops
    return sizes[: len(sizes) // 2]


def test_video_frames_in_chunks_give_the_same_answer(tiny_model):
    model, processor = tiny_model
    video = INPUT_DIR / "moving_objects.mp4"  # 4 s: 9 frames at 2 fps
    inputs = prepare_inputs(processor, [user_message(video, text="What happens?")])
    assert inputs["pixel_values_videos"].shape[0] == 9
    assert _same_outputs(model, inputs, 4) == [4, 4, 1]
    assert _same_outputs(model, inputs, 1) == [1] * 9


def test_several_images_in_chunks_give_the_same_answer(tiny_model):
    model, processor = tiny_model
    images = [INPUT_DIR / name for name in ("coins.jpg", "hubble_deep_field.jpg", "cat.jpg")]
    inputs = prepare_inputs(processor, [user_message(*images, text="Compare the images.")])
    crops = inputs["image_num_crops"].tolist()
    assert crops == [3, 7, 3]  # a global crop and 2, 6, 2 high-resolution crops that pool across each other
    # chunks of at most 4 crops, but an image's high-resolution crops stay together (6 > 4)
    assert _same_outputs(model, inputs, 4) == [4, 6, 3]
    assert _same_outputs(model, inputs, 1) == [1, 2, 1, 6, 1, 2]


def test_chunk_bounds_never_cut_a_pooling_window():
    patches = 4  # crops of 4 patches; rows are tokens, -1 pads a token's window
    pooling = torch.tensor(
        [
            [0, 1, -1, -1],  # crop 0
            [4, 5, 8, 9],  # crops 1 and 2
            [10, 11, -1, -1],  # crop 2
            [12, 20, -1, -1],  # crops 3 and 5
            [16, -1, -1, -1],  # crop 4 (inside the span above)
            [-1, -1, -1, -1],  # a padding token: no crop
            [24, 25, 26, 27],  # crop 6
        ]
    )
    assert chunk_bounds(pooling, 7, patches, 1) == [0, 1, 3, 6, 7]
    assert chunk_bounds(pooling, 7, patches, 2) == [0, 1, 3, 6, 7]
    assert chunk_bounds(pooling, 7, patches, 3) == [0, 3, 6, 7]
    assert chunk_bounds(pooling, 7, patches, 100) == [0, 7]
    assert chunk_bounds(torch.empty(0, 4, dtype=torch.long), 3, patches, 2) == [0, 2, 3]


def test_chunked_features_equal_the_originals_with_padding_tokens(tiny_model):
    """Tokens with no patch at all (all -1) are dropped by the adapter; chunking drops the same ones."""
    model, processor = tiny_model
    inputs = prepare_inputs(processor, [user_message(INPUT_DIR / "coins.jpg", text="Count.")])
    pooling = inputs["image_token_pooling"].clone()
    pooling[5] = -1
    grids = torch.tensor([[pooling.shape[0] - 1, 1, 0, 0]])  # one image of the tokens that remain
    whole = model.model.get_image_features(inputs["pixel_values"], pooling, grids)
    with _chunked(model, 1):
        parts = model.model.get_image_features(inputs["pixel_values"], pooling, grids)
    assert parts.last_hidden_state is None  # not kept: that is the memory chunking saves
    (whole_features,), (chunked_features,) = whole.pooler_output, parts.pooler_output
    assert chunked_features.shape == whole_features.shape == (pooling.shape[0] - 1, 32)
    torch.testing.assert_close(chunked_features, whole_features, rtol=1e-5, atol=1e-6)


def test_chunk_vision_is_set_and_undone_on_the_instance(tiny_model):
    model, _ = tiny_model
    with _chunked(model, 3):
        assert vision_chunk_size(model) == 3
        assert "get_image_features" in vars(model.model)  # this model only; the class stays untouched
        chunk_vision(model, None)
        assert vision_chunk_size(model) is None and "get_image_features" not in vars(model.model)
        assert chunk_vision(model) is model and vision_chunk_size(model) == VISION_CHUNK
        assert vision_chunk_size(model.model) == VISION_CHUNK  # the inner Molmo2Model works too


def test_bad_chunk_sizes_and_models_get_clear_errors(tiny_model):
    model, _ = tiny_model
    before = vision_chunk_size(model)
    for bad in (0, -3, 2.5, "8", True):
        with pytest.raises(ValueError, match=r"chunk_size must be a whole number >= 1 .* or None \(all"):
            chunk_vision(model, bad)
    assert vision_chunk_size(model) == before  # a refused call changes nothing
    # the same check, for load_model to call before it loads anything
    check_vision_chunk(None)
    check_vision_chunk(4)
    with pytest.raises(ValueError, match="vision_chunk must be a whole number >= 1 .* or None"):
        check_vision_chunk(0, "vision_chunk")
    with pytest.raises(TypeError, match="needs a Molmo2 model .* got Linear"):
        chunk_vision(torch.nn.Linear(2, 2), 4)
