"""Remote reads into device memory: kvikio ``RemoteFile`` for S3 and HTTP, else obstore on the
host plus one host-to-device copy per batch.

:func:`remote_gpu_choice` decides, and says why (``info`` and ``GDSStore.gpu_read_path`` report
it); :func:`remote_gpu_backend` builds the backend:

* :class:`KvikioRemoteIOBackend` (S3 through the ``AWS_*`` environment, public S3, HTTP), for
  byte ranges of objects (a shard's inner chunks; small whole chunks and shard indexes, whose
  sizes nothing gives, are one round of GETs on the host instead: :func:`staged_on_host`):
  one round of HEAD requests (through obstore, all in flight at once) sizes every object and
  tells missing ones apart (objects whose shard index was just read are sized already), the
  ranges are clamped and coalesced as on the CPU
  (:func:`~gds_zarr.planning.ranges.plan_reads`), ONE CuPy buffer is allocated and every read
  is issued as ``RemoteFile.pread`` into its slice before any is waited on; kvikio's thread pool
  overlaps them and writes the bytes to the device without a host copy of the batch.
* :class:`HostStagedIOBackend` (GCS, Azure, S3 configured through ``storage_options`` only,
  kvikio without remote support): the CPU backend's batch, every request placed for nvCOMP as
  the bodies are copied into it, then one ``cupy.asarray``. The
  kvikio backend takes this path too for a batch whose ranges all lie in tails that the
  shard-index round prefetched (``remote_prefetch``): no request, one copy.

kvikio reads S3 settings from the environment only (``AWS_ACCESS_KEY_ID``,
``AWS_ENDPOINT_URL``, ...), so an S3 store whose endpoint or credentials come from
``storage_options`` takes the host-staged path, and so does one whose credentials come from a
profile, a web identity or a container role (kvikio signs with ``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY`` only). Its region it reads from ``AWS_DEFAULT_REGION`` only: the
backend passes ``AWS_REGION`` (obstore's and boto's name) on when that is all there is, and
``us-east-1`` (obstore's default) when neither is set. kvikio's public (unsigned) S3 reader
fetches the URL it is given as it is, so an anonymous store hands it the object's HTTP(S) URL,
not ``s3://``. Like ``CuFile``, ``RemoteFile`` needs libcuda, so nothing here is imported on
CPU-only machines.

NOTE: written against kvikio's documented ``RemoteFile`` API (``open_http``, ``open_s3_url``,
``open_s3_public``, ``pread``); it has run on the emulated device (tests/emulated_gpu, against
local HTTP and S3 servers), not yet on a GPU machine.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from gds_zarr._batch import BatchRead
from gds_zarr.errors import ChunkReadError
from gds_zarr.io._base import IOStats
from gds_zarr.io._cpu import group_requests, resolve_ranges
from gds_zarr.io._remote import ObstoreIOBackend, describe_error, run_async
from gds_zarr.planning.ranges import plan_reads
from gds_zarr.planning.staging import DEFAULT_PAYLOAD, current_payload

__all__ = ["HOST_STAGED_MAX", "HostStagedIOBackend", "KvikioRemoteIOBackend",
           "remote_gpu_backend", "remote_gpu_choice", "staged_on_host"]

_S3_OPTIONS_KVIKIO_CANNOT_TAKE = ("endpoint", "endpoint_url", "access_key_id",
                                  "secret_access_key", "session_token", "token", "region",
                                  "client_options")


def _kvikio_remote() -> str | None:
    """None if kvikio's RemoteFile is usable, else why not."""
    try:
        import kvikio
        from kvikio.remote_file import RemoteFile, is_remote_file_available
    except ImportError as e:
        return f"kvikio has no RemoteFile ({e})"
    if not is_remote_file_available():
        return f"kvikio {kvikio.__version__} was built without remote-file support"
    if not hasattr(RemoteFile, "open_http"):
        return f"kvikio {kvikio.__version__} predates RemoteFile.open_http (need >= 25.02)"
    return None


def remote_gpu_choice(location: Any) -> tuple[str, str]:
    """``(backend, reason)`` for reads from ``location`` (a RemoteLocation) into the GPU."""
    staged = "obstore + one host-to-device copy per batch"
    if location.kind not in ("s3", "http"):
        return staged, f"kvikio RemoteFile reads S3 and HTTP only, not {location.kind}"
    if location.kind == "s3":
        given = [k for k in _S3_OPTIONS_KVIKIO_CANNOT_TAKE if k in location.options]
        if given:
            return staged, (f"storage_options set {', '.join(given)}; kvikio takes S3 settings "
                            f"from the AWS_* environment only")
        if not location.anonymous() and not os.environ.get("AWS_ACCESS_KEY_ID"):
            # A profile, web identity or container role: obstore signs with those, kvikio not.
            return staged, ("S3 credentials come from the environment without "
                            "AWS_ACCESS_KEY_ID; kvikio signs with AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY only")
    why = _kvikio_remote()
    if why is not None:
        return staged, why
    return "kvikio RemoteFile", f"{location.kind} objects read straight into device memory"


#: Open-ended requests up to this size (a shard index, a whole chunk by its size hint) are
#: read on the host: a host-to-device copy of it costs less than the HEAD round kvikio's
#: preads would need first.
HOST_STAGED_MAX = 16 << 20


def staged_on_host(starts: np.ndarray, stops: np.ndarray, tail_start: np.ndarray,
                   size_hint: int | None = None) -> bool:
    """Whether the kvikio backend reads a batch on the host and copies it to the device once.

    Yes when each request (grouped, as :func:`~gds_zarr.io._cpu.group_requests` gives them)
    either lies in a tail the shard-index round prefetched (``tail_start``: where its object's
    cached tail starts, -1 if none): no request at all; or is a small open-ended one: a
    suffix (a shard index) or a whole object whose ``size_hint`` (a chunk's encoded bound) is
    at most :data:`HOST_STAGED_MAX`. kvikio's preads need each object's size first, a round of
    HEADs, where obstore reads these in one round of GETs (a whole chunk in one clamped range
    GET). Ranges of known objects (a shard's chunks) and large whole objects go to kvikio.
    """
    in_tail = (tail_start >= 0) & (starts >= tail_start) & (stops >= 0)
    small_whole = size_hint is not None and 0 < size_hint <= HOST_STAGED_MAX
    small_open = (stops < 0) & (((starts < 0) & (-starts <= HOST_STAGED_MAX))
                                | ((starts == 0) & small_whole))
    return bool((in_tail | small_open).all())


def remote_gpu_backend(location: Any, cpu: ObstoreIOBackend) -> Any:
    """The device backend for ``location`` (see :func:`remote_gpu_choice`)."""
    backend, _ = remote_gpu_choice(location)
    if backend == "kvikio RemoteFile":
        return KvikioRemoteIOBackend(location, cpu)
    return HostStagedIOBackend(cpu)


class HostStagedIOBackend:
    """Reads a batch on the host (obstore), then copies it to the device in ONE transfer."""

    device: Literal["cpu", "gpu"] = "gpu"

    def __init__(self, cpu: ObstoreIOBackend) -> None:
        self.cpu = cpu
        self.stats = cpu.stats

    def __repr__(self) -> str:
        return "HostStagedIOBackend(ObstoreIOBackend())"

    def read_batch(self, paths: Sequence[str], starts: np.ndarray, stops: np.ndarray,
                   **kw: Any) -> BatchRead:
        """The CPU batch, laid out for nvCOMP (each request placed so that its decode input is
        aligned: nothing to re-pack on the device), with its one buffer copied to a CuPy array
        (arguments as the CPU backend's)."""
        import cupy as cp

        b = self.cpu.read_batch(paths, starts, stops,
                                place=current_payload() or DEFAULT_PAYLOAD, **kw)
        return BatchRead(data=cp.asarray(b.data), offsets=b.offsets, sizes=b.sizes,
                         present=b.present, device="gpu", nbytes_staged=b.nbytes_staged)

    def write_file(self, path: str, data: Any, *, exclusive: bool = False) -> None:
        """Upload device or host bytes (device bytes are copied to the host first)."""
        if hasattr(data, "__cuda_array_interface__") and not hasattr(data, "__array_interface__"):
            import cupy as cp

            data = cp.asnumpy(data)
        self.cpu.write_file(path, data, exclusive=exclusive)

    def close(self) -> None:
        self.cpu.close()


class KvikioRemoteIOBackend(HostStagedIOBackend):
    """Reads S3/HTTP objects with kvikio ``RemoteFile.pread`` into one CuPy buffer (module
    docstring)."""

    def __init__(self, location: Any, cpu: ObstoreIOBackend) -> None:
        super().__init__(cpu)
        self.location = location
        self.stats = IOStats()

    def __repr__(self) -> str:
        return "KvikioRemoteIOBackend()"

    def _open(self, path: str, size: int) -> Any:
        from kvikio.remote_file import RemoteFile

        loc = self.location
        if loc.kind == "http":
            return RemoteFile.open_http(loc.object_url(path), nbytes=size)
        # kvikio fails without a region where obstore assumes AWS's default: assume it too.
        region = (os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
                  or "us-east-1")
        if loc.anonymous() and hasattr(RemoteFile, "open_s3_public"):
            return RemoteFile.open_s3_public(s3_http_url(loc.endpoint(), loc.bucket, path,
                                                         region), nbytes=size)
        return RemoteFile.open_s3_url(f"s3://{loc.bucket}/{path}", nbytes=size,
                                      aws_region_name=region)

    def _sizes(self, files: list[str]) -> np.ndarray:
        """Each object's size, -1 if missing: known from a tail the shard-index round brought
        in (gds_zarr/io/_remote.py), else from one round of HEADs through obstore."""
        tail_start, tail_size, _ = self.cpu.tails.lookup(files)
        known = tail_start >= 0
        if known.all():
            return tail_size
        out = tail_size.copy()
        need = np.flatnonzero(~known)
        out[need] = self._head_sizes([files[i] for i in need.tolist()])
        return out

    def _head_sizes(self, files: list[str]) -> np.ndarray:
        import obstore as obs

        store, redact, url = self.cpu.store, self.cpu._redact, self.location.object_url

        async def head_all() -> list[int]:
            import gds_zarr.settings as s

            sem = asyncio.Semaphore(max(1, int(s.get("remote_concurrency"))))

            async def head(path: str) -> int:
                async with sem:
                    try:
                        return int((await obs.head_async(store, path))["size"])
                    except FileNotFoundError:
                        return -1
                    except Exception as e:  # noqa: BLE001 - a ChunkReadError naming it
                        raise ChunkReadError(path, f"{describe_error(e, redact)} "
                                                   f"({url(path)})") from None

            return list(await asyncio.gather(*(head(p) for p in files)))

        return np.asarray(run_async(head_all()), dtype=np.int64)

    def read_batch(self, paths: Sequence[str], starts: np.ndarray, stops: np.ndarray,
                   *, max_gap: int | None = None, max_size: int | None = None,
                   size_hint: int | None = None, **_: Any) -> BatchRead:
        """Read every request into one CuPy buffer (arguments as the CPU backend's)."""
        import cupy as cp

        n = len(paths)
        raw_starts, raw_stops = starts, stops
        starts, stops, file_of, files = group_requests(paths, starts, stops)
        tail_start = self.cpu.tails.lookup(files)[0][file_of]
        if n and staged_on_host(starts, stops, tail_start, size_hint):
            return super().read_batch(paths, raw_starts, raw_stops, max_gap=max_gap,
                                      max_size=max_size, size_hint=size_hint)
        sizes = self._sizes(files)
        present_file = sizes >= 0
        lo, hi = resolve_ranges(starts, stops, np.maximum(sizes, 0)[file_of])
        plan = plan_reads(file_of, lo, hi, max_gap=max_gap, max_size=max_size)
        data = cp.empty(plan.total_size, dtype=cp.uint8)
        if plan.nreads:
            # kvikio writes from its own threads: kernels queued on this stream that still use
            # a recycled block of CuPy's pool must finish first.
            cp.cuda.get_current_stream().synchronize()
            self._pread_all(plan, files, sizes, data)
        self.stats.add(files_opened=len(files), reads=plan.nreads + len(files),
                       bytes_read=plan.total_size, requests=n)
        return BatchRead(data=data, offsets=plan.request_dest, sizes=hi - lo,
                         present=present_file[file_of], device="gpu",
                         nbytes_staged=plan.total_size)

    def _pread_all(self, plan: Any, files: list[str], sizes: np.ndarray, data: Any) -> None:
        rf, ro = plan.read_file.tolist(), plan.read_offset.tolist()
        rs, rd = plan.read_size.tolist(), plan.read_dest.tolist()
        handles: dict[int, Any] = {}
        futures: list[tuple[int, int, Any]] = []
        errors: list[ChunkReadError] = []
        url: Callable[[str], str] = self.location.object_url
        try:
            for f, group in itertools.groupby(zip(rf, ro, rs, rd, strict=True),
                                               key=lambda r: r[0]):
                # kvikio raises RuntimeError, or ValueError (std::invalid_argument) for what
                # the environment lacks (a region, a session token) or disallows.
                try:
                    handles[f] = self._open(files[f], int(sizes[f]))
                except (OSError, RuntimeError, ValueError) as e:
                    errors.append(ChunkReadError(files[f], f"kvikio RemoteFile could not open "
                                                           f"it: {e} ({url(files[f])})"))
                    break
                try:
                    for _, off, size, dest in group:
                        futures.append((f, size, handles[f].pread(data[dest:dest + size], size,
                                                                  off)))
                except (OSError, RuntimeError, ValueError) as e:
                    errors.append(ChunkReadError(files[f], f"kvikio read failed: {e} "
                                                           f"({url(files[f])})"))
                    break
        finally:
            for f, want, fut in futures:  # wait for all before raising: they write into data
                try:
                    got = fut.get()
                except Exception as e:  # noqa: BLE001 - collected, first one raised below
                    errors.append(ChunkReadError(files[f], f"kvikio read failed: {e} "
                                                           f"({url(files[f])})"))
                    continue
                if got != want:
                    errors.append(ChunkReadError(files[f], f"read {got} bytes, expected {want} "
                                                           f"({url(files[f])})"))
        if errors:
            raise errors[0]


def s3_http_url(endpoint: str | None, bucket: str, path: str, region: str | None) -> str:
    """The HTTP(S) URL of an S3 object: path style under a configured endpoint, else AWS's
    virtual-hosted form (what kvikio's signed reader builds from ``s3://`` itself)."""
    key = urllib.parse.quote(path, safe="/~")
    if endpoint:
        return f"{endpoint.rstrip('/')}/{bucket}/{key}"
    return f"https://{bucket}.s3.{region or 'us-east-1'}.amazonaws.com/{key}"


def remote_io_line(device: str) -> str:
    """One line for ``gds-zarr info``: how remote stores are read on ``device`` and why."""
    try:
        import obstore

        lib = f"obstore {obstore.__version__}"
    except ImportError as e:
        return f"unavailable: obstore is not importable ({e})"
    if device != "gpu":
        return f"{lib}: s3/gs/az/http batches of ranged GETs into host memory"
    why = _kvikio_remote()
    gpu = ("S3/HTTP via kvikio RemoteFile into device memory" if why is None
           else f"S3/HTTP via host + one copy per batch ({why})")
    return f"{lib}; {gpu}; GCS/Azure via host + one copy per batch"
