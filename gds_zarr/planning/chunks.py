"""Chunk plans: what to read, decode and scatter for one ``read`` call, as flat arrays.

The pipeline flattens zarr's ``batch_info`` (and, for sharded arrays, every needed inner chunk
of every shard) into *units*: one encoded byte range each, with where its decoded chunk goes.
Budgeting and the GPU scatter work on the unit arrays, not on per-chunk Python objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ReadUnits", "ScatterPlan", "scatter_plan", "split_by_budget"]


@dataclass(slots=True)
class ReadUnits:
    """Every unit of one read; arrays have one entry per unit.

    Attributes
    ----------
    keys
        Store key of each unit (a shard key for inner chunks).
    starts, stops
        int64 byte request per unit, encoded as in :mod:`gds_zarr.io._base` (0/-1: whole value).
    readable
        False for units known to be empty before any chunk read (empty inner chunks): they get
        the fill value without a read.
    target
        int64: which target array the unit scatters into (0: ``out``; >0: a shard's output).
    chunk_sel, out_sel
        Per unit: the selection inside the decoded chunk, and where it goes in the target.
    names
        Per unit: the name used in errors (``key`` or ``key[inner index]``).
    outer
        int64: the ``batch_info`` item the unit belongs to.
    """

    keys: list[str] = field(default_factory=list)
    starts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    stops: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    readable: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    target: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    chunk_sel: list[Any] = field(default_factory=list)
    out_sel: list[Any] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    outer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.keys)


def split_by_budget(cost: np.ndarray, budget: int) -> list[np.ndarray]:
    """Split units ``0..len(cost)-1`` into consecutive batches of summed ``cost`` <= ``budget``.

    A unit costing more than ``budget`` forms a batch of its own (it cannot be split).

    Parameters
    ----------
    cost
        int64 staging bytes per unit.
    budget
        Bytes one batch may stage; ``<= 0`` means unlimited.

    Returns
    -------
    list of numpy.ndarray
        int64 unit indices per batch, in order.
    """
    n = len(cost)
    if n == 0:
        return []
    if budget <= 0 or int(cost.sum()) <= budget:
        return [np.arange(n, dtype=np.int64)]
    batches: list[np.ndarray] = []
    csum = np.cumsum(cost, dtype=np.int64)
    lo, base = 0, 0
    while lo < n:
        # Last unit whose cumulative cost still fits, found by binary search on the prefix sum.
        hi = int(np.searchsorted(csum, base + budget, side="right"))
        hi = max(hi, lo + 1)
        batches.append(np.arange(lo, hi, dtype=np.int64))
        base = int(csum[hi - 1])
        lo = hi
    return batches


@dataclass(frozen=True, slots=True)
class ScatterPlan:
    """Offset tables for scattering a batch of decoded chunks with one kernel (GPU).

    Present only when every unit's selections are slices (basic indexing). Arrays are int64 of
    shape ``(n_units, ndim)`` in the decoded chunk's axes (after the array step's transpose).

    Attributes
    ----------
    rows
        int64 ``(n_units,)``: row of the decoded batch holding each unit's chunk.
    chunk_start, chunk_step, out_start, out_step, count
        Per unit and axis: first element and step inside the chunk and inside ``out``, and the
        number of elements copied.
    chunk_shape
        The decoded chunk's shape (the chunk's axes).
    """

    rows: np.ndarray
    chunk_start: np.ndarray
    chunk_step: np.ndarray
    out_start: np.ndarray
    out_step: np.ndarray
    count: np.ndarray
    chunk_shape: tuple[int, ...]


def _slice_rows(selections: list[Any], shape: tuple[int, ...]) -> np.ndarray | None:
    """``(n, ndim, 3)`` int64 (start, step, count), or None unless all entries are slices."""
    table = np.empty((len(selections), len(shape), 3), dtype=np.int64)
    for u, sel in enumerate(selections):
        if len(sel) != len(shape):
            return None
        for d, s in enumerate(sel):
            if not isinstance(s, slice):
                return None
            start, _stop, step = s.indices(shape[d])
            table[u, d] = (start, step, len(range(*s.indices(shape[d]))))
    return table


def scatter_plan(rows: np.ndarray, chunk_sel: list[Any], out_sel: list[Any],
                 chunk_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> ScatterPlan | None:
    """Build a :class:`ScatterPlan`, or None when some selection is not plain slices.

    ``out_sel`` must already have one entry per axis of ``out`` (no dropped axes).
    """
    c = _slice_rows(chunk_sel, chunk_shape)
    o = _slice_rows(out_sel, out_shape) if c is not None else None
    if c is None or o is None or not np.array_equal(c[..., 2], o[..., 2]):
        return None
    return ScatterPlan(np.asarray(rows, np.int64), c[..., 0], c[..., 1], o[..., 0], o[..., 1],
                       c[..., 2], chunk_shape)
