"""GPU in-place decode, its index arithmetic checked on numpy: ``rows_in_place`` gives a view of
the output exactly where the scatter would have copied each chunk, or None."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.codecs as zc
from pipeline_cases import make, sample_data

from gds_zarr.decode._cpu import CpuDecoder
from gds_zarr.pipeline._many import _describe
from gds_zarr.pipeline._read import rows_in_place
from gds_zarr.planning.chunks import ReadUnits
from gds_zarr.store import GDSStore


def _units(chunks: list[tuple[tuple[slice, ...], tuple[slice, ...]]]) -> ReadUnits:
    n = len(chunks)
    return ReadUnits(keys=[""] * n, starts=np.zeros(n, np.int64), stops=np.zeros(n, np.int64),
                     readable=np.ones(n, bool), target=np.zeros(n, np.int64),
                     chunk_sel=[c for c, _ in chunks], out_sel=[o for _, o in chunks],
                     names=[""] * n, outer=np.arange(n, dtype=np.int64))


def _plan(path: Path, data: np.ndarray, **kw: Any) -> Any:
    make(str(path), data, **kw)
    z = zarr.open_array(GDSStore(path, read_only=True), mode="r")
    return z, _describe(z._async_array).plan


def test_whole_chunks_of_a_1d_array_decode_in_place(tmp_path: Path) -> None:
    data = sample_data((40,), "float32")
    _, plan = _plan(tmp_path / "a.zarr", data, chunks=(10,), compressors=zc.ZstdCodec())
    # Chunks 3, 0, 2 read whole into out[0:30] in that order: rows in unit order.
    order = [3, 0, 2]
    units = _units([((slice(0, 10, 1),), (slice(10 * i, 10 * i + 10),))
                    for i in range(3)])
    out = np.zeros(30, "float32")
    rows = rows_in_place(plan, units, np.arange(3), [out])
    assert rows is not None and rows.shape == (3, 40) and np.shares_memory(rows, out)
    batch = GDSStore(tmp_path / "a.zarr").read_batch([f"c/{i}" for i in order], device="cpu")
    rows[:] = CpuDecoder().decode_batch(plan.steps, batch, np.arange(3), 40,
                                        [f"c/{i}" for i in order])
    np.testing.assert_array_equal(out, np.concatenate([data[10 * i:10 * i + 10]
                                                       for i in order]))


def test_layouts_that_need_the_scatter_give_none(tmp_path: Path) -> None:
    data = sample_data((8, 6), "int32")
    _, plan = _plan(tmp_path / "a.zarr", data, chunks=(4, 3))
    two_cols = _units([((slice(0, 4, 1), slice(0, 3, 1)), (slice(0, 4), slice(0, 3))),
                       ((slice(0, 4, 1), slice(0, 3, 1)), (slice(0, 4), slice(3, 6)))])
    assert rows_in_place(plan, two_cols, np.arange(2), [np.zeros((4, 6), "int32")]) is None
    # Chunks spanning every axis but the first, stacked along it: in place.
    rows_only = _units([((slice(0, 4, 1), slice(0, 3, 1)), (slice(0, 4), slice(0, 3))),
                        ((slice(0, 4, 1), slice(0, 3, 1)), (slice(4, 8), slice(0, 3)))])
    assert rows_in_place(plan, rows_only, np.arange(2), [np.zeros((8, 3), "int32")]) is not None
    # A partial chunk, another dtype: the scatter.
    part = _units([((slice(0, 2, 1), slice(0, 3, 1)), (slice(0, 2), slice(0, 3)))])
    assert rows_in_place(plan, part, np.arange(1), [np.zeros((2, 3), "int32")]) is None
    assert rows_in_place(plan, rows_only, np.arange(2), [np.zeros((8, 3), "int64")]) is None
    _, big = _plan(tmp_path / "b.zarr", data, chunks=(4, 3),
                   serializer=zc.BytesCodec(endian="big"))
    assert rows_in_place(big, rows_only, np.arange(2), [np.zeros((8, 3), ">i4")]) is None
    _, tr = _plan(tmp_path / "c.zarr", data, chunks=(4, 3),
                  filters=zc.TransposeCodec(order=(1, 0)))
    assert rows_in_place(tr, rows_only, np.arange(2), [np.zeros((8, 3), "int32")]) is None
