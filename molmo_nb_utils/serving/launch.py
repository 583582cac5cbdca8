"""Start ``transformers serve`` as a reader would: one plain command line, printed, run as a process of its own.

Why each rule is here:

* **127.0.0.1 by default.** ``transformers serve`` has no API key: anyone who can reach the port can use the
  GPU. Listening on the loopback address keeps it to this machine; lesson 13 shows how to put a key in front.
* **The precision is chosen as ``load_model`` chooses it** (bfloat16 on a GPU that has it, float16 on one that
  does not, float32 on a CPU). Left to ``--dtype auto``, the released checkpoints (stored in float32) would
  take twice the GPU memory, and the server would answer in another precision than the notebooks.
* **A port that is taken is refused before starting**: otherwise the health check would find the other server
  and take it for ours.
* **A real process, stopped for sure.** ``start_server`` waits for ``/health`` within a time limit, shows the
  server's own log when it stops while starting, and ``Server.stop`` ends the process it started (its model
  process exits with it), also when Python exits.
"""

from __future__ import annotations

import argparse
import atexit
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import openai

from molmo_nb_utils.checks import positive_int
from molmo_nb_utils.loading import _resolve, detect_hardware, model_id

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
# How long a server may take to load its model and answer /health: a 4B model from a cold disk takes minutes.
START_TIMEOUT_S = 900.0
# What ``--dtype`` each precision is, and the quantization flags of the 8-bit and 4-bit ones.
PRECISIONS = {
    "float32": ["--dtype", "float32"],
    "bfloat16": ["--dtype", "bfloat16"],
    "float16": ["--dtype", "float16"],
    "8bit": ["--dtype", "bfloat16", "--quantization", "bnb-8bit"],
    "4bit": ["--dtype", "bfloat16", "--quantization", "bnb-4bit"],
}
# The module that runs transformers' own CLI with the one fix Molmo2's videos need (see molmo2_video.py).
VIDEO_FIX_MODULE = "molmo_nb_utils.serving.molmo2_video"


class ServerError(RuntimeError):
    """A server could not be started, reached or asked; the message says why and what to do."""


@dataclass(frozen=True)
class ServeSettings:
    """One server's settings, resolved once: the model folder or Hub id, address, precision, batching."""

    model: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    precision: str = "float32"
    continuous_batching: bool = False
    video_fix: bool = False

    @property
    def base_url(self) -> str:
        """What an ``openai.OpenAI`` client is given: the server's address with ``/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def command(self) -> list[str]:
        """The plain command line, as a reader types it."""
        line = ["transformers", "serve", self.model, "--host", self.host, "--port", str(self.port)]
        line += PRECISIONS[self.precision]
        return line + (["--continuous-batching"] if self.continuous_batching else [])

    @property
    def argv(self) -> list[str]:
        """What actually runs: that command line, through this Python's transformers (``video_fix``: with
        the one fix for Molmo2's videos, see ``molmo2_video``)."""
        if self.video_fix:
            return [sys.executable, "-m", VIDEO_FIX_MODULE, *self.command[1:]]
        script = Path(sys.executable).with_name("transformers")
        if script.is_file():
            return [str(script), *self.command[1:]]
        # no script beside this Python (an environment layered on another one): the same entry point, never
        # another Python's transformers found on PATH
        return [sys.executable, "-m", "transformers.cli.transformers", *self.command[1:]]

    def describe(self) -> str:
        """The command line to print, and what ``video_fix`` adds to it."""
        line = " ".join(self.command)
        if self.video_fix:
            line += (
                f"\n  (run as `python -m {VIDEO_FIX_MODULE} serve ...`: transformers serve with one fix, so that "
                "Molmo2 can be asked about videos; see molmo_nb_utils/serving/molmo2_video.py)"
            )
        return line


def serve_settings(
    model: str | os.PathLike | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    precision: str = "auto",
    continuous_batching: bool = False,
    video_fix: bool = False,
) -> ServeSettings:
    """The settings of a server for ``model`` (default ``MOLMO_MODEL_ID``; ``"tiny"`` builds the tiny model).

    ``precision``: ``"auto"`` (as ``load_model`` picks it), ``"float32"``, ``"bfloat16"``, ``"float16"``,
    ``"8bit"`` or ``"4bit"`` (bitsandbytes, on a GPU).
    """
    source, _ = _resolve(str(model) if model else model_id())  # make passes "" when MOLMO_MODEL_ID is unset
    if precision == "auto":
        precision = detect_hardware().dtype_name
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be 'auto' or one of {sorted(PRECISIONS)}, got {precision!r}")
    port = positive_int(port, "port")
    if port > 65535:
        raise ValueError(f"port must be at most 65535, got {port}")
    return ServeSettings(source, host, port, precision, bool(continuous_batching), bool(video_fix))


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port nothing listens on now, chosen by the system."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _check_port_free(host: str, port: int) -> None:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as err:
            raise ServerError(
                f"Port {port} on {host} is taken ({err.strerror}): another server may be running there. Stop it, "
                "or choose another port (make serve PORT=8001, or start_server(port=...))."
            ) from None


def _healthy(settings: ServeSettings) -> bool:
    try:
        with urllib.request.urlopen(f"http://{settings.host}:{settings.port}/health", timeout=2) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


@dataclass(frozen=True)
class Server:
    """A running ``transformers serve`` process that this Python started: its address, its log, ``stop()``."""

    settings: ServeSettings
    process: subprocess.Popen = field(repr=False)
    log: Path

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    @property
    def model(self) -> str:
        """The model name requests must give (the server answers only to the one it was started with)."""
        return self.settings.model

    def client(self, *, timeout: float = 600.0, max_retries: int = 0) -> openai.OpenAI:
        """An ``openai.OpenAI`` client for this server. No retries by default: a refused request is refused
        again, and a timed-out one would take three times as long."""
        return openai.OpenAI(base_url=self.base_url, api_key="none", timeout=timeout, max_retries=max_retries)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the server wrote (its log file)."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` s); its model process exits with it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_server(
    model: str | os.PathLike | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int | None = None,
    precision: str = "auto",
    continuous_batching: bool = False,
    video_fix: bool = False,
    timeout: float = START_TIMEOUT_S,
    quiet: bool = False,
) -> Server:
    """Start ``transformers serve`` in the background and wait until it answers; return the ``Server``.

    ``port=None`` takes a free one. The command line is printed (unless ``quiet``); the server's output goes
    to a log file (``Server.log``). Use it as ``with start_server() as server: ...`` or call
    ``server.stop()``; it is stopped when Python exits in any case.
    """
    settings = serve_settings(
        model,
        host=host,
        port=free_port(host) if port is None else port,
        precision=precision,
        continuous_batching=continuous_batching,
        video_fix=video_fix,
    )
    _check_port_free(settings.host, settings.port)
    if not quiet:
        print(settings.describe())
    log = Path(tempfile.mkstemp(prefix=f"transformers-serve-{settings.port}-", suffix=".log")[1])
    with log.open("wb") as out:
        process = subprocess.Popen(
            settings.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    server = Server(settings, process, log)
    atexit.register(server.stop)
    deadline = time.monotonic() + timeout
    while not _healthy(settings):
        if process.poll() is not None:
            raise ServerError(
                f"transformers serve stopped while starting (exit code {process.returncode}). Its last lines:\n"
                f"{server.log_tail()}"
            )
        if time.monotonic() > deadline:
            server.stop()
            raise ServerError(
                f"transformers serve did not answer on {settings.base_url} within {timeout:g} s, so it was "
                f"stopped. Loading a large model can take longer: pass a longer timeout. Its last lines:\n"
                f"{server.log_tail()}"
            )
        time.sleep(0.5)
    return server


def main(argv: list[str] | None = None) -> int:
    """``make serve``: print the plain ``transformers serve`` line for ``MOLMO_MODEL_ID`` and run it here."""
    parser = argparse.ArgumentParser(prog="python -m molmo_nb_utils.serving", description=main.__doc__)
    parser.add_argument(
        "--model", default=None, help="a Hub id, a folder or 'tiny' (default: MOLMO_MODEL_ID)"
    )
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--precision", default="auto", help=f"auto or one of {', '.join(PRECISIONS)}")
    parser.add_argument("--continuous-batching", action="store_true")
    parser.add_argument("--video-fix", action="store_true", help="let Molmo2 be asked about videos")
    args = parser.parse_args(argv)
    try:
        settings = serve_settings(
            args.model,
            host=args.host,
            port=args.port,
            precision=args.precision,
            continuous_batching=args.continuous_batching,
            video_fix=args.video_fix,
        )
        _check_port_free(settings.host, settings.port)
    except (ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(settings.describe(), flush=True)
    print(
        f"Clients: openai.OpenAI(base_url={settings.base_url!r}, api_key='none'); Ctrl+C stops it.",
        flush=True,
    )
    os.execvp(settings.argv[0], settings.argv)  # the server replaces this process: Ctrl+C reaches it directly
    return 0  # not reached
