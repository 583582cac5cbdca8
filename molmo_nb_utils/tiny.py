"""A tiny, randomly initialised Molmo2 that is built offline.

Why: CI and readers without a GPU (or without access to the Hugging Face Hub) can still run
every notebook end to end through the *same* ``from_pretrained`` calls and the same processor
as ``allenai/Molmo2-4B``. The weights are random, so the answers are noise; everything else is
real: the image geometry (378 px crops of 14 px patches, up to 8 overlapping crops plus a
low-resolution view, 2x2 pooling for images, 3x3 for video frames, 2 fps), the special tokens,
the chat template and therefore the number of visual tokens a prompt costs.

Build it with ``python -m molmo_nb_utils.tiny downloaded_data/tiny-molmo2`` (``--overwrite`` to rebuild) and point
``MOLMO_MODEL_ID`` at that folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    Molmo2Config,
    Molmo2ForConditionalGeneration,
    Molmo2ImageProcessor,
    Molmo2Processor,
    Molmo2VideoProcessor,
    PreTrainedTokenizerFast,
    Sam2ImageProcessor,
    Sam2VideoConfig,
    Sam2VideoModel,
    Sam2VideoProcessor,
    Sam2VideoVideoProcessor,
)

from molmo_nb_utils.paths import DATA_DIR, REPO_ROOT

# Molmo2's special tokens, in the order the released checkpoints number them.
MEDIA_TOKENS = [
    "<im_start>",
    "<im_end>",
    "<im_patch>",
    "<im_col>",
    "<low_res_im_start>",
    "<|image|>",
    "<im_low>",
    "<frame_start>",
    "<frame_end>",
    "<|video|>",
]
CHATML_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# The released template's behaviour (allenai/Molmo2-4B, rendered by apply_chat_template), written
# anew: every image and video placeholder first, before any turn ("<|image|>" for one image,
# "Image 1<|image|>Image 2<|image|>..." for several, then one "<|video|>" per video, counted over the
# whole conversation); a message's text items joined by one space; the first user turn
# "<|im_start|>user\n{text}<|im_end|>\n", an assistant turn " <|im_start|>assistant\n{text}" (leading
# space, no end marker), a later user turn opening with "<|im_end|>\n"; roles must alternate user,
# assistant, user, ... (no system turn), as in the released template.
CHAT_TEMPLATE = (
    "{%- set count = namespace(images=0, videos=0) -%}"
    "{%- for message in messages if message['content'] is not string -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{%- set count.images = count.images + 1 -%}"
    "{%- elif item['type'] == 'video' -%}{%- set count.videos = count.videos + 1 -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- endfor -%}"
    "{%- if count.images == 1 -%}{{- '<|image|>' -}}"
    "{%- else -%}{%- for i in range(count.images) -%}{{- 'Image ' ~ (i + 1) ~ '<|image|>' -}}{%- endfor -%}"
    "{%- endif -%}"
    "{%- for i in range(count.videos) -%}{{- '<|video|>' -}}{%- endfor -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] != ('user' if loop.index0 % 2 == 0 else 'assistant') -%}"
    "{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}"
    "{%- endif -%}"
    "{%- if message['content'] is string -%}{%- set text = message['content'] -%}"
    "{%- else -%}"
    "{%- set text = message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') -%}"
    "{%- endif -%}"
    "{%- if message['role'] == 'user' -%}"
    "{%- if not loop.first -%}{{- '<|im_end|>\\n' -}}{%- endif -%}"
    "{{- '<|im_start|>user\\n' + text + '<|im_end|>\\n' -}}"
    "{%- else -%}{{- ' <|im_start|>assistant\\n' + text -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# A few lines of text in the style of Molmo2's answers, so the byte-level BPE learns merges for
# words, digits and the grounding grammar. Its content does not matter beyond that.
_CORPUS = [
    "The image shows a cat sitting on a chair next to a cup of coffee.",
    "There are 24 coins on the table. Counting the coins shows a total of 24.",
    '<points coords="1 1 308 305 2 752 377">curb ramp</points>',
    '<points coords="1 1 555 169;2 3 649 154 4 709 162">boats</points>',
    '<tracks coords="0.0 1 635 522;0.5 1 606 490 2 511 124">player</tracks>',
    "In the video, a person walks to the left and then a dog runs across the road.",
    "Image 1 and Image 2 show the same motorcycle from the left and from the right.",
    "0123456789 0.5 1.0 1.5 2.0 2.5 3.0 ; , : user assistant system",
    "What is happening in this video? Point to the penguins. How many birds are there?",
]


def _tokenizer():
    """A byte-level BPE trained in memory, with ChatML and Molmo2's media tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=CHATML_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|image|>", "video_token": "<|video|>"},
    )
    text_vocab = len(fast)
    fast.add_special_tokens({"additional_special_tokens": MEDIA_TOKENS})
    return fast, text_vocab


def _processor(tokenizer):
    half = [0.5, 0.5, 0.5]
    image_processor = Molmo2ImageProcessor(
        size={"height": 378, "width": 378},
        max_crops=8,
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


# Written into every folder this module builds, with the files it wrote, so it can tell its own folders from
# anyone else's and rebuild the ones made before the weights were last redrawn (version 1, unmarked: every
# weight at std 0.02, blind to images; 2: embeddings at std 1, which drowned the image features).
MARKER = "tiny_molmo2.json"
EMBEDDING_STD = 0.02
WEIGHTS_VERSION = 3
# What a build wrote before the marker existed.
_UNMARKED_FILES = frozenset({"chat_template.jinja", "config.json", "generation_config.json", "model.safetensors",
                             "processor_config.json", "tokenizer.json", "tokenizer_config.json"})  # fmt: skip


class TinyModelError(ValueError):
    """The tiny model cannot be written where asked; the message says what to do instead."""


def _read_marker(folder: Path, marker: str) -> dict | None:
    try:
        found = json.loads((folder / marker).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and isinstance(found.get("files"), list) else None


def _built_here(folder: Path, marker: str = MARKER) -> bool:
    """Whether ``folder`` holds only plain files a build of this module wrote (an empty folder counts)."""
    found = _read_marker(folder, marker)
    if found is not None:
        names = {*map(str, found["files"]), marker}
    elif marker != MARKER:  # only the tiny Molmo2 was ever built without a marker
        names = set()
    else:  # an older build: its files, and a 32-wide Molmo2 in config.json (or no config.json: unfinished)
        names = set(_UNMARKED_FILES)
        try:
            config = json.loads((folder / "config.json").read_text())
            if config.get("model_type") != "molmo2" or config.get("text_config", {}).get("hidden_size") != 32:
                return False
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError):
            return False
    return all(e.name in names and e.is_file() and not e.is_symlink() for e in folder.iterdir())


def _is_current(folder: Path, seed: int, marker: str = MARKER, version: int = WEIGHTS_VERSION) -> bool:
    """A finished build (config.json is moved in last) of today's weights with this seed."""
    found = _read_marker(folder, marker) or {}
    finished = (folder / "config.json").is_file()
    return finished and found.get("weights_version") == version and found.get("seed") == seed


def _reusable(path: Path, seed: int, overwrite: bool, marker: str, version: int, example: str) -> bool:
    """True when ``path`` holds a model to use as it is; raises when it may not be written; False: build."""
    if path.exists() and not path.is_dir():
        raise TinyModelError(f"{path} is a file, not a folder: give a new folder for the tiny model")
    if path.is_dir():
        ours = _built_here(path, marker)
        if (
            (path / "config.json").is_file()
            and not overwrite
            and (_is_current(path, seed, marker, version) or not ours)
        ):
            return True  # a finished build, or another model the caller chose: use it as it is
        if not ours:
            raise TinyModelError(
                f"{path} holds files this builder did not write, so it will not replace them: nothing was "
                f"changed. Give a new or empty folder for the tiny model (e.g. {example})."
            )
    return False


def _move_in(path: Path, save, marker: str, info: dict[str, Any]) -> Path:
    """``save(folder)`` into a temporary folder beside ``path``, then move the files in, ``config.json`` last.

    An interrupted build never leaves a folder that looks like a finished model; files only an older
    build of ours wrote are removed, nothing else is.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        tmp.chmod(0o755)
        save(tmp)
        names = sorted(entry.name for entry in tmp.iterdir())
        (tmp / marker).write_text(json.dumps({**info, "files": names}, indent=1) + "\n")
        if not path.exists():
            try:
                os.replace(tmp, path)
            except OSError:  # another process (a parallel test worker) finished the same build first
                if not (path / "config.json").is_file():
                    raise
            return path
        (path / "config.json").unlink(missing_ok=True)  # from here on the folder is no model until done
        for entry in path.iterdir():
            if entry.name not in names and entry.name != marker:  # a file only an older build wrote
                entry.unlink()
        for name in [marker, *(n for n in names if n != "config.json"), "config.json"]:
            os.replace(tmp / name, path / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


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
    if _reusable(path, seed, overwrite, MARKER, WEIGHTS_VERSION, "downloaded_data/tiny-molmo2"):
        return path
    tokenizer, text_vocab = _tokenizer()
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

    return _save_built(path, model, processor, MARKER, WEIGHTS_VERSION, seed)


def _save_built(path: Path, model, processor, marker: str, version: int, seed: int) -> Path:
    """Save a freshly built model and processor into ``path`` through ``_move_in`` (whole or not at all),
    marked as ours so a later build may replace it and nothing else."""

    def save(folder: Path) -> None:
        model.save_pretrained(folder)
        processor.save_pretrained(folder)

    info = {"built_by": "molmo_nb_utils.tiny", "weights_version": version, "seed": seed}
    return _move_in(path, save, marker, info)


# ---------------------------------------------------------------------------------------------
# A tiny random SAM 2 (transformers' Sam2VideoModel), for the segmentation lesson and its tests

SAM_MARKER = "tiny_sam2.json"
SAM_WEIGHTS_VERSION = 1
# Pictures are resized to this square, as the released SAM 2 resizes them to 1024x1024 (a 64x64 grid of
# 16 px patches there, 8x8 here).
TINY_SAM_IMAGE_SIZE = 128


def _sam_config() -> Sam2VideoConfig:
    """SAM 2's architecture at toy sizes: a four-stage Hiera of 5 blocks, 8..64 wide, at 128 px.

    Some sizes are not free: the memory encoder's output (64 channels) is hard-wired into the memory
    attention, and the decoder must be wider than it (128 here, 256 in the release) so object pointers
    are split into memory-sized tokens, as the released models do. A stage's first block pools with the
    previous stage's window, so no global-attention block may start a stage.
    """
    size = TINY_SAM_IMAGE_SIZE
    hidden = 128
    return Sam2VideoConfig(
        vision_config=dict(
            model_type="sam2_vision_model",
            backbone_config=dict(
                model_type="sam2_hiera_det_model",
                hidden_size=8,
                num_attention_heads=1,
                image_size=[size, size],
                blocks_per_stage=[1, 1, 2, 1],
                embed_dim_per_stage=[8, 16, 32, 64],
                num_attention_heads_per_stage=[1, 1, 2, 2],
                window_size_per_stage=[4, 4, 4, 2],
                global_attention_blocks=[3],
                window_positional_embedding_background_size=[2, 2],
            ),
            backbone_channel_list=[64, 32, 16, 8],
            backbone_feature_sizes=[[size // 4] * 2, [size // 8] * 2, [size // 16] * 2],
            fpn_hidden_size=hidden,
        ),
        prompt_encoder_config=dict(hidden_size=hidden, image_size=size, patch_size=16),
        mask_decoder_config=dict(
            hidden_size=hidden, mlp_dim=128, num_attention_heads=2, iou_head_hidden_dim=64
        ),
        image_size=size,
        num_maskmem=3,
        max_object_pointers_in_encoder=4,
        memory_attention_hidden_size=hidden,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=128,
        memory_attention_rope_feat_sizes=[size // 16, size // 16],
        memory_encoder_hidden_size=hidden,
        memory_encoder_output_channels=64,
        mask_downsampler_embed_dim=hidden,
        memory_fuser_embed_dim=hidden,
        memory_fuser_intermediate_dim=128,
    )


def _sam_processor() -> Sam2VideoProcessor:
    """The released processor's settings at the tiny size: pictures and prompt points scaled to 128 px."""
    size = {"height": TINY_SAM_IMAGE_SIZE, "width": TINY_SAM_IMAGE_SIZE}
    return Sam2VideoProcessor(
        image_processor=Sam2ImageProcessor(size=size),
        video_processor=Sam2VideoVideoProcessor(size=size),
        target_size=TINY_SAM_IMAGE_SIZE,
        point_pad_value=-10,
    )


def build_tiny_sam2(path: str | Path, *, seed: int = 0, overwrite: bool = False) -> Path:
    """Build and save a tiny random SAM 2 (``Sam2VideoModel`` and ``Sam2VideoProcessor``) to ``path``.

    Why: the segmentation lesson and its tests run offline through the same ``from_pretrained`` calls as
    ``facebook/sam2.1-hiera-tiny``, in well under a second per video; its masks are noise. The rules of
    ``build_tiny_molmo2`` hold: reused when current, nothing it did not write is deleted, moved in last.
    """
    path = Path(path).expanduser().absolute()
    if _reusable(path, seed, overwrite, SAM_MARKER, SAM_WEIGHTS_VERSION, "downloaded_data/tiny-sam2"):
        return path
    torch.manual_seed(seed)
    model = Sam2VideoModel(_sam_config()).eval()
    processor = _sam_processor()

    return _save_built(path, model, processor, SAM_MARKER, SAM_WEIGHTS_VERSION, seed)


# ``load_model("tiny")`` and ``MOLMO_MODEL_ID=tiny`` mean the tiny model in ``tiny_model_dir()``;
# ``load_segmenter("tiny")`` and ``MOLMO_SEGMENTER_ID=tiny`` the tiny SAM 2 in ``tiny_segmenter_dir()``.
TINY_NAME = "tiny"


def _tiny_dir(name: str) -> Path:
    if (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "molmo_nb_utils").is_dir():
        return DATA_DIR / name  # downloaded_data/, unless $MOLMO_DATA_DIR moves it (the tests do)
    cache = os.environ.get("XDG_CACHE_HOME", "").strip() or "~/.cache"
    return Path(cache).expanduser() / "molmo_nb_utils" / name


def tiny_model_dir() -> Path:
    """Where ``"tiny"`` lives: ``downloaded_data/tiny-molmo2`` in a checkout (where ``make tiny`` builds it;
    ``$MOLMO_DATA_DIR/tiny-molmo2`` when that variable moves the data folder), else a per-user cache folder
    (``$XDG_CACHE_HOME`` or ``~/.cache``), so an installed package never writes into site-packages."""
    return _tiny_dir("tiny-molmo2")


def tiny_segmenter_dir() -> Path:
    """Where the segmenter ``"tiny"`` lives: ``downloaded_data/tiny-sam2``, or the cache as ``tiny_model_dir``."""
    return _tiny_dir("tiny-sam2")


def is_tiny_molmo2(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a tiny Molmo2 built here (it holds this module's marker)."""
    return _read_marker(Path(folder), MARKER) is not None


def main(argv: list[str] | None = None) -> int:
    """``python -m molmo_nb_utils.tiny [FOLDER] [--segmenter] [--overwrite] [--seed N]``; prints the folder."""
    parser = argparse.ArgumentParser(
        prog="python -m molmo_nb_utils.tiny",
        description="Build the tiny random Molmo2 (or, with --segmenter, SAM 2) that the tests and the "
        "offline notebooks use.",
    )
    parser.add_argument(
        "folder", nargs="?", default=None,
        help="a new or empty folder, or one this command built before (default: downloaded_data/tiny-molmo2, "
        "or downloaded_data/tiny-sam2 with --segmenter)",
    )  # fmt: skip
    parser.add_argument("--segmenter", action="store_true", help="build the tiny SAM 2 instead of Molmo2")
    parser.add_argument("--overwrite", action="store_true", help="rebuild a finished build in FOLDER")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the random weights (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    build = build_tiny_sam2 if args.segmenter else build_tiny_molmo2
    folder = args.folder or ("downloaded_data/tiny-sam2" if args.segmenter else "downloaded_data/tiny-molmo2")
    try:
        print(build(folder, seed=args.seed, overwrite=args.overwrite))
    except TinyModelError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
