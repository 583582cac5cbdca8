"""Serve Molmo2 behind an OpenAI-compatible API (``transformers serve``) and prove it answers as the notebooks do.

One concern a module:

* ``launch``: the plain ``transformers serve`` command line for ``MOLMO_MODEL_ID`` (``ServeSettings``,
  ``serve_settings``), ``start_server`` (a background process, ``Server.stop``), ``main`` for ``make serve``;
  ``ServerError``.
* ``client``: ``server_chat`` (the ``openai`` client, the same messages and the same ``Answer`` as ``chat``;
  images as PNG data URLs, a video as the frames the package's rule picks, with their prompt times).
* ``parity``: ``compare_server`` (each case in process and served: same text, points, frames; why not),
  ``save_merged`` (a fine-tuned adapter folded into a plain model folder, to serve).
* ``molmo2_video``: transformers serve with the one fix Molmo2's videos need (run as a script, never imported).

The lesson is ``13_serving.ipynb``; ``scripts/benchmark_serving.py`` measures concurrent requests.
"""

from molmo_nb_utils.serving.client import ask_server, data_url, served_model, server_chat
from molmo_nb_utils.serving.launch import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    Server,
    ServerError,
    ServeSettings,
    free_port,
    main,
    serve_settings,
    start_server,
)
from molmo_nb_utils.serving.parity import ParityRow, ParityTable, compare_server, save_merged

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "ParityRow",
    "ParityTable",
    "ServeSettings",
    "Server",
    "ServerError",
    "ask_server",
    "compare_server",
    "data_url",
    "free_port",
    "main",
    "save_merged",
    "serve_settings",
    "served_model",
    "server_chat",
    "start_server",
]
