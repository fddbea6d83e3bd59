"""Plan many basic selections of one array at once: which chunks, and what goes where.

:func:`read_many <gds_zarr.read_many>` reads a batch of windows (training patches, tiles) in one
call. This module turns the selections into flat numpy arrays, with no Python object per chunk:

* every selection, normalized per axis to ``(start, step, count)`` plus "integer axis" flags;
* every (selection, chunk) *pair*: the chunk's grid coordinates and, per axis, the first
  element and step inside the chunk and inside the selection's output, and the element count;
* the chunks the pairs touch, each listed ONCE (``np.unique`` of the pairs' flat chunk ids), so
  a chunk several windows share is read and decoded once and scattered into each of them.

For a sharded array the "chunks" are the inner chunks, on the array-wide grid of inner chunks
(shard shapes are multiples of the inner chunk shape, so that grid is regular).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["NormalizedSelections", "WindowPlan", "normalize_selections", "plan_windows"]


@dataclass(frozen=True, slots=True)
class NormalizedSelections:
    """Basic selections as ``(n, ndim)`` int64 arrays.

    Attributes
    ----------
    start, step, count
        Per selection and axis: first element, step (>= 1) and number of elements.
    is_int
        bool ``(n, ndim)``: the axis was selected by an integer (zarr drops it from the result).
    fallback
        Indices of selections this module does not normalize (not plain integers, slices and
        Ellipsis, or out of bounds): zarr must read them itself, which also raises zarr's own
        error for a bad one. Their rows in the arrays are placeholders (count 0).
    """

    start: np.ndarray
    step: np.ndarray
    count: np.ndarray
    is_int: np.ndarray
    fallback: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.start)

    def result_shape(self, i: int) -> tuple[int, ...]:
        """Shape of selection ``i``'s result (integer axes dropped), as zarr returns it."""
        keep = ~self.is_int[i]
        return tuple(int(c) for c in self.count[i][keep])


class _NotPlain(Exception):
    """A selection this module leaves to zarr."""


def _is_int(x: Any) -> bool:
    # bool is an int subclass but not an index zarr treats as one: zarr decides.
    return isinstance(x, int | np.integer) and not isinstance(x, bool | np.bool_)


def _axis(sel: Any, extent: int) -> tuple[int, int, int, bool]:
    if _is_int(sel):
        i = operator.index(sel)
        if i < 0:
            i += extent
        if not 0 <= i < extent:
            raise _NotPlain  # out of bounds: zarr raises its BoundsCheckError
        return i, 1, 1, True
    if isinstance(sel, slice):
        for part in (sel.start, sel.stop, sel.step):
            if part is not None and not _is_int(part):
                raise _NotPlain
        if sel.step is not None and operator.index(sel.step) < 1:
            raise _NotPlain  # zarr refuses negative and zero steps
        start, stop, step = sel.indices(extent)
        return start, step, len(range(start, stop, step)), False
    raise _NotPlain


def _normalize_one(selection: Any, shape: tuple[int, ...]) -> list[tuple[int, int, int, bool]]:
    sel = selection if isinstance(selection, tuple) else (selection,)
    n_ell = sum(1 for s in sel if s is Ellipsis)
    if n_ell > 1:
        raise _NotPlain
    if n_ell:
        i = next(k for k, s in enumerate(sel) if s is Ellipsis)
        fill = len(shape) - (len(sel) - 1)
        if fill < 0:
            raise _NotPlain
        sel = (*sel[:i], *([slice(None)] * fill), *sel[i + 1:])
    if len(sel) > len(shape):
        raise _NotPlain
    sel = (*sel, *([slice(None)] * (len(shape) - len(sel))))
    return [_axis(s, int(e)) for s, e in zip(sel, shape, strict=True)]


def normalize_selections(selections: Sequence[Any],
                         shape: tuple[int, ...]) -> NormalizedSelections:
    """Normalize basic selections of an array of ``shape`` (see :class:`NormalizedSelections`).

    Integers may be negative (counted from the end); slices clip to the array as numpy's do.
    """
    n, ndim = len(selections), len(shape)
    table = np.zeros((n, ndim, 4), dtype=np.int64)
    table[:, :, 1] = 1
    fallback: list[int] = []
    for i, s in enumerate(selections):
        try:
            table[i] = _normalize_one(s, shape)
        except _NotPlain:
            fallback.append(i)
    return NormalizedSelections(table[:, :, 0], table[:, :, 1], table[:, :, 2],
                                table[:, :, 3].astype(bool), tuple(fallback))


@dataclass(frozen=True, slots=True)
class WindowPlan:
    """Every (selection, chunk) pair of a batch of selections, and the distinct chunks.

    Arrays of pairs have one row per pair, sorted by chunk (pairs of one chunk are contiguous:
    ``chunk_ptr[u]:chunk_ptr[u + 1]`` are the pairs of chunk ``u``).

    Attributes
    ----------
    chunks
        int64 ``(n_chunks, ndim)``: grid coordinates of each distinct chunk, in C order.
    chunk_ptr
        int64 ``(n_chunks + 1,)``: CSR pointers from chunks to their pairs.
    pair_sel, pair_chunk
        int64 ``(n_pairs,)``: the selection and the distinct chunk of each pair.
    chunk_start, chunk_step, out_start, count
        int64 ``(n_pairs, ndim)``: per axis, the first element and the step inside the chunk,
        the first element inside the selection's output (step 1 there), and the count.
    """

    chunks: np.ndarray
    chunk_ptr: np.ndarray
    pair_sel: np.ndarray
    pair_chunk: np.ndarray
    chunk_start: np.ndarray
    chunk_step: np.ndarray
    out_start: np.ndarray
    count: np.ndarray

    @property
    def n_pairs(self) -> int:
        return len(self.pair_sel)

    def __len__(self) -> int:
        """Distinct chunks."""
        return len(self.chunks)


def _ceil_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return -((-a) // b)


def plan_windows(sels: NormalizedSelections, chunk_shape: tuple[int, ...],
                 grid_shape: tuple[int, ...], rows: np.ndarray | None = None) -> WindowPlan:
    """Plan selections ``rows`` (default: every one not in ``sels.fallback``).

    Parameters
    ----------
    sels
        The normalized selections.
    chunk_shape
        Shape of one chunk (the inner chunk for sharded arrays).
    grid_shape
        Chunks per axis (``ceil(shape / chunk_shape)``).
    rows
        Which selections to plan.

    Returns
    -------
    WindowPlan
    """
    ndim = len(chunk_shape)
    if rows is None:
        rows = np.setdiff1d(np.arange(len(sels), dtype=np.int64),
                            np.asarray(sels.fallback, dtype=np.int64))
    rows = np.asarray(rows, dtype=np.int64)
    c = np.asarray(chunk_shape, dtype=np.int64)
    start, step, count = sels.start[rows], sels.step[rows], sels.count[rows]
    # Per selection and axis: chunks touched. With step <= chunk, every chunk between the first
    # and the last element's holds at least one element; with a larger step each element has a
    # chunk of its own.
    last = start + np.maximum(count - 1, 0) * step
    first_chunk = start // c
    dense = step <= c
    touched = np.where(dense, last // c - first_chunk + 1, count)
    touched[count == 0] = 0
    n_pairs_sel = np.prod(touched, axis=1)  # pairs per selection
    total = int(n_pairs_sel.sum())
    if total == 0:
        z = np.zeros((0, ndim), np.int64)
        e = np.zeros(0, np.int64)
        return WindowPlan(z, np.zeros(1, np.int64), e, e, z, z, z, z)
    # Pair q of selection s has, per axis, a local chunk number a_d (C order over touched[s]).
    pair_row = np.repeat(np.arange(len(rows), dtype=np.int64), n_pairs_sel)
    local = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(n_pairs_sel) - n_pairs_sel,
                                                         n_pairs_sel)
    a = np.empty((total, ndim), dtype=np.int64)
    for d in range(ndim - 1, -1, -1):
        t = touched[pair_row, d]
        a[:, d] = local % t
        local //= t
    s0, k, n = start[pair_row], step[pair_row], count[pair_row]
    j = np.where(dense[pair_row], first_chunk[pair_row] + a, (s0 + a * k) // c)
    # Elements i of the selection inside chunk j: j*c <= s0 + i*k < (j+1)*c.
    i_lo = np.maximum(0, _ceil_div(j * c - s0, k))
    i_hi = np.minimum(n, _ceil_div((j + 1) * c - s0, k))
    flat = np.ravel_multi_index(tuple(j.T), grid_shape)
    order = np.argsort(flat, kind="stable")
    flat_sorted = flat[order]
    uniq_mask = np.empty(total, dtype=bool)
    uniq_mask[0] = True
    np.not_equal(flat_sorted[1:], flat_sorted[:-1], out=uniq_mask[1:])
    chunk_of_sorted = np.cumsum(uniq_mask) - 1
    ptr = np.append(np.flatnonzero(uniq_mask), total).astype(np.int64)
    return WindowPlan(
        chunks=j[order][uniq_mask],
        chunk_ptr=ptr,
        pair_sel=rows[pair_row[order]],
        pair_chunk=chunk_of_sorted.astype(np.int64),
        chunk_start=(s0 + i_lo * k - j * c)[order],
        chunk_step=k[order],
        out_start=i_lo[order],
        count=(i_hi - i_lo)[order],
    )
