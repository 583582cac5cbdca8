"""Downloads with a cache, and the registry of the official Molmo2 demo media.

Why: notebooks re-run many times, often offline or on a flaky Colab connection. A file is fetched
once into ``downloaded_data/downloads/`` and served from there afterwards; nothing half-written or
wrong is ever cached. "Wrong" includes what HTTP cannot tell: a body cut short without a
Content-Length, or a login page served instead of a photo. One module per job:

* ``cache``: ``download`` (the cache, the checksum, the atomic rename) and ``local_path``.
* ``network``: one file streamed to disk within its limits of time and size; ``DownloadError``.
* ``verify``: is the body the image or video asked for (``sniff_kind``, a complete decode)?
* ``assets``: the official demo files (``ASSETS``, ``fetch_asset``).

Every name is importable from ``molmo_nb_utils.downloads`` as before the split.
"""

from molmo_nb_utils.downloads.assets import ASSETS, Asset, fetch_asset
from molmo_nb_utils.downloads.cache import MAX_BYTES, MAX_SECONDS, download, local_path
from molmo_nb_utils.downloads.network import DownloadError
from molmo_nb_utils.downloads.verify import sniff_kind

__all__ = [
    "ASSETS",
    "MAX_BYTES",
    "MAX_SECONDS",
    "Asset",
    "DownloadError",
    "download",
    "fetch_asset",
    "local_path",
    "sniff_kind",
]
