"""One batched store read: ``GDSStore.read_batch`` when the store is one, the manifest's
ranges through gds_zarr's backends for a VirtualiZarr ``ManifestStore``, else
``get_partial_values`` packed into a :class:`~gds_zarr.io._base.BatchRead`."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Literal, TypeVar

import numpy as np

from gds_zarr._batch import BatchRead
from gds_zarr.planning.staging import Payload, reading_for

__all__ = ["byte_request", "is_gds_store", "pack_buffers", "read_ranges", "timed"]

T = TypeVar("T")


_GDS_STORE: type | None = None


def _gds_store_class() -> type | None:
    # GDSStore may not exist (yet, or in a trimmed install): the pipeline works without it.
    # Found once, kept: an import statement per call costs a small read measurable time.
    global _GDS_STORE
    if _GDS_STORE is None:
        try:
            from gds_zarr.store._store import GDSStore
        except ImportError:
            return None
        _GDS_STORE = GDSStore
    return _GDS_STORE


def is_gds_store(store: Any) -> bool:
    """Whether ``store`` is a :class:`~gds_zarr.GDSStore` (batched reads, file identities)."""
    gds = _gds_store_class()
    return gds is not None and isinstance(store, gds)


async def timed(read: Coroutine[Any, Any, BatchRead]) -> BatchRead:
    """Await a store read, adding its wall time to ``stats.read_seconds``."""
    from gds_zarr.pipeline._stats import stats

    t0 = time.perf_counter()
    try:
        return await read
    finally:
        stats.add(read_seconds=time.perf_counter() - t0)


def byte_request(start: int, stop: int) -> Any:
    """zarr's ``ByteRequest`` for a ``(start, stop)`` pair encoded as in io/_base.py."""
    from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest

    if stop == -1:
        if start == 0:
            return None
        return SuffixByteRequest(-start) if start < 0 else OffsetByteRequest(start)
    return RangeByteRequest(start, stop)


def pack_buffers(buffers: Sequence[Any]) -> BatchRead:
    """Pack zarr ``Buffer``s (``None`` = missing) into one host :class:`BatchRead`."""
    try:
        from gds_zarr.io import batch_from_buffers
    except ImportError:
        batch_from_buffers = None
    if batch_from_buffers is not None:
        return batch_from_buffers(list(buffers))  # type: ignore[no-any-return]
    arrays = [None if b is None else np.asarray(b.as_numpy_array()).reshape(-1).view(np.uint8)
              for b in buffers]
    sizes = np.array([0 if a is None else a.nbytes for a in arrays], dtype=np.int64)
    offsets = np.zeros(len(arrays), dtype=np.int64)
    if len(arrays) > 1:
        np.cumsum(sizes[:-1], out=offsets[1:])
    data = np.empty(int(sizes.sum()), dtype=np.uint8)
    for a, o, n in zip(arrays, offsets.tolist(), sizes.tolist(), strict=True):
        if a is not None and n:
            data[o: o + n] = a
    present = np.array([a is not None for a in arrays], dtype=bool)
    return BatchRead(data, offsets, sizes, present, "cpu", int(data.nbytes))


#: Reads at most this many requests, of known sizes summing to at most ``_INLINE_BYTES``, run in
#: the event loop's thread (measured on the partial-read benchmark: benchmarks/results/tuning-*).
_INLINE_REQUESTS = 64
_INLINE_BYTES = 1 << 20


def _small(starts: np.ndarray, stops: np.ndarray) -> bool:
    if len(starts) > _INLINE_REQUESTS:
        return False
    total = 0
    # Plain Python: at most _INLINE_REQUESTS pairs, and array calls cost more than the loop.
    for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
        if a < 0 and b == -1:
            total -= a  # the last -a bytes (a shard index at the end)
        elif a >= 0 and b >= 0:
            total += b - a
        else:
            return False  # an open-ended request: its size is unknown
    return total <= _INLINE_BYTES


def _on_device(read: Callable[[], T], device: Literal["cpu", "gpu"],
               payload: Payload | None) -> T:
    """``read()``, on the GPU inside the read's device, stream and payload layout."""
    if device != "gpu":
        return read()
    from gds_zarr.pipeline._gpuread import on_target

    # kvikio lands the bytes on the read's device, ordered on its stream, laid out for nvCOMP.
    with on_target(), reading_for(payload):
        return read()


def _read_batch(store: Any, keys: list[str], starts: np.ndarray, stops: np.ndarray,
                device: Literal["cpu", "gpu"], size_hint: int | None,
                payload: Payload | None) -> BatchRead:
    read: Callable[[], BatchRead] = functools.partial(store.read_batch, keys, starts, stops,
                                                      device=device, size_hint=size_hint)
    return _on_device(read, device, payload)


@functools.cache
def _manifest_readers() -> Callable[[Any], Any] | None:
    # Found once, as GDSStore above: the store package may be absent in a trimmed install.
    try:
        from gds_zarr.store._manifest import manifest_reader
    except ImportError:
        return None
    return manifest_reader


def _manifest_reader(store: Any) -> Any:
    """The batched reader of a VirtualiZarr ``ManifestStore`` (gds_zarr/store/_manifest.py),
    None for any other store."""
    readers = _manifest_readers()
    return None if readers is None else readers(store)


async def read_ranges(store: Any, keys: Sequence[str], starts: np.ndarray, stops: np.ndarray,
                      device: Literal["cpu", "gpu"], size_hint: int | None = None,
                      payload: Payload | None = None) -> BatchRead:
    """Read request ``i`` = ``keys[i]`` bytes ``[starts[i], stops[i])`` in one batched call.

    Parameters
    ----------
    store
        A zarr store; a ``GDSStore`` reads in a worker thread straight into ``device`` memory,
        and so does a VirtualiZarr ``ManifestStore`` (its chunks' file ranges, one batch).
    keys, starts, stops
        One entry per request (see io/_base.py for the start/stop encoding).
    device
        Where a GDSStore or ManifestStore should land the bytes; other stores give host bytes.
    size_hint
        Expected size of a whole value (see ``GDSStore.read_batch``).
    payload
        Where nvCOMP's input lies in every request (``staging.chain_payload``): on the GPU,
        reads that are not moved by DMA land with it aligned (see ``staging.layout_reads``).
    """
    if is_gds_store(store):
        read = functools.partial(_read_batch, store, list(keys), starts, stops, device,
                                 size_hint, payload)
        if _small(starts, stops) and getattr(store, "location", None) is None:
            # A few small ranges of local files (shard indexes, a window's inner chunks) take
            # tens of microseconds: less than a hop to a worker thread and back, so they run
            # inline. A remote store waits for the network: never in the event loop's thread.
            return read()
        return await asyncio.to_thread(read)
    manifest = _manifest_reader(store)
    if manifest is not None:
        # Chunks of netCDF4/HDF5 files seen as Zarr: their manifest's ranges in one batched
        # backend read, as a GDSStore's keys (None: keys it does not resolve, read below).
        batch = await asyncio.to_thread(_on_device, functools.partial(
            manifest.read_batch, list(keys), starts, stops, device=device), device, payload)
        if batch is not None:
            return batch  # type: ignore[no-any-return]
    from zarr.core.buffer.cpu import buffer_prototype

    requests = [(k, byte_request(int(a), int(b)))
                for k, a, b in zip(keys, starts.tolist(), stops.tolist(), strict=True)]
    try:
        buffers = await store.get_partial_values(buffer_prototype, requests)
    except (FileNotFoundError, NotImplementedError):
        # zarr's LocalStore raises for a missing key here instead of giving None (zarr 3.1 and
        # 3.4), and some stores have no batched read at all (VirtualiZarr's ManifestStore:
        # NotImplementedError); ``get`` with a byte range is what every store has, and what
        # zarr's own pipeline reads with, so the batch is read request by request.
        buffers = await asyncio.gather(*(store.get(k, prototype=buffer_prototype, byte_range=r)
                                         for k, r in requests))
    return pack_buffers(buffers)
