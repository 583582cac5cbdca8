"""A tiny, randomly initialised Molmo2 (and SAM 2) that is built offline.

Why: CI and readers without a GPU (or without access to the Hugging Face Hub) can still run every
notebook end to end through the *same* ``from_pretrained`` calls and the same processor as
``allenai/Molmo2-4B``. The weights are random, so the answers are noise; everything else is real:
the image geometry (378 px crops of 14 px patches, up to 8 overlapping crops plus a low-resolution
view, 2x2 pooling for images, 3x3 for video frames, 2 fps), the special tokens, the chat template and
therefore the number of visual tokens a prompt costs. One module per job:

* ``tokenizer``: Molmo2's special tokens, the released chat template's behaviour, a BPE trained in memory.
* ``molmo2``: the processor, config and weights; ``build_tiny_molmo2``.
* ``sam2``: SAM 2's architecture at toy sizes; ``build_tiny_sam2``.
* ``folders``: where ``"tiny"`` lives (``tiny_model_dir``), and the marker by which a build knows its
  own folders: nothing it did not write is ever deleted, and a build is moved in ``config.json`` last.
* ``cli``: ``python -m molmo_nb_utils.tiny [FOLDER] [--segmenter] [--overwrite] [--seed N]``.

Point ``MOLMO_MODEL_ID`` at the folder (or set it to ``tiny``). Every name is importable from
``molmo_nb_utils.tiny`` as before the split.
"""

from molmo_nb_utils.tiny.cli import main
from molmo_nb_utils.tiny.folders import (
    MARKER,
    TINY_NAME,
    TinyModelError,
    is_tiny_molmo2,
    tiny_model_dir,
    tiny_segmenter_dir,
)
from molmo_nb_utils.tiny.molmo2 import EMBEDDING_STD, WEIGHTS_VERSION, build_tiny_molmo2
from molmo_nb_utils.tiny.sam2 import SAM_MARKER, SAM_WEIGHTS_VERSION, TINY_SAM_IMAGE_SIZE, build_tiny_sam2
from molmo_nb_utils.tiny.tokenizer import CHAT_TEMPLATE, CHATML_TOKENS, MEDIA_TOKENS

__all__ = [
    "CHATML_TOKENS",
    "CHAT_TEMPLATE",
    "EMBEDDING_STD",
    "MARKER",
    "MEDIA_TOKENS",
    "SAM_MARKER",
    "SAM_WEIGHTS_VERSION",
    "TINY_NAME",
    "TINY_SAM_IMAGE_SIZE",
    "WEIGHTS_VERSION",
    "TinyModelError",
    "build_tiny_molmo2",
    "build_tiny_sam2",
    "is_tiny_molmo2",
    "main",
    "tiny_model_dir",
    "tiny_segmenter_dir",
]
