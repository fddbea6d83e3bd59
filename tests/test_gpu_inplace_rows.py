"""``contiguous_rows``: when decoded rows can be written straight into the output (no staging
rows, no scatter), checked on numpy against the scatter kernel's numpy twin."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from gds_zarr.decode._scatter_gpu import _scatter_reference, contiguous_rows
from gds_zarr.planning.chunks import scatter_plan


def _plan(shape: tuple[int, ...], chunks: tuple[int, ...], order: list[int] | None = None,
          selection: tuple[slice, ...] | None = None, units: list[int] | None = None):
    """A whole-array (or ``selection``) read: one unit per chunk (listed in ``units`` order of
    the grid), unit ``j`` decoded to row ``order[j]`` (default: the grid position)."""
    selection = selection or tuple(slice(0, n) for n in shape)
    grid = [range(-(-n // c)) for n, c in zip(shape, chunks, strict=True)]
    csel, osel = [], []
    for cc in itertools.product(*grid):
        cs, os_ = [], []
        for d, (i, c) in enumerate(zip(cc, chunks, strict=True)):
            lo = max(i * c, selection[d].start)
            hi = min((i + 1) * c, selection[d].stop)
            if lo >= hi:
                break
            cs.append(slice(lo - i * c, hi - i * c, 1))
            os_.append(slice(lo - selection[d].start, hi - selection[d].start, 1))
        else:
            csel.append(tuple(cs))
            osel.append(tuple(os_))
    n = len(csel)
    if units is not None:
        csel, osel = [csel[u] for u in units], [osel[u] for u in units]
    rows = np.asarray(units if order is None else order) if (
        units is not None or order is not None) else np.arange(n)
    out_shape = tuple(s.stop - s.start for s in selection)
    plan = scatter_plan(rows, csel, osel, chunks, out_shape)
    assert plan is not None
    return plan, n, out_shape


def _check_in_place(shape: tuple[int, ...], chunks: tuple[int, ...], dtype: str = "<f4",
                    units: list[int] | None = None) -> None:
    plan, n, out_shape = _plan(shape, chunks, units=units)
    item = np.dtype(dtype).itemsize
    decoded = np.random.default_rng(0).integers(0, 256, (n, int(np.prod(chunks)) * item),
                                                dtype=np.uint8)
    expected = np.zeros(out_shape, dtype)
    _scatter_reference(expected, decoded, plan)
    out = np.zeros(out_shape, dtype)
    rows = contiguous_rows(out, plan, n)
    assert rows is not None and rows.shape == decoded.shape and rows.dtype == np.uint8
    assert np.shares_memory(rows, out)
    rows[...] = decoded  # what nvCOMP would write there
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize(("shape", "chunks"), [
    ((4096,), (512,)),            # 1-D: every chunk is a run
    ((8 * 16, 32), (16, 32)),     # chunks span every axis but the first
    ((5, 4, 8), (1, 4, 8)),       # leading length-1 axes
    ((6, 1, 10), (2, 1, 10)),
    ((5, 4, 8), (1, 2, 8)),       # a run of rows of 8: whole along the last axis only
])
def test_layouts_that_allow_in_place_rows(shape: tuple[int, ...], chunks: tuple[int, ...]) -> None:
    _check_in_place(shape, chunks)


def test_units_listed_in_any_order() -> None:
    # The rows follow the output: unit j (any grid position) is decoded to that position's row.
    _check_in_place((8 * 16, 32), (16, 32), units=[3, 0, 7, 1, 2, 6, 5, 4])


def test_rows_out_of_output_order_need_a_scatter() -> None:
    # Row r must sit r chunks into the output; a batch decoded in another order cannot.
    plan, n, out_shape = _plan((8 * 16, 32), (16, 32), order=[3, 0, 7, 1, 2, 6, 5, 4])
    assert contiguous_rows(np.zeros(out_shape, "<f4"), plan, n) is None


@pytest.mark.parametrize(("shape", "chunks", "why"), [
    ((64, 64), (16, 32), "a chunk narrower than the output is not one run"),
    ((100,), (32,), "the edge chunk is partial"),
    ((5, 4, 8), (1, 2, 4), "an axis after the first spanned one is not whole"),
])
def test_layouts_that_need_a_scatter(shape: tuple[int, ...], chunks: tuple[int, ...],
                                     why: str) -> None:
    plan, n, out_shape = _plan(shape, chunks)
    assert contiguous_rows(np.zeros(out_shape, "<f4"), plan, n) is None, why


def test_other_reasons_for_none() -> None:
    plan, n, out_shape = _plan((4096,), (512,))
    out = np.zeros(out_shape, "<f4")
    assert contiguous_rows(out, plan, n + 1) is None  # a row no unit covers
    assert contiguous_rows(np.zeros(8192, "<f4")[::2], plan, n) is None  # strided output
    plan2, n2, shape2 = _plan((8 * 16, 32), (16, 32))
    assert contiguous_rows(np.zeros(shape2, "<f4"), plan2, n2, chunk_strides=(1, 16)) is None
    window, nw, wshape = _plan((64, 32), (16, 32), selection=(slice(8, 40), slice(0, 32)))
    assert contiguous_rows(np.zeros(wshape, "<f4"), window, nw) is None  # partial chunks
