"""Read many basic selections of one array in one call: plan, read, decode, scatter.

The engine behind :func:`gds_zarr.read_many`. Every selection is planned at once
(:mod:`gds_zarr.planning.windows`); each chunk that any selection touches is read and decoded
ONCE; per budgeted batch there is one store read and one decode call, and every decoded chunk is
scattered into every window that needs it (one kernel launch per batch on the GPU). Chains the
fast path does not decode, irregular grids and selections this planner leaves alone go through
zarr's own ``getitem``, so the values are always zarr's.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from gds_zarr import settings
from gds_zarr.decode.chain import ChainPlan, Unsupported, plan_chain
from gds_zarr.pipeline import _gpuread as gpuread
from gds_zarr.pipeline._caller import carried
from gds_zarr.pipeline._gpuread import batch_costs, gpu_read, on_target
from gds_zarr.pipeline._read import (
    _decoder,
    _fill_value,
    _xp,
    chunk_axes_shape,
    scatter_args,
    stream_batches,
)
from gds_zarr.pipeline._shard_index import read_shard_indexes
from gds_zarr.pipeline._stats import stats
from gds_zarr.pipeline._storeio import read_ranges, timed
from gds_zarr.pipeline._versions import Versions, read_one_version
from gds_zarr.planning.chunks import ScatterPlan, split_by_budget
from gds_zarr.planning.windows import (
    WindowPlan,
    normalize_selections,
    plan_windows,
)

__all__ = ["read_windows"]

Device = Literal["cpu", "gpu"]


@dataclass(frozen=True, slots=True)
class _Array:
    """What the engine needs of a zarr array, looked up once per call."""

    store: Any
    prefix: str
    plan: ChainPlan
    chunk_shape: tuple[int, ...]   # inner chunks for sharded arrays
    grid_shape: tuple[int, ...]    # chunks per axis (array-wide, inner for sharded arrays)
    dtype: np.dtype[Any]
    fill: Any
    encode_key: Callable[[tuple[int, ...]], str]


def _unwrap(array: Any) -> Any:
    return getattr(array, "_async_array", array)


def _describe(a: Any) -> _Array | str:
    """The engine's view of AsyncArray ``a``, or why zarr must read it."""
    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import default_buffer_prototype

    md = a.metadata
    shape = tuple(int(s) for s in md.shape)
    if not shape:
        return "0-d array"
    if getattr(a.config, "read_missing_chunks", True) is False:
        return "array.read_missing_chunks is False"
    try:
        outer = a.shards if a.shards is not None else a.chunks
        codecs = tuple(a.codec_pipeline)
    except Exception as e:  # noqa: BLE001 - irregular grids, pipelines that are not iterable
        return f"no regular chunk grid or codec list ({e})"
    outer = tuple(int(c) for c in outer)
    config = a.config
    if md.zarr_format == 2:
        import dataclasses

        config = dataclasses.replace(config, order=md.order)
    spec = ArraySpec(shape=outer, dtype=md.dtype, fill_value=md.fill_value, config=config,
                     prototype=default_buffer_prototype())
    plan = plan_chain(codecs, spec)
    if isinstance(plan, Unsupported):
        return plan.reason
    inner = plan.shard.chunk_shape if plan.shard is not None else outer
    grid = tuple(-(-s // c) for s, c in zip(shape, inner, strict=True))
    prefix = a.store_path.path
    return _Array(a.store_path.store, f"{prefix}/" if prefix else "", plan, tuple(inner),
                  grid, np.dtype(md.dtype.to_native_dtype()).newbyteorder("="), _fill_value(spec),
                  md.encode_chunk_key)


async def read_windows(array: Any, selections: Sequence[Any], device: Device,
                       target: Any = None) -> Any:
    """Read ``selections`` of ``array``; see :func:`gds_zarr.read_many` for the contract.

    ``target``: on the GPU, the caller's :class:`~gds_zarr._device.CudaTarget` (device and
    stream); the result is allocated and every step runs there.
    """
    t0 = time.perf_counter()
    try:
        if device != "gpu":
            return await _read_windows(_unwrap(array), list(selections), device)
        if target is None:
            from gds_zarr._device import current_cuda_target

            target = current_cuda_target()
        # ``carried``: reads zarr serves here allocate and run on the caller's target too.
        with gpu_read(target), carried(target):
            return await _read_windows(_unwrap(array), list(selections), device)
    finally:
        stats.add(read_many_calls=1, read_many_seconds=time.perf_counter() - t0)


async def _read_windows(a: Any, selections: list[Any], device: Device) -> Any:
    n = len(selections)
    shape = tuple(int(s) for s in a.metadata.shape)
    desc = _describe(a)
    sels = normalize_selections(selections, shape) if shape else None
    via_zarr = list(range(n)) if isinstance(desc, str) or sels is None else list(sels.fallback)
    prototype = _zarr_prototype(device)
    # zarr reads these itself (first, so a bad selection raises zarr's error before any work).
    zres: dict[int, Any] = {}
    stats.add(read_many_via_zarr=len(via_zarr))
    for i in via_zarr:
        zres[i] = await a.getitem(selections[i], prototype=prototype)
    if isinstance(desc, str) or sels is None:
        with on_target():  # host results (see _zarr_prototype) go to the caller's device
            return _assemble_zarr_only([zres[i] for i in range(n)], device,
                                       a.metadata.dtype.to_native_dtype())
    xp = _xp(device)
    result_shapes = [sels.result_shape(i) if i not in zres else tuple(np.shape(zres[i]))
                     for i in range(n)]
    stacked = all(s == result_shapes[0] for s in result_shapes) if n else True
    full = [tuple(int(c) for c in sels.count[i]) for i in range(n)]
    with on_target():  # on the GPU: the caller's device
        if stacked:
            out = xp.empty((n, *result_shapes[0]) if n else (0,), dtype=desc.dtype)
            # out[i:i + 1], not out[i]: a view even where the window is 0-d (out[i] is a copy).
            views = [out[i:i + 1].reshape(full[i]) if i not in zres else None
                     for i in range(n)]
        else:
            parts = [xp.empty(result_shapes[i], dtype=desc.dtype) if i not in zres else None
                     for i in range(n)]
            views = [p.reshape(full[i]) if p is not None else None
                     for i, p in enumerate(parts)]
    plan_rows = np.asarray([i for i in range(n) if i not in zres], dtype=np.int64)
    if len(plan_rows):
        wp = plan_windows(sels, desc.chunk_shape, desc.grid_shape, plan_rows)
        # One kernel for the whole batch on the GPU needs one target: the stacked output with
        # the selection axis merged into the first axis (every planned window the same shape).
        merged = None
        if device == "gpu" and stacked and len({full[i] for i in plan_rows.tolist()}) == 1:
            f0 = full[int(plan_rows[0])]
            merged = out.reshape((n * f0[0], *f0[1:]))
        await _read_plan(desc, wp, views, merged, device)
    with on_target():
        for i, v in zres.items():
            if stacked:
                out[i] = xp.asarray(v)
            else:
                parts[i] = _native(v, xp, desc.dtype)
    if device == "gpu":
        gpuread.sync()
    return out if stacked else parts


def _prototype(device: Device) -> Any:
    if device == "gpu":
        from zarr.core.buffer import BufferPrototype, gpu

        from gds_zarr.pipeline._caller import NDBuffer

        return BufferPrototype(buffer=gpu.Buffer, nd_buffer=NDBuffer)  # the caller's device
    from zarr.core.buffer import cpu

    return cpu.buffer_prototype


def _zarr_prototype(device: Device) -> Any:
    """The buffers of zarr's own reads here. On the GPU: the device's where they are zarr's
    default (under ``enable(device="gpu")``), else the host's, the results then copied to the
    device. zarr refuses any prototype but its default in sharded arrays ("Non-default buffer
    prototypes are not supported within shards"), and its numcodecs array codecs cannot read
    device buffers."""
    from zarr.core.buffer import default_buffer_prototype

    if device == "gpu" and _prototype("gpu") == default_buffer_prototype():
        return _prototype("gpu")
    return _prototype("cpu")


def _native(x: Any, xp: Any, dtype: Any) -> Any:
    """A result of zarr's ``getitem`` as ``array[s]`` gives it, in native byte order.

    ``getitem`` answers an integers-only selection with a scalar (``array[s]`` with a 0-d
    array): the array's own dtype is kept, which ``asarray`` of a scalar may not (str).
    """
    a = xp.asarray(x, dtype=dtype) if np.ndim(x) == 0 else xp.asarray(x)
    return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))


def _assemble_zarr_only(results: list[Any], device: Device, dtype: Any) -> Any:
    xp = _xp(device)
    results = [_native(r, xp, dtype) for r in results]
    shapes = {tuple(np.shape(r)) for r in results}
    if len(shapes) <= 1:
        return xp.stack([xp.asarray(r) for r in results]) if results else xp.empty((0,))
    return [xp.asarray(r) for r in results]


@dataclass(slots=True)
class _Units:
    """The distinct chunks of a plan as read requests (one per chunk)."""

    keys: list[str]
    names: list[str]
    starts: np.ndarray
    stops: np.ndarray
    readable: np.ndarray    # False: known empty (inner chunk absent from its shard's index)
    est: np.ndarray         # encoded-size estimate per unit, for the budget
    hint: int | None        # whole-value size hint for the store (unsharded chunks)


async def _units(desc: _Array, wp: WindowPlan, shard_keys: list[str], inv: np.ndarray,
                 versions: Versions | None) -> _Units:
    layout = desc.plan.shard
    if layout is None:
        keys = [desc.prefix + desc.encode_key(tuple(c)) for c in wp.chunks.tolist()]
        hint = desc.plan.array.encoded_bound
        n = len(keys)
        return _Units(keys, keys, np.zeros(n, np.int64), np.full(n, -1, np.int64),
                      np.ones(n, bool), np.full(n, hint, np.int64), hint)
    cps = np.asarray(layout.chunks_per_shard, dtype=np.int64)
    offsets, nbytes, empty, _present = await read_shard_indexes(desc.store, shard_keys, layout,
                                                                versions)
    inner = np.ravel_multi_index(tuple((wp.chunks % cps).T), layout.chunks_per_shard)
    is_empty = empty[inv, inner]
    starts = np.where(is_empty, 0, offsets[inv, inner]).astype(np.int64)
    lengths = np.where(is_empty, 0, nbytes[inv, inner]).astype(np.int64)
    keys = [shard_keys[s] for s in inv.tolist()]
    names = [f"{k}[{f}]" for k, f in zip(keys, inner.tolist(), strict=True)]
    # The chunk-size bound as hint: ranges of distinct shards are then read in one pass.
    hint = desc.plan.array.encoded_bound
    return _Units(keys, names, starts, starts + lengths, ~is_empty, lengths, hint)


def _shards(desc: _Array, wp: WindowPlan) -> tuple[list[str], np.ndarray]:
    """The keys of the shards the plan's chunks lie in, and each chunk's shard (a row of it)."""
    layout = desc.plan.shard
    assert layout is not None
    cps = np.asarray(layout.chunks_per_shard, dtype=np.int64)
    shards, inv = np.unique(wp.chunks // cps, axis=0, return_inverse=True)
    return [desc.prefix + desc.encode_key(tuple(c)) for c in shards.tolist()], inv.reshape(-1)


async def _read_plan(desc: _Array, wp: WindowPlan, views: list[Any], merged: Any,
                     device: Device) -> None:
    if desc.plan.shard is None:  # a chunk is one request: one version by construction
        await _read_chunks(desc, wp, views, merged, device, [], np.empty(0, np.int64), None,
                           None)
        return
    shard_keys, inv = _shards(desc, wp)

    async def read(only: list[int] | None, versions: Versions | None, source: Any) -> None:
        d = desc if source is desc.store else dataclasses.replace(desc, store=source)
        await _read_chunks(d, wp, views, merged, device, shard_keys, inv, only, versions)

    # Shards that change while read are read again (see _versions.py).
    await read_one_version(desc.store, shard_keys, read)


async def _read_chunks(desc: _Array, wp: WindowPlan, views: list[Any], merged: Any,
                       device: Device, shard_keys: list[str], inv: np.ndarray,
                       only: list[int] | None, versions: Versions | None) -> None:
    """Read, decode and scatter the plan's chunks (with ``only``: those of these shards)."""
    units = await _units(desc, wp, shard_keys, inv, versions)
    decoder, src_device = _decoder(device, desc.plan)
    mine = np.isin(inv, only) if only is not None else np.ones(len(units.keys), bool)
    _fill_pairs(wp, np.flatnonzero(~units.readable & mine), views, desc.fill)
    readable = np.flatnonzero(units.readable & mine)
    nbytes = desc.plan.array.decoded_nbytes
    budget = settings.get("memory_budget")
    # Half the budget per batch: a batch and the next one's encoded bytes are in flight at once.
    costs = batch_costs(desc.plan.steps, units.est[readable], nbytes, src_device)
    batches = [readable[b] for b in split_by_budget(costs, budget // 2)]

    payload = gpuread.read_payload(desc.plan.steps, src_device)

    def read(b: np.ndarray) -> Coroutine[Any, Any, Any]:
        keys = [units.keys[i] for i in b.tolist()]
        return timed(read_ranges(desc.store, keys, units.starts[b], units.stops[b], src_device,
                                 units.hint, payload))

    def process(b: np.ndarray, batch: Any) -> None:
        _decode_scatter(desc, wp, units, b, batch, views, merged, decoder, device)

    await stream_batches(batches, read, process)


def _pair_slices(wp: WindowPlan, p: int) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    cs, ck, os_, n = (wp.chunk_start[p].tolist(), wp.chunk_step[p].tolist(),
                      wp.out_start[p].tolist(), wp.count[p].tolist())
    return (tuple(slice(a, a + c * k, k) for a, k, c in zip(cs, ck, n, strict=True)),
            tuple(slice(a, a + c) for a, c in zip(os_, n, strict=True)))


def _fill_pairs(wp: WindowPlan, chunks: np.ndarray, views: list[Any], fill: Any) -> None:
    """Write the fill value where the pairs of ``chunks`` (missing or empty chunks) land."""
    if not len(chunks):
        return
    with on_target():
        _fill_pairs_here(wp, chunks, views, fill)


def _fill_pairs_here(wp: WindowPlan, chunks: np.ndarray, views: list[Any], fill: Any) -> None:
    for u in chunks.tolist():
        for p in range(int(wp.chunk_ptr[u]), int(wp.chunk_ptr[u + 1])):
            views[int(wp.pair_sel[p])][_pair_slices(wp, p)[1]] = fill


def _check_inner_sizes(units: _Units, b: np.ndarray, present: np.ndarray,
                       sizes: np.ndarray) -> None:
    from gds_zarr.errors import ShardIndexError

    want = units.stops[b] - units.starts[b]
    bad = ~present | (sizes != want)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        u = int(b[j])
        raise ShardIndexError(units.keys[u], f"{units.names[u]}: index entry "
                                             f"[{int(units.starts[u])}, {int(units.stops[u])}) "
                                             f"lies past the end of the shard (read "
                                             f"{int(sizes[j])} of {int(want[j])} bytes)")


def _decode_scatter(desc: _Array, wp: WindowPlan, units: _Units, b: np.ndarray, batch: Any,
                    views: list[Any], merged: Any, decoder: Any, device: Device) -> None:
    present = np.asarray(batch.present, dtype=bool)
    if desc.plan.shard is not None:
        _check_inner_sizes(units, b, present, np.asarray(batch.sizes, dtype=np.int64))
    _fill_pairs(wp, b[~present], views, desc.fill)  # missing chunk files
    rows_idx = np.flatnonzero(present)
    plan = desc.plan
    nbytes = plan.array.decoded_nbytes
    names = [units.names[i] for i in b.tolist()]
    decoded_bytes = len(rows_idx) * nbytes
    stats.stage(decoded_bytes)
    try:
        us = b[rows_idx]
        if device == "cpu" and hasattr(decoder, "decode_each"):
            decoder.decode_each(plan.steps, batch, rows_idx, nbytes, names,
                                _consumer(plan, wp, us, views))
        else:
            rows = decoder.decode_batch(plan.steps, batch, rows_idx, nbytes, names,
                                        **gpuread.decode_kwargs(decoder))
            if device == "gpu":
                with on_target():
                    if isinstance(rows, np.ndarray):
                        rows = _xp(device).asarray(rows)  # CPU-decoded codecs, moved per batch
                    _scatter_gpu(plan, wp, us, rows, views, merged)
            else:
                consume = _consumer(plan, wp, us, views)
                for j in range(len(us)):
                    consume(j, rows[j])
        stats.add(chunks_decoded=len(rows_idx))
    finally:
        stats.stage(-decoded_bytes)


def _consumer(plan: ChainPlan, wp: WindowPlan, us: np.ndarray, views: list[Any]
              ) -> Callable[[int, Any], None]:
    """``consume(j, row)``: scatter decoded chunk ``us[j]`` into every window that needs it.

    Runs in the decode threads; the pairs of distinct chunks write disjoint regions.
    """
    to_chunk = plan.array.to_chunk
    ptr = wp.chunk_ptr.tolist()
    us_l = us.tolist()
    pair_sel = wp.pair_sel.tolist()
    cs, ck = wp.chunk_start.tolist(), wp.chunk_step.tolist()
    os_, cnt = wp.out_start.tolist(), wp.count.tolist()

    def consume(j: int, row: Any) -> None:
        chunk = to_chunk(row)
        u = us_l[j]
        for p in range(ptr[u], ptr[u + 1]):
            n = cnt[p]
            src = tuple(slice(a, a + c * k, k) for a, k, c in zip(cs[p], ck[p], n, strict=True))
            dst = tuple(slice(a, a + c) for a, c in zip(os_[p], n, strict=True))
            views[pair_sel[p]][dst] = chunk[src]

    return consume


def _scatter_gpu(plan: ChainPlan, wp: WindowPlan, us: np.ndarray, rows: Any,
                 views: list[Any], merged: Any) -> None:
    """One kernel launch for every pair of this batch when the windows share one shape; else
    one launch per window."""
    from gds_zarr.decode._scatter_gpu import scatter_chunks

    # Pairs of this batch's chunks, and the decoded row each reads.
    starts, ends = wp.chunk_ptr[us], wp.chunk_ptr[us + 1]
    counts = ends - starts
    pairs = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))
    row_of = np.repeat(np.arange(len(us), dtype=np.int64), counts)
    chunk_shape = chunk_axes_shape(plan)
    sel = wp.pair_sel[pairs]
    groups: list[tuple[Any, np.ndarray]]
    if merged is not None:
        groups = [(merged, np.arange(len(pairs)))]
    else:
        groups = [(views[s], np.flatnonzero(sel == s)) for s in np.unique(sel).tolist()]
    for dest, g in groups:
        p = pairs[g]
        out_start = wp.out_start[p].copy()
        if merged is not None:
            first = views[int(wp.pair_sel[p[0]])].shape[0] if len(p) else 0
            out_start[:, 0] += wp.pair_sel[p] * first
        sp = ScatterPlan(row_of[g], wp.chunk_start[p], wp.chunk_step[p], out_start,
                         np.ones_like(out_start), wp.count[p], chunk_shape)
        decoded, strides = scatter_args(plan, rows, dest.dtype)
        scatter_chunks(dest, decoded, sp, chunk_strides=strides, target=gpuread.target())
