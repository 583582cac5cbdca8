"""A tiny, randomly initialised Molmo2 with the released processor's geometry, built offline."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    GenerationConfig,
    Molmo2Config,
    Molmo2ForConditionalGeneration,
    Molmo2ImageProcessor,
    Molmo2Processor,
    Molmo2VideoProcessor,
)

from molmo_nb_utils.media import DEFAULT_MAX_CROPS
from molmo_nb_utils.tiny.folders import MARKER, reusable, save_built
from molmo_nb_utils.tiny.tokenizer import CHAT_TEMPLATE, MEDIA_TOKENS, build_tokenizer

__all__ = ["EMBEDDING_STD", "WEIGHTS_VERSION", "build_tiny_molmo2"]

# The weights' version, in every build's marker: a build of an older one is rebuilt (version 1, unmarked:
# every weight at std 0.02, blind to images; 2: embeddings at std 1, which drowned the image features).
WEIGHTS_VERSION = 3
EMBEDDING_STD = 0.02


def _processor(tokenizer):
    half = [0.5, 0.5, 0.5]
    image_processor = Molmo2ImageProcessor(
        size={"height": 378, "width": 378},
        max_crops=DEFAULT_MAX_CROPS,
        overlap_margins=[4, 4],
        patch_size=14,
        pooling_size=[2, 2],
        image_mean=half,
        image_std=half,
    )
    video_processor = Molmo2VideoProcessor(
        size={"height": 378, "width": 378},
        patch_size=14,
        pooling_size=[3, 3],
        max_fps=2,
        num_frames=384,
        image_mean=half,
        image_std=half,
    )
    return Molmo2Processor(
        image_processor=image_processor,
        video_processor=video_processor,
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
        image_use_col_tokens=True,
        use_single_crop_col_tokens=False,
        use_single_crop_start_token=True,
        video_use_col_tokens=False,
        use_frame_special_tokens=False,
    )


def _config(tokenizer, text_vocab: int):
    ids = dict(zip(MEDIA_TOKENS, tokenizer.convert_tokens_to_ids(MEDIA_TOKENS), strict=True))
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    return Molmo2Config(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=16,
            image_size=[378, 378],
            patch_size=14,
        ),
        adapter_config=dict(
            vision_feature_layer=[-1, -2],
            hidden_size=32,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=16,
            intermediate_size=64,
            text_hidden_size=32,
        ),
        text_config=dict(
            hidden_size=32,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            num_hidden_layers=2,
            intermediate_size=64,
            vocab_size=text_vocab,
            additional_vocab_size=len(MEDIA_TOKENS),
            max_position_embeddings=36864,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        ),
        image_start_token_id=ids["<im_start>"],
        low_res_image_start_token_id=ids["<low_res_im_start>"],
        image_end_token_id=ids["<im_end>"],
        image_patch_id=ids["<im_patch>"],
        frame_start_token_id=ids["<frame_start>"],
        frame_end_token_id=ids["<frame_end>"],
        bos_token_id=im_end,
        eos_token_id=im_end,
        pad_token_id=pad,
    )


def _draw_weights(model, seed: int) -> None:
    """Draw the weights so that activations, image features and logits are of order 1, and the model sees.

    Why: transformers' default (every weight at std 0.02) on 32-wide layers shrinks each layer's output ~30
    times, so the image features reaching the language model were ~1e-7: the model was blind to its images,
    its head too weak ever to be confident, and no test comparing answers across inputs meant anything.
    A linear layer drawn at std 1/sqrt(fan_in) keeps the scale of its input (LeCun's rule), biases start at
    0, norms at weight 1. Embeddings (tokens, the ViT's patch positions) stay small (std 0.02): a norm follows
    each, so they set no scale, and at an image position the image's features (of order 1) then outweigh the
    patch token's embedding, as a trained model's do. One generator, in the model's fixed module order: the
    same seed gives the same bytes.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0.0, module.in_features**-0.5, generator=generator)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, torch.nn.Embedding):
                module.weight.normal_(0.0, EMBEDDING_STD, generator=generator)
        model.model.vision_tower.positional_embedding.normal_(0.0, EMBEDDING_STD, generator=generator)


def build_tiny_molmo2(path: str | Path, *, seed: int = 0, overwrite: bool = False) -> Path:
    """Build and save a tiny random Molmo2 (model, processor, tokenizer) to ``path``; return the folder.

    The folder loads with ``AutoModelForImageTextToText.from_pretrained`` and
    ``AutoProcessor.from_pretrained`` like a Hub checkpoint. Building twice with the same seed gives
    the same bytes. A finished, current build in ``path`` is reused (``overwrite=True`` builds it
    again); one of older weights is rebuilt; another model's folder is used as it is.

    Nothing this function did not write is ever deleted: ``path`` must be new, empty, or a folder it
    built, otherwise ``TinyModelError`` says so before anything is built. The model is built in a
    temporary folder beside ``path`` and moved in file by file, ``config.json`` last, so an interrupted
    build never leaves a folder that looks like a finished model.
    """
    path = Path(path).expanduser().absolute()
    if reusable(path, seed, overwrite, MARKER, WEIGHTS_VERSION, "downloaded_data/tiny-molmo2"):
        return path
    tokenizer, text_vocab = build_tokenizer()
    processor = _processor(tokenizer)
    config = _config(tokenizer, text_vocab)
    torch.manual_seed(seed)
    model = Molmo2ForConditionalGeneration(config).eval()
    _draw_weights(model, seed)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )

    return save_built(path, model, processor, MARKER, WEIGHTS_VERSION, seed)
