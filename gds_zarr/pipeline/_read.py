"""The fast read path: plan units, stream them in budgeted batches, decode, scatter.

Per batch: ONE store read of every unit's bytes, ONE decode of every present unit, a scatter.
Reading batch k+1 overlaps decoding batch k (a read-ahead of depth 1), and the batches are sized
so that encoded plus decoded bytes in flight stay under the ``memory_budget`` setting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Literal

import numpy as np
from zarr.storage import StorePath  # here, not per read: a package import calls into importlib

from gds_zarr import settings
from gds_zarr._batch import BatchRead
from gds_zarr.decode.chain import ChainPlan
from gds_zarr.pipeline import _gpuread as gpuread
from gds_zarr.pipeline._gpuread import batch_costs, gpu_read, on_target, read_target
from gds_zarr.pipeline._shard_index import read_shard_indexes
from gds_zarr.pipeline._stats import stats
from gds_zarr.pipeline._storeio import read_ranges, timed
from gds_zarr.pipeline._versions import Versions, read_one_version
from gds_zarr.planning.chunks import ReadUnits, scatter_plan, split_by_budget
from gds_zarr.planning.shards import inner_slices

__all__ = ["Unhandled", "fast_read", "rows_in_place", "stream_batches"]

BatchInfo = Sequence[tuple[Any, Any, Any, Any, bool]]

#: Batches of at most this many units and encoded bytes decode in the event loop's thread.
_INLINE_DECODE_UNITS = 64
_INLINE_DECODE_BYTES = 1 << 20


class Unhandled(Exception):
    """The fast path cannot serve this read; zarr's pipeline must (message: why)."""


def _fill_value(chunk_spec: Any) -> Any:
    fill = chunk_spec.fill_value
    return chunk_spec.dtype.default_scalar() if fill is None else fill


def _common_store(batch_info: BatchInfo) -> Any:
    first = batch_info[0][0]
    if not isinstance(first, StorePath):
        raise Unhandled(f"byte getter {type(first).__name__} is not a StorePath")
    store = first.store
    for bg, *_ in batch_info:
        if type(bg) is not StorePath or bg.store is not store:
            raise Unhandled("chunks of one read come from different stores")
    return store


def _check_specs(batch_info: BatchInfo) -> Any:
    spec = batch_info[0][1]
    for _, s, *_ in batch_info:
        # zarr 3.4 passes one shared spec for regular grids; 3.1 builds equal ones per chunk.
        if s is not spec and (s.shape != spec.shape or s.dtype != spec.dtype
                              or (s.fill_value != spec.fill_value and not _both_nan(
                                  s.fill_value, spec.fill_value))):
            raise Unhandled("chunks of one read have different specs (irregular grid)")
    return spec


def _both_nan(a: Any, b: Any) -> bool:
    try:
        return bool(np.isnan(a) and np.isnan(b))
    except TypeError:
        return False


def _xp(device: str) -> Any:
    if device == "gpu":
        import cupy  # only on the GPU path

        return cupy
    return np


def _decoder(device: Literal["cpu", "gpu"], plan: ChainPlan) -> tuple[Any, Literal["cpu", "gpu"]]:
    """The decoder for ``plan`` and where its input must be (GPU falls back to the CPU)."""
    from gds_zarr._device import resolve_device
    from gds_zarr.decode._cpu import CpuDecoder

    if device == "gpu" and resolve_device() == "gpu":
        gpu = _nvcomp_decoder()
        if gpu is not None and gpu.supports(plan.steps):
            return gpu, "gpu"
    return CpuDecoder(), "cpu"


@functools.cache
def _nvcomp_decoder() -> Any:
    """The process's GPU decoder, or None without one. Shared: its ``nvcomp.Codec`` objects
    (kept per thread and stream) are costly to make, so they must outlive a single read."""
    try:
        from gds_zarr.decode._gpu import NvcompDecoder
    except ImportError:
        return None
    return NvcompDecoder()


async def fast_read(plan: ChainPlan, batch_info: BatchInfo, out: Any,
                    drop_axes: tuple[int, ...], device: Literal["cpu", "gpu"]) -> list[bool]:
    """Serve one pipeline ``read`` with the fast path; return "present" per batch_info item.

    Raises
    ------
    Unhandled
        Before touching ``out``, if this read must go to zarr's pipeline.
    """
    t0 = time.perf_counter()
    try:
        if device != "gpu":
            return await _one_version(plan, batch_info, out, drop_axes, device)
        # zarr's loop thread is not the caller's: run where the caller is (or ``out`` is).
        with gpu_read(read_target(out.as_ndarray_like())):
            return await _one_version(plan, batch_info, out, drop_axes, device)
    finally:
        stats.add(fast_read_seconds=time.perf_counter() - t0)


async def _one_version(plan: ChainPlan, batch_info: BatchInfo, out: Any,
                       drop_axes: tuple[int, ...], device: Literal["cpu", "gpu"]) -> list[bool]:
    """:func:`_fast_read`, with shards that changed while read read again (see _versions.py).
    A chunk of an unsharded array is one request: one version by construction."""
    if plan.shard is None:
        return await _fast_read(plan, batch_info, out, drop_axes, device, None)
    store = _common_store(batch_info)
    present = [True] * len(batch_info)

    async def read(only: list[int] | None, versions: Versions | None, source: Any) -> None:
        if only is None:
            present[:] = await _fast_read(plan, batch_info, out, drop_axes, device, versions)
            return
        sub = [batch_info[i] for i in only]
        if source is not store:  # the shards read whole, served from memory
            sub = [(StorePath(source, bg.path), *rest) for bg, *rest in sub]
        got = await _fast_read(plan, sub, out, drop_axes, device,
                               None if versions is None else [versions[i] for i in only])
        for i, p in zip(only, got, strict=True):
            present[i] = p

    await read_one_version(store, [bg.path for bg, *_ in batch_info], read)
    return present


async def _fast_read(plan: ChainPlan, batch_info: BatchInfo, out: Any,
                     drop_axes: tuple[int, ...], device: Literal["cpu", "gpu"],
                     versions: Versions | None) -> list[bool]:
    store = _common_store(batch_info)
    spec = _check_specs(batch_info)
    out_arr = out.as_ndarray_like()
    decoder, src_device = _decoder(device, plan)
    fill = _fill_value(spec)
    keys = [bg.path for bg, *_ in batch_info]
    n_outer = len(batch_info)
    targets: list[Any] = [out_arr]
    outer_present = np.empty(n_outer, dtype=bool)  # np.ones is a Python function: 2 C calls
    outer_present.fill(True)
    if plan.shard is None:
        units = ReadUnits(
            keys=keys, starts=np.zeros(n_outer, np.int64), stops=np.full(n_outer, -1, np.int64),
            readable=np.ones(n_outer, bool), target=np.zeros(n_outer, np.int64),
            chunk_sel=[b[2] for b in batch_info], out_sel=[b[3] for b in batch_info],
            names=keys, outer=np.arange(n_outer, dtype=np.int64))
        # The budget's estimate, and the store's hint to read whole chunks in one pass.
        hint: int | None = plan.array.encoded_bound
        est = np.full(n_outer, hint, np.int64)
        finish: list[tuple[int, Any, Any]] = []
    else:
        units, est, finish = await _shard_units(plan, store, batch_info, keys, out_arr,
                                                fill, targets, outer_present, drop_axes,
                                                versions)
        # Inner chunks are ranges of known size. The same bound lets a batch of ranges of
        # distinct shards be read in one pass; a range longer than it (a corrupt index entry)
        # sends the batch to the two-phase path, which clamps it to the file first.
        hint = plan.array.encoded_bound
    stats.add(fast_reads=1)
    readable = units.readable.nonzero()[0]  # 1-D: np.flatnonzero's result, minus a Python call
    if len(readable) < len(units.readable):
        # Units known empty (inner chunks) get the fill value without a read.
        with on_target():
            for u in np.flatnonzero(~units.readable).tolist():
                targets[units.target[u]][units.out_sel[u]] = fill
    nbytes = plan.array.decoded_nbytes
    budget = settings.get("memory_budget")
    # Half the budget per batch: batch k (its staging) and batch k+1's encoded bytes, read
    # ahead, are in flight together.
    if len(readable) == 1:  # one unit is one batch whatever it costs: no split to plan
        batches = [readable]
    else:
        costs = batch_costs(plan.steps, est[readable], nbytes, src_device)
        batches = [readable[b] for b in split_by_budget(costs, budget // 2)]
    await _stream(plan, store, units, batches, targets, drop_axes, fill, decoder, src_device,
                  outer_present, device, hint)
    if finish:  # (on_target is a context manager: a cost for small reads even on the CPU)
        with on_target():
            for t, sel, shape_info in finish:  # shard outputs into ``out``, as zarr's sharding
                _finish_shard(out_arr, targets[t], sel, shape_info, drop_axes)
    if device == "gpu":
        gpuread.sync()  # fills and shard copies queued in this thread: done before zarr returns
    return outer_present.tolist()


async def _stream(plan: ChainPlan, store: Any, units: ReadUnits, batches: list[np.ndarray],
                  targets: list[Any], drop_axes: tuple[int, ...], fill: Any, decoder: Any,
                  src_device: Literal["cpu", "gpu"], outer_present: np.ndarray,
                  device: str, size_hint: int | None) -> None:
    payload = gpuread.read_payload(plan.steps, src_device)

    def read(b: np.ndarray) -> Coroutine[Any, Any, BatchRead]:
        keys = [units.keys[i] for i in b.tolist()]
        return timed(read_ranges(store, keys, units.starts[b], units.stops[b], src_device,
                                 size_hint, payload))

    def process(b: np.ndarray, batch: BatchRead) -> None:
        _decode_scatter(plan, units, b, batch, targets, drop_axes, fill, decoder,
                        outer_present, device)

    await stream_batches(batches, read, process)


async def stream_batches(batches: list[np.ndarray],
                         read: Callable[[np.ndarray], Coroutine[Any, Any, BatchRead]],
                         process: Callable[[np.ndarray, BatchRead], None]) -> None:
    """Read each batch (``read``) and decode it (``process``), reading batch k+1 while batch k
    decodes, and count the staging bytes held. Used by zarr reads and by ``read_many``."""
    if not batches:
        return
    # A single batch is awaited directly: a task (needed only to read ahead) costs an
    # event-loop turn, a good part of a small read.
    pending: Any = read(batches[0]) if len(batches) == 1 else asyncio.ensure_future(
        read(batches[0]))
    try:
        for k, b in enumerate(batches):
            batch = await pending
            staged = int(batch.nbytes_staged or getattr(batch.data, "nbytes", 0))
            stats.stage(staged)
            stats.add(store_reads=1, batches=1)
            if k + 1 < len(batches):
                pending = asyncio.ensure_future(read(batches[k + 1]))  # read ahead
            try:
                t0 = time.perf_counter()
                if staged <= _INLINE_DECODE_BYTES and len(b) <= _INLINE_DECODE_UNITS:
                    # A small batch decodes in well under a millisecond: cheaper here than a
                    # hop to a worker thread and back (the decode pool still helps).
                    process(b, batch)
                else:
                    await asyncio.to_thread(process, b, batch)
                stats.add(decode_seconds=time.perf_counter() - t0)
            finally:
                stats.stage(-staged)
    finally:
        _drop(pending)


def _drop(pending: Any) -> None:
    """Cancel a read-ahead still running (or close a read never awaited) after an error."""
    if isinstance(pending, asyncio.Future):
        if not pending.done():
            pending.cancel()
    elif pending.cr_frame is not None:
        pending.close()


def _decode_scatter(plan: ChainPlan, units: ReadUnits, b: np.ndarray, batch: BatchRead,
                    targets: list[Any], drop_axes: tuple[int, ...], fill: Any, decoder: Any,
                    outer_present: np.ndarray, device: str) -> None:
    present = np.asarray(batch.present, dtype=bool)
    if plan.shard is not None:
        _check_inner_sizes(units, b, batch, present)
    else:
        outer_present[units.outer[b[~present]]] = False
    rows_idx = present.nonzero()[0]  # 1-D: np.flatnonzero's result, minus a Python call
    names = [units.names[i] for i in b.tolist()]
    decoded_bytes = len(rows_idx) * plan.array.decoded_nbytes
    stats.stage(decoded_bytes)
    try:
        if len(rows_idx) < len(present):
            with on_target():
                for j in np.flatnonzero(~present).tolist():
                    u = int(b[j])
                    targets[units.target[u]][units.out_sel[u]] = fill
        if device == "cpu" and hasattr(decoder, "decode_each"):
            # Decode and scatter fused, chunk by chunk in the decode threads: a chunk is copied
            # out while hot in cache, and no batch-sized decoded array is allocated.
            decoder.decode_each(plan.steps, batch, rows_idx, plan.array.decoded_nbytes, names,
                                _scatter_one(plan, units, b[rows_idx], targets, drop_axes))
            stats.add(chunks_decoded=len(rows_idx))
            return
        in_place = None
        if getattr(decoder, "device", "cpu") == "gpu" and not drop_axes:
            in_place = rows_in_place(plan, units, b[rows_idx], targets)
        if in_place is not None:
            # nvCOMP writes every chunk where the scatter would have copied it: no staging
            # rows, no scatter kernel.
            decoder.decode_batch(plan.steps, batch, rows_idx, plan.array.decoded_nbytes, names,
                                 out=in_place, **gpuread.decode_kwargs(decoder))
            stats.add(chunks_decoded=len(rows_idx), decoded_in_place=len(rows_idx))
            return
        rows = decoder.decode_batch(plan.steps, batch, rows_idx, plan.array.decoded_nbytes,
                                    names, **gpuread.decode_kwargs(decoder))
        stats.add(chunks_decoded=len(rows_idx))
        with on_target():
            if device == "gpu" and isinstance(rows, np.ndarray):
                rows = _xp(device).asarray(rows)  # CPU-decoded codecs, moved per batch
            _scatter(plan, units, b[rows_idx], rows, targets, drop_axes, device)
        if device == "gpu":
            gpuread.sync()
    finally:
        stats.stage(-decoded_bytes)


def _scatter(plan: ChainPlan, units: ReadUnits, us: np.ndarray, rows: Any,
             targets: list[Any], drop_axes: tuple[int, ...], device: str) -> None:
    """Copy decoded chunk ``j`` (unit ``us[j]``) into its target."""
    if device == "gpu":
        if not drop_axes and _gpu_scatter(plan, units, us, rows, targets):
            return
        # CuPy has no non-native byte orders: the views below need native rows.
        plan, rows = native_rows(plan, rows)
    to_chunk = plan.array.to_chunk
    chunk_sel, out_sel, target = units.chunk_sel, units.out_sel, units.target
    for j, u in enumerate(us.tolist()):
        piece = to_chunk(rows[j])[chunk_sel[u]]
        t = int(target[u])
        if t == 0 and drop_axes:
            piece = piece.squeeze(axis=drop_axes)
        targets[t][out_sel[u]] = piece


def _scatter_one(plan: ChainPlan, units: ReadUnits, us: np.ndarray, targets: list[Any],
                 drop_axes: tuple[int, ...]) -> Callable[[int, np.ndarray], None]:
    """``consume(j, row)`` for :meth:`CpuDecoder.decode_each`: copy decoded chunk ``j`` (unit
    ``us[j]``) into its target. Runs in the decode threads; units write disjoint regions."""
    to_chunk = plan.array.to_chunk
    chunk_sel, out_sel = units.chunk_sel, units.out_sel
    us_l = us.tolist()
    t_l = units.target[us].tolist()
    squeeze = bool(drop_axes)
    # Decode threads reuse one scratch row each: its chunk view is built once, not per chunk
    # (the dict holds the row, so its id is not reused while this read runs).
    views: dict[int, tuple[np.ndarray, Any]] = {}

    def consume(j: int, row: np.ndarray) -> None:
        got = views.get(id(row))
        if got is None or got[0] is not row:
            got = views[id(row)] = (row, to_chunk(row))
        u = us_l[j]
        t = t_l[j]
        piece = got[1][chunk_sel[u]]
        if squeeze and t == 0:
            piece = piece.squeeze(axis=drop_axes)
        targets[t][out_sel[u]] = piece

    return consume


def _gpu_scatter(plan: ChainPlan, units: ReadUnits, us: np.ndarray, rows: Any,
                 targets: list[Any]) -> bool:
    """One-kernel scatter per target when every selection is plain slices; False otherwise."""
    try:
        from gds_zarr.decode._scatter_gpu import scatter_chunks
    except ImportError:
        return False
    chunk_shape = chunk_axes_shape(plan)
    plans = []
    for t in np.unique(units.target[us]).tolist():
        pos = np.flatnonzero(units.target[us] == t)
        sel = us[pos].tolist()
        sp = scatter_plan(pos, [units.chunk_sel[u] for u in sel],
                          [units.out_sel[u] for u in sel], chunk_shape,
                          tuple(targets[t].shape))
        if sp is None:
            return False
        plans.append((t, sp))
    for t, sp in plans:
        decoded, strides = scatter_args(plan, rows, targets[t].dtype)
        scatter_chunks(targets[t], decoded, sp, chunk_strides=strides,
                       target=gpuread.target())
    return True


def rows_in_place(plan: ChainPlan, units: ReadUnits, us: np.ndarray,
                  targets: list[Any]) -> Any:
    """The decoded rows of units ``us`` as a uint8 view of their target, or None.

    Possible when every unit goes to one target, whole chunks land as contiguous runs of it in
    row order (see :func:`~gds_zarr.decode._scatter_gpu.contiguous_rows`: a 1-D array, or
    chunks spanning every axis but the first), and the stored bytes need no conversion (same
    dtype and byte order, C order, no transpose). Pure index arithmetic: numpy or CuPy.
    """
    a = plan.array
    if not len(us) or a.axes is not None or a.order != "C":
        return None
    t = np.unique(units.target[us])
    if len(t) != 1:
        return None
    target = targets[int(t[0])]
    if np.dtype(a.stored_dtype) != np.dtype(target.dtype) or not a.stored_dtype.isnative:
        return None
    from gds_zarr.decode._scatter_gpu import contiguous_rows

    sel = us.tolist()
    sp = scatter_plan(np.arange(len(sel), dtype=np.int64), [units.chunk_sel[u] for u in sel],
                      [units.out_sel[u] for u in sel], chunk_axes_shape(plan),
                      tuple(target.shape))
    return None if sp is None else contiguous_rows(target, sp, len(sel))


def chunk_axes_shape(plan: ChainPlan) -> tuple[int, ...]:
    """Shape of a decoded chunk in the chunk's own axes (after the array step's transpose)."""
    a = plan.array
    return a.stored_shape if a.axes is None else tuple(a.stored_shape[i] for i in a.axes)


def scatter_args(plan: ChainPlan, rows: Any, dtype: Any) -> tuple[Any, tuple[int, ...]]:
    """``(decoded, chunk_strides)`` for ``scatter_chunks``: uint8 rows in ``dtype``'s byte
    order, and the item strides of a decoded chunk in the chunk's axes."""
    plan, rows = native_rows(plan, rows)
    a = plan.array
    if a.stored_dtype != np.dtype(dtype):
        n = rows.shape[0]
        rows = rows.view(a.stored_dtype).astype(dtype).view(np.uint8).reshape(n, -1)
    shape = a.stored_shape
    strides = [1] * len(shape)
    dims = range(len(shape) - 2, -1, -1) if a.order == "C" else range(1, len(shape))
    for d in dims:
        strides[d] = strides[d + 1] * shape[d + 1] if a.order == "C" \
            else strides[d - 1] * shape[d - 1]
    axes = a.axes if a.axes is not None else tuple(range(len(shape)))
    return rows, tuple(strides[i] for i in axes)


def native_rows(plan: ChainPlan, rows: Any) -> tuple[ChainPlan, Any]:
    """Byte-swap decoded uint8 rows stored in a non-native byte order; the plan to match.

    CuPy refuses non-native dtypes (``ValueError: Unsupported dtype >i4 with big-endian
    byte-order``), so the swap is done on the uint8 rows: reverse each element's bytes (each
    component's, for complex types). Works on numpy and CuPy rows alike.

    Returns
    -------
    (ChainPlan, array)
        ``plan`` with a native ``stored_dtype`` and the swapped rows, or both unchanged.
    """
    a = plan.array
    if a.stored_dtype.isnative:
        return plan, rows
    n = rows.shape[0]
    unit = a.stored_dtype.itemsize // (2 if a.stored_dtype.kind == "c" else 1)
    width = int(rows.shape[1])
    swapped = rows.reshape(n, width // unit, unit)[:, :, ::-1].copy(order="C").reshape(n, width)
    native = dataclasses.replace(a, stored_dtype=a.stored_dtype.newbyteorder("="))
    return dataclasses.replace(plan, array=native), swapped


def _check_inner_sizes(units: ReadUnits, b: np.ndarray, batch: BatchRead,
                       present: np.ndarray) -> None:
    want = units.stops[b] - units.starts[b]
    got = np.asarray(batch.sizes, dtype=np.int64)
    # One comparison, not np.array_equal (a Python function of several array calls); the
    # lengths match: one size per request.
    if present.all() and (got == want).all():
        return
    from gds_zarr.errors import ShardIndexError

    j = int(np.flatnonzero(~present | (got != want))[0])
    u = int(b[j])
    raise ShardIndexError(units.keys[u], f"{units.names[u]}: index entry "
                                         f"[{int(units.starts[u])}, {int(units.stops[u])}) lies "
                                         f"past the end of the shard (read {int(got[j])} of "
                                         f"{int(want[j])} bytes)")


@functools.lru_cache(maxsize=64)
def _shard_grid(shard_shape: tuple[int, ...], chunk_shape: tuple[int, ...]) -> Any:
    import zarr.core.chunk_grids as grids

    if hasattr(grids, "RegularChunkGrid"):  # zarr 3.1
        return grids.RegularChunkGrid(chunk_shape=chunk_shape)
    return grids.ChunkGrid.from_sizes(shard_shape, chunk_shape)  # zarr >= 3.2


async def _shard_units(plan: ChainPlan, store: Any, batch_info: BatchInfo, keys: list[str],
                       out_arr: Any, fill: Any, targets: list[Any], outer_present: np.ndarray,
                       drop_axes: tuple[int, ...], versions: Versions | None
                       ) -> tuple[ReadUnits, np.ndarray, list[tuple[int, Any, Any]]]:
    """Read every shard index in one batch and turn the needed inner chunks into units."""
    from zarr.core.indexing import get_indexer

    layout = plan.shard
    assert layout is not None
    offsets, nbytes, empty, outer_present[:] = await read_shard_indexes(store, keys, layout,
                                                                        versions)
    shard_shape = tuple(map(int, batch_info[0][1].shape))
    grid = _shard_grid(shard_shape, layout.chunk_shape)
    xp = _xp("gpu" if not isinstance(out_arr, np.ndarray) else "cpu")
    u_keys: list[str] = []
    u_names: list[str] = []
    u_shard: list[int] = []
    u_inner: list[int] = []
    u_target: list[int] = []
    u_csel: list[Any] = []
    u_osel: list[Any] = []
    finish: list[tuple[int, Any, Any]] = []
    for s, (_, _, chunk_selection, out_selection, _) in enumerate(batch_info):
        if not outer_present[s]:
            with on_target():  # zarr's loop thread: the read's device and stream, not its own
                _fill_out(out_arr, out_selection, fill)
            continue
        # Box selections (every whole-array or sliced read) are planned per axis; anything
        # else goes through zarr's own indexer, one inner chunk at a time.
        box = inner_slices(chunk_selection, shard_shape, layout)
        if box is not None and box.int_axes and box.int_axes != tuple(drop_axes):
            box = None  # integer axes zarr keeps: its indexer knows the output's shape
        indexer = get_indexer(chunk_selection, shape=shard_shape, chunk_grid=grid) \
            if box is None else None
        shape = box.shape if box is not None else tuple(indexer.shape)
        sel_shape = None if indexer is None else getattr(indexer, "sel_shape", None)
        t = len(targets)
        target = _view_target(out_arr, out_selection, drop_axes, shape, sel_shape)
        if target is None:
            # Fancy output selections need a temporary, copied into ``out`` at the end: on the
            # read's device and stream, as ``out`` (this runs in zarr's loop thread).
            with on_target():
                target = xp.empty(shape, dtype=out_arr.dtype)
            finish.append((t, out_selection, sel_shape))
        targets.append(target)
        if box is not None:
            flat_l = box.inner.tolist()
            u_csel.extend(box.chunk_sel)
            u_osel.extend(box.out_sel)
        else:
            flat_l = []
            for coords, csel, osel, _ in indexer:
                flat_l.append(int(np.ravel_multi_index(coords, layout.chunks_per_shard)))
                u_csel.append(csel)
                u_osel.append(osel)
        k = len(flat_l)
        u_keys.extend([keys[s]] * k)
        u_names.extend([f"{keys[s]}[{f}]" for f in flat_l])
        u_shard.extend([s] * k)
        u_inner.extend(flat_l)
        u_target.extend([t] * k)
    shard_a = np.asarray(u_shard, np.int64)
    inner_a = np.asarray(u_inner, np.int64)
    is_empty = empty[shard_a, inner_a]
    # np.where gives new int64 arrays (a Python 0 and int64): used as they are, not copied.
    starts = np.where(is_empty, 0, offsets[shard_a, inner_a].astype(np.int64))
    lengths = np.where(is_empty, 0, nbytes[shard_a, inner_a].astype(np.int64))
    readable = ~is_empty
    units = ReadUnits(keys=u_keys, starts=starts, stops=starts + lengths, readable=readable,
                      target=np.asarray(u_target, np.int64), chunk_sel=u_csel, out_sel=u_osel,
                      names=u_names, outer=shard_a)
    return units, lengths, finish


#: Basic selection items (a tuple: ``slice | int | ...`` would build a union on every call).
_BASIC = (slice, int, np.integer)


def _view_target(out_arr: Any, out_selection: Any, drop_axes: tuple[int, ...],
                 shape: tuple[int, ...], sel_shape: Any) -> Any:
    """``out[out_selection]`` as a writable view shaped like the shard's output, or None.

    Basic output selections (slices and integers) give views, so inner chunks scatter straight
    into ``out`` with no shard-sized temporary.
    """
    if sel_shape is not None:
        return None
    sel = out_selection if isinstance(out_selection, tuple) else (out_selection,)
    if not all(isinstance(s, _BASIC) for s in sel):
        return None
    view = out_arr[(*sel, Ellipsis)]  # the Ellipsis keeps an all-integer selection a view
    if drop_axes:
        if view.ndim + len(drop_axes) != len(shape):
            return None
        # Re-insert the dropped axes as length-1 axes: still a view.
        view = view[tuple(None if d in drop_axes else slice(None)
                          for d in range(len(shape)))]
    if tuple(view.shape) != tuple(shape):
        return None
    return view


def _fill_out(out_arr: Any, out_selection: Any, fill: Any) -> None:
    out_arr[out_selection] = fill


def _finish_shard(out_arr: Any, shard_out: Any, out_selection: Any, sel_shape: Any,
                  drop_axes: tuple[int, ...]) -> None:
    if sel_shape is not None:
        shard_out = shard_out.reshape(sel_shape)
    if drop_axes:
        shard_out = shard_out.squeeze(axis=drop_axes)
    out_arr[out_selection] = shard_out
