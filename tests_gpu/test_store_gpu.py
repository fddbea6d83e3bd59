"""GDSStore with zarr GPU buffers: kvikio reads into CuPy, pwrite from CuPy, handle cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gds_zarr._device import gpu_status

if not gpu_status().usable:  # zarr's GPU buffer module needs CuPy to even be imported
    pytest.skip(f"no usable GPU: {gpu_status().reason}", allow_module_level=True)

import cupy as cp
from store_cases import OnDisk
from zarr.abc.store import RangeByteRequest
from zarr.core.buffer import gpu
from zarr.testing.store import StoreTests

import gds_zarr
from gds_zarr.io import _gpu
from gds_zarr.store import GDSStore

PROTO = gpu.buffer_prototype


class TestGDSStoreGPU(OnDisk, StoreTests[GDSStore, gpu.Buffer]):
    store_cls = GDSStore
    buffer_cls = gpu.Buffer

    def test_store_repr(self, store: GDSStore) -> None:
        assert str(store) == f"file://{store.root.as_posix()}"

    def test_store_supports_writes(self, store: GDSStore) -> None:
        assert store.supports_writes

    def test_store_supports_listing(self, store: GDSStore) -> None:
        assert store.supports_listing


async def test_reads_land_in_device_memory_through_kvikio(tmp_path: Path) -> None:
    store = GDSStore(tmp_path)
    data = np.random.default_rng(0).bytes(1 << 20)
    (tmp_path / "shard").write_bytes(data)
    ranges = [RangeByteRequest(o, o + 4000) for o in range(0, 1 << 20, 8192)]
    got = await store.get_partial_values(PROTO, [("shard", r) for r in ranges])
    for r, b in zip(ranges, got, strict=True):
        assert isinstance(b.as_array_like(), cp.ndarray)
        assert b.to_bytes() == data[r.start : r.end]
    stats = store.io_stats("gpu")
    assert stats.reads == 1 and stats.requests == len(ranges)
    batch = store.read_batch(["shard", "missing"], device="gpu")
    assert batch.device == "gpu" and isinstance(batch.data, cp.ndarray)
    assert batch.present.tolist() == [True, False]


async def test_set_from_cupy_goes_through_kvikio(tmp_path: Path) -> None:
    store = GDSStore(tmp_path)
    arr = cp.arange(1000, dtype=cp.uint8)
    await store.set("c/0", gpu.Buffer.from_array_like(arr))
    assert (tmp_path / "c" / "0").read_bytes() == cp.asnumpy(arr).tobytes()
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["0"]


def test_handle_cache_stays_bounded(tmp_path: Path) -> None:
    store = GDSStore(tmp_path)
    keys = [f"k{i}" for i in range(40)]
    for k in keys:
        (tmp_path / k).write_bytes(k.encode() * 100)
    _gpu.clear_handle_cache()
    with gds_zarr.settings.set(file_handle_cache_size=8):
        got = store.read_batch(keys, device="gpu")
        assert _gpu.cached_handles() <= 8
    assert [cp.asnumpy(got.view(i)).tobytes() for i in range(len(keys))] == [
        k.encode() * 100 for k in keys
    ]
    _gpu.clear_handle_cache()
