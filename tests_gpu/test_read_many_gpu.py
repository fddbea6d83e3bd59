"""read_many and WindowLoader on the GPU: CuPy results equal to the CPU path bit for bit, each
batch one nvCOMP decode call and one scatter kernel launch, loader batches as CuPy arrays that
export DLPack. The CPU matrix of tests/test_read_many.py (codecs, layouts, zarr v2, dimensions,
stores, what zarr reads itself, bad selections) runs here against the CPU path.

Skips cleanly where the GPU path cannot run (no driver, no device, no kvikio or nvCOMP).
"""

from __future__ import annotations

import contextlib
import warnings
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
from pipeline_cases import DEFAULT, make, numcodecs_codec, sample_data, v2_compressor
from test_read_many import CODECS, MIXED
from zarr.storage import LocalStore, MemoryStore

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


# -- the CPU matrix (tests/test_read_many.py), each result equal to the CPU path's -----------

#: A basic selection the planner leaves to zarr (a bool slice bound), which zarr reads.
ZARR_READS = (slice(True, 6), slice(2, 7))


TWO_DEVICES = pytest.mark.skipif(gpu_status().device_count < 2, reason="needs two GPUs")


def _gpu_equals_cpu(z: Any, sels: list[Any]) -> Any:
    """read_many on the GPU gives the CPU path's results bit for bit (CuPy, same layout)."""
    want = gds_zarr.read_many(z, sels, device="cpu")
    got = gds_zarr.read_many(z, sels, device="gpu")
    assert isinstance(got, list) == isinstance(want, list)
    pairs = zip(got, want, strict=True) if isinstance(want, list) else [(got, want)]
    for g, w in pairs:
        assert isinstance(g, cupy.ndarray)
        h = cupy.asnumpy(g)
        assert h.dtype == w.dtype and h.shape == w.shape
        assert h.tobytes() == w.tobytes()
    return got


@pytest.mark.parametrize("name", list(CODECS))
@pytest.mark.parametrize("sharded", [False, True])
def test_codecs_and_layouts_equal_the_cpu(tmp_path: Path, name: str, sharded: bool) -> None:
    kw = dict(CODECS[name])
    if isinstance(kw.get("compressors"), str):
        kw["compressors"] = numcodecs_codec(kw["compressors"])
    if sharded:
        kw["shards"] = (6, 8)
    path = str(tmp_path / "a.zarr")
    # Rows 12+ are never written: missing chunks (and empty inner chunks) read as the fill.
    make(path, sample_data((23, 17), "float32"), chunks=(3, 4), write=np.s_[:12],
         fill_value=np.nan, **kw)
    z = zarr.open_array(GDSStore(path, read_only=True), mode="r")
    stats.reset()
    _gpu_equals_cpu(z, [*MIXED, ZARR_READS])                          # a list of shapes
    _gpu_equals_cpu(z, [*_windows((23, 17), 5, 40, seed=1), ZARR_READS])  # stacked
    assert stats.read_many_via_zarr == 2 * 2  # ZARR_READS, on each path


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("compressor", ["blosc", "zlib", "zstd", None])
def test_v2_equal_the_cpu(tmp_path: Path, order: str, compressor: str | None) -> None:
    path = str(tmp_path / "a.zarr")
    make(path, sample_data((9, 10), ">i4"), chunks=(4, 3), zarr_format=2, order=order,
         compressors=v2_compressor(compressor), fill_value=0, write=np.s_[:6])
    z = zarr.open_array(GDSStore(path, read_only=True), mode="r")
    _gpu_equals_cpu(z, MIXED)
    _gpu_equals_cpu(z, _windows((9, 10), 4, 12))


@pytest.mark.parametrize("shape,chunks,shards", [
    ((10,), (3,), None), ((10,), (2,), (4,)), ((5, 6, 7), (2, 3, 4), None),
    ((5, 6, 7), (1, 3, 2), (2, 6, 4)), ((4, 5), (10, 10), None),
])
def test_dimensions_equal_the_cpu(tmp_path: Path, shape: tuple[int, ...],
                                  chunks: tuple[int, ...], shards: tuple[int, ...] | None) -> None:
    path = str(tmp_path / "a.zarr")
    make(path, sample_data(shape, "int16"), chunks=chunks, shards=shards, fill_value=3)
    z = zarr.open_array(GDSStore(path, read_only=True), mode="r")
    nd = len(shape)
    _gpu_equals_cpu(z, [(0,) * nd, (-1,) * nd, (1,) * nd])       # 0-d results, stacked
    _gpu_equals_cpu(z, [(slice(None, None, 2),) * nd, Ellipsis, (slice(1, 3),) * nd])
    _gpu_equals_cpu(z, [(slice(1, None, 3),) * nd] * 3)           # the same window thrice


def _memory_array(data: np.ndarray, **kw: Any) -> zarr.Array:
    with warnings.catch_warnings(), zarr.config.set({"codec_pipeline.path": DEFAULT}):
        warnings.simplefilter("ignore")
        z = zarr.create_array(MemoryStore(), shape=data.shape, dtype=data.dtype, **kw)
        z[...] = data
    return z


def test_other_stores_and_what_zarr_reads_equal_the_cpu(tmp_path: Path) -> None:
    """Stores other than GDSStore; arrays the planner leaves to zarr (0-d, nested sharding,
    ``read_missing_chunks=False``, an irregular chunk grid); a chain nvCOMP does not decode (on
    the host, then moved): each read on the device equals the CPU path's."""
    data = sample_data((20, 20), "uint8")
    path = str(tmp_path / "a.zarr")
    make(path, data, chunks=(6, 6), shards=(12, 12), write=np.s_[:13])
    _gpu_equals_cpu(zarr.open_array(LocalStore(path, read_only=True), mode="r"), MIXED)
    _gpu_equals_cpu(_memory_array(data, chunks=(6, 6)), MIXED)
    stats.reset()
    _gpu_equals_cpu(_memory_array(np.array(2.5, "f4")), [(), Ellipsis])
    nested = zc.ShardingCodec(chunk_shape=(4, 4), codecs=(zc.ShardingCodec(chunk_shape=(2, 2)),))
    _gpu_equals_cpu(_memory_array(data, chunks=(8, 8), serializer=nested), MIXED[:6])
    assert stats.read_many_via_zarr == 2 * (2 + 6)  # every selection, on each path
    if "rectilinear_chunks" in zarr.config.get("array"):  # zarr >= 3.4: irregular grids
        with zarr.config.set({"array.rectilinear_chunks": True}):
            irregular = _memory_array(data, chunks=[[3, 7, 10], [20]])
        stats.reset()
        _gpu_equals_cpu(irregular, [(slice(1, 9), slice(2, 5)), (slice(10, 18), slice(0, 3))])
        assert stats.read_many_via_zarr == 2 * 2
    with zarr.config.set({"array.read_missing_chunks": False}):
        z = zarr.open_array(LocalStore(path, read_only=True), mode="r")
        _gpu_equals_cpu(z, [(slice(0, 12), slice(None)), (slice(2, 8), slice(1, None, 2))])
    gpu_decode_stats.reset()
    f4 = sample_data((20, 20), "float32")
    two = _memory_array(f4, chunks=(6, 6), compressors=(zc.ZstdCodec(), zc.GzipCodec()))
    _gpu_equals_cpu(two, _windows((20, 20), 7, 9))
    assert gpu_decode_stats.nvcomp_calls == 0  # decoded on the host


@TWO_DEVICES
@pytest.mark.parametrize("enabled", [False, True])
def test_what_zarr_reads_lands_on_the_callers_device(tmp_path: Path, enabled: bool) -> None:
    """Regression: zarr refuses any buffer prototype but its default in sharded arrays, so a
    selection zarr reads itself failed on the GPU unless zarr's buffers were the device's.
    Now zarr reads on the host then, and the result is copied to the caller's device (device
    1 here), or reads straight into the device's buffers under ``enable(device="gpu")``."""
    path = str(tmp_path / "a.zarr")
    make(path, sample_data((23, 17), "float32"), chunks=(3, 4), shards=(6, 8))
    nested = zc.ShardingCodec(chunk_shape=(4, 4), codecs=(zc.ShardingCodec(chunk_shape=(2, 2)),))
    zn = _memory_array(sample_data((20, 20), "int16"), chunks=(8, 8), serializer=nested)
    with contextlib.ExitStack() as stack:
        if enabled:
            stack.enter_context(gds_zarr.enable(device="gpu"))
        # Opened under enable when it is on: zarr's own reads of arrays opened before enable,
        # or of chains gds_zarr hands to zarr, run on the loop thread's device only.
        z = zarr.open_array(GDSStore(path, read_only=True), mode="r")
        cases = [(z, [ZARR_READS, (slice(0, 5), slice(3, 8))]),      # stacked, one by zarr
                 (z, [ZARR_READS, (2, slice(None))])]                 # a list
        if not enabled:
            cases.append((zn, [(slice(1, 9), 3), (slice(1, 9), 4)]))  # zarr reads every one
        for arr, sels in cases:
            want = gds_zarr.read_many(arr, sels, device="cpu")
            with cupy.cuda.Device(1):
                got = gds_zarr.read_many(arr, sels, device="gpu")
            for g, w in zip(got if isinstance(got, list) else [got],
                            want if isinstance(want, list) else [want], strict=True):
                assert isinstance(g, cupy.ndarray) and g.device.id == 1
                assert cupy.asnumpy(g).tobytes() == w.tobytes()


@pytest.mark.parametrize("bad", [
    (9, 0), (0, -11), (slice(None), slice(None), 0), (slice(None, None, -1), 0),
    ([1, 2], 0), (None, 0),
])
def test_bad_selection_raises_zarrs_error(tmp_path: Path, bad: Any) -> None:
    path = str(tmp_path / "a.zarr")
    make(path, sample_data((9, 10), "int32"), chunks=(4, 3))
    z = zarr.open_array(GDSStore(path, read_only=True), mode="r")
    with pytest.raises(Exception) as ref:
        gds_zarr.read_many(z, [(0, 0), bad], device="cpu")
    with pytest.raises(type(ref.value)) as got:
        gds_zarr.read_many(z, [(0, 0), bad], device="gpu")
    assert str(got.value) == str(ref.value)


def test_a_shard_index_past_the_end_is_a_shard_index_error(tmp_path: Path) -> None:
    from gds_zarr.errors import ShardIndexError

    path = tmp_path / "a.zarr"
    codec = zc.ShardingCodec(chunk_shape=(2,), codecs=(zc.BytesCodec(),),
                             index_codecs=(zc.BytesCodec(),), index_location="start")
    make(str(path), np.arange(8, dtype="i4"), chunks=(8,), serializer=codec,
         compressors=None)
    raw = bytearray((path / "c" / "0").read_bytes())
    raw[16:24] = (10_000).to_bytes(8, "little")  # inner chunk 1's offset: far past the end
    (path / "c" / "0").write_bytes(bytes(raw))
    z = zarr.open_array(GDSStore(path, read_only=True), mode="r")
    np.testing.assert_array_equal(cupy.asnumpy(gds_zarr.read_many(z, [slice(0, 2)],
                                                                  device="gpu")), [[0, 1]])
    with pytest.raises(ShardIndexError, match=r"c/0\[1\]: index entry \[10000, 10008\)"):
        gds_zarr.read_many(z, [slice(0, 2), slice(1, 4)], device="gpu")


async def test_aread_many_and_no_selections(tmp_path: Path) -> None:
    path = str(tmp_path / "a.zarr")
    make(path, sample_data((30, 30), "float32"), chunks=(7, 7), shards=(14, 14))
    z = zarr.open_array(GDSStore(path, read_only=True), mode="r")
    sels = _windows((30, 30), 9, 20)
    got = await gds_zarr.aread_many(z, sels, device="gpu")
    want = gds_zarr.read_many(z, sels, device="cpu")
    assert isinstance(got, cupy.ndarray) and cupy.asnumpy(got).tobytes() == want.tobytes()
    empty = gds_zarr.read_many(z, [], device="gpu")
    assert isinstance(empty, cupy.ndarray) and empty.shape == (0,)
