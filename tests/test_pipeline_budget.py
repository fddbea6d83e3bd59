"""Streaming within the memory budget: big reads split into batches; staging stays bounded."""

from __future__ import annotations

import tracemalloc
from typing import Any

import numpy as np
import pytest
import zarr
from pipeline_cases import budget_array
from zarr.storage import LocalStore

import gds_zarr
from gds_zarr.pipeline import PIPELINE_PATH, stats
from gds_zarr.planning.chunks import split_by_budget

BUDGET = 1 << 20  # 1 MiB, for an 8 MiB array


@pytest.mark.parametrize("sharded", [False, True])
def test_read_larger_than_budget(tmp_path: Any, sharded: bool) -> None:
    path = str(tmp_path / "a.zarr")
    data = budget_array(path, sharded)  # 8 MiB
    with zarr.config.set({"codec_pipeline.path": PIPELINE_PATH}), \
            gds_zarr.settings.set(memory_budget=BUDGET):
        a = zarr.open_array(LocalStore(path), mode="r")
        # Warm-up: the first read in a process also imports modules and creates thread pools,
        # which tracemalloc would count (run alone, this test saw 10.6 MB for 8 MiB of output).
        a[:64, :64]
        stats.reset()
        tracemalloc.start()
        try:
            got = a[...]
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    np.testing.assert_array_equal(got, data)
    assert stats.delegated_reads == 0
    assert stats.batches >= data.nbytes // BUDGET  # streamed, not read at once
    assert 0 < stats.peak_staging_bytes <= BUDGET
    # Host memory: the output plus staging plus transient buffers of the store's reads.
    assert peak <= data.nbytes + 2 * BUDGET, (peak, data.nbytes)


def test_split_by_budget() -> None:
    cost = np.array([4, 4, 4, 10, 1, 1, 1], np.int64)
    parts = split_by_budget(cost, 8)
    assert [p.tolist() for p in parts] == [[0, 1], [2], [3], [4, 5, 6]]
    assert [p.tolist() for p in split_by_budget(cost, 0)] == [list(range(7))]
    assert split_by_budget(np.zeros(0, np.int64), 8) == []
