"""I/O backends: batched reads of local files into host (numpy) or device (CuPy) memory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gds_zarr._hostpool import host_empty
from gds_zarr.io._base import BatchRead, IOBackend, IOStats

__all__ = ["BatchRead", "IOBackend", "IOStats", "batch_from_buffers", "get_io_backend"]


def get_io_backend(device: str | None = None) -> IOBackend:
    """A new I/O backend for ``device`` (``"cpu"``, ``"gpu"``, ``"auto"`` or None: the setting).

    Backends are cheap: each keeps its own :class:`IOStats`; thread pools and the GPU file
    handle cache are shared by the process.

    Raises
    ------
    DeviceUnavailableError
        If ``"gpu"`` is asked for and the GPU path cannot run.
    """
    from gds_zarr._device import resolve_device

    if resolve_device(device) == "gpu":
        from gds_zarr.io._gpu import KvikioIOBackend

        return KvikioIOBackend()
    from gds_zarr.io._cpu import PosixIOBackend

    return PosixIOBackend()


def batch_from_buffers(buffers: Sequence[Any]) -> BatchRead:
    """Pack zarr Buffers (or None for missing keys) into one :class:`BatchRead`.

    This is how the pipeline reads through a store that is not a GDSStore: it calls the
    store's ``get_partial_values`` and packs the answer. The bytes are copied once into one
    contiguous array: CuPy if any buffer lives on the GPU, numpy otherwise.

    Parameters
    ----------
    buffers
        ``zarr.core.buffer.Buffer`` or None, one per request.

    Returns
    -------
    BatchRead
    """
    arrays = [None if b is None else b.as_array_like() for b in buffers]
    present = np.fromiter((a is not None for a in arrays), dtype=bool, count=len(arrays))
    sizes = np.fromiter((0 if a is None else len(a) for a in arrays), dtype=np.int64,
                        count=len(arrays))
    offsets = np.cumsum(sizes) - sizes
    parts = [a for a in arrays if a is not None and len(a)]
    on_gpu = any(hasattr(a, "__cuda_array_interface__") for a in parts)
    if on_gpu:
        import cupy as cp

        data = (cp.concatenate([cp.asarray(a).view(cp.uint8).reshape(-1) for a in parts])
                if parts else cp.empty(0, dtype=cp.uint8))
    else:
        # Pooled (gds_zarr/_hostpool.py): a batch-sized buffer, reused by the next batch.
        data = host_empty(int(sizes.sum()))
        if parts:
            np.concatenate([np.asarray(a).view(np.uint8).reshape(-1) for a in parts], out=data)
    return BatchRead(data=data, offsets=offsets, sizes=sizes, present=present,
                     device="gpu" if on_gpu else "cpu", nbytes_staged=int(sizes.sum()))
