"""CPU decoder: native kernels, else numcodecs, over a batch of chunks, in a thread pool.

A one-step chain of zstd, LZ4, Blosc, gzip or zlib is decoded by a native kernel
(:mod:`gds_zarr.decode._native`: the C function called through ctypes, per-thread state, straight
into the row, the GIL released), so ``decode_threads`` threads decode in parallel; so is the
compressor of an HDF5 filter chain (Fletcher-32, deflate, shuffle:
:mod:`gds_zarr.decode._filters`); a chunk a kernel does not accept, and every other chain, goes
through numcodecs.

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

import ctypes
import itertools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numcodecs
import numpy as np

from gds_zarr import settings
from gds_zarr._batch import BatchRead
from gds_zarr._hostpool import host_empty
from gds_zarr.decode import _blosc_native, _bounded, _filters, _native, _zstd_native
from gds_zarr.decode._base import BytesStep
from gds_zarr.decode.formats import check_blosc, numpy_reader
from gds_zarr.errors import ChunkDecodeError
from gds_zarr.planning.blosc import BloscPlan, plan_limit, plan_parts, unshuffle_span

__all__ = ["BLOSC_PLAN", "CpuDecoder", "decode_pool"]

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
#: Whether one-step Blosc chains decode through the batch plan by default (where gds_zarr's C
#: kernels are built; else one c-blosc call per chunk, after the batch-wide header check).
#: On: with the C row decoder (``decode/_blosc_native.c``: c-blosc's own stream codecs, block by
#: block, a SIMD unshuffle, raw byte planes read in place), whole 4096x4096 float32 arrays of
#: 256x256 chunks read through the pipeline (2 shared cores, same process, paired medians of
#: 4 x 31 alternating reads) took 1.00-1.03x the time of c-blosc per chunk with LZ4 + byte
#: shuffle (the plan costs ~0.4 ms per 256 chunks more than c-blosc's header check) and
#: 0.81-0.87x with Zstd + bit shuffle. The plan in Python with numpy's unshuffle took 1.6x and
#: 3x c-blosc's decode time. benchmarks/results/blosc-cpu-twin-2026-12-02.md has the figures.
BLOSC_PLAN = True


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
    blosc_plan
        Decode one-step Blosc chains through the batch plan (:mod:`gds_zarr.planning.blosc`:
        one call of the C row decoder per chunk, or without that library one native call per
        compressed stream and a numpy unshuffle) rather than one c-blosc call per chunk;
        ``None``: :data:`BLOSC_PLAN` where the C library is built, else c-blosc.
    """

    device: Literal["cpu", "gpu"] = "cpu"

    def __init__(self, threads: int | None = None, *, blosc_plan: bool | None = None) -> None:
        self._threads = threads
        self._blosc_plan = blosc_plan

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
        # Pooled (a batch's rows, the GPU path's CPU-decoded chunks): see gds_zarr/_hostpool.py.
        out = host_empty(len(index) * decoded_nbytes).reshape(len(index), decoded_nbytes)
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
        blosc_plan = self._blosc_plan
        if blosc_plan is None:  # the plan by default only with its C kernels (numpy's: slower)
            blosc_plan = BLOSC_PLAN and _blosc_native.library() is not None
        use_plan = blosc_plan and _blosc_plannable(steps, decoded_nbytes)
        if steps and steps[0].kind == "blosc":
            # c-blosc trusts its header, not the buffer's length: check them against each other
            # for the whole batch first (a short chunk would otherwise decode its neighbour).
            starts = np.asarray(offs, dtype=np.int64)
            stops = starts + np.asarray(sizes, dtype=np.int64)
            if use_plan:  # the plan checks every header field, block start and stream size
                # in parts within the budget's share; every header is checked at the first part
                parts = plan_parts(_inside_reader(data), starts, stops, decoded_nbytes, names,
                                   plan_limit())
                part = next(parts, None)
            else:  # before other steps: nbytes at most what they take (issue 19, item 3)
                check_blosc(numpy_reader(data), starts, stops,
                            decoded_nbytes if len(steps) == 1 else None, names,
                            at_most=_bounded.output_bounds(steps, decoded_nbytes)[0])
        kernel = _native.kernel_for(steps, decoded_nbytes)
        chained_zstd = kernel is None and _native_zstd(steps)
        filtered = _filters.split_chain(steps, decoded_nbytes) if kernel is None else None
        if use_plan:
            while part is not None:
                lo, hi, plan = part
                run = _blosc_loop(data, offs, sizes, names, steps, plan, kernel, row_of,
                                  consume, decoded_nbytes, lo)
                del part, plan  # the next part is planned without this one alive
                _run_rows(run, lo, hi, threads)
                del run
                part = next(parts, None)
            return
        if kernel is not None:
            run = _native_loop(data, offs, sizes, names, steps, kernel, row_of, consume,
                               decoded_nbytes)
        elif filtered is not None:  # HDF5's fletcher32 + deflate + shuffle, and the like
            run = _filter_loop(data, offs, sizes, names, steps, filtered, row_of, consume,
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


def _run_rows(run: Callable[[int, int], None], lo: int, hi: int, threads: int) -> None:
    """``run`` over rows ``lo:hi`` (a part of a Blosc plan): in this thread, or in pieces on
    ``threads`` threads."""
    if threads == 1 or hi - lo == 1:
        run(lo, hi)
    elif lo == 0:
        _parallel(run, hi, threads)
    else:
        _parallel(lambda a, b: run(lo + a, lo + b), hi - lo, threads)


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


def _scratch(nbytes: int, name: str = "scratch") -> np.ndarray:
    """This thread's reusable row ``name`` of ``nbytes`` bytes (the latest size is kept)."""
    row: np.ndarray | None = getattr(_local, name, None)
    if row is None or row.nbytes != nbytes:
        row = np.empty(nbytes, dtype=np.uint8)
        setattr(_local, name, row)
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


def _filter_loop(data: np.ndarray, offs: list[int], sizes: list[int], names: list[str],
                 steps: Sequence[BytesStep], chain: _filters.FilterChain,
                 row_of: Callable[[int], np.ndarray] | None,
                 consume: Callable[[int, np.ndarray], None] | None,
                 decoded_nbytes: int) -> Callable[[int, int], None]:
    """The per-piece loop for a filter chain (:mod:`gds_zarr.decode._filters`): checksum,
    native kernel and unshuffle per chunk; a chunk one of them refuses goes to numcodecs."""
    base = data.ctypes.data if data.nbytes else 0

    def run(lo: int, hi: int) -> None:
        fn = chain.kernel() if chain.kernel is not None else None
        row = None if row_of is not None else _scratch(decoded_nbytes)
        tmp = _scratch(decoded_nbytes, "unshuffle") if chain.elementsize > 1 else None
        for j in range(lo, hi):
            if row_of is not None:
                row = row_of(j)
            assert row is not None
            o = offs[j]
            if not _filters.decode_chunk(chain, fn, data, base, o, sizes[j], row, tmp):
                _decode_one(steps, data[o: o + sizes[j]], row, names[j])
            if consume is not None:
                consume(j, row)

    return run


def _inside_reader(data: np.ndarray) -> Callable[[np.ndarray, int], np.ndarray]:
    """The plan's byte reader over host memory: plain (bounds-checked) indexing, without the
    clipping of ``numpy_reader``: :func:`plan_blosc` reads only positions it has checked to lie
    inside their chunk (20% of its time on 256 chunks went to the clipping)."""
    flat = np.asarray(data).reshape(-1).view(np.uint8)

    def read(positions: np.ndarray, width: int) -> np.ndarray:
        return flat[np.asarray(positions, np.int64)[:, None] + np.arange(width)]

    return read


def _blosc_plannable(steps: Sequence[BytesStep], decoded_nbytes: int) -> bool:
    """A one-step numcodecs Blosc chain whose streams the native kernels can decode."""
    return (len(steps) == 1 and steps[0].kind == "blosc"
            and isinstance(steps[0].codec, numcodecs.Blosc)
            and 0 < decoded_nbytes <= _native.INT_MAX and bool(_native.blosc_stream_kernels()))


def _blosc_spans(plan: BloscPlan) -> tuple[list[int], list[tuple[int, int, int, int]]]:
    """Each row's blocks merged into spans of equal (size, shuffle, typesize), as Python lists.

    A chunk's full blocks make one span (one numpy unshuffle), its short last block another.
    Returns CSR bounds per row and ``(offset, nbytes, block, shuffle, typesize)`` per span.
    """
    b_row, b_size = plan.block_row, plan.block_size
    b_sh, b_ts = plan.block_shuffle.astype(np.int64), plan.block_typesize
    new = np.ones(len(b_row), bool)
    new[1:] = ((b_row[1:] != b_row[:-1]) | (b_size[1:] != b_size[:-1])
               | (b_sh[1:] != b_sh[:-1]) | (b_ts[1:] != b_ts[:-1]))
    first = np.flatnonzero(new)
    nbytes = np.add.reduceat(b_size, first) if first.size else first
    spans = list(zip(plan.block_dst[first].tolist(), np.asarray(nbytes).tolist(),
                     b_size[first].tolist(), b_sh[first].tolist(), b_ts[first].tolist(),
                     strict=True))
    bounds = np.searchsorted(b_row[first], np.arange(len(plan.codec) + 1)).tolist()
    return bounds, spans


def _blosc_loop(data: np.ndarray, offs: list[int], sizes: list[int], names: list[str],
                steps: Sequence[BytesStep], plan: BloscPlan,
                kernel: Callable[[], _native.Kernel] | None,
                row_of: Callable[[int], np.ndarray] | None,
                consume: Callable[[int, np.ndarray], None] | None,
                decoded_nbytes: int, first: int = 0) -> Callable[[int, int], None]:
    """The per-piece loop of the Blosc plan: a chunk is one call of the C row decoder
    (:mod:`gds_zarr.decode._blosc_native`: every stream by c-blosc's own codec, block by block,
    unshuffled in C); without that library, every stream by the kernel of its codec and a numpy
    unshuffle per span of like blocks. The plan's row 0 is the batch's row ``first`` (a part of
    the batch, see :func:`gds_zarr.planning.blosc.plan_parts`).

    A chunk the plan leaves out (``fallback``), or with a stream whose codec is missing or that
    does not give exactly its size, is decoded again from its bytes by c-blosc, else numcodecs,
    whose result or error is the reference.
    """
    base = data.ctypes.data if data.nbytes else 0
    fallback = plan.fallback.tolist()
    native = _blosc_native.RowDecoder(plan, data) if _blosc_native.library() else None
    decode_rows = None if native is not None else _python_rows(plan, base)

    def run(lo: int, hi: int) -> None:
        whole = kernel() if kernel is not None else None
        fn = native.bind() if native is not None else None
        row = None if row_of is not None else _scratch(decoded_nbytes)
        for j in range(lo, hi):
            if row_of is not None:
                row = row_of(j)
            assert row is not None
            if fallback[j - first]:
                ok = False
            elif fn is not None:
                ok = fn(j - first, row.ctypes.data, decoded_nbytes) == 0
            else:
                ok = decode_rows is not None and decode_rows(j - first, row)
            if not ok and (whole is None or whole(row.ctypes.data, decoded_nbytes,
                                                   base + offs[j], sizes[j]) != decoded_nbytes):
                o = offs[j]
                _decode_one(steps, data[o: o + sizes[j]], row, names[j])
            if consume is not None:
                consume(j, row)

    return run


def _python_rows(plan: BloscPlan, base: int) -> Callable[[int, np.ndarray], bool]:
    """``decode(j, row) -> ok`` for the plan without the C library: each stream by the native
    kernel of its codec (into the row, or a scratch row when the chunk is shuffled), then a
    numpy unshuffle per span of like blocks. Call it in the decoding thread."""
    s_bounds = plan.stream_bounds.tolist()
    s_src = (plan.stream_src + base).tolist()
    s_size = plan.stream_size.tolist()
    s_dst = plan.stream_dst.tolist()
    s_dsize = plan.stream_dsize.tolist()
    s_codec = plan.stream_codec.tolist()  # -1: raw copy
    shuffled = plan.shuffled_rows.tolist()
    sp_bounds, spans = _blosc_spans(plan)
    memmove = ctypes.memmove

    def decode(j: int, row: np.ndarray) -> bool:
        kernels = _native.blosc_stream_kernels()
        tmp = _scratch(row.nbytes, "blosc_tmp") if shuffled[j] else row
        into = tmp.ctypes.data
        for s in range(s_bounds[j], s_bounds[j + 1]):
            c = s_codec[s]
            if c < 0:
                memmove(into + s_dst[s], s_src[s], s_dsize[s])
                continue
            fn = kernels.get(c)
            if fn is None or fn(into + s_dst[s], s_dsize[s], s_src[s], s_size[s]) != s_dsize[s]:
                return False
        if shuffled[j]:
            for o, nb, blk, sh, ts in spans[sp_bounds[j]: sp_bounds[j + 1]]:
                unshuffle_span(tmp[o: o + nb], row[o: o + nb], blk, sh, ts)
        return True

    return decode


def _decode_chained(steps: Sequence[BytesStep], buf: np.ndarray, row: np.ndarray,
                    key: str) -> None:
    """Steps before the last with numcodecs (bounded as in :func:`_decode_one`), then zstd from
    their output straight into ``row``."""
    bounds = _bounded.output_bounds(steps, row.nbytes)
    cur: Any = buf
    for k in range(len(steps) - 1):
        cur = _decode_step(steps[k], cur, k, bounds[k], None, key)
    mid = _as_bytes_view(cur)
    try:
        got = _zstd_native.decompress_into(row.ctypes.data, row.nbytes, mid.ctypes.data,
                                           mid.nbytes)
    except _zstd_native.ZstdError as e:
        raise ChunkDecodeError(key, steps[-1].name, f"zstd: {e}") from None
    if got != row.nbytes:
        raise ChunkDecodeError(key, steps[-1].name,
                               f"expected {row.nbytes} decoded bytes, found {got}")


def _decode_one(steps: Sequence[BytesStep], buf: np.ndarray, row: np.ndarray, key: str) -> None:
    """Run ``steps`` over one chunk, the last one decoding into ``row``.

    No step decodes to more than the chain lets it (:func:`gds_zarr.decode._bounded.
    output_bounds`): a size declared past that is refused before the codec allocates it, and a
    gzip, zlib or zstd stream without one stops one byte past it.
    """
    if not steps:
        if buf.nbytes != row.nbytes:
            raise ChunkDecodeError(key, "bytes", f"expected {row.nbytes} bytes, "
                                                 f"found {buf.nbytes}")
        row[...] = buf
        return
    last = len(steps) - 1
    bounds = [row.nbytes] if last == 0 else _bounded.output_bounds(steps, row.nbytes)
    cur: Any = buf
    for k, step in enumerate(steps):
        cur = _decode_step(step, cur, k, bounds[k], row if k == last else None, key)
    got = _as_bytes_view(cur)
    if got.nbytes != row.nbytes:
        raise ChunkDecodeError(key, steps[-1].name,
                               f"expected {row.nbytes} decoded bytes, found {got.nbytes}")
    if not np.shares_memory(got, row):
        row[...] = got


def _decode_step(step: BytesStep, cur: Any, k: int, at_most: int, row: np.ndarray | None,
                 key: str) -> Any:
    """Step ``k`` of a chain over one chunk's bytes ``cur``, decoding to at most ``at_most``
    bytes; ``row``: the last step's destination (``at_most`` is its size), else None."""
    if step.kind == "blosc" and k > 0:  # the first step's frames were checked batch-wide
        b = _as_bytes_view(cur)
        check_blosc(numpy_reader(b), np.zeros(1, np.int64), np.full(1, b.nbytes, np.int64),
                    None if row is None else row.nbytes, [key], at_most=at_most)
    declared = _declared_size(step.kind, cur) if row is not None or step.kind in _CLAIMS else None
    # Refused before decoding: the codec would first allocate whatever the header claims (a
    # corrupt header can claim gigabytes), and the result could not fit.
    if row is not None and declared is not None and declared != row.nbytes:
        raise ChunkDecodeError(key, step.name, f"the frame declares {declared} decoded "
                                               f"bytes, expected {row.nbytes}")
    if declared is not None and declared > at_most:
        raise ChunkDecodeError(key, step.name, f"the frame declares {declared} decoded bytes, "
                                               f"more than the {at_most} the chain's next "
                                               f"steps can take")
    # Without a declared size, or zstd before another step (numcodecs allocates the sum of
    # its frames' sizes, or streams without bound if one lacks it): stop past the bound.
    bounded = (_bounded.decoder_for(step)
               if declared is None or (row is None and step.kind == "zstd") else None)
    try:
        if bounded is not None:
            result = bounded(cur, at_most, row)
            if result is None:
                raise ChunkDecodeError(key, step.name, (
                    f"expected {at_most} decoded bytes, found more" if row is not None else
                    f"decodes to more than the {at_most} bytes the chain's next steps can take"))
            return result
        if row is not None and declared is not None:
            # The frame declares exactly a row's worth: decode straight into the row. (With a
            # larger ``out`` these codecs would leave the tail stale, so the size is checked.)
            return step.codec.decode(cur, out=row)
        return step.codec.decode(cur)
    except ChunkDecodeError:
        raise
    except Exception as e:
        raise ChunkDecodeError(key, step.name, f"{type(e).__name__}: {e}") from e


# Kinds whose codec allocates the decoded size its header declares.
_CLAIMS = frozenset({"zstd", "lz4", "blosc"})


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
