"""CPU decoder: native kernels, else numcodecs, over a batch of chunks, in a thread pool.

A one-step chain of zstd, LZ4, Blosc, gzip or zlib is decoded by a native kernel
(:mod:`gds_zarr.decode._native`: the C function called through ctypes, per-thread state, straight
into the row, the GIL released), so ``decode_threads`` threads decode in parallel; a chunk a
kernel does not accept, and every other chain, goes through numcodecs.

Work is split into a few contiguous pieces per thread, pulled from a shared counter, so a thread
the OS deschedules on a busy machine does not hold up the batch; the calling thread decodes
pieces too instead of waiting idle. Two entry points:

* :meth:`CpuDecoder.decode_batch` decodes into the rows of one 2-D array (the
  :class:`~gds_zarr.decode._base.BytesDecoder` protocol);
* :meth:`CpuDecoder.decode_each` decodes every chunk into a small per-thread scratch row and
  hands it to a callback in the same thread right away, while it is hot in cache: the CPU
  pipeline scatters there, so no batch-sized decoded array is ever allocated.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numcodecs
import numpy as np

from gds_zarr import settings
from gds_zarr._batch import BatchRead
from gds_zarr.decode import _native, _zstd_native
from gds_zarr.decode._base import BytesStep
from gds_zarr.decode.formats import check_blosc, numpy_reader
from gds_zarr.errors import ChunkDecodeError

__all__ = ["CpuDecoder", "decode_pool"]

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()
_local = threading.local()
# Pieces per thread: small enough that a descheduled thread delays little, few enough that
# the per-piece overhead (a counter step, list slicing) stays negligible.
_PIECES_PER_THREAD = 4
# Encoded bytes that make a second thread worth its hand-off. With the GIL-free native kernels
# a 256x256 window of 16 KiB zstd chunks (~200 KiB) gains from two threads: 100 windows took
# 174 ms at 64 KiB against 197 ms at 256 KiB (same run; 16-32 KiB no better).
_BYTES_PER_THREAD = 64 << 10


def decode_pool(threads: int) -> ThreadPoolExecutor:
    """The process-wide decode pool, grown to at least ``threads`` workers."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < threads:
            # The old pool finishes what it runs; new work goes to the larger one.
            old = _pool
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gds_zarr-decode")
            _pool_size = threads
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def _as_bytes_view(result: Any) -> np.ndarray:
    arr = np.asarray(result)
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    return arr.reshape(-1).view(np.uint8)


class CpuDecoder:
    """Decode batches of chunks on the host with numcodecs (zstd: libzstd when it loads).

    Parameters
    ----------
    threads
        Worker threads; ``None`` reads the ``decode_threads`` setting at each call.
    """

    device: Literal["cpu", "gpu"] = "cpu"

    def __init__(self, threads: int | None = None) -> None:
        self._threads = threads

    def supports(self, steps: Sequence[BytesStep]) -> bool:
        """Every step carries a numcodecs codec, so the CPU decodes any chain."""
        return all(hasattr(s.codec, "decode") for s in steps)

    def decode_batch(self, steps: Sequence[BytesStep], src: BatchRead, index: np.ndarray,
                     decoded_nbytes: int, keys: Sequence[str]) -> np.ndarray:
        """Decode chunks ``index`` of ``src`` into a new ``(len(index), decoded_nbytes)`` array.

        Parameters
        ----------
        steps
            Bytes -> bytes steps in decode order (may be empty: raw bytes).
        src
            The batch read holding the encoded chunks (host memory).
        index
            Which requests of ``src`` to decode, in output row order.
        decoded_nbytes
            Size of every decoded chunk.
        keys
            Store key of every request of ``src`` (for error messages).

        Returns
        -------
        numpy.ndarray
            uint8, one row per decoded chunk.

        Raises
        ------
        ChunkDecodeError
            If a codec rejects a chunk, or a chunk decodes to the wrong number of bytes.
        """
        out = np.empty((len(index), decoded_nbytes), dtype=np.uint8)
        self._run(steps, src, index, keys, out.__getitem__, None, decoded_nbytes)
        return out

    def decode_each(self, steps: Sequence[BytesStep], src: BatchRead, index: np.ndarray,
                    decoded_nbytes: int, keys: Sequence[str],
                    consume: Callable[[int, np.ndarray], None]) -> None:
        """Decode chunks ``index`` of ``src`` one by one, calling ``consume(j, row)`` for each.

        ``row`` is a per-thread scratch buffer of ``decoded_nbytes`` bytes holding chunk
        ``index[j]``; it is reused for the thread's next chunk, so ``consume`` must copy what it
        needs before returning. ``consume`` runs in the decoding threads, concurrently.

        Parameters
        ----------
        steps, src, index, decoded_nbytes, keys
            As :meth:`decode_batch`.
        consume
            Called once per decoded chunk, in the thread that decoded it.

        Raises
        ------
        ChunkDecodeError
            If a codec rejects a chunk, or a chunk decodes to the wrong number of bytes.
            Chunks of other threads may have been consumed already.
        """
        self._run(steps, src, index, keys, None, consume, decoded_nbytes)

    def _run(self, steps: Sequence[BytesStep], src: BatchRead, index: np.ndarray,
             keys: Sequence[str], row_of: Callable[[int], np.ndarray] | None,
             consume: Callable[[int, np.ndarray], None] | None, decoded_nbytes: int) -> None:
        n = len(index)
        if n == 0:
            return
        threads = self._threads if self._threads is not None else settings.get("decode_threads")
        data = np.asarray(src.data)
        encoded = int(np.asarray(src.sizes, dtype=np.int64)[np.asarray(index, np.int64)].sum())
        # A thread hop costs more than decoding a few small chunks: one thread per
        # _BYTES_PER_THREAD of encoded input, at most ``threads``.
        threads = max(1, min(int(threads), n, encoded // _BYTES_PER_THREAD))
        # Python lists: the per-chunk loop then indexes lists, not numpy scalars.
        idx = np.asarray(index, dtype=np.int64)
        offs = np.asarray(src.offsets, dtype=np.int64)[idx].tolist()
        sizes = np.asarray(src.sizes, dtype=np.int64)[idx].tolist()
        names = [keys[i] for i in idx.tolist()]
        if steps and steps[0].kind == "blosc":
            # c-blosc trusts its header, not the buffer's length: check them against each other
            # for the whole batch first (a short chunk would otherwise decode its neighbour).
            starts = np.asarray(offs, dtype=np.int64)
            check_blosc(numpy_reader(data), starts, starts + np.asarray(sizes, dtype=np.int64),
                        decoded_nbytes if len(steps) == 1 else None, names)
        kernel = _native.kernel_for(steps, decoded_nbytes)
        chained_zstd = kernel is None and _native_zstd(steps)
        if kernel is not None:
            run = _native_loop(data, offs, sizes, names, steps, kernel, row_of, consume,
                               decoded_nbytes)
        else:
            def run(lo: int, hi: int) -> None:
                row = None if row_of is not None else _scratch(decoded_nbytes)
                for j in range(lo, hi):
                    if row_of is not None:
                        row = row_of(j)
                    assert row is not None
                    o = offs[j]
                    if chained_zstd:  # earlier steps (crc32c, ...) by numcodecs, then libzstd
                        _decode_chained(steps, data[o: o + sizes[j]], row, names[j])
                    else:
                        _decode_one(steps, data[o: o + sizes[j]], row, names[j])
                    if consume is not None:
                        consume(j, row)

        if threads == 1:
            run(0, n)
            return
        _parallel(run, n, threads)


def _parallel(run: Callable[[int, int], None], n: int, threads: int) -> None:
    """Run ``run(lo, hi)`` over pieces of ``range(n)`` on ``threads`` threads (caller included).

    Pieces are pulled from a shared counter; after an error no new piece starts, and every
    started piece finishes before the first error is raised (no thread still writes then).
    """
    npieces = min(n, threads * _PIECES_PER_THREAD)
    bounds = np.linspace(0, n, npieces + 1).astype(np.int64).tolist()
    counter = itertools.count()  # next() on a count is atomic under the GIL
    errors: list[BaseException] = []

    def worker() -> None:
        while not errors:
            k = next(counter)
            if k >= npieces:
                return
            try:
                run(bounds[k], bounds[k + 1])
            except BaseException as e:  # noqa: BLE001 - re-raised by the caller below
                errors.append(e)
                return

    pool = decode_pool(threads - 1)
    futures = [pool.submit(worker) for _ in range(threads - 1)]
    worker()
    for f in futures:
        f.result()
    if errors:
        raise errors[0]


def _scratch(nbytes: int) -> np.ndarray:
    """This thread's reusable row of ``nbytes`` bytes (the latest size asked for is kept)."""
    row: np.ndarray | None = getattr(_local, "scratch", None)
    if row is None or row.nbytes != nbytes:
        row = _local.scratch = np.empty(nbytes, dtype=np.uint8)
    return row


def _native_zstd(steps: Sequence[BytesStep]) -> bool:
    """True when the last step is numcodecs' Zstd and libzstd can be called directly."""
    return bool(steps) and steps[-1].kind == "zstd" and isinstance(
        steps[-1].codec, numcodecs.Zstd) and _zstd_native.available()


def _native_loop(data: np.ndarray, offs: list[int], sizes: list[int], names: list[str],
                 steps: Sequence[BytesStep], kernel: Callable[[], _native.Kernel],
                 row_of: Callable[[int], np.ndarray] | None,
                 consume: Callable[[int, np.ndarray], None] | None,
                 decoded_nbytes: int) -> Callable[[int, int], None]:
    """The per-piece loop for a one-step chain with a native kernel (see decode/_native.py).

    The loop body is a kernel call and a size check: it holds the GIL only for that, so the
    other decode threads run while the C code works. A chunk the kernel does not accept goes
    to numcodecs, which decodes it or raises the error.
    """
    base = data.ctypes.data if data.nbytes else 0
    src = [base + o for o in offs]

    def run(lo: int, hi: int) -> None:
        fn = kernel()
        row = None
        dst = 0
        if row_of is None:
            row = _scratch(decoded_nbytes)
            dst = row.ctypes.data
        for j in range(lo, hi):
            if row_of is not None:
                row = row_of(j)
                dst = row.ctypes.data
            if fn(dst, decoded_nbytes, src[j], sizes[j]) != decoded_nbytes:
                o = offs[j]
                _decode_one(steps, data[o: o + sizes[j]], row, names[j])  # type: ignore[arg-type]
            if consume is not None:
                consume(j, row)  # type: ignore[arg-type]

    return run


def _decode_chained(steps: Sequence[BytesStep], buf: np.ndarray, row: np.ndarray,
                    key: str) -> None:
    """Steps before the last with numcodecs, then zstd from their output straight into ``row``."""
    mid = _run_steps(steps[:-1], buf, key)
    try:
        got = _zstd_native.decompress_into(row.ctypes.data, row.nbytes, mid.ctypes.data,
                                           mid.nbytes)
    except _zstd_native.ZstdError as e:
        raise ChunkDecodeError(key, steps[-1].name, f"zstd: {e}") from None
    if got != row.nbytes:
        raise ChunkDecodeError(key, steps[-1].name,
                               f"expected {row.nbytes} decoded bytes, found {got}")


def _run_steps(steps: Sequence[BytesStep], buf: np.ndarray, key: str) -> np.ndarray:
    """Run ``steps`` with numcodecs; the result as contiguous uint8."""
    cur: Any = buf
    for step in steps:
        try:
            cur = step.codec.decode(cur)
        except Exception as e:
            raise ChunkDecodeError(key, step.name, f"{type(e).__name__}: {e}") from e
    return _as_bytes_view(cur)


def _decode_one(steps: Sequence[BytesStep], buf: np.ndarray, row: np.ndarray, key: str) -> None:
    """Run ``steps`` over one chunk, the last one decoding into ``row``."""
    if not steps:
        if buf.nbytes != row.nbytes:
            raise ChunkDecodeError(key, "bytes", f"expected {row.nbytes} bytes, "
                                                 f"found {buf.nbytes}")
        row[...] = buf
        return
    cur: Any = buf
    last = len(steps) - 1
    for k, step in enumerate(steps):
        if step.kind == "blosc" and k > 0:  # the first step's frames were checked batch-wide
            b = _as_bytes_view(cur)
            check_blosc(numpy_reader(b), np.zeros(1, np.int64), np.full(1, b.nbytes, np.int64),
                        row.nbytes if k == last else None, [key])
        declared = _declared_size(step.kind, cur) if k == last else None
        if declared is not None and declared != row.nbytes:
            # Refused before decoding: the codec would first allocate whatever the header
            # claims (a corrupt header can claim gigabytes), and the result could not fit.
            raise ChunkDecodeError(key, step.name, f"the frame declares {declared} decoded "
                                                   f"bytes, expected {row.nbytes}")
        try:
            if declared is not None:
                # The frame declares exactly a row's worth: decode straight into the row.
                # (With a larger ``out`` these codecs would leave the tail stale, so the
                # declared size is checked first.)
                result = step.codec.decode(cur, out=row)
            else:
                result = step.codec.decode(cur)
        except ChunkDecodeError:
            raise
        except Exception as e:
            raise ChunkDecodeError(key, step.name, f"{type(e).__name__}: {e}") from e
        cur = result
    got = _as_bytes_view(cur)
    if got.nbytes != row.nbytes:
        raise ChunkDecodeError(key, steps[-1].name,
                               f"expected {row.nbytes} decoded bytes, found {got.nbytes}")
    if not np.shares_memory(got, row):
        row[...] = got


def _declared_size(kind: str, buf: Any) -> int | None:
    """The decoded size a compressed frame declares in its header, or None if it has none."""
    b = np.asarray(buf).reshape(-1).view(np.uint8)
    try:
        if kind == "lz4" and b.nbytes >= 4:
            return int.from_bytes(b[:4].tobytes(), "little")
        if kind == "blosc" and b.nbytes >= 16:
            return int.from_bytes(b[4:8].tobytes(), "little")
        if kind == "zstd":
            return _zstd_content_size(b)
        if kind == "crc32c":
            return b.nbytes - 4
    except (ValueError, IndexError, TypeError):  # malformed: the codec itself reports it
        return None
    return None


def _zstd_content_size(b: np.ndarray) -> int | None:
    """Frame_Content_Size of a zstd frame (RFC 8878, 3.1.1.1), or None if absent."""
    if b.nbytes < 6 or b[:4].tobytes() != b"\x28\xb5\x2f\xfd":
        return None
    fhd = int(b[4])
    fcs_flag, single_segment, dict_flag = fhd >> 6, (fhd >> 5) & 1, fhd & 3
    pos = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[dict_flag]
    n = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    if n == 0 or b.nbytes < pos + n:
        return None
    value = int.from_bytes(b[pos: pos + n].tobytes(), "little")
    return value + 256 if n == 2 else value
