"""The official Molmo2 demo media: a registry of ``(url, sha256)``, fetched once through the cache."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from molmo_nb_utils.downloads.cache import download

__all__ = ["ASSETS", "Asset", "fetch_asset"]


@dataclass(frozen=True)
class Asset:
    """One demo file: where it lives, what to call it locally, and what it is.

    ``sha256`` None means unknown, so the file is not verified; never fill in a guessed hash.
    """

    url: str
    filename: str
    sha256: str | None  # None: unknown, not verified
    description: str
    licence: str


_CARD = "Molmo2-4B / Molmo2-8B model cards on Hugging Face (Quick Start)"
_NOT_STATED = "not stated by Ai2; used in the official examples, fine for trying the model"

# Every URL below is copied from the Quick Start examples of the allenai/Molmo2-4B and
# allenai/Molmo2-8B model cards (https://huggingface.co/allenai/Molmo2-8B, README.md), sections
# "General Video QA" / "Pointing Video QA" (penguins), "Tracking Video QA" (basketball),
# "Multi-image QA" (dog, cherry blossom) and "Multi-Image Point QA" (boats). The penguins video and
# the dog and cherry-blossom images are also used by allenai/molmo2's HF test script.
# Checksums are unknown (None: not verified): the files are not mirrored here, so nothing could
# be hashed.
ASSETS: dict[str, Asset] = {
    "penguins": Asset(
        url="https://storage.googleapis.com/oe-training-public/demo_videos/many_penguins.mp4",
        filename="many_penguins.mp4",
        sha256=None,
        description=f"Video of many penguins; 'Which animal appears?' and 'Point to the penguins.' ({_CARD})",
        licence=_NOT_STATED,
    ),
    "basketball": Asset(
        url="https://storage.googleapis.com/oe-training-public/demo_videos/arena_basketball.mp4",
        filename="arena_basketball.mp4",
        sha256=None,
        description=f"Basketball game video; 'Track the player who is dunking' with max_fps=8 ({_CARD})",
        licence=_NOT_STATED,
    ),
    "boat1": Asset(
        url="https://storage.googleapis.com/oe-training-public/demo_images/boat1.jpeg",
        filename="boat1.jpeg",
        sha256=None,
        description=f"First of two boat photos for multi-image pointing, 'Point to the boats' ({_CARD})",
        licence=_NOT_STATED,
    ),
    "boat2": Asset(
        url="https://storage.googleapis.com/oe-training-public/demo_images/boat2.jpeg",
        filename="boat2.jpeg",
        sha256=None,
        description=f"Second of two boat photos for multi-image pointing, 'Point to the boats' ({_CARD})",
        licence=_NOT_STATED,
    ),
    "dog": Asset(
        url="https://picsum.photos/id/237/536/354",
        filename="picsum_237_dog.jpg",
        sha256=None,
        description=f"Black Labrador puppy (Lorem Picsum photo 237), 'Compare these images.' ({_CARD})",
        licence="Unsplash licence (Lorem Picsum serves photos from Unsplash)",
    ),
    "cherry_blossom": Asset(
        url="https://vllm-public-assets.s3.us-west-2.amazonaws.com/vision_model_images/cherry_blossom.jpg",
        filename="cherry_blossom.jpg",
        sha256=None,
        description=f"Cherry blossoms (vLLM's public test image), 'Compare these images.' ({_CARD})",
        licence="not stated by the vLLM project's public asset bucket",
    ),
}


def fetch_asset(name: str, *, cache_dir: Path | None = None, progress: bool = True) -> Path:
    """Download (once) one of the official demo files in ``ASSETS`` and return its local path.

    The file is checked against the asset's sha256 when the registry has one; where it says None
    the checksum is unknown and the file is not verified (it is still checked to be a complete
    image or video).
    """
    asset = ASSETS.get(name)
    if asset is None:
        raise ValueError(f"Unknown asset {name!r}. Known assets: {', '.join(sorted(ASSETS))}.")
    return download(asset.url, asset.filename, sha256=asset.sha256, cache_dir=cache_dir, progress=progress)
