"""Many windows of one array in one call: :func:`read_many` and :func:`aread_many`.

A training step reads a batch of small windows (patches, tiles, rows). Read one by one through
zarr, each window pays zarr's per-call cost and re-reads the chunks its neighbours share.
``read_many`` plans every window at once, reads and decodes each chunk any window touches ONCE
(one batched store read and one decode call per budgeted batch) and scatters it into every
window that needs it::

    import zarr, gds_zarr

    z = zarr.open_array(gds_zarr.GDSStore("era5.zarr"), mode="r")      # (time, lat, lon)
    sels = [(t, slice(y, y + 64), slice(x, x + 64)) for t, y, x in corners]
    batch = gds_zarr.read_many(z, sels)    # (len(sels), 64, 64): CuPy on a GPU, NumPy on CPU

It needs no :func:`gds_zarr.enable`: the array's codecs are planned directly, whatever pipeline
the array was opened with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gds_zarr._device import resolve_device

__all__ = ["aread_many", "read_many"]


async def aread_many(array: Any, selections: Sequence[Any], *, device: str | None = None) -> Any:
    """Read many basic selections of ``array`` at once (the async twin of :func:`read_many`).

    Parameters and results are those of :func:`read_many`.
    """
    return await _read(array, selections, resolve_device(device), None)


async def _read(array: Any, selections: Sequence[Any], device: str, target: Any) -> Any:
    from gds_zarr.pipeline._many import read_windows

    return await read_windows(array, selections, device, target)  # type: ignore[arg-type]


def read_many(array: Any, selections: Sequence[Any], *, device: str | None = None) -> Any:
    """Read many basic selections of ``array`` at once.

    Parameters
    ----------
    array
        A ``zarr.Array`` (or ``zarr.AsyncArray``) on any store. A :class:`~gds_zarr.GDSStore`
        takes the fast path (batched reads into one buffer, GPU Direct Storage on a GPU); any
        other store is read with batched ``get_partial_values`` calls.
    selections
        Basic selections, as for ``array[...]``: integers (negative ones count from the end),
        slices (steps >= 1) and ``Ellipsis``, one tuple per window (or a single integer or
        slice). Windows may overlap and may differ in shape.
    device
        ``"cpu"``, ``"gpu"`` or ``"auto"``; None: the ``device`` setting (``auto``: the GPU
        when usable).

    Returns
    -------
    numpy.ndarray or cupy.ndarray or list
        When every selection's result has the same shape ``s`` (the usual batch of equal
        windows): ONE array of shape ``(len(selections), *s)``, the selections' results in
        order, equal to ``np.stack([array[sel] for sel in selections])``. Otherwise a list with
        one result per selection, each equal to ``array[sel]`` (a 0-d array for a selection
        of integers only, as ``array[sel]`` gives). CuPy on the GPU, NumPy on the CPU; always in
        native byte order (as ``np.stack`` gives), whatever the stored byte order.

    Raises
    ------
    IndexError
        The error zarr raises for the same selection (out of bounds, too many indices, a step
        below 1, not a basic selection).
    gds_zarr.errors.ChunkDecodeError, gds_zarr.errors.ShardIndexError
        A corrupt chunk or shard index (named by key).

    Notes
    -----
    Chunks a window needs are planned as flat arrays (no Python object per chunk for regular
    grids); chunks several windows share are read and decoded once. Reads stream in batches
    within the ``memory_budget`` setting. Codec chains the fast path does not decode, irregular
    chunk grids and 0-d arrays are read through zarr's own ``getitem``: the same values, at
    zarr's speed.
    """
    from zarr.core.sync import sync

    dev = resolve_device(device)
    target = None
    if dev == "gpu":  # zarr's loop thread runs the read: tell it the caller's device and stream
        from gds_zarr._device import current_cuda_target

        target = current_cuda_target()
    return sync(_read(array, selections, dev, target))
