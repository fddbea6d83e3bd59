"""``kvikio._lib.remote_handle``: ``kvikio::RemoteHandle`` and its endpoints, over the network.

Modelled on libkvikio 26.10 (``cpp/src/remote_handle.cpp``):

* endpoints: HTTP (the URL as given), S3 (``<AWS_ENDPOINT_URL>/<bucket>/<object>`` or
  ``https://<bucket>.s3.<region>.amazonaws.com/<object>``, requests signed with SigV4 as
  libcurl's ``CURLOPT_AWS_SIGV4`` signs them; region from the argument or
  ``AWS_DEFAULT_REGION`` -- not ``AWS_REGION`` --, keys from ``AWS_ACCESS_KEY_ID`` /
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN`` for ``ASIA`` keys), public S3 (unsigned;
  the URL must be an http(s) one: an ``s3://`` URL fails at the first request), presigned S3
  URLs (sized by a 1-byte GET). WebHDFS is not emulated.
* the size: ``nbytes``, else a HEAD request's ``Content-Length``.
* ``read``: one range GET per ``task_size`` task (``Range: bytes=a-b``); a task reaching past
  ``nbytes`` raises ``cannot read <offset>+<size> bytes into a <nbytes> bytes file (<url>)``;
  a body longer than asked (a server ignoring ``Range``) raises OverflowError ("maybe the
  server doesn't support file ranges?"); a shorter one leaves the rest of the buffer as it was
  and still counts as ``size`` bytes, as libkvikio does.

The bytes land at ``IOFuture.get()`` (see :mod:`.future`).
"""

from __future__ import annotations

import enum
import os
import re
import weakref
from typing import Any
from urllib.parse import urlsplit

from . import defaults
from ._common import as_c_int, check_alive, check_annotated, kvikio_fail, record
from ._curl import perform
from .arr import Target, parse_buffer_argument
from .defaults import RemoteIOBackend
from .file_handle import _run_tasks, _split
from .future import IOFuture

__all__ = ["RemoteEndpointType", "RemoteFile", "infer_remote_endpoint_type"]


class RemoteEndpointType(enum.IntEnum):
    AUTO = 0
    S3 = 1
    S3_PUBLIC = 2
    S3_PRESIGNED_URL = 3
    WEBHDFS = 4
    HTTP = 5


_TYPE_NAMES = {RemoteEndpointType.S3: "S3", RemoteEndpointType.S3_PUBLIC: "S3 public",
               RemoteEndpointType.S3_PRESIGNED_URL: "S3 with presigned URL",
               RemoteEndpointType.WEBHDFS: "WebHDFS", RemoteEndpointType.HTTP: "HTTP",
               RemoteEndpointType.AUTO: "AUTO"}

_AWS_HTTP = [re.compile(p, re.IGNORECASE) for p in (
    r"https?://[^/]+\.s3\.[^.]+\.amazonaws\.com/.+$",
    r"https?://s3\.[^.]+\.amazonaws\.com/[^/]+/.+$",
    r"https?://[^/]+\.s3\.amazonaws\.com/.+$",
    r"https?://s3\.amazonaws\.com/[^/]+/.+$",
    r"https?://[^/]+\.s3-[^.]+\.amazonaws\.com/.+$",
    r"https?://s3-[^.]+\.amazonaws\.com/[^/]+/.+$")]
_AWS_SPECIAL = set("!*'()&$@=;:+ ,?") | {chr(i) for i in range(32)} | {"\x7f"}
_CURL_SCHEMES = ("http", "https")


def _url_error(msg: str) -> RuntimeError:
    """``check_curl_url_err`` (detail/url.cpp)."""
    return RuntimeError(f"KvikIO detects an URL error at: /__w/kvikio/kvikio/cpp/src/detail/"
                        f"url.cpp:114: {msg}")


def _scheme(url: str) -> str | None:
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", url)
    return m.group(1).lower() if m else None


def _encode_path(url: str) -> str:
    """``encode_special_chars_in_path``: libcurl's URL parser (http/https only), then the
    characters AWS key names need encoded in the path."""
    scheme = _scheme(url)
    if scheme is None:
        raise _url_error("No scheme part in the URL")
    if scheme not in _CURL_SCHEMES:
        raise _url_error("Unsupported URL scheme")
    parts = urlsplit(url)
    path = "".join(f"%{ord(c):02X}" if c in _AWS_SPECIAL else c for c in parts.path)
    out = f"{parts.scheme}://{parts.netloc}{path}"
    if parts.query:
        out += f"?{parts.query}"
    if parts.fragment:
        out += f"#{parts.fragment}"
    return out


def _unwrap_or_env(value: str | None, env: str, err: str | None = None) -> str | None:
    """``detail::unwrap_or_env`` (detail/env.cpp)."""
    if value is not None:
        return value
    if env in os.environ:
        return os.environ[env]
    if err is None:
        return None
    raise kvikio_fail("src/detail/env.cpp", 20, err, ValueError)


class _Endpoint:
    type: RemoteEndpointType

    def __init__(self, url: str) -> None:
        self._url = url

    def str(self) -> str:
        return self._url

    def prepare(self, method: str, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
        """``setopt``: the URL and headers of one request."""
        return self._url, headers

    def range_headers(self, file_offset: int, size: int) -> dict[str, str]:
        if size == 0:
            raise kvikio_fail("src/remote_handle.cpp", 200,
                              "cannot create a zero-size range request", ValueError)
        return {"Range": f"bytes={file_offset}-{file_offset + size - 1}"}

    def get_file_size(self) -> int:
        """``get_file_size_using_head_impl``: HEAD (redirects followed), ``Content-Length``."""
        resp = perform("HEAD", lambda: self.prepare("HEAD", {}), follow=True)
        cl = resp.headers.get("Content-Length")
        if cl is None or not cl.strip().isdigit():
            raise kvikio_fail("src/remote_handle.cpp", 186,
                              f"cannot get size of {self.str()}, content-length not provided by "
                              f"the server")
        return int(cl)


class _HttpEndpoint(_Endpoint):
    type = RemoteEndpointType.HTTP

    @staticmethod
    def is_url_valid(url: str) -> bool:
        if _scheme(url) not in _CURL_SCHEMES:
            return False
        return len(urlsplit(url).path) > 1


class _S3Endpoint(_Endpoint):
    type = RemoteEndpointType.S3

    def __init__(self, url: str, aws_region: str | None = None,
                 aws_access_key: str | None = None, aws_secret_access_key: str | None = None,
                 aws_session_token: str | None = None) -> None:
        super().__init__(url)
        if not re.search(r"^https?://.*", url, re.IGNORECASE):
            raise kvikio_fail("src/remote_handle.cpp", 435,
                              "url must start with http:// or https://", ValueError)
        self._region = _unwrap_or_env(
            aws_region, "AWS_DEFAULT_REGION",
            "S3: must provide `aws_region` if AWS_DEFAULT_REGION isn't set.")
        self._key = _unwrap_or_env(
            aws_access_key, "AWS_ACCESS_KEY_ID",
            "S3: must provide `aws_access_key` if AWS_ACCESS_KEY_ID isn't set.")
        self._secret = _unwrap_or_env(
            aws_secret_access_key, "AWS_SECRET_ACCESS_KEY",
            "S3: must provide `aws_secret_access_key` if AWS_SECRET_ACCESS_KEY isn't set.")
        self._token = None
        if (self._key or "").startswith("ASIA"):  # temporary credentials need their token
            self._token = _unwrap_or_env(
                aws_session_token, "AWS_SESSION_TOKEN",
                "When using temporary credentials, AWS_SESSION_TOKEN must be set.")

    @staticmethod
    def url_from_bucket_and_object(bucket: str, obj: str, aws_region: str | None,
                                   aws_endpoint_url: str | None) -> str:
        endpoint = _unwrap_or_env(aws_endpoint_url, "AWS_ENDPOINT_URL")
        if endpoint is None:
            region = _unwrap_or_env(
                aws_region, "AWS_DEFAULT_REGION",
                "S3: must provide `aws_region` if AWS_DEFAULT_REGION isn't set.")
            return f"https://{bucket}.s3.{region}.amazonaws.com/{obj}"
        return f"{endpoint}/{bucket}/{obj}"

    @staticmethod
    def parse_s3_url(url: str) -> tuple[str, str]:
        m = re.match(r"^s3://([^/]+)/(.+)", url, re.IGNORECASE | re.DOTALL)
        if m is None or m.end() != len(url):
            raise kvikio_fail("src/remote_handle.cpp", 422,
                              "Input string does not match the expected S3 URL format.",
                              ValueError)
        return m.group(1), m.group(2)

    @staticmethod
    def is_url_valid(url: str) -> bool:
        scheme = _scheme(url)
        if scheme == "s3":
            parts = urlsplit(url)
            return bool(parts.netloc) and re.search(r"^/.+$", parts.path) is not None
        if scheme in _CURL_SCHEMES:
            return (any(p.match(url) for p in _AWS_HTTP)
                    and not _S3PresignedEndpoint.is_url_valid(url))
        return False

    def prepare(self, method: str, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
        """``CURLOPT_AWS_SIGV4 "aws:amz:<region>:s3"`` with the keys as ``CURLOPT_USERPWD``."""
        try:
            from botocore.auth import S3SigV4Auth
            from botocore.awsrequest import AWSRequest
            from botocore.credentials import Credentials
        except ImportError as e:  # the emulator signs with botocore (installed with moto)
            raise RuntimeError(f"emulated kvikio: S3 needs botocore to sign requests ({e})"
                               ) from None
        url = _encode_path(self._url)
        req = AWSRequest(method=method, url=url, headers=dict(headers))
        S3SigV4Auth(Credentials(self._key, self._secret, self._token), "s3",
                    self._region).add_auth(req)
        return url, dict(req.headers.items())


class _S3PublicEndpoint(_Endpoint):
    type = RemoteEndpointType.S3_PUBLIC

    @staticmethod
    def is_url_valid(url: str) -> bool:
        return _S3Endpoint.is_url_valid(url)

    def prepare(self, method: str, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
        return _encode_path(self._url), headers


class _S3PresignedEndpoint(_Endpoint):
    type = RemoteEndpointType.S3_PRESIGNED_URL

    @staticmethod
    def is_url_valid(url: str) -> bool:
        if not any(p.match(url) for p in _AWS_HTTP):
            return False
        query = urlsplit(url).query
        return "X-Amz-Algorithm" in query and "X-Amz-Signature" in query

    def get_file_size(self) -> int:
        """A GET of byte 0: presigned URLs allow no HEAD; the size is in ``Content-Range``."""
        resp = perform("GET", lambda: self.prepare("GET", {"Range": "bytes=0-0"}),
                       lambda chunk: True)
        size = 0
        for line in (f"Content-Range: {v}" for v in resp.headers.get_all("Content-Range") or []):
            m = re.search(r"Content-Range:[^/]+/(.*)", line, re.IGNORECASE)
            if m:
                try:
                    size = int(m.group(1).strip())
                except ValueError:
                    raise kvikio_fail("src/remote_handle.cpp", 625,
                                      "File size information missing on the server side.",
                                      ValueError) from None
        return size


class _WebHdfsEndpoint(_Endpoint):
    type = RemoteEndpointType.WEBHDFS

    def __init__(self, url: str) -> None:
        raise NotImplementedError("emulated kvikio: WebHDFS endpoints are not emulated")

    @staticmethod
    def is_url_valid(url: str) -> bool:
        return re.match(r"^https?://[^/]+:\d+/webhdfs/v1/.+$", url, re.IGNORECASE) is not None


_CLASSES: dict[RemoteEndpointType, type[_Endpoint]] = {
    RemoteEndpointType.S3: _S3Endpoint, RemoteEndpointType.S3_PUBLIC: _S3PublicEndpoint,
    RemoteEndpointType.S3_PRESIGNED_URL: _S3PresignedEndpoint,
    RemoteEndpointType.WEBHDFS: _WebHdfsEndpoint, RemoteEndpointType.HTTP: _HttpEndpoint}
_DEFAULT_ALLOW = [RemoteEndpointType.S3, RemoteEndpointType.S3_PUBLIC,
                  RemoteEndpointType.S3_PRESIGNED_URL, RemoteEndpointType.WEBHDFS,
                  RemoteEndpointType.HTTP]


def _create(url: str, scheme: str, kind: RemoteEndpointType) -> _Endpoint | None:
    """``create_endpoint_from_type``."""
    cls = _CLASSES.get(kind)
    if cls is None or not cls.is_url_valid(url):  # type: ignore[attr-defined]
        return None
    if kind == RemoteEndpointType.S3 and scheme == "s3":
        bucket, obj = _S3Endpoint.parse_s3_url(url)
        return _S3Endpoint(_S3Endpoint.url_from_bucket_and_object(bucket, obj, None, None))
    return cls(url)


def _infer(url: str, allow: list[RemoteEndpointType],
           probe: bool) -> tuple[_Endpoint, int | None]:
    """``infer_endpoint_impl``: the first type of ``allow`` that takes ``url``; a failing
    credential-based S3 endpoint falls back to public S3 when that is allowed."""
    scheme = _scheme(url)
    if scheme is None:
        raise kvikio_fail("src/remote_handle.cpp", 310, "Missing scheme in URL.")
    for kind in allow:
        try:
            ep = _create(url, scheme, kind)
            if ep is None:
                continue
            size = ep.get_file_size() if probe and kind == RemoteEndpointType.S3 else None
            return ep, size
        except Exception:
            if kind == RemoteEndpointType.S3 and RemoteEndpointType.S3_PUBLIC in allow:
                return _S3PublicEndpoint(url), None
            raise
    raise kvikio_fail("src/remote_handle.cpp", 335, "Unsupported endpoint URL.")


def infer_remote_endpoint_type(url: str) -> RemoteEndpointType:
    check_annotated(url, "url", expected=str)
    return _infer(url, _DEFAULT_ALLOW, False)[0].type


class RemoteFile:
    def __init__(self) -> None:
        self._endpoint: _Endpoint | None = None
        self._nbytes = 0

    @staticmethod
    def _from_endpoint(ep: _Endpoint, nbytes: Any) -> RemoteFile:
        check_annotated(nbytes, "nbytes", optional=True)
        ret = RemoteFile()
        ret._endpoint = ep
        ret._nbytes = ep.get_file_size() if nbytes is None else as_c_int(nbytes)
        return ret

    @staticmethod
    def open_http(url: str, nbytes: Any) -> RemoteFile:
        check_annotated(url, "url", expected=str)
        return RemoteFile._from_endpoint(_HttpEndpoint(url), nbytes)

    @staticmethod
    def open_s3(bucket_name: str, object_name: str, nbytes: Any,
                aws_region_name: str | None = None, aws_access_key_id: str | None = None,
                aws_secret_access_key: str | None = None, aws_endpoint_url: str | None = None,
                aws_session_token: str | None = None) -> RemoteFile:
        url = _S3Endpoint.url_from_bucket_and_object(bucket_name, object_name, aws_region_name,
                                                    aws_endpoint_url)
        ep = _S3Endpoint(url, aws_region_name, aws_access_key_id, aws_secret_access_key,
                         aws_session_token)
        return RemoteFile._from_endpoint(ep, nbytes)

    @staticmethod
    def open_s3_from_http_url(url: str, nbytes: Any, aws_region_name: str | None = None,
                              aws_access_key_id: str | None = None,
                              aws_secret_access_key: str | None = None,
                              aws_session_token: str | None = None) -> RemoteFile:
        ep = _S3Endpoint(url, aws_region_name, aws_access_key_id, aws_secret_access_key,
                         aws_session_token)
        return RemoteFile._from_endpoint(ep, nbytes)

    @staticmethod
    def open_s3_from_s3_url(url: str, nbytes: Any, aws_region_name: str | None = None,
                            aws_access_key_id: str | None = None,
                            aws_secret_access_key: str | None = None,
                            aws_endpoint_url: str | None = None,
                            aws_session_token: str | None = None) -> RemoteFile:
        bucket, obj = _S3Endpoint.parse_s3_url(url)
        return RemoteFile.open_s3(bucket, obj, nbytes, aws_region_name, aws_access_key_id,
                                  aws_secret_access_key, aws_endpoint_url, aws_session_token)

    @staticmethod
    def open_s3_public(url: str, nbytes: Any) -> RemoteFile:
        check_annotated(url, "url", expected=str)
        return RemoteFile._from_endpoint(_S3PublicEndpoint(url), nbytes)

    @staticmethod
    def open_s3_presigned_url(presigned_url: str, nbytes: Any) -> RemoteFile:
        check_annotated(presigned_url, "presigned_url", expected=str)
        return RemoteFile._from_endpoint(_S3PresignedEndpoint(presigned_url), nbytes)

    @staticmethod
    def open_webhdfs(url: str, nbytes: Any) -> RemoteFile:
        check_annotated(url, "url", expected=str)
        return RemoteFile._from_endpoint(_WebHdfsEndpoint(url), nbytes)

    @staticmethod
    def open(url: str, remote_endpoint_type: Any, allow_list: list | None,
             nbytes: Any) -> RemoteFile:
        """``RemoteHandle::open``."""
        kind = RemoteEndpointType(as_c_int(remote_endpoint_type, "uint8_t"))
        allow = (list(_DEFAULT_ALLOW) if allow_list is None
                 else [RemoteEndpointType(item.value) for item in allow_list])
        probed = None
        if kind == RemoteEndpointType.AUTO:
            ep, probed = _infer(url, allow, True)
        else:
            if kind not in allow:
                raise kvikio_fail("src/remote_handle.cpp", 701,
                                  f"{_TYPE_NAMES[kind]} is not in the allowlist.")
            scheme = _scheme(url)
            if scheme is None:
                raise kvikio_fail("src/remote_handle.cpp", 714, "Missing scheme in URL.")
            made = _create(url, scheme, kind)
            if made is None:
                raise kvikio_fail("src/remote_handle.cpp", 716,
                                  f"Invalid URL for {_TYPE_NAMES[kind]} endpoint")
            ep = made
        if nbytes is None and probed is not None:
            nbytes = probed
        return RemoteFile._from_endpoint(ep, nbytes)

    def remote_endpoint_type(self) -> RemoteEndpointType:
        assert self._endpoint is not None
        return self._endpoint.type

    def nbytes(self) -> int:
        return self._nbytes

    def _read_task(self, t: Target, size: int, file_offset: int, boff: int) -> int:
        """``RemoteHandle::read`` of one task into ``t`` at ``boff``."""
        ep = self._endpoint
        assert ep is not None
        what = "kvikio.RemoteFile.pread"
        if size == 0:
            return 0
        if file_offset + size > self._nbytes:
            raise kvikio_fail("src/remote_handle.cpp", 793,
                              f"cannot read {file_offset}+{size} bytes into a {self._nbytes} "
                              f"bytes file ({ep.str()})", ValueError)
        view = t.view(boff, size, what)
        record(what, ep.str(), file_offset, size, t.ptr + boff, "http")
        pos = [0]
        overflow = [False]

        def sink(chunk: bytes) -> bool:
            n = len(chunk)
            if pos[0] + n > size:  # callback_*_memory: more than asked for
                overflow[0] = True
                return False
            view[pos[0]: pos[0] + n] = memoryview(chunk)
            pos[0] += n
            return True

        headers = ep.range_headers(file_offset, size)
        try:
            perform("GET", lambda: ep.prepare("GET", headers), sink)
        except RuntimeError as e:
            if overflow[0]:
                raise kvikio_fail("src/remote_handle.cpp", 823,
                                  f"maybe the server doesn't support file ranges? [{e}]",
                                  OverflowError) from None
            raise
        return size

    def read(self, buf: Any, size: Any, file_offset: Any) -> int:
        return self.pread(buf, size, file_offset).get()

    def pread(self, buf: Any, size: Any, file_offset: Any) -> IOFuture:
        check_annotated(size, "size", optional=True)
        check_annotated(file_offset, "file_offset")
        t = parse_buffer_argument(buf, size, True, for_write_into=True)
        off = as_c_int(file_offset)
        n = t.nbytes
        if n == 0:
            return IOFuture(value=0)
        if t.device is not None:
            check_alive(t.device)
        task_size = defaults.task_size()
        if defaults.remote_io_backend() == RemoteIOBackend.MULTI_POLL:
            if not t.is_host:
                raise kvikio_fail(
                    "src/remote_handle.cpp", 880,
                    "MULTI_POLL backend currently supports host memory only. Use EASY_THREADPOOL "
                    "(KVIKIO_REMOTE_IO_BACKEND=easy_threadpool) for device-memory buffers.",
                    ValueError)
            if off + n > self._nbytes:
                raise kvikio_fail("src/remote_handle.cpp", 889,
                                  f"cannot read {off}+{n} bytes into a {self._nbytes} bytes file "
                                  f"({self._endpoint.str() if self._endpoint else ''})",
                                  ValueError)
        tasks = _split(n, off, task_size)
        ref = weakref.ref(self)

        def task(fo: int, sz: int, bo: int) -> int:
            handle = ref()
            if handle is None:  # libkvikio's tasks would use the freed RemoteHandle
                raise RuntimeError("emulated kvikio: the RemoteFile was garbage-collected before "
                                   "this future was waited on")
            return handle._read_task(t, sz, fo, bo)

        return IOFuture(lambda: _run_tasks(tasks, task))
