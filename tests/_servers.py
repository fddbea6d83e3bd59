"""Real servers on 127.0.0.1 for the remote-store tests and benchmarks (no mocks).

* :func:`start_moto` — moto's S3 server (``ThreadedMotoServer``), as zarr-python and kvikio
  test S3.
* :class:`RangeServer` — a plain HTTP server for a directory that answers ``Range`` requests
  (Python's ``http.server`` does not), counts requests and injects faults on demand: HTTP
  500/503/403, a stall, a connection reset mid-body, a short body.
* :class:`Proxy` — an HTTP forwarding proxy that counts requests and can add a fixed delay to
  each (the benchmarks' 20 ms "network"); in front of moto it counts S3 requests.

Not a test module (no ``test_`` prefix); benchmarks/remote.py imports it too.
"""

from __future__ import annotations

import email.utils
import http.client
import os
import re
import socket
import struct
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["Proxy", "RangeServer", "create_bucket", "start_moto"]

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up (timeouts, resets we caused) is not news


def _serve(server: ThreadingHTTPServer) -> threading.Thread:
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True)
    t.start()
    return t


class RangeServer:
    """Serves the files under ``root`` over HTTP/1.1 with ``Range`` support.

    Attributes
    ----------
    url
        ``http://127.0.0.1:<port>``.
    requests
        Counter of ``(method, path)`` served (faults included).
    faults
        ``{path substring: [fault, ...]}``: each matching request consumes the first fault of
        the list; ``"500"``, ``"503"``, ``"403"``: that status; ``"stall"``: wait
        :attr:`stall_seconds` before answering; ``"reset"``: send half the body, then reset
        the connection; ``"short"``: send half the body and close; ``"ok"``: no fault.
    """

    def __init__(self, root: str | os.PathLike[str], stall_seconds: float = 5.0) -> None:
        self.root = Path(root)
        self.requests: Counter[tuple[str, str]] = Counter()
        self.faults: dict[str, list[str]] = {}
        self.stall_seconds = stall_seconds
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                owner._handle(self, head=True)

            def do_GET(self) -> None:
                owner._handle(self, head=False)

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = _serve(self._server)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def total(self, method: str | None = None) -> int:
        """Requests served so far (of one method, if given)."""
        with self._lock:
            return sum(n for (m, _), n in self.requests.items() if method in (None, m))

    def _fault(self, path: str) -> str:
        with self._lock:
            for part, todo in self.faults.items():
                if part in path and todo:
                    return todo.pop(0)
        return "ok"

    def _handle(self, h: BaseHTTPRequestHandler, *, head: bool) -> None:
        path = h.path.split("?", 1)[0]
        with self._lock:
            self.requests[(h.command, path)] += 1
        fault = self._fault(path)
        if fault in ("500", "503", "403"):
            self._status(h, int(fault))
            return
        if fault == "stall":
            time.sleep(self.stall_seconds)
        file = self.root / path.lstrip("/")
        if ".." in path.split("/") or not file.is_file():
            self._status(h, 404)
            return
        data = file.read_bytes()
        size = len(data)
        status, lo, hi = 200, 0, size
        rng = h.headers.get("Range")
        if rng:
            m = _RANGE.match(rng.strip())
            if m is None:
                self._status(h, 400)
                return
            a, b = m.groups()
            if a == "":  # suffix
                lo, hi = max(size - int(b), 0), size
            else:
                lo, hi = int(a), size if b == "" else min(int(b) + 1, size)
            if lo >= size:  # nothing of the object in the range (or an empty object)
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{size}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            status = 206
        body = data[lo:hi]
        h.send_response(status)
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Last-Modified", email.utils.formatdate(file.stat().st_mtime, usegmt=True))
        h.send_header("ETag", f'"{file.stat().st_mtime_ns:x}-{size:x}"')
        if status == 206:
            h.send_header("Content-Range", f"bytes {lo}-{hi - 1}/{size}")
        h.end_headers()
        if head:
            return
        if fault in ("reset", "short"):
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            if fault == "reset":  # RST instead of FIN: linger on, timeout 0
                h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
            h.close_connection = True
            h.connection.close()
            return
        h.wfile.write(body)

    @staticmethod
    def _status(h: BaseHTTPRequestHandler, code: int) -> None:
        body = f"status {code}\n".encode()
        h.send_response(code)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)


class Proxy:
    """Forwards HTTP requests to ``target`` (``http://host:port``), counting them and adding
    ``delay`` seconds to each (before forwarding): a fixed network latency.

    Attributes
    ----------
    url
        ``http://127.0.0.1:<port>``: point clients here instead of at the target.
    requests
        Counter of methods forwarded.
    """

    def __init__(self, target: str, delay: float = 0.0) -> None:
        self.target = target
        self.delay = delay
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._local = threading.local()
        owner = self
        host, port = target.removeprefix("http://").split(":")

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                with owner._lock:
                    owner.requests[self.command] += 1
                if owner.delay:
                    time.sleep(owner.delay)
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                conn = getattr(owner._local, "conn", None)
                if conn is None:  # one upstream connection per proxy thread, kept alive
                    conn = owner._local.conn = http.client.HTTPConnection(host, int(port),
                                                                          timeout=60)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("connection", "keep-alive")}
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                except (OSError, http.client.HTTPException):
                    owner._local.conn = None
                    conn.close()
                    self.send_error(502)
                    return
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "keep-alive", "transfer-encoding",
                                         "content-length", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = _serve(self._server)

    def total(self) -> int:
        with self._lock:
            return sum(self.requests.values())

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def start_moto() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 for the duration of the block; yields its endpoint URL."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def create_bucket(endpoint: str, bucket: str) -> None:
    """Create ``bucket`` on an S3 server that, like moto, accepts unsigned requests."""
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{bucket}", method="PUT"),
                           timeout=30).read()
