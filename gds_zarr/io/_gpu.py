"""KvikioIOBackend: batched kvikio ``CuFile.pread`` into one CuPy buffer per batch.

The GPU twin of :class:`gds_zarr.io._cpu.PosixIOBackend`, sharing its range resolution and
planning: phase 1 ``stat``-s each distinct file (kvikio raises when reading past the end, so
ranges are clamped first), :func:`~gds_zarr.planning.ranges.plan_reads` coalesces, ONE CuPy
uint8 buffer is allocated, and :func:`~gds_zarr.planning.staging.layout_reads` says where each
read goes:

* reads cuFile moves by DMA (GDS, at least kvikio's ``gds_threshold``) are issued as
  ``CuFile.pread`` into their page-aligned slices, and only then are the futures waited on
  (``IOFuture.get`` releases the GIL), so kvikio's thread pool overlaps them;
* every other read (all of them in compat mode, where kvikio itself would POSIX-read into a
  pinned bounce buffer and copy) is read on the host by the CPU backend's ``preadv`` machinery
  into one pinned buffer, each request at a place where its decode input is aligned for
  nvCOMP, then copied to the device in one ``cudaMemcpyAsync``: no device-side re-pack.

Open ``CuFile`` handles are expensive (two opens and a cuFile registration each), so they live
in a process-wide LRU cache bounded by the ``file_handle_cache_size`` setting and by a quarter
of ``ulimit -n`` (each handle holds two descriptors). A cached handle is keyed by path and
(inode, mtime, ctime, size), so a file replaced by an atomic write is reopened, not read stale.

kvikio, CuPy and libcuda are imported only when a backend is first used.
"""

from __future__ import annotations

import errno
import itertools
import os
import resource
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from gds_zarr import settings
from gds_zarr._device import CudaTarget, on_cuda_target, wait_before_external_write
from gds_zarr._hostpool import pinned_empty
from gds_zarr.errors import ChunkReadError
from gds_zarr.io._base import BatchRead, IOStats
from gds_zarr.io._cpu import (
    group_requests,
    not_a_file,
    read_scattered,
    resolve_ranges,
    temp_path_for,
)
from gds_zarr.planning.ranges import ReadPlan, plan_reads
from gds_zarr.planning.staging import READ_ALIGN, ReadLayout, current_payload, layout_reads

__all__ = ["KvikioIOBackend", "handle_cache_limit"]

_Ident = tuple[int, int, int, int, int]  # st_dev, st_ino, st_mtime_ns, st_ctime_ns, st_size


def handle_cache_limit() -> int:
    """How many CuFile handles stay open: the setting, bounded by ``ulimit -n`` / 4."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    by_fds = (1 << 16) if soft == resource.RLIM_INFINITY else max(1, soft // 4)
    return max(1, min(int(settings.get("file_handle_cache_size")), by_fds))


class _Entry:
    __slots__ = ("evicted", "handle", "ident", "refs")

    def __init__(self, handle: Any, ident: _Ident) -> None:
        self.handle, self.ident, self.refs, self.evicted = handle, ident, 0, False


def _open_cufile(path: str) -> Any:
    import kvikio

    return kvikio.CuFile(path, "r")


class _HandleCache:
    """A bounded LRU of open read handles (``kvikio.CuFile``), shared by the process.

    Handles are reference-counted while a batch reads through them: an evicted handle is
    closed when its last reader releases it, never under an in-flight ``pread``.

    Parameters
    ----------
    opener
        ``opener(path)`` returns an open handle with a ``close()`` method; default
        ``kvikio.CuFile(path, "r")``. The cache logic needs no GPU, so tests pass a plain
        file opener.
    """

    def __init__(self, opener: Callable[[str], Any] = _open_cufile) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._opener = opener

    def __len__(self) -> int:
        return len(self._entries)

    def acquire(self, path: str, ident: _Ident) -> tuple[_Entry, bool]:
        """An entry with an open handle for ``path`` as ``ident`` names it; True if opened now.

        Opening happens outside the lock (it is slow for CuFile); the cache is then trimmed to
        :func:`handle_cache_limit`, closing evicted handles no batch holds.
        """
        with self._lock:
            entry = self._entries.get(path)
            if entry is not None and entry.ident == ident:
                self._entries.move_to_end(path)
                entry.refs += 1
                return entry, False
        entry = _Entry(self._opener(path), ident)
        entry.refs = 1
        to_close = []
        with self._lock:
            old = self._entries.pop(path, None)
            self._entries[path] = entry
            if old is not None:
                to_close += self._evict(old)
            limit = handle_cache_limit()
            while len(self._entries) > limit:
                to_close += self._evict(self._entries.popitem(last=False)[1])
        for h in to_close:
            h.close()
        return entry, True

    @staticmethod
    def _evict(entry: _Entry) -> list[Any]:
        entry.evicted = True
        return [entry.handle] if entry.refs == 0 else []

    def release(self, entry: _Entry) -> None:
        with self._lock:
            entry.refs -= 1
            close = entry.evicted and entry.refs == 0
        if close:
            entry.handle.close()

    def clear(self) -> None:
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
            to_close = [h for e in entries for h in self._evict(e)]
        for h in to_close:
            h.close()


_CACHE = _HandleCache()


_KVIKIO_LOCK = threading.Lock()


def _kvikio_threads() -> int:
    """kvikio's thread count: the setting, else a fixed function of the cores.

    It must not follow the batch: kvikio 26.10 rebuilds its whole thread pool whenever
    ``thread_pool_nthreads`` changes (waiting for queued work), so a count that tracked each
    batch's number of reads would tear the pool down and rebuild it on almost every batch.
    """
    threads = int(settings.get("kvikio_threads"))
    if threads == 0:
        # kvikio's default of 1 thread serialises everything; hot-cache reads want ~8+.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 8
        threads = max(8, min(64, 2 * cores))
    return threads


def _configure_kvikio(nreads: int, total: int) -> None:
    """Set kvikio's thread count and task size from the settings or from the workload.

    ``kvikio.defaults.set(dict)`` applies at once (it returns a context manager that is only
    needed to undo); ``"num_threads"`` is kvikio's alias of ``"thread_pool_nthreads"``.
    """
    import kvikio.defaults

    threads = _kvikio_threads()
    task = int(settings.get("kvikio_task_size"))
    if task == 0:
        # Split big reads across the threads, but keep tasks >= 1 MiB so each stays efficient.
        task = int(min(16 << 20, max(1 << 20, total // max(1, threads))))
    with _KVIKIO_LOCK:  # concurrent batches (dask workers, threads) must not interleave sets
        if kvikio.defaults.get("num_threads") != threads:
            kvikio.defaults.set({"num_threads": threads})
        if kvikio.defaults.get("task_size") != task:
            kvikio.defaults.set({"task_size": task})


def _dma_min() -> int | None:
    """The smallest read kvikio hands to cuFile's DMA path: None in compat mode (every read is
    a POSIX read into a host bounce buffer, then a copy), else its ``gds_threshold`` (smaller
    reads go through a bounce buffer too). Unknown, or the ``gpu_bounced_reads`` setting
    'kvikio': 0, every read goes to kvikio at its pages (nothing is read on the host)."""
    if settings.get("gpu_bounced_reads") == "kvikio":
        return 0
    try:
        import kvikio.defaults

        if kvikio.defaults.is_compat_mode_preferred():
            return None
        return int(kvikio.defaults.get("gds_threshold"))
    except Exception:  # noqa: BLE001 - an older kvikio: keep every read on its page
        return 0


def _ident(st: os.stat_result) -> _Ident:
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


class KvikioIOBackend:
    """GPU I/O backend (see the module docstring). Needs CuPy, kvikio and a CUDA driver."""

    device: Literal["cpu", "gpu"] = "gpu"

    def __init__(self) -> None:
        self.stats = IOStats()

    def __repr__(self) -> str:
        return "KvikioIOBackend()"

    def _stat(self, path: str, resolve_link: Callable[[str], str] | None) -> tuple[str, int,
                                                                                  _Ident | None]:
        """``(real path, size, ident)`` of ``path``, size -1 if missing; errors name ``path``
        (the key's path, as the CPU backend's do), not where a symlink leads."""
        real = path
        try:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                real = resolve_link(path) if resolve_link is not None else os.path.realpath(path)
                st = os.stat(real)
        except (FileNotFoundError, NotADirectoryError):
            return real, -1, None
        except OSError as e:
            raise ChunkReadError(path, f"{e.strerror or e} (errno {e.errno})") from e
        if not stat.S_ISREG(st.st_mode):
            raise not_a_file(path, st.st_mode)
        if not os.access(real, os.R_OK):
            raise ChunkReadError(path, f"{os.strerror(errno.EACCES)} (errno {errno.EACCES})")
        return real, st.st_size, _ident(st)

    def read_batch(
        self,
        paths: Sequence[str],
        starts: np.ndarray,
        stops: np.ndarray,
        *,
        max_gap: int | None = None,
        max_size: int | None = None,
        resolve_link: Callable[[str], str] | None = None,
        size_hint: int | None = None,
        target: CudaTarget | None = None,
    ) -> BatchRead:
        """Read every request into one CuPy uint8 buffer (arguments as the CPU backend's).

        ``size_hint`` is accepted for the shared interface and not needed: every file is sized
        before the device buffer is allocated, and kvikio reads them all in one go.

        The buffer is allocated on ``target`` (the device and stream of the thread that asked
        for the read, see :func:`gds_zarr._device.current_cuda_target`), else on this thread's
        current device and stream.

        Raises
        ------
        ChunkReadError
            A file exists but cannot be read; ``key`` is its path.
        """
        with on_cuda_target(target):
            return self._read_batch(paths, starts, stops, max_gap, max_size, resolve_link)

    def _read_batch(self, paths: Sequence[str], starts: np.ndarray, stops: np.ndarray,
                    max_gap: int | None, max_size: int | None,
                    resolve_link: Callable[[str], str] | None) -> BatchRead:
        """:meth:`read_batch` on the current device and stream."""
        import cupy as cp

        n = len(paths)
        starts, stops, file_of, files = group_requests(paths, starts, stops)
        stated = [self._stat(p, resolve_link) for p in files]
        sizes = np.array([s for _, s, _ in stated], dtype=np.int64)
        present_file = sizes >= 0
        lo, hi = resolve_ranges(starts, stops, np.maximum(sizes, 0)[file_of])
        # Reads cuFile moves by DMA at 4 KiB pages and destinations; every other read (all of
        # them in compat mode) on the host into pinned memory, each request placed so that its
        # decode input is aligned for nvCOMP, then one copy (planning/staging.py): nothing is
        # re-packed on the device but inner chunks read by DMA.
        layout = layout_reads(plan_reads(file_of, lo, hi, max_gap=max_gap, max_size=max_size),
                              hi - lo, np.maximum(sizes, 0), payload=current_payload(),
                              dma_min=_dma_min())
        plan = layout.dma
        # CuPy's pool aligns blocks to 512 B only: take a page more and start at a page.
        raw = cp.empty(layout.total_size + READ_ALIGN, dtype=cp.uint8)
        shift = -raw.data.ptr % READ_ALIGN
        data = raw[shift : shift + layout.total_size]
        opened = 0
        host_bytes = 0
        if layout.host.ncalls:
            real = [p for p, _, _ in stated]
            try:
                host_bytes = self._read_on_host(layout, real, sizes, data)
            except ChunkReadError as e:  # it names the real path: name the key's, as kvikio's
                key = files[real.index(e.key)] if e.key in real else e.key
                raise ChunkReadError(key, e.reason) from e
            opened += len(np.unique(layout.host.call_file))
        if plan.nreads:
            _configure_kvikio(plan.nreads, plan.total_size)
            # CuPy's pool may hand out a block that queued kernels still read (a previous
            # batch, freed); kvikio writes from its own threads and, with real GDS, through the
            # cuFile driver, outside stream order: wait for that work first.
            wait_before_external_write()
            rf = plan.read_file
            # Files in windows of at most the cache bound: never more handles open at once.
            first = np.flatnonzero(np.r_[True, rf[1:] != rf[:-1]])
            window = handle_cache_limit()
            bounds = np.append(first[::window], plan.nreads).tolist()
            for a, b in itertools.pairwise(bounds):
                opened += self._read_window(plan, a, b, stated, files, data)
        self.stats.add(files_opened=opened, reads=plan.nreads + layout.host.ncalls,
                       bytes_read=int(plan.read_size.sum()) + host_bytes,
                       requests=n)
        return BatchRead(data=data, offsets=layout.request_dest, sizes=hi - lo,
                         present=present_file[file_of], device="gpu",
                         nbytes_staged=int(raw.nbytes))

    @staticmethod
    def _read_on_host(layout: ReadLayout, real: list[str], sizes: np.ndarray,
                      data: Any) -> int:
        """The host reads of ``layout`` into pinned memory, copied to ``data[:host_size]`` on
        the current stream; bytes read. The copy is waited for: the pinned pool hands the
        buffer out again at once."""
        import cupy as cp

        # gds_zarr's pinned pool, not CuPy's: CuPy's keeps a block per power-of-two size for
        # good (up to twice the batch, page-locked); this one reuses blocks of nearby sizes and
        # unmaps idle ones (gds_zarr/_hostpool.py).
        pinned = pinned_empty(layout.host_size)
        got = read_scattered(real, layout.host, pinned, file_sizes=sizes.tolist())
        stream = cp.cuda.get_current_stream()
        cp.cuda.runtime.memcpyAsync(data.data.ptr, pinned.ctypes.data, layout.host_size,
                                    cp.cuda.runtime.memcpyHostToDevice, stream.ptr)
        stream.synchronize()
        return got

    def _read_window(self, plan: ReadPlan, a: int, b: int,
                     stated: list[tuple[str, int, Any]], files: list[str], data: Any) -> int:
        """Issue the preads ``a:b`` of ``plan``, then wait for all; files newly opened."""
        rf, ro = plan.read_file[a:b].tolist(), plan.read_offset[a:b].tolist()
        rs, rd = plan.read_size[a:b].tolist(), plan.read_dest[a:b].tolist()
        entries: dict[int, _Entry] = {}
        futures = []
        opened = 0
        errors: list[ChunkReadError] = []
        try:
            for f, off, size, dest in zip(rf, ro, rs, rd, strict=True):
                entry = entries.get(f)
                if entry is None:
                    real, _, ident = stated[f]
                    try:
                        entry, new = _CACHE.acquire(real, ident)
                    except (OSError, RuntimeError) as e:
                        errors.append(ChunkReadError(files[f], f"kvikio could not open it: {e}"))
                        break
                    entries[f] = entry
                    opened += new
                try:
                    future = entry.handle.pread(data[dest : dest + size], size, off)
                except (OSError, RuntimeError) as e:
                    # kvikio reads below gds_threshold at once: their errors come from pread
                    errors.append(ChunkReadError(files[f], f"kvikio read failed: {e}"))
                    break
                futures.append((f, size, future))
        finally:
            for f, want, fut in futures:  # wait for all before raising: they write into data
                try:
                    got = fut.get()
                except Exception as e:  # noqa: BLE001 - collected, first one raised below
                    errors.append(ChunkReadError(files[f], f"kvikio read failed: {e}"))
                    continue
                if got != want:
                    errors.append(ChunkReadError(files[f], f"read {got} bytes, expected {want}"))
            for entry in entries.values():
                _CACHE.release(entry)
        if errors:
            raise errors[0]
        return opened

    def write_file(self, path: str, data: Any, *, exclusive: bool = False) -> None:
        """Write device (CuPy) or host bytes to ``path`` atomically through ``CuFile.pwrite``.

        Parameters
        ----------
        path
            Absolute, validated target path; missing parent directories are created.
        data
            A contiguous CuPy array (or anything kvikio accepts), written without a host copy.
        exclusive
            If True, raise ``FileExistsError`` when ``path`` exists.
        """
        import cupy as cp
        import kvikio

        arr = cp.asarray(data).view(cp.uint8).reshape(-1) if hasattr(
            data, "__cuda_array_interface__") else np.asarray(data).view(np.uint8).reshape(-1)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if isinstance(arr, cp.ndarray):
            # Kernels or copies still queued on this thread's stream may be filling ``arr``;
            # kvikio reads it from its own threads (or cuFile DMA), outside stream order.
            with cp.cuda.Device(arr.device.id):
                wait_before_external_write()
        tmp = temp_path_for(path)
        try:
            f = kvikio.CuFile(tmp, "w")
            try:
                if arr.nbytes:
                    written = f.pwrite(arr, arr.nbytes, 0).get()
                    if written != arr.nbytes:
                        raise OSError(f"kvikio wrote {written} of {arr.nbytes} bytes to {tmp!r}")
            finally:
                f.close()
            if exclusive:
                os.link(tmp, path)
                os.unlink(tmp)
            else:
                os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def close(self) -> None:
        """Nothing per backend: the handle cache is shared by the process (see clear_cache)."""


def clear_handle_cache() -> None:
    """Close every cached CuFile handle (tests; after many files were replaced)."""
    _CACHE.clear()


def cached_handles() -> int:
    """How many CuFile handles are open in the cache now."""
    return len(_CACHE)
