"""``transformers serve`` with the one fix that lets Molmo2 be asked about videos (``make serve VIDEO_FIX=1``).

Why it exists: transformers serve 5.25 counts every image-text-to-text model as an audio model too (Molmo2's
``model_type`` is in ``MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES``, which includes all of them), so for a request
with a video it calls ``apply_chat_template(..., load_audio_from_video=True)``, which reads an audio track from
each video (huggingface/transformers#39076). Molmo2 has no audio input, and a video given as its frames (a list
of images, how ``server_chat`` sends the frames the package's rule picks) has no audio track to read: the request
fails with HTTP 500. This module tells the server that Molmo2 is an image and video model, nothing else, and
then runs transformers' own command line unchanged: ``python -m molmo_nb_utils.serving.molmo2_video serve ...``
takes the arguments of ``transformers serve ...``.
"""

from __future__ import annotations

import sys

from transformers.cli.serving.model_manager import ModelLoader
from transformers.cli.serving.utils import Modality
from transformers.cli.transformers import main

_modality = ModelLoader.get_model_modality


def _modality_without_audio(config, processor=None):
    """Molmo2 reads images and videos, never audio; every other model as transformers says."""
    if getattr(config, "model_type", None) == "molmo2":
        return Modality.VLM
    return _modality(config, processor)


ModelLoader.get_model_modality = staticmethod(_modality_without_audio)

if __name__ == "__main__":  # the server's model process imports this module again: it must not start a server
    sys.argv = ["transformers", *sys.argv[1:]]
    sys.exit(main())
