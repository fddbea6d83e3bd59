"""What one GPU read carries through its store reads, decodes and scatters: the CUDA device
and stream it runs on, and an identity for once-per-read messages.

zarr calls the pipeline in its own event-loop thread, so the device and stream current there
are not the caller's. A read therefore fixes its :class:`~gds_zarr._device.CudaTarget` once
(the caller's, carried in by :mod:`gds_zarr.pipeline._caller` or given by
:func:`gds_zarr.read_many`; else the output array's device and the loop thread's stream) and
keeps it in a context variable. asyncio gives
every task its own copy of the context and ``asyncio.to_thread`` hands it to the worker
thread, so interleaved reads never see each other's target, and the store read, the decoder
and the scatter kernel all find it. CuPy is imported only on the GPU path.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gds_zarr.pipeline._caller import caller_target

__all__ = ["GpuRead", "batch_costs", "current", "decode_kwargs", "gpu_read", "on_target",
           "read_payload", "read_target", "sync", "target", "target_of"]


@dataclass(frozen=True, slots=True)
class GpuRead:
    """One GPU read: where it runs, and a token naming it (refusals are logged once per read)."""

    target: Any  # gds_zarr._device.CudaTarget
    read_id: object = field(default_factory=object)


_CURRENT: contextvars.ContextVar[GpuRead | None] = contextvars.ContextVar(
    "gds_zarr_gpu_read", default=None)


def current() -> GpuRead | None:
    """The GPU read in progress in this task (or the task that handed work to this thread)."""
    return _CURRENT.get()


@contextlib.contextmanager
def gpu_read(target: Any) -> Iterator[GpuRead]:
    """Run the enclosed (async) code as one GPU read on ``target``."""
    read = GpuRead(target)
    token = _CURRENT.set(read)
    try:
        yield read
    finally:
        _CURRENT.reset(token)


def target_of(array: Any) -> Any:
    """The best target where the caller is not seen: ``array``'s device, this thread's stream."""
    import cupy

    from gds_zarr._device import CudaTarget

    return CudaTarget(int(array.device.id), cupy.cuda.get_current_stream())


def read_target(out: Any) -> Any:
    """Where a read into ``out`` runs: the caller's device and stream where they are known and
    ``out`` lives on that device (zarr allocates it there, see ``_caller.NDBuffer``), else
    :func:`target_of` ``out`` (a caller's ``out=`` on another device: its stream cannot run
    there)."""
    caller = caller_target()
    if caller is not None and caller.device == int(out.device.id):
        return caller
    return target_of(out)


@contextlib.contextmanager
def on_target() -> Iterator[None]:
    """Make the current read's device and stream current in this thread (no-op off the GPU)."""
    read = _CURRENT.get()
    if read is None:
        yield
        return
    from gds_zarr._device import on_cuda_target

    with on_cuda_target(read.target):
        yield


def target() -> Any:
    """The current read's CudaTarget, or None (the data's own device, the current stream)."""
    read = _CURRENT.get()
    return None if read is None else read.target


def decode_kwargs(decoder: Any) -> dict[str, Any]:
    """``decode_batch`` keywords for the current read: the GPU decoder's ``target`` and
    ``read_id``; none for the CPU decoder (its signature has neither)."""
    read = _CURRENT.get()
    if read is None or getattr(decoder, "device", "cpu") != "gpu":
        return {}
    return {"target": read.target, "read_id": read.read_id}


def sync() -> None:
    """Wait for the work queued on the read's stream (the whole device where that stream is
    CuPy's per-thread default stream, whose handle every thread shares).

    Batches decode in worker threads; on CuPy's per-thread default streams
    (``CUPY_CUDA_PER_THREAD_DEFAULT_STREAM=1``) or a caller's own stream their kernels are not
    ordered with the caller's later use of the output, nor with kvikio's writes into recycled
    pool blocks. One synchronize per batch is cheap next to a batch's work.
    """
    import cupy

    from gds_zarr._device import needs_device_sync

    read = _CURRENT.get()
    stream = read.target.stream if read is not None else cupy.cuda.get_current_stream()
    if needs_device_sync(int(stream.ptr)):
        device = read.target.device if read is not None else cupy.cuda.Device().id
        cupy.cuda.Device(device).synchronize()
    else:
        stream.synchronize()


def batch_costs(steps: Any, encoded: np.ndarray, decoded_nbytes: int,
                src_device: str) -> np.ndarray:
    """Staging bytes per unit for ``split_by_budget``: encoded plus decoded on the host; on the
    device, what the GPU batch layout stages (aligned reads, input copy, output slots)."""
    if src_device != "gpu":
        return encoded + decoded_nbytes
    from gds_zarr.planning.staging import unit_staging_bytes

    compressors = sum(s.kind in ("zstd", "gzip", "zlib", "lz4", "blosc") for s in steps)
    # HDF5's unshuffle writes the rows from the decoded slots: one more row per chunk.
    unshuffled = decoded_nbytes if any(s.kind == "shuffle" for s in steps) else 0
    return unit_staging_bytes(encoded, decoded_nbytes, steps=min(1, compressors)) + unshuffled


def read_payload(steps: Any, src_device: str) -> Any:
    """Where nvCOMP's input lies in each chunk of a chain the GPU decodes (for the reads'
    layout, ``staging.layout_reads``); None for host reads and chains it does not hand over."""
    if src_device != "gpu":
        return None
    from gds_zarr.planning.staging import chain_payload

    return chain_payload([s.kind for s in steps])
