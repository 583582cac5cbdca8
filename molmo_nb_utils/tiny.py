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

from molmo_nb_utils.paths import REPO_ROOT

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
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

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
    from transformers import Molmo2ImageProcessor, Molmo2Processor, Molmo2VideoProcessor

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
    from transformers import Molmo2Config

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
    import torch

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


def _read_marker(folder: Path) -> dict | None:
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("files"), list) else None


def _built_here(folder: Path) -> bool:
    """Whether ``folder`` holds only plain files a build of this module wrote (an empty folder counts)."""
    marker = _read_marker(folder)
    if marker is not None:
        names = {*map(str, marker["files"]), MARKER}
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


def _is_current(folder: Path, seed: int) -> bool:
    """A finished build (config.json is moved in last) of today's weights with this seed."""
    marker = _read_marker(folder) or {}
    finished = (folder / "config.json").is_file()
    return finished and marker.get("weights_version") == WEIGHTS_VERSION and marker.get("seed") == seed


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
    import torch
    from transformers import GenerationConfig, Molmo2ForConditionalGeneration

    path = Path(path).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise TinyModelError(f"{path} is a file, not a folder: give a new folder for the tiny model")
    if path.is_dir():
        ours = _built_here(path)
        if (path / "config.json").is_file() and not overwrite and (_is_current(path, seed) or not ours):
            return path  # a finished build, or another model the caller chose: use it as it is
        if not ours:
            raise TinyModelError(
                f"{path} holds files this builder did not write, so it will not replace them: nothing was "
                "changed. Give a new or empty folder for the tiny model (e.g. downloaded_data/tiny-molmo2)."
            )
    path.parent.mkdir(parents=True, exist_ok=True)

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

    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        tmp.chmod(0o755)
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        names = sorted(entry.name for entry in tmp.iterdir())
        marker = {"built_by": "molmo_nb_utils.tiny", "weights_version": WEIGHTS_VERSION, "seed": seed}
        (tmp / MARKER).write_text(json.dumps({**marker, "files": names}, indent=1) + "\n")
        if not path.exists():
            os.replace(tmp, path)
            return path
        (path / "config.json").unlink(missing_ok=True)  # from here on the folder is no model until done
        for entry in path.iterdir():
            if entry.name not in names and entry.name != MARKER:  # a file only an older build wrote
                entry.unlink()
        for name in [MARKER, *(n for n in names if n != "config.json"), "config.json"]:
            os.replace(tmp / name, path / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


# ``load_model("tiny")`` and ``MOLMO_MODEL_ID=tiny`` mean the tiny model in ``tiny_model_dir()``.
TINY_NAME = "tiny"


def tiny_model_dir() -> Path:
    """Where ``"tiny"`` lives: ``downloaded_data/tiny-molmo2`` in a checkout (where ``make tiny`` builds it),
    else a per-user cache folder (``$XDG_CACHE_HOME`` or ``~/.cache``), so an installed package never
    writes into site-packages."""
    if (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "molmo_nb_utils").is_dir():
        return REPO_ROOT / "downloaded_data" / "tiny-molmo2"
    cache = os.environ.get("XDG_CACHE_HOME", "").strip() or "~/.cache"
    return Path(cache).expanduser() / "molmo_nb_utils" / "tiny-molmo2"


def main(argv: list[str] | None = None) -> int:
    """``python -m molmo_nb_utils.tiny [FOLDER] [--overwrite] [--seed N]``; prints the folder."""
    parser = argparse.ArgumentParser(
        prog="python -m molmo_nb_utils.tiny",
        description="Build the tiny random Molmo2 that the tests and the offline notebooks use.",
    )
    parser.add_argument(
        "folder", nargs="?", default="downloaded_data/tiny-molmo2",
        help="a new or empty folder, or one this command built before (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="rebuild a finished build in FOLDER")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the random weights (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        print(build_tiny_molmo2(args.folder, seed=args.seed, overwrite=args.overwrite))
    except TinyModelError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
