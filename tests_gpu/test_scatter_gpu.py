"""scatter_chunks beyond the pipeline's one-launch case: per-chunk copies of selections that
are not slices, items of sizes the kernel has no type for, typed rows with negative strides,
the layouts it refuses, and contiguous_rows' refusal of transposed chunks. Each result equals
the numpy reference (``_scatter_reference``) and numpy's own indexing.

Skips cleanly where the GPU path cannot run (no driver, no device).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from gds_zarr._device import gpu_status

if not gpu_status().usable:
    pytest.skip(f"no usable GPU: {gpu_status().reason}", allow_module_level=True)

import cupy

from gds_zarr.decode._scatter_gpu import (
    _scatter_reference,
    contiguous_rows,
    scatter_chunks,
    scatter_stats,
)
from gds_zarr.planning.chunks import ScatterPlan, scatter_plan

SHAPE, CHUNKS = (8, 6), (4, 3)
COORDS = list(itertools.product(range(2), range(2)))  # row r holds chunk COORDS[r]


def _data(dtype: Any) -> np.ndarray:
    dtype = np.dtype(dtype)
    n = int(np.prod(SHAPE))
    if dtype.fields is None:
        return (np.arange(n) % 251).astype(dtype).reshape(SHAPE)
    a = np.zeros(n, dtype)
    for k, name in enumerate(dtype.names or ()):
        a[name] = np.arange(n) * (k + 1) + 7 * k
    return a.reshape(SHAPE)


def _rows(a: np.ndarray) -> np.ndarray:
    """The decoded batch: one C-order chunk of ``a`` per uint8 row."""
    return np.stack([a[i * 4:(i + 1) * 4, j * 3:(j + 1) * 3].reshape(-1).view(np.uint8)
                     for i, j in COORDS])


def _whole_chunks(rows: list[int]) -> ScatterPlan:
    """Plan copying the whole chunks ``rows`` to where they lie in the array."""
    plan = scatter_plan(np.array(rows), [(slice(0, 4, 1), slice(0, 3, 1))] * len(rows),
                        [(slice(COORDS[r][0] * 4, COORDS[r][0] * 4 + 4),
                          slice(COORDS[r][1] * 3, COORDS[r][1] * 3 + 3)) for r in rows],
                        CHUNKS, SHAPE)
    assert plan is not None
    return plan


# Chunk rows 2 and 3 (the bottom half) by integer arrays and a mask: per-chunk copies.
GENERAL = [(2, (np.array([0, 3, 1]), slice(None)), (np.array([4, 7, 5]), slice(0, 3))),
           (3, (slice(None), np.array([True, False, True])), (slice(4, 8), np.array([3, 5])))]


def _expected(a: np.ndarray) -> np.ndarray:
    want = np.zeros_like(a)
    want[:4] = a[:4]                                   # whole chunks 0 and 1
    want[[4, 7, 5], 0:3] = a[[4, 7, 5], 0:3]
    want[4:8, [3, 5]] = a[4:8, [3, 5]]
    return want


@pytest.mark.parametrize("dtype", ["u1", "<f8"])
@pytest.mark.parametrize("typed", [False, True])
def test_general_copies_with_one_launch_match_the_reference(dtype: str, typed: bool) -> None:
    a = _data(dtype)
    rows = _rows(a)
    plan = _whole_chunks([0, 1])
    ref = np.zeros_like(a)
    _scatter_reference(ref, rows, plan, general=GENERAL)
    np.testing.assert_array_equal(ref, _expected(a))
    decoded = cupy.asarray(rows)
    if typed:  # the (n, *chunk_shape) form, in the output's dtype
        decoded = decoded.view(a.dtype).reshape(len(rows), *CHUNKS)
    out = cupy.zeros(SHAPE, a.dtype)
    scatter_stats.reset()
    scatter_chunks(out, decoded, plan, general=GENERAL)
    assert cupy.asnumpy(out).tobytes() == ref.tobytes()
    assert (scatter_stats.kernel_launches, scatter_stats.kernel_units,
            scatter_stats.general_copies) == (1, 2, 2)


def test_items_the_kernel_has_no_type_for_are_copied_per_unit() -> None:
    """A 3-byte structured item: no kernel launch, each unit one CuPy copy, and the values of
    the reference."""
    a = _data(np.dtype([("a", "u1"), ("b", "<u2")]))
    rows = _rows(a)
    plan = _whole_chunks([0, 1, 2, 3])
    ref = np.zeros_like(a)
    _scatter_reference(ref, rows, plan)
    assert ref.tobytes() == a.tobytes()
    out = cupy.zeros(SHAPE, a.dtype)
    scatter_stats.reset()
    scatter_chunks(out, cupy.asarray(rows), plan)
    assert cupy.asnumpy(out).tobytes() == a.tobytes()
    assert (scatter_stats.kernel_launches, scatter_stats.general_copies) == (0, 4)


def test_typed_rows_with_negative_strides() -> None:
    """Typed chunks seen through a reversed view (negative strides): copied contiguous first,
    then scattered as any typed rows."""
    a = _data("<i4")
    typed = cupy.asarray(_rows(a)).view(a.dtype).reshape(4, *CHUNKS)[:, ::-1]
    out = cupy.zeros(SHAPE, a.dtype)
    scatter_chunks(out, typed, _whole_chunks([0, 1, 2, 3]))
    want = np.concatenate([np.concatenate([a[i * 4:(i + 1) * 4, j * 3:(j + 1) * 3][::-1]
                                           for j in range(2)], axis=1) for i in range(2)])
    np.testing.assert_array_equal(cupy.asnumpy(out), want)


def test_layouts_it_cannot_scatter_raise() -> None:
    a = _data("<i2")
    plan = _whole_chunks([0, 1, 2, 3])
    rows = cupy.asarray(_rows(a))
    # An int16 view whose rows start at odd byte offsets: strides are not whole items.
    odd = cupy.zeros((8, 13), np.uint8)[:, 1:].view(np.int16)
    assert odd.shape == SHAPE and odd.strides[0] % 2
    with pytest.raises(ValueError, match="not whole items of 2 bytes"):
        scatter_chunks(odd, rows, plan)
    with pytest.raises(ValueError, match=r"do not match chunk shape \(4, 3\)"):
        scatter_chunks(cupy.zeros(SHAPE, "<i4"), rows, plan)  # rows of int16, output int32


def test_contiguous_rows_refuses_transposed_chunks() -> None:
    """Whole (4, 3) chunks stacked down a (16, 3) output lie in place in C order: a uint8 view
    of the output; with F-order chunk strides the bytes would land transposed: no view."""
    out = cupy.zeros((16, 3), "<f4")
    plan = scatter_plan(np.arange(4), [(slice(0, 4, 1), slice(0, 3, 1))] * 4,
                        [(slice(4 * k, 4 * k + 4), slice(0, 3)) for k in range(4)],
                        CHUNKS, (16, 3))
    assert plan is not None
    view = contiguous_rows(out, plan, 4, chunk_strides=(3, 1))
    assert view is not None and view.shape == (4, 48) and view.data.ptr == out.data.ptr
    assert contiguous_rows(out, plan, 4, chunk_strides=(1, 4)) is None
