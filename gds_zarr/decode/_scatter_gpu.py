"""Scatter a batch of decoded chunks into the output array: one CuPy kernel launch per batch.

The pipeline hands over ``decoded`` (a 2-D uint8 array with one row per decoded chunk, or an
``(n, *chunk_shape)`` array of the output dtype with any strides) and a
:class:`gds_zarr.planning.chunks.ScatterPlan` (built by ``scatter_plan`` when every selection is
made of slices). Unit ``j`` copies ``count[j, d]`` elements per axis ``d``; the index math,
shared by the kernel and :func:`_scatter_reference` (numpy, tested on every machine), is, for
the unit element with multi-index ``i`` (C order over ``count[j]``, last axis fastest)::

    src = rows[j] * row_stride + sum_d (chunk_start[j, d] + i_d * chunk_step[j, d]) * cstride[d]
    dst =                       sum_d (out_start[j, d]   + i_d * out_step[j, d])   * ostride[d]

with strides in items: ``row_stride`` and ``cstride`` those of the decoded chunks (C order of
``chunk_shape`` for uint8 rows unless given; a typed view's own strides, e.g. the transposed view
of an ``F``-order zarr v2 chunk), ``ostride`` those of ``out``.
Selections that are not slices (integer arrays, masks) are passed as ``general`` and copied one
chunk at a time with CuPy indexing.

``out`` has the plan's number of axes: for integer selections (zarr drops those axes) the
pipeline passes a view of its output with length-1 axes put back.

CuPy is imported only when :func:`scatter_chunks` runs.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gds_zarr._counters import Counters
from gds_zarr._device import CudaTarget, on_cuda_target
from gds_zarr.planning.chunks import ScatterPlan

__all__ = ["ScatterStats", "contiguous_rows", "scatter_chunks", "scatter_stats"]

_THREADS = 256
_MAX_GRID_Y = 65535


@dataclass
class ScatterStats(Counters):
    """Process-wide counters of :func:`scatter_chunks` (thread safe), for tests.

    Attributes
    ----------
    calls
        :func:`scatter_chunks` calls.
    kernel_launches, kernel_units
        Scatter kernel launches, and the (chunk, selection) units they copied.
    general_copies
        Chunks copied one at a time with CuPy indexing (selections that are not slices).
    """

    calls: int = 0
    kernel_launches: int = 0
    kernel_units: int = 0
    general_copies: int = 0


scatter_stats = ScatterStats()

General = Sequence[tuple[int, Any, Any]]
"""``(row, chunk_selection, out_selection)`` per chunk copied with ``out[o] = chunk[c]``."""


def _c_strides(shape: Sequence[int]) -> tuple[int, ...]:
    out, acc = [], 1
    for n in reversed(shape):
        out.append(acc)
        acc *= int(n)
    return tuple(reversed(out))


def _strides(plan: ScatterPlan, chunk_strides: Sequence[int] | None) -> tuple[int, ...]:
    if chunk_strides is None:
        return _c_strides(plan.chunk_shape)
    return tuple(int(s) for s in chunk_strides)


def _unit_indices(plan: ScatterPlan, out_strides: Sequence[int],
                  chunk_strides: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Source item index into ``decoded`` and destination item offset into ``out``, per element.

    The numpy statement of the kernel's index math (see the module docstring).
    """
    ndim = len(plan.chunk_shape)
    cstr = np.array(_strides(plan, chunk_strides), np.int64)
    ostr = np.array(out_strides, np.int64)
    row_elems = int(np.prod(plan.chunk_shape, dtype=np.int64))
    n = len(plan.rows)
    counts = np.prod(plan.count, axis=1, dtype=np.int64).reshape(n) if ndim else np.ones(
        n, np.int64)
    unit = np.repeat(np.arange(n, dtype=np.int64), counts)
    e = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts,
                                                                 counts)
    src = plan.rows[unit] * row_elems
    dst = np.zeros_like(src)
    for d in range(ndim - 1, -1, -1):  # unravel e over count, last axis fastest
        ext = np.maximum(plan.count[unit, d], 1)
        i = e % ext
        e = e // ext
        src += (plan.chunk_start[unit, d] + i * plan.chunk_step[unit, d]) * cstr[d]
        dst += (plan.out_start[unit, d] + i * plan.out_step[unit, d]) * ostr[d]
    return src, dst


def _scatter_reference(out: np.ndarray, decoded: np.ndarray, plan: ScatterPlan,
                       chunk_strides: Sequence[int] | None = None,
                       general: General = ()) -> None:
    """Numpy twin of :func:`scatter_chunks`: the same index math, on the host."""
    itemsize = out.dtype.itemsize
    chunks = decoded.view(out.dtype).reshape(decoded.shape[0], -1)
    if len(plan.rows):
        src, dst = _unit_indices(plan, [s // itemsize for s in out.strides], chunk_strides)
        base = np.lib.stride_tricks.as_strided(out, shape=(1,), strides=(itemsize,))
        view = np.lib.stride_tricks.as_strided(  # item offsets from out's first element
            base, shape=(int(dst.max(initial=0)) + 1,), strides=(itemsize,), writeable=True)
        view[dst] = chunks.reshape(-1)[src]
    _scatter_general(out, chunks, plan.chunk_shape, _strides(plan, chunk_strides), general)


def _scatter_general(out: Any, chunks: Any, chunk_shape: tuple[int, ...],
                     strides: tuple[int, ...], general: General) -> None:
    """Per-chunk copies (host reference) for selections that are not slices."""
    itemsize = out.dtype.itemsize
    for row, csel, osel in general:
        view = _as_strided(chunks[row], chunk_shape, tuple(s * itemsize for s in strides))
        out[osel] = view[csel]


def _as_strided(flat: Any, shape: tuple[int, ...], byte_strides: tuple[int, ...]) -> Any:
    if isinstance(flat, np.ndarray):
        return np.lib.stride_tricks.as_strided(flat, shape=shape, strides=byte_strides)
    import cupy

    return cupy.lib.stride_tricks.as_strided(flat, shape=shape, strides=byte_strides)


_KERNEL = r"""
struct __align__(8) gdsz_v16 { unsigned long long lo, hi; };

extern "C" __global__ void gdsz_scatter(
    const ITEM* __restrict__ src, const long long row_stride, ITEM* __restrict__ dst,
    const long long* __restrict__ rows, const long long* __restrict__ cstart,
    const long long* __restrict__ cstep, const long long* __restrict__ ostart,
    const long long* __restrict__ ostep, const long long* __restrict__ count,
    const long long* __restrict__ total, const long long* __restrict__ cstrides,
    const long long* __restrict__ ostrides, const int ndim)
{
    // One grid column (blockIdx.x) per unit; blockIdx.y and the threads stride over its items.
    const long long j = blockIdx.x;
    const long long n = total[j];
    const long long stride = (long long)gridDim.y * blockDim.x;
    for (long long e0 = (long long)blockIdx.y * blockDim.x + threadIdx.x; e0 < n; e0 += stride) {
        long long e = e0;
        long long s = rows[j] * row_stride;
        long long t = 0;
        for (int d = ndim - 1; d >= 0; --d) {   // unravel e over count, last axis fastest
            const long long k = j * ndim + d;
            const long long i = e % count[k];
            e /= count[k];
            s += (cstart[k] + i * cstep[k]) * cstrides[d];
            t += (ostart[k] + i * ostep[k]) * ostrides[d];
        }
        dst[t] = src[s];
    }
}
"""

_ITEM_TYPES = {1: "unsigned char", 2: "unsigned short", 4: "unsigned int",
               8: "unsigned long long", 16: "gdsz_v16"}


@functools.cache
def _kernel(itemsize: int) -> Any:
    """The scatter kernel for one item size (compiled at first use, cached by CuPy on disk)."""
    import cupy

    return cupy.RawKernel(_KERNEL.replace("ITEM", _ITEM_TYPES[itemsize]), "gdsz_scatter")


def scatter_chunks(out: Any, decoded: Any, plan: ScatterPlan, *,
                   chunk_strides: Sequence[int] | None = None, general: General = (),
                   target: CudaTarget | None = None) -> None:
    """Copy a batch of decoded chunks into ``out`` (CuPy) with one kernel launch.

    The kernel runs on ``out``'s device, on ``target``'s stream when given (that of the thread
    that asked for the read), else on the calling thread's current stream.

    Parameters
    ----------
    out
        CuPy output array with the plan's number of axes; any strides in whole items (a view
        into a larger array works: the kernel writes through ``out``'s own data pointer).
    decoded
        Either a 2-D uint8 CuPy array, one decoded chunk per row
        (``prod(chunk_shape) * itemsize`` bytes, laid out as ``chunk_strides`` says), or an
        ``(n, *chunk_shape)`` CuPy array of ``out.dtype`` with any non-negative strides (e.g.
        the transposed view of ``F``-order or ``transpose``-coded chunks): its own strides are
        used and ``chunk_strides`` is ignored.
    plan
        Offset tables from :func:`gds_zarr.planning.chunks.scatter_plan`.
    chunk_strides
        Item strides of a decoded chunk in the 2-D uint8 form; None: C order of
        ``plan.chunk_shape``.
    general
        Chunks whose selections are not slices, copied one at a time.
    target
        Device and stream of the caller (see :func:`gds_zarr._device.current_cuda_target`).

    Raises
    ------
    ValueError
        If ``decoded`` does not hold chunks of ``plan.chunk_shape`` in ``out.dtype``, or a
        stride is not a whole number of items.
    """
    with on_cuda_target(target), out.device:
        _scatter_chunks(out, decoded, plan, chunk_strides, general)


def _scatter_chunks(out: Any, decoded: Any, plan: ScatterPlan,
                    chunk_strides: Sequence[int] | None, general: General) -> None:
    import cupy

    itemsize = out.dtype.itemsize
    shape = tuple(int(n) for n in plan.chunk_shape)
    row_elems = int(np.prod(shape, dtype=np.int64))
    if any(st % itemsize for st in out.strides):
        raise ValueError(f"output strides {out.strides} are not whole items of {itemsize} bytes")
    typed = decoded.ndim == 1 + len(shape) and tuple(decoded.shape[1:]) == shape \
        and decoded.dtype == out.dtype
    if typed:
        src = decoded
        if any(st < 0 or st % itemsize for st in src.strides):
            src = cupy.ascontiguousarray(src)
        row_stride = src.strides[0] // itemsize
        strides = tuple(st // itemsize for st in src.strides[1:])
    elif decoded.ndim == 2 and decoded.dtype == np.uint8 \
            and decoded.shape[1] == row_elems * itemsize:
        src = cupy.ascontiguousarray(decoded).view(out.dtype).reshape(decoded.shape[0], -1)
        row_stride, strides = row_elems, _strides(plan, chunk_strides)
    else:
        raise ValueError(f"decoded chunks of shape {decoded.shape[1:]} and dtype {decoded.dtype} "
                         f"do not match chunk shape {shape} of {out.dtype}")

    def chunk_of(row: int) -> Any:
        """One chunk as a shaped view, for per-chunk copies."""
        if typed:
            return src[row]
        return _as_strided(src[row], shape, tuple(st * itemsize for st in strides))

    n = len(plan.rows)
    if n and itemsize not in _ITEM_TYPES:  # structured dtypes and the like: copy per unit
        general = [*general, *_units_as_general(plan)]
    elif n:
        total = np.prod(plan.count, axis=1, dtype=np.int64).reshape(n)
        if int(total.max(initial=0)) > 0:
            tables = [cupy.asarray(np.ascontiguousarray(a, dtype=np.int64)) for a in (
                plan.rows, plan.chunk_start, plan.chunk_step, plan.out_start, plan.out_step,
                np.maximum(plan.count, 1), total, np.array(strides, np.int64),
                np.array([st // itemsize for st in out.strides], np.int64))]
            grid_y = int(min(_MAX_GRID_Y, max(1, -(-int(total.max()) // _THREADS))))
            _kernel(itemsize)((n, grid_y), (_THREADS,),
                              (src, np.int64(row_stride), out, *tables, np.int32(len(shape))))
            scatter_stats.add(kernel_launches=1, kernel_units=n)
    for row, csel, osel in general:
        out[osel] = chunk_of(int(row))[csel]
    scatter_stats.add(calls=1, general_copies=len(general))


def _units_as_general(plan: ScatterPlan) -> list[tuple[int, Any, Any]]:
    def sel(start: np.ndarray, step: np.ndarray, count: np.ndarray) -> tuple[slice, ...]:
        return tuple(slice(int(a), int(a) + int(b) * int(c), int(b))
                     for a, b, c in zip(start, step, count, strict=True))

    return [(int(plan.rows[j]), sel(plan.chunk_start[j], plan.chunk_step[j], plan.count[j]),
             sel(plan.out_start[j], plan.out_step[j], plan.count[j]))
            for j in range(len(plan.rows))]


def contiguous_rows(out: Any, plan: ScatterPlan, n_rows: int,
                    chunk_strides: Sequence[int] | None = None) -> Any:
    """A ``(n_rows, chunk bytes)`` uint8 view of ``out`` holding the decoded rows in place, or
    None when the output's layout does not allow it.

    When it is not None, decoding straight into it (``NvcompDecoder.decode_batch(..., out=)``)
    leaves every chunk where :func:`scatter_chunks` would have copied it: no staging rows and no
    scatter. That is the case when ``out`` is C-contiguous, every unit copies a whole chunk laid
    out in C order, each chunk's elements are one contiguous run of ``out`` (all axes after the
    first one the chunk does not span are whole), and row ``r`` lies ``r`` chunk sizes after
    row 0 (e.g. a 1-D array, or chunks spanning every axis but the first, read whole). The rows
    must be in ``out.dtype`` with its byte order: the caller checks that no conversion is due.
    Works on numpy and CuPy arrays alike (pure index arithmetic).

    Parameters
    ----------
    out
        The output (or the view of it the plan indexes).
    plan
        The batch's scatter plan; ``plan.rows`` names a row of the decoded batch per unit.
    n_rows
        Rows of the decoded batch.
    chunk_strides
        Item strides of a decoded chunk (None: C order of ``plan.chunk_shape``).
    """
    shape = tuple(int(n) for n in plan.chunk_shape)
    n_units = len(plan.rows)
    if n_units != n_rows or n_rows == 0 or not out.flags.c_contiguous:
        return None
    if chunk_strides is not None and tuple(int(x) for x in chunk_strides) != _c_strides(shape):
        return None
    chunk_shape = np.array(shape, np.int64)
    whole = ((plan.chunk_start == 0).all() and (plan.chunk_step == 1).all()
             and (plan.out_step == 1).all() and (plan.count == chunk_shape).all())
    if not whole or sorted(plan.rows.tolist()) != list(range(n_rows)):
        return None
    # A whole chunk is one run of a C-contiguous ``out`` when every axis after the first one
    # it spans more than once is whole in ``out`` too.
    out_shape = np.array(out.shape, np.int64)
    spans = np.flatnonzero(chunk_shape > 1)
    if len(spans) and (chunk_shape[spans[0] + 1:] != out_shape[spans[0] + 1:]).any():
        return None
    item = out.dtype.itemsize
    ostrides = np.array(_c_strides(tuple(out.shape)), np.int64)
    offsets = plan.out_start @ ostrides  # item offset of each unit's first element
    row_items = int(np.prod(chunk_shape))
    base = int(offsets[plan.rows == 0][0])
    if (offsets != base + plan.rows * row_items).any() or base + n_rows * row_items > out.size:
        return None
    flat = out.reshape(-1)[base : base + n_rows * row_items]
    return flat.view(np.uint8).reshape(n_rows, row_items * item)
