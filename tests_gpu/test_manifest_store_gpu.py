"""A store without batched reads (VirtualiZarr's ManifestStore over an HDF5 file) read onto the
GPU: host reads through ``get``, decoded on the device where the chain allows, values equal to
h5py's own (issue 19, item 6, on the GPU backends)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gds_zarr._device import gpu_status

if not gpu_status().usable:
    pytest.skip(f"no usable GPU: {gpu_status().reason}", allow_module_level=True)
pytest.importorskip("virtualizarr")

import cupy
import zarr
from test_stores_without_batched_reads import _hdf5

import gds_zarr
from gds_zarr.pipeline import stats


def test_manifest_store_onto_the_gpu(tmp_path: Path) -> None:
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtualizarr.parsers import HDFParser

    path = tmp_path / "era.h5"
    expected = _hdf5(path)
    ms = HDFParser()(url=f"file://{path}", registry=ObjectStoreRegistry({"file://": LocalStore()}))
    with gds_zarr.enable(device="gpu"):
        group = zarr.open_group(ms, mode="r")
        for name, ref in expected.items():
            stats.reset()
            got = group[name][2:40, 3:19]
            assert isinstance(got, cupy.ndarray)
            np.testing.assert_array_equal(cupy.asnumpy(got), ref[2:40, 3:19])
            assert stats.delegated_reads == 0 and stats.fast_reads == 1, (name, stats)
