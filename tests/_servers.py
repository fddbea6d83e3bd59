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
    # The default backlog of 5 drops the SYNs of a burst of connections (a batch opens up to
    # remote_concurrency at once), which the client then retries a second later.
    request_queue_size = 1024

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
    """Forwards HTTP/1.1 requests to ``target`` (``http://host:port``), counting them and adding
    ``delay`` seconds to each before forwarding it: a fixed network latency.

    It runs in a child process on asyncio (no thread per connection), so its CPU cost is small
    and is not paid under the measuring process's GIL. ``GET /__proxy_count__`` answers the
    number of requests forwarded so far (it is neither delayed nor counted).

    Attributes
    ----------
    url
        ``http://127.0.0.1:<port>``: point clients here instead of at the target.
    """

    def __init__(self, target: str, delay: float = 0.0) -> None:
        import subprocess
        import sys

        self.target, self.delay = target, delay
        self._proc = subprocess.Popen([sys.executable, __file__, "proxy", target, str(delay)],
                                      stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line.startswith("http://"):
            self._proc.kill()
            raise RuntimeError(f"the proxy did not start: {line!r}")
        self.url = line

    def total(self) -> int:
        """Requests forwarded so far."""
        with urllib.request.urlopen(f"{self.url}/__proxy_count__", timeout=30) as r:
            return int(r.read())

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=10)


async def _read_message(reader: Any, head_only: bool = False) -> tuple[bytes, bytes] | None:
    """One HTTP/1.1 message: ``(head, body)``; None at end of stream. Bodies by Content-Length
    or chunked (re-framed by Content-Length for the other side)."""
    head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
    if not head:
        return None
    lines = head.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:]
                                                          if x)}
    body = b""
    if head_only:
        pass
    elif fields.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
            if size == 0:
                break
        body = b"".join(parts)
        kept = [x for x in lines[1:] if x and not x.lower().startswith("transfer-encoding")]
        head = ("\r\n".join([lines[0], *kept, f"Content-Length: {len(body)}"]) +
                "\r\n\r\n").encode("latin-1")
    elif "content-length" in fields:
        body = await reader.readexactly(int(fields["content-length"]))
    return head, body


def _run_proxy(target: str, delay: float) -> None:
    import asyncio

    host, port = target.removeprefix("http://").rstrip("/").split(":")
    count = [0]
    # At most this many connections to the target (idle ones are reused): a burst of client
    # connections would otherwise overrun the backlog of a small server such as moto's.
    upstream = asyncio.Semaphore(64)
    idle: list[tuple[Any, Any]] = []

    async def forward(message: bytes, head_only: bool) -> tuple[bytes, bytes] | None:
        async with upstream:
            for attempt in range(2):  # an idle connection the target has closed: a new one
                reused = bool(idle)
                ur, uw = idle.pop() if reused else await asyncio.open_connection(host, int(port))
                try:
                    uw.write(message)
                    await uw.drain()
                    resp = await asyncio.wait_for(_read_message(ur, head_only=head_only), 120)
                except (OSError, asyncio.IncompleteReadError, TimeoutError):
                    uw.close()
                    if reused and attempt == 0:
                        continue
                    raise
                except BaseException:
                    uw.close()
                    raise
                if resp is None:
                    uw.close()
                    if reused and attempt == 0:
                        continue
                elif b"\r\nconnection: close" in resp[0].lower() or resp[0].startswith(
                        b"HTTP/1.0"):
                    uw.close()  # moto's server closes after every response
                else:
                    idle.append((ur, uw))
                return resp
            return None

    async def handle(cr: Any, cw: Any) -> None:
        try:
            while (req := await _read_message(cr)) is not None:
                head, body = req
                if head.startswith(b"GET /__proxy_count__ "):
                    n = str(count[0]).encode()
                    cw.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(n), n))
                    await cw.drain()
                    continue
                count[0] += 1
                if delay:
                    await asyncio.sleep(delay)
                resp = await forward(head + body, head.startswith(b"HEAD "))
                if resp is None:
                    break
                cw.write(resp[0] + resp[1])
                await cw.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            cw.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, limit=1 << 20, backlog=1024)
        print(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
        await server.serve_forever()

    asyncio.run(main())


@contextmanager
def start_moto(*, subprocess: bool = False) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 for the duration of the block; yields its endpoint URL.

    In this process (``ThreadedMotoServer``, the tests' choice: quick to start), or in a child
    process (the benchmarks' choice: its CPU time is then not spent under the measuring
    process's GIL).
    """
    import logging

    if subprocess:
        import subprocess as sp
        import sys

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        proc = sp.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                        stdout=sp.DEVNULL, stderr=sp.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(400):  # until it answers
                try:
                    urllib.request.urlopen(url, timeout=1).read()
                    break
                except OSError:
                    time.sleep(0.05)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        return
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


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["proxy"]:
        _run_proxy(sys.argv[2], float(sys.argv[3]))
