"""read_many and WindowLoader on the GPU: CuPy results equal to the CPU path bit for bit, each
batch one nvCOMP decode call and one scatter kernel launch, loader batches as CuPy arrays that
export DLPack.

Skips cleanly where the GPU path cannot run (no driver, no device, no kvikio or nvCOMP).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gds_zarr._device import gpu_status

if not gpu_status().usable:
    pytest.skip(f"no usable GPU: {gpu_status().reason}", allow_module_level=True)

import cupy
import zarr
import zarr.codecs as zc
from pipeline_cases import make, sample_data

import gds_zarr
from gds_zarr import settings
from gds_zarr.decode._gpu import gpu_decode_stats
from gds_zarr.decode._scatter_gpu import scatter_stats
from gds_zarr.pipeline import stats
from gds_zarr.store import GDSStore


def _windows(shape: tuple[int, int], size: int, n: int, seed: int = 0) -> list[Any]:
    rng = np.random.default_rng(seed)
    ys = rng.integers(0, shape[0] - size + 1, n)
    xs = rng.integers(0, shape[1] - size + 1, n)
    return [(slice(int(y), int(y) + size), slice(int(x), int(x) + size))
            for y, x in zip(ys, xs, strict=True)]


LAYOUTS: dict[str, dict[str, Any]] = {
    "zstd": {"compressors": zc.ZstdCodec(level=3)},
    "zstd_sharded": {"compressors": zc.ZstdCodec(level=3), "shards": (64, 64)},
    "lz4_v2": {"compressors": "lz4", "zarr_format": 2},
    "gzip_crc32c_sharded": {"compressors": (zc.GzipCodec(), zc.Crc32cCodec()),
                            "shards": (64, 64)},
    "big_endian": {"serializer": zc.BytesCodec(endian="big"), "compressors": zc.ZstdCodec()},
}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_windows_match_the_cpu(tmp_path: Path, name: str) -> None:
    kw = dict(LAYOUTS[name])
    if kw.get("compressors") == "lz4":
        import numcodecs

        kw["compressors"] = numcodecs.LZ4()
    data = sample_data((200, 150), "float32")
    path = str(tmp_path / "a.zarr")
    make(path, data, chunks=(16, 16), write=np.s_[:180], fill_value=np.nan, **kw)
    z = zarr.open_array(GDSStore(path, read_only=True), mode="r")
    sels = _windows((200, 150), 24, 40)
    want = gds_zarr.read_many(z, sels, device="cpu")
    stats.reset()
    gpu_decode_stats.reset()
    scatter_stats.reset()
    got = gds_zarr.read_many(z, sels, device="gpu")
    assert isinstance(got, cupy.ndarray) and got.shape == want.shape
    assert cupy.asnumpy(got).tobytes() == want.tobytes()
    # One batch: one decode call on the device (nothing fell back to the host), one launch.
    assert stats.batches == 1
    assert gpu_decode_stats.nvcomp_calls == 1 and gpu_decode_stats.cpu_chunks == 0
    assert scatter_stats.kernel_launches == 1


def test_mixed_shapes_and_integers(tmp_path: Path) -> None:
    data = sample_data((40, 30), "int32")
    path = str(tmp_path / "a.zarr")
    make(path, data, chunks=(8, 8), shards=(16, 16))
    z = zarr.open_array(GDSStore(path, read_only=True), mode="r")
    sels = [(3, slice(None)), (slice(1, 39, 5), 2), (7, 9), (slice(None), slice(None, None, 4))]
    want = gds_zarr.read_many(z, sels, device="cpu")
    got = gds_zarr.read_many(z, sels, device="gpu")
    assert isinstance(got, list)
    for g, w in zip(got, want, strict=True):
        assert isinstance(g, cupy.ndarray)
        np.testing.assert_array_equal(cupy.asnumpy(g), w)


def test_budget_batches_each_one_launch(tmp_path: Path) -> None:
    data = sample_data((128, 128), "float32")
    path = str(tmp_path / "a.zarr")
    make(path, data, chunks=(16, 16), compressors=zc.ZstdCodec())
    z = zarr.open_array(GDSStore(path, read_only=True), mode="r")
    sels = _windows((128, 128), 40, 30)
    want = gds_zarr.read_many(z, sels, device="cpu")
    scatter_stats.reset()
    stats.reset()
    with settings.set(memory_budget=16 * 16 * 4 * 16):
        got = gds_zarr.read_many(z, sels, device="gpu")
    assert cupy.asnumpy(got).tobytes() == want.tobytes()
    assert stats.batches > 1 and scatter_stats.kernel_launches == stats.batches


def test_loader_yields_cupy_with_dlpack(tmp_path: Path) -> None:
    data = sample_data((4, 64, 64), "float32")
    path = str(tmp_path / "a.zarr")
    make(path, data, chunks=(1, 16, 16), shards=(2, 32, 32))
    z = zarr.open_array(GDSStore(path, read_only=True), mode="r")
    corners = np.array([[0, 0, 0], [3, 10, 20], [1, 48, 48]])
    loader = gds_zarr.WindowLoader(z, window=(1, 16, 16), starts=corners, batch_size=2,
                                   device="gpu")
    batches = list(loader)
    assert all(isinstance(b, cupy.ndarray) for b in batches)
    got = np.concatenate([cupy.asnumpy(b) for b in batches])
    np.testing.assert_array_equal(got, np.stack([data[t:t + 1, y:y + 16, x:x + 16]
                                                 for t, y, x in corners]))
    view = cupy.from_dlpack(batches[0])
    assert view.data.ptr == batches[0].data.ptr


def test_loader_follows_the_consumers_device(tmp_path: Path) -> None:
    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two GPUs")
    data = sample_data((2, 32, 32), "float32")
    path = str(tmp_path / "a.zarr")
    make(path, data, chunks=(1, 16, 16))
    z = zarr.open_array(GDSStore(path, read_only=True), mode="r")
    with cupy.cuda.Device(1):
        loader = gds_zarr.WindowLoader(z, window=(1, 8, 8), batch_size=4, n_windows=8,
                                       device="gpu")
        batches = list(loader)
    assert all(b.device.id == 1 for b in batches)


def test_whole_1d_read_decodes_in_place(tmp_path: Path) -> None:
    """Whole chunks of a 1-D array land where nvCOMP writes them: no scatter launch."""
    data = sample_data((4096,), "float32")
    path = str(tmp_path / "a.zarr")
    make(path, data, chunks=(512,), compressors=zc.ZstdCodec())
    stats.reset()
    scatter_stats.reset()
    with gds_zarr.enable(device="gpu"):
        got = zarr.open_array(GDSStore(path, read_only=True), mode="r")[...]
    assert isinstance(got, cupy.ndarray)
    np.testing.assert_array_equal(cupy.asnumpy(got), data)
    assert stats.decoded_in_place == stats.chunks_decoded == 8
    assert scatter_stats.kernel_launches == 0
