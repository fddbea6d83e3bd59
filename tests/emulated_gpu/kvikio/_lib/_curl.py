"""The libcurl that libkvikio's remote I/O drives, reduced to what it uses, over ``http.client``.

``CurlHandle::perform`` (``cpp/src/shim/libcurl.cpp``): ``CURLOPT_FAILONERROR`` (a status >= 400
fails the transfer), ``CURLOPT_TIMEOUT`` = ``http_timeout``, retries with back-off (500 ms
doubling to 4 s, a line on stdout each) on a timeout or a status in ``http_status_codes``, up to
``http_max_attempts``; any other failure raises at once. Messages are libcurl 8's. Redirects are
followed for HEAD only (``CURLOPT_FOLLOWLOCATION`` is set for the size probe alone). Proxies from
the environment are not used.
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from . import defaults
from ._common import kvikio_fail

__all__ = ["CurlError", "Response", "perform"]

CHUNK = 16384  # CURL_MAX_WRITE_SIZE: the most the write callback gets at once
_WRITEFUNC_ERROR = 0xFFFFFFFF


class CurlError(Exception):
    """A failed ``curl_easy_perform`` (``message``: libcurl's error buffer)."""

    def __init__(self, message: str, *, timeout: bool = False, http_code: int = 0) -> None:
        super().__init__(message)
        self.timeout, self.http_code = timeout, http_code


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage


def _once(method: str, url: str, headers: dict[str, str], sink: Callable[[bytes], bool] | None,
          timeout: float, follow: bool) -> Response:
    """One ``curl_easy_perform``."""
    t0 = time.monotonic()
    for _ in range(50):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise CurlError(f'Protocol "{parts.scheme}" not supported')
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = cls(host, port, timeout=timeout)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        received = 0
        try:
            try:
                conn.request(method, target, headers=headers)
                resp = conn.getresponse()
            except ConnectionRefusedError:
                ms = int((time.monotonic() - t0) * 1000)
                raise CurlError(f"Failed to connect to {host} port {port} after {ms} ms: "
                                f"Could not connect to server") from None
            except socket.gaierror:
                raise CurlError(f"Could not resolve host: {host}") from None
            except http.client.RemoteDisconnected:
                raise CurlError("Empty reply from server") from None
            if resp.status >= 400:
                resp.close()
                raise CurlError(f"The requested URL returned error: {resp.status}",
                                http_code=resp.status)
            location = resp.getheader("Location")
            if follow and 300 <= resp.status < 400 and location:
                resp.close()
                url = urljoin(url, location)
                continue
            if method == "HEAD" or sink is None:
                resp.close()
                return Response(resp.status, resp.headers)
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    if resp.length:  # the server closed before Content-Length bytes
                        raise CurlError(f"transfer closed with {resp.length} bytes remaining "
                                        f"to read")
                    break
                received += len(chunk)
                if not sink(chunk):
                    raise CurlError(f"Failure writing output to destination, passed "
                                    f"{len(chunk)} returned {_WRITEFUNC_ERROR}")
            return Response(resp.status, resp.headers)
        except TimeoutError:
            ms = int((time.monotonic() - t0) * 1000)
            raise CurlError(f"Operation timed out after {ms} milliseconds with {received} bytes "
                            f"received", timeout=True) from None
        except ConnectionResetError:
            raise CurlError("Recv failure: Connection reset by peer") from None
        except http.client.IncompleteRead as e:
            raise CurlError(f"transfer closed with {e.expected} bytes remaining to read") from None
        finally:
            conn.close()
    raise CurlError("Maximum (50) redirects followed")


def perform(method: str, prepare: Callable[[], tuple[str, dict[str, str]]],
            sink: Callable[[bytes], bool] | None = None, *, follow: bool = False) -> Response:
    """``CurlHandle::perform``: ``prepare()`` gives the URL and headers of each attempt (S3
    requests are signed anew).

    Raises
    ------
    RuntimeError
        libkvikio's ``curl_easy_perform() error (...)`` or ``KvikIO: HTTP request reached
        maximum number of attempts``.
    """
    attempts = defaults.http_max_attempts()
    codes = defaults.http_status_codes()
    timeout = defaults.http_timeout()
    last: CurlError | None = None
    for attempt in range(1, attempts + 1):
        url, headers = prepare()
        try:
            return _once(method, url, headers, sink, timeout, follow)
        except CurlError as e:
            last = e
            if not (e.timeout or e.http_code in codes):
                raise kvikio_fail("src/shim/libcurl.cpp", 188,
                                  f"curl_easy_perform() error ({e})") from None
            delay = min(4000, 500 * (1 << min(attempt - 1, 4)))
            if attempt < attempts:
                why = ("Timeout error." if e.timeout else f"Got HTTP code {e.http_code}.")
                print(f"KvikIO: {why[:-1]}. Retrying after {delay}ms (attempt {attempt} of "
                      f"{attempts}).", flush=True)
                time.sleep(delay / 1000)
    assert last is not None
    reason = "Operation timed out." if last.timeout else f"Got HTTP code {last.http_code}."
    raise kvikio_fail("src/shim/libcurl.cpp", 200,
                      f"KvikIO: HTTP request reached maximum number of attempts ({attempts}). "
                      f"Reason: {reason}")
