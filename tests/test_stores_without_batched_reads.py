"""Stores without a batched read work (issue 19, item 6): where ``get_partial_values`` raises
``NotImplementedError``, the pipeline reads through ``get`` with byte ranges, as zarr's own
pipeline does, and returns zarr's values. VirtualiZarr's ``ManifestStore`` (netCDF4/HDF5 files
as Zarr) is the store users meet this with."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.storage import MemoryStore

import gds_zarr
from gds_zarr.pipeline import stats

DEFAULT = "zarr.core.codec_pipeline.BatchedCodecPipeline"


class GetOnlyStore(MemoryStore):
    """A store whose only read is ``get``: its batched read is not implemented."""

    async def get_partial_values(self, prototype: Any, key_ranges: Any) -> Any:
        raise NotImplementedError


def _write(store: Any, data: np.ndarray, **kwargs: Any) -> None:
    with warnings.catch_warnings(), zarr.config.set({"codec_pipeline.path": DEFAULT}):
        warnings.simplefilter("ignore")
        z = zarr.create_array(store, shape=data.shape, dtype=data.dtype, **kwargs)
        z[...] = data


@pytest.mark.parametrize("layout", [{"chunks": (16, 24)},
                                    {"chunks": (8, 8), "shards": (32, 48)}])
def test_a_store_with_get_only(layout: dict[str, Any]) -> None:
    data = np.random.default_rng(3).standard_normal((70, 100)).astype("f4")
    store = GetOnlyStore()
    _write(store, data, **layout)
    with gds_zarr.enable(device="cpu"):
        z = zarr.open_array(store, mode="r")
        stats.reset()
        np.testing.assert_array_equal(z[...], data)
        np.testing.assert_array_equal(z[5:61, 7:93:3], data[5:61, 7:93:3])
        assert stats.fast_reads == 2 and stats.delegated_reads == 0
        np.testing.assert_array_equal(gds_zarr.read_many(z, [np.s_[0:9, 0:9]])[0], data[0:9, 0:9])


def _hdf5(path: Path) -> dict[str, np.ndarray]:
    """An HDF5 file as netCDF4 writes them: gzip + shuffle, fletcher32, fill values,
    big-endian, several variables."""
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(11)
    arrays = {
        "t2m": rng.standard_normal((60, 90)).astype("<f4"),
        "precip": rng.integers(0, 5000, (45, 70)).astype(">i4"),
        "mask": (rng.random((33, 20)) > 0.5).astype("u1"),
    }
    with h5py.File(path, "w") as f:
        f.create_dataset("t2m", data=arrays["t2m"], chunks=(16, 32), compression="gzip",
                         compression_opts=4, shuffle=True)
        f.create_dataset("precip", data=arrays["precip"], chunks=(10, 25), compression="gzip",
                         shuffle=True, fletcher32=True, fillvalue=-1)
        f.create_dataset("mask", data=arrays["mask"], chunks=(11, 20), compression="gzip")
    with h5py.File(path, "r") as f:  # the reference is h5py's own read
        return {k: f[k][...] for k in arrays}


def test_virtualizarr_manifest_store(tmp_path: Path) -> None:
    pytest.importorskip("virtualizarr")
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtualizarr.parsers import HDFParser

    path = tmp_path / "era.h5"
    expected = _hdf5(path)
    registry = ObjectStoreRegistry({"file://": LocalStore()})
    ms = HDFParser()(url=f"file://{path}", registry=registry)
    with gds_zarr.enable(device="cpu"):
        group = zarr.open_group(ms, mode="r")
        for name, ref in expected.items():
            z = group[name]
            stats.reset()
            got = z[...]
            assert got.dtype == ref.dtype or got.dtype.newbyteorder("=") == ref.dtype.newbyteorder(
                "="), (name, got.dtype, ref.dtype)
            np.testing.assert_array_equal(got, ref)
            np.testing.assert_array_equal(z[3:29, 1:17], ref[3:29, 1:17])
            assert stats.delegated_reads == 0 and stats.fast_reads == 2, (name, stats)
