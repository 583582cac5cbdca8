"""The network: one file streamed to disk, with a time limit kept while anything at all is awaited.

Why: notebooks run on flaky Colab connections and behind captive portals. A redirect may only lead
to http(s); each network operation times out after 30 s, and the whole download after
``max_seconds`` (``_Deadline`` shuts the sockets when the limit passes); a body past ``max_bytes``
or cut short is refused; every failure says what to do, in ``DownloadError``.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from molmo_nb_utils import paths

__all__ = ["DownloadError", "fetch_to"]

_TIMEOUT_S = 30  # per network operation, not for the whole file
_CHUNK = 1 << 16


class DownloadError(ConnectionError):
    """The network did not deliver the file (offline, HTTP error, cut short, a web page instead)."""


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """urllib follows redirects to ftp:// too; a download must stay on http(s)."""

    def http_error_302(self, req, fp, code, msg, headers):
        target = urllib.parse.urljoin(req.full_url, headers.get("location") or headers.get("uri") or "")
        if urllib.parse.urlsplit(target).scheme.lower() not in ("http", "https"):
            fp.close()
            raise DownloadError(
                f"Could not download {req.full_url}: the server redirected to {target}, and only "
                "http(s) redirects are followed. Nothing was saved; check the URL in a browser."
            )
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


class _Deadline:
    """The whole download's time limit, kept while anything at all is awaited.

    Why: a socket timeout bounds one wait (30 s), not the download: a server that sends its headers
    a byte at a time, or stalls in the body, would hold a download far past ``max_seconds``. A
    timer shuts the connection's sockets when the limit passes, which ends any read waiting on
    them at once; the download then says which limit it met.
    """

    def __init__(self, seconds: float | None):
        self.seconds, self.expired = seconds, False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire) if seconds is not None else None
        self._end = time.monotonic() + seconds if seconds is not None else None

    def __enter__(self) -> _Deadline:
        if self._timer is not None:
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def timeout(self) -> float:
        """Seconds one network operation may wait: 30, or what is left of the limit."""
        if self._end is None:
            return _TIMEOUT_S
        return max(0.01, min(_TIMEOUT_S, self._end - time.monotonic()))

    def passed(self) -> bool:
        return self.expired or (self._end is not None and time.monotonic() > self._end)

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _watched(base: type[http.client.HTTPConnection], deadline: _Deadline) -> type:
    """``base`` whose socket the deadline can shut once connected."""

    class Watched(base):
        def connect(self) -> None:
            super().connect()
            deadline.watch(self.sock)

    return Watched


class _HttpHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self.deadline = deadline

    def http_open(self, req):
        return self.do_open(_watched(http.client.HTTPConnection, self.deadline), req)


class _HttpsHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self.deadline = deadline

    def https_open(self, req):
        return self.do_open(_watched(http.client.HTTPSConnection, self.deadline), req, context=self._context)


def fetch_to(
    url: str, out, dest: Path, progress: bool, max_seconds: float | None = None, max_bytes: int | None = None
) -> tuple[str, str]:
    """Stream ``url`` into ``out``; return the sha256 of what was written and the Content-Type."""
    digest = hashlib.sha256()
    received = 0
    total = None

    def too_slow() -> DownloadError:
        return DownloadError(
            f"Could not download {url}: it took longer than the limit of {max_seconds:g} s "
            f"(max_seconds) and had sent {received} bytes{f' of {total}' if total else ''}. Nothing "
            "was saved. The server or the connection is very slow: try again later, or pass a "
            "larger max_seconds (None: no limit)."
        )

    # Browsers let people copy URLs with spaces or non-ASCII letters; HTTP needs them %-encoded.
    sendable = re.sub(r"[^\x21-\x7e]+", lambda m: urllib.parse.quote(m.group(), safe=""), url)
    request = urllib.request.Request(sendable, headers={"User-Agent": "molmo-nb-utils"})
    with _Deadline(max_seconds) as deadline:
        try:
            # per call: proxies come from the env; the handlers let the deadline shut the sockets
            opener = urllib.request.build_opener(
                _HttpOnlyRedirects, _HttpHandler(deadline), _HttpsHandler(deadline)
            )
            with opener.open(request, timeout=deadline.timeout()) as response:
                content_type = response.headers.get("Content-Type", "")
                total = int(response.headers.get("Content-Length") or 0) or None
                if max_bytes is not None and total is not None and total > max_bytes:
                    raise DownloadError(_too_big(url, f"the server announces {total} bytes", max_bytes))
                with tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=dest.name,
                    disable=not progress,
                ) as bar:
                    while chunk := response.read1(_CHUNK):  # what has arrived, up to _CHUNK
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                        if max_bytes is not None and received > max_bytes:
                            raise DownloadError(
                                _too_big(url, f"it had sent {received} bytes and was not done", max_bytes)
                            )
                        if deadline.passed():
                            raise too_slow()
        except DownloadError:
            raise
        except (OSError, http.client.HTTPException) as err:  # URLError, HTTPError, timeouts, resets
            if deadline.passed():
                raise too_slow() from None
            raise DownloadError(_offline_message(url, dest, _reason(err))) from err
        if deadline.passed():  # a shut socket reads as the end of the body: it was not
            raise too_slow()
    if total is not None and received != total:
        # urllib does not complain when a server closes the connection early; we must.
        raise DownloadError(
            _offline_message(url, dest, f"connection closed after {received} of {total} bytes")
        )
    return digest.hexdigest(), content_type


def _too_big(url: str, what: str, max_bytes: int) -> str:
    return (
        f"Could not download {url}: {what}, more than the limit of {max_bytes} bytes (max_bytes). Nothing "
        "was saved. If the file really is that large, pass a larger max_bytes (None: no limit); a body "
        "that never ends is a broken server or the wrong URL."
    )


def _reason(err: BaseException) -> str:
    reason = getattr(err, "reason", None)
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, http.client.IncompleteRead):
        return "connection closed before the end of the file"
    return str(reason if reason is not None else err) or type(err).__name__


def _offline_message(url: str, dest: Path, reason: str) -> str:
    return (
        f"Could not download {url} ({reason}). Without network, copy the file to {dest} "
        f"(it is then used as is) or pass the path of a local file instead; sample media that "
        f"works offline is in {paths.INPUT_DIR}/."
    )
