"""``gds-zarr info``'s codec table tells the truth (issue 20, item 3): on the GPU, each codec it
says decodes on the device does, and the one it says goes to the CPU does, as a read shows."""

from __future__ import annotations

from pathlib import Path

import numcodecs
import numpy as np
import pytest
from numcodecs.fletcher32 import Fletcher32

from gds_zarr._device import gpu_status

if not gpu_status().usable:
    pytest.skip(f"no usable GPU: {gpu_status().reason}", allow_module_level=True)

import cupy
import zarr
from pipeline_cases import make, sample_data

import gds_zarr
from gds_zarr._info import info
from gds_zarr.decode._gpu import gpu_decode_stats
from gds_zarr.pipeline import stats

#: A zarr v2 compressor for each row of info's codec table.
COMPRESSORS = {
    "zstd": numcodecs.Zstd(level=1), "gzip": numcodecs.GZip(), "zlib": numcodecs.Zlib(),
    "lz4": numcodecs.LZ4(), "blosc": numcodecs.Blosc(cname="lz4", shuffle=numcodecs.Blosc.SHUFFLE),
    "fletcher32": Fletcher32(), "shuffle": numcodecs.Shuffle(4),  # HDF5's filters
    "other numcodecs": numcodecs.BZ2(),
}


def test_codec_table_matches_what_reads_do(tmp_path: Path) -> None:
    with gds_zarr.enable(device="gpu"):
        table = {c.codec: c for c in info().codecs}
    assert set(table) == set(COMPRESSORS)
    data = sample_data((64, 48), "float32")
    for name, compressor in COMPRESSORS.items():
        path = str(tmp_path / f"{name.replace(' ', '_')}.zarr")
        make(path, data, chunks=(16, 16), zarr_format=2, compressors=compressor)
        with gds_zarr.enable(device="gpu"):
            z = zarr.open_array(gds_zarr.GDSStore(path, read_only=True), mode="r")
            gpu_decode_stats.reset()
            stats.reset()
            got = z[...]
        np.testing.assert_array_equal(cupy.asnumpy(got), data)
        on_device = gpu_decode_stats.device_chunks > 0 and gpu_decode_stats.cpu_chunks == 0
        # A chain the device cannot decode is read and decoded on the host, then copied.
        on_host = stats.chunks_decoded > 0 and gpu_decode_stats.device_chunks == 0
        says = table[name].decodes_on
        assert (says == "gpu" and on_device) or (says == "cpu" and on_host), (
            name, says, gpu_decode_stats)
