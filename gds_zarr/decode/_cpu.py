"""CPU decoder: numcodecs over a batch of chunks, in a thread pool, into preallocated rows.

numcodecs' Zstd, LZ4, Blosc, Zlib and GZip release the GIL, so ``decode_threads`` threads decode
in parallel. Each thread takes one contiguous slice of the batch (not one task per chunk), and
the last step of every chunk decodes straight into that chunk's row of one 2-D uint8 array.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np

from gds_zarr import settings
from gds_zarr.decode._base import BytesStep
from gds_zarr.errors import ChunkDecodeError
from gds_zarr.io._base import BatchRead

__all__ = ["CpuDecoder", "decode_pool"]

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


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
    """Decode batches of chunks on the host with numcodecs.

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
        index = np.asarray(index, dtype=np.int64)
        out = np.empty((len(index), decoded_nbytes), dtype=np.uint8)
        if len(index) == 0:
            return out
        threads = self._threads if self._threads is not None else settings.get("decode_threads")
        threads = max(1, min(int(threads), len(index)))
        data = np.asarray(src.data)
        offsets, sizes = src.offsets, src.sizes

        def run(lo: int, hi: int) -> None:
            for j in range(lo, hi):
                i = int(index[j])
                o = int(offsets[i])
                _decode_one(steps, data[o: o + int(sizes[i])], out[j], keys[i])

        if threads == 1:
            run(0, len(index))
            return out
        bounds = np.linspace(0, len(index), threads + 1).astype(np.int64)
        futures = [decode_pool(threads).submit(run, int(lo), int(hi))
                   for lo, hi in zip(bounds[:-1], bounds[1:], strict=True) if hi > lo]
        for f in futures:
            f.result()  # re-raises the first ChunkDecodeError of that slice
        return out


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
        try:
            if k == last and _declared_size(step.kind, cur) == row.nbytes:
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
    except Exception:  # a malformed header: let the codec itself report the problem
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
