"""The correctness matrix of tests/test_pipeline_matrix.py on the GPU, plus streaming in budget.

Every case is read three ways and compared bit for bit (NaN payloads included): zarr's default
pipeline on the host (the reference), gds_zarr on the host, and gds_zarr with
``gds_zarr.enable(device="gpu")``, which must return a ``cupy.ndarray``. The counters then say
where the work ran: the fast path served the read (``stats``), the chunk bytes came through
kvikio (the GDSStore's GPU ``IOStats``), nvCOMP or the device kernels decoded them
(``gpu_decode_stats``: no host fallback for chains the GPU decodes) and the scatter kernel
copied them (``scatter_stats``) where the selection is made of slices.

Skips cleanly where the GPU path cannot run (no driver, no device, no kvikio or nvCOMP).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

from gds_zarr._device import gpu_status

if not gpu_status().usable:  # zarr's GPU buffer module needs CuPy to even be imported
    pytest.skip(f"no usable GPU: {gpu_status().reason}", allow_module_level=True)

import cupy
import zarr
import zarr.codecs as zc
from pipeline_cases import (
    DEFAULT,
    SELECTIONS,
    Select,
    budget_array,
    make,
    numcodecs_codec,
    sample_data,
    v2_compressor,
)
from zarr.storage import LocalStore

import gds_zarr
from gds_zarr.decode._gpu import gpu_decode_stats
from gds_zarr.decode._scatter_gpu import scatter_stats
from gds_zarr.pipeline import PIPELINE_PATH, stats
from gds_zarr.store import GDSStore

#: Selections the scatter kernel serves (plain slices, no integer axes dropped).
KERNEL_SELECTIONS = frozenset({"full", "steps", "neg_step_free"})


def _host_read(path: str, pipeline: str, select: Select) -> np.ndarray:
    # enable(device="cpu") puts zarr's host buffers in place; then the pipeline under test.
    with gds_zarr.enable(device="cpu"), zarr.config.set({"codec_pipeline.path": pipeline}):
        return np.asarray(select(zarr.open_array(LocalStore(path, read_only=True), mode="r")))


def _reset_counters() -> None:
    stats.reset()
    gpu_decode_stats.reset()
    scatter_stats.reset()


def assert_same_on_gpu(path: str, select: Select, *, on_gpu: bool = True,
                       kernel: bool = False, store: str = "gds") -> None:
    """Read ``select`` on the host (zarr, gds_zarr) and on the GPU; compare; check counters.

    Parameters
    ----------
    on_gpu
        The chain decodes on the device (False: the CPU decodes, e.g. a numcodecs filter).
    kernel
        The selection is plain slices: the scatter kernel must have run.
    store
        ``"gds"`` (GDSStore: kvikio reads into device memory) or ``"local"`` (zarr's
        LocalStore: host reads, device decode).
    """
    ref = _host_read(path, DEFAULT, select)
    host = _host_read(path, PIPELINE_PATH, select)
    assert host.dtype == ref.dtype and host.shape == ref.shape
    assert host.tobytes() == ref.tobytes(), "gds_zarr on the host differs from zarr"

    st = GDSStore(path) if store == "gds" else LocalStore(path, read_only=True)
    with gds_zarr.enable(device="gpu") as on:
        assert on.device == "gpu"
        z = zarr.open_array(st, mode="r")
        if isinstance(st, GDSStore):
            # zarr >= 3.2 opens a writable store read-only for mode "r": another instance.
            st = z.store
            st.io_stats("gpu").reset()
            st.io_stats("cpu").reset()
        _reset_counters()
        got = select(z)
    if ref.ndim:
        assert isinstance(got, cupy.ndarray), type(got)
    got_h = cupy.asnumpy(got) if isinstance(got, cupy.ndarray) else np.asarray(got)
    assert got_h.dtype == ref.dtype and got_h.shape == ref.shape, (got_h.dtype, got_h.shape)
    assert got_h.tobytes() == ref.tobytes(), "gds_zarr on the GPU differs from zarr"

    assert stats.fast_reads >= 1 and stats.delegated_reads == 0, stats.last_delegation
    if stats.chunks_decoded == 0:
        return  # every chunk of the selection is missing or empty: nothing was decoded
    if on_gpu:
        assert gpu_decode_stats.cpu_chunks == 0, gpu_decode_stats
        assert gpu_decode_stats.device_chunks == stats.chunks_decoded, (gpu_decode_stats,
                                                                        stats)
    else:
        assert gpu_decode_stats.device_chunks == 0, gpu_decode_stats
    if isinstance(st, GDSStore):
        # Chunk bytes came through kvikio; a chain the GPU cannot decode is read on the host.
        io = st.io_stats("gpu" if on_gpu else "cpu")
        assert io.reads >= 1 and io.bytes_read > 0, io
    if kernel:
        assert scatter_stats.kernel_launches >= 1, scatter_stats


@pytest.mark.parametrize("dtype", ["bool", "uint8", "int16", "int32", "int64", "float16",
                                   "float32", "float64", "complex64"])
@pytest.mark.parametrize("endian", ["little", "big"])
def test_dtypes_and_byte_order(tmp_path: Any, dtype: str, endian: str) -> None:
    data = sample_data((7, 9), dtype)
    fill = np.nan if np.dtype(dtype).kind in "fc" else 0
    path = str(tmp_path / "a.zarr")
    # Rows 5+ are never written: missing chunks read as the fill value.
    make(path, data, chunks=(3, 4), write=np.s_[:5], fill_value=fill,
         serializer=zc.BytesCodec(endian=endian), compressors=zc.ZstdCodec())
    for name, select in SELECTIONS.items():
        assert_same_on_gpu(path, select, kernel=name in KERNEL_SELECTIONS)


@pytest.mark.parametrize("shape,chunks", [
    ((10,), (3,)), ((5, 6, 7), (2, 3, 4)), ((3, 4, 5, 6), (2, 2, 3, 4)),
    ((4, 5), (1, 1)), ((5, 6), (10, 10)), ((1,), (1,)),
])
def test_shapes(tmp_path: Any, shape: tuple[int, ...], chunks: tuple[int, ...]) -> None:
    data = sample_data(shape, "float32")
    path = str(tmp_path / "a.zarr")
    make(path, data, chunks=chunks, fill_value=np.nan, compressors=zc.ZstdCodec())
    assert_same_on_gpu(path, lambda z: z[...], kernel=True)
    assert_same_on_gpu(path, lambda z: z[(slice(None, None, 2),) * z.ndim], kernel=True)
    assert_same_on_gpu(path, lambda z: z[(0,) * z.ndim])
    assert_same_on_gpu(path, lambda z: z.oindex[(np.array([0, z.shape[0] - 1]),)
                                                + (slice(None),) * (z.ndim - 1)])
    assert_same_on_gpu(path, lambda z: z.vindex[tuple(np.array([0, s - 1, s // 2])
                                                       for s in z.shape)])


#: name -> (create kwargs, decodes on the GPU)
CODECS: dict[str, tuple[dict[str, Any], bool]] = {
    "raw": ({"compressors": None}, True),
    "zstd1": ({"compressors": zc.ZstdCodec(level=1)}, True),
    "zstd_checksum": ({"compressors": zc.ZstdCodec(level=9, checksum=True)}, True),
    "gzip": ({"compressors": zc.GzipCodec(level=6)}, True),
    # Blosc with LZ4 or Zstd inside decodes on the GPU (decode/_blosc_gpu.py).
    "blosc_lz4_shuffle": ({"compressors": zc.BloscCodec(cname="lz4", shuffle="shuffle")},
                          True),
    "blosc_zstd_bitshuffle": ({"compressors": zc.BloscCodec(cname="zstd",
                                                            shuffle="bitshuffle")}, True),
    "crc32c": ({"compressors": (zc.ZstdCodec(), zc.Crc32cCodec())}, True),
    "crc32c_only": ({"compressors": zc.Crc32cCodec()}, True),
    "transpose": ({"filters": zc.TransposeCodec(order=(1, 0)), "compressors": zc.GzipCodec()},
                  True),
    "numcodecs_lz4": ({"compressors": "LZ4"}, True),
    "numcodecs_zlib": ({"compressors": "Zlib"}, True),
    "numcodecs_zstd": ({"compressors": "Zstd"}, True),
}


@pytest.mark.parametrize("store", ["gds", "local"])
@pytest.mark.parametrize("name", list(CODECS))
def test_codecs(tmp_path: Any, name: str, store: str) -> None:
    kw, on_gpu = CODECS[name]
    kw = dict(kw)
    if isinstance(kw["compressors"], str):
        kw["compressors"] = numcodecs_codec(kw["compressors"])
    data = sample_data((11, 10), "int32")
    path = str(tmp_path / "a.zarr")
    make(path, data, chunks=(4, 3), fill_value=-1, write=np.s_[:8], **kw)
    for key in ("full", "steps", "oindex_int", "vindex_bool"):
        assert_same_on_gpu(path, SELECTIONS[key], on_gpu=on_gpu,
                           kernel=key in KERNEL_SELECTIONS, store=store)


def test_transpose_3d_big_endian(tmp_path: Any) -> None:
    data = sample_data((6, 7, 8), "float64")
    path = str(tmp_path / "a.zarr")
    make(path, data, chunks=(4, 3, 5), fill_value=np.nan,
         filters=(zc.TransposeCodec(order=(2, 0, 1)), zc.TransposeCodec(order=(1, 0, 2))),
         serializer=zc.BytesCodec(endian="big"), compressors=zc.ZstdCodec())
    assert_same_on_gpu(path, lambda z: z[...], kernel=True)
    assert_same_on_gpu(path, lambda z: z[1:5, ::2, 3])


SHARDING: dict[str, dict[str, Any]] = {
    "index_end": {"index_location": "end"},
    "index_start": {"index_location": "start"},
    "index_no_crc": {"index_codecs": (zc.BytesCodec(),)},
    "nested_codecs": {"codecs": (zc.TransposeCodec(order=(1, 0)), zc.BytesCodec(endian="big"),
                                 zc.ZstdCodec(), zc.Crc32cCodec())},
}


@pytest.mark.parametrize("store", ["gds", "local"])
@pytest.mark.parametrize("name", list(SHARDING))
def test_sharding(tmp_path: Any, name: str, store: str) -> None:
    data = sample_data((23, 17), "float32")
    path = str(tmp_path / "a.zarr")
    cfg = dict(SHARDING[name])
    codec = zc.ShardingCodec(chunk_shape=(3, 4), **{
        "codecs": cfg.pop("codecs", (zc.BytesCodec(), zc.ZstdCodec())), **cfg})
    # Partial shards; rows 12+ missing; columns 6+ of present shards are empty inner chunks.
    make(path, data, chunks=(6, 8), write=np.s_[:12, :6], fill_value=np.nan,
         serializer=codec, compressors=None)
    for key in ("full", "steps", "int", "ellipsis", "oindex_int", "oindex_bool", "vindex_int",
                "vindex_bool"):
        assert_same_on_gpu(path, SELECTIONS[key], kernel=key in KERNEL_SELECTIONS, store=store)


def test_sharding_with_shards_argument(tmp_path: Any) -> None:
    data = sample_data((40, 30), "int16")
    path = str(tmp_path / "a.zarr")
    make(path, data, chunks=(5, 5), shards=(20, 15), fill_value=7)
    assert_same_on_gpu(path, lambda z: z[...], kernel=True)
    assert_same_on_gpu(path, lambda z: z[3:37:4, 1])


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("compressor", ["blosc", "zlib", "zstd", None])
def test_v2(tmp_path: Any, order: str, compressor: str | None) -> None:
    comp = v2_compressor(compressor)
    # Little-endian only: a v2 ">i4" array has a big-endian *output* dtype, which CuPy cannot
    # hold (see test_v2_big_endian_output below).
    for dtype in ("<i4", "<f8"):
        data = sample_data((9, 10), dtype)
        path = str(tmp_path / f"a{dtype[1:]}.zarr")
        make(path, data, chunks=(4, 3), zarr_format=2, order=order, compressors=comp,
             fill_value=0, write=np.s_[:6])
        for key in ("full", "steps", "int", "oindex_bool", "vindex_int"):
            assert_same_on_gpu(path, SELECTIONS[key], kernel=key in KERNEL_SELECTIONS)


def test_v2_big_endian_output(tmp_path: Any) -> None:
    """zarr asks its GPU NDBuffer for a ">i4" output, which CuPy refuses: zarr's limit, not ours.

    Reported as an xfail while that holds; compared like every other case once it does not.
    """
    data = sample_data((9, 10), ">i4")
    path = str(tmp_path / "a.zarr")
    make(path, data, chunks=(4, 3), zarr_format=2, compressors=None, fill_value=0)
    try:
        assert_same_on_gpu(path, lambda z: z[...], kernel=True)
    except ValueError as e:
        if "byte" not in str(e).lower() and "endian" not in str(e).lower():
            raise
        pytest.xfail(f"CuPy cannot hold zarr's big-endian v2 output dtype: {e}")


def test_v2_filters_decode_on_host(tmp_path: Any) -> None:
    import numcodecs

    data = sample_data((9, 10), "<i8")
    path = str(tmp_path / "a.zarr")
    make(path, data, chunks=(4, 3), zarr_format=2, filters=[numcodecs.Delta(dtype="<i8")],
         compressors=numcodecs.Zstd(), fill_value=0)
    assert_same_on_gpu(path, lambda z: z[...], on_gpu=False, kernel=True)


@pytest.mark.parametrize("sharded", [False, True])
def test_gpu_writes_match_host_writes(tmp_path: Any, sharded: bool) -> None:
    """Writes from CuPy through the pipeline and GDSStore (kvikio pwrite) equal zarr's files.

    Encoding is zarr's own (on the host) in this release; the bytes land through kvikio.
    """
    import os

    data = np.random.default_rng(1).standard_normal((20, 13)).astype("f4")
    kw: dict[str, Any] = {"chunks": (4, 5), "fill_value": np.nan}
    if sharded:
        kw["shards"] = (8, 10)
    ref, gds = str(tmp_path / "ref.zarr"), str(tmp_path / "gds.zarr")
    with warnings.catch_warnings(), zarr.config.set({"codec_pipeline.path": DEFAULT}):
        warnings.simplefilter("ignore")
        z = zarr.create_array(LocalStore(ref), shape=data.shape, dtype="f4", **kw)
        z[3:17, 2:11] = data[3:17, 2:11]
        z[5, :] = -1.0
    with warnings.catch_warnings(), gds_zarr.enable(device="gpu"):
        warnings.simplefilter("ignore")
        z = zarr.create_array(GDSStore(gds), shape=data.shape, dtype="f4", **kw)
        z[3:17, 2:11] = cupy.asarray(data[3:17, 2:11])
        z[5, :] = -1.0
        got = z[...]
    assert isinstance(got, cupy.ndarray)
    for d, _, files in os.walk(ref):
        for f in files:
            rel = os.path.relpath(os.path.join(d, f), ref)
            with open(os.path.join(ref, rel), "rb") as a, open(os.path.join(gds, rel), "rb") as b:
                assert a.read() == b.read(), rel
    with zarr.config.set({"codec_pipeline.path": DEFAULT}):
        want = zarr.open_array(LocalStore(ref), mode="r")[...]
    assert cupy.asnumpy(got).tobytes() == want.tobytes()


BUDGET = 1 << 20  # 1 MiB, for an 8 MiB array


@pytest.mark.parametrize("sharded", [False, True])
def test_streaming_within_device_budget(tmp_path: Any, sharded: bool) -> None:
    """A read 8x the budget streams in batches; tracked staging stays under the budget.

    Also measures what CuPy's pool really held at its peak during the read (nvCOMP's own
    scratch memory is not in CuPy's pool) and prints it, bounded loosely: the pipeline tracks
    encoded plus decoded batch bytes, while the decoder holds a staging copy as well.
    """
    path = str(tmp_path / "a.zarr")
    data = budget_array(path, sharded)  # 8 MiB
    pool = cupy.get_default_memory_pool()
    peak = [0]

    def tracking_malloc(nbytes: int) -> Any:
        mem = pool.malloc(nbytes)
        peak[0] = max(peak[0], pool.used_bytes())
        return mem

    store = GDSStore(path)
    with gds_zarr.enable(device="gpu", memory_budget=BUDGET):
        a = zarr.open_array(store, mode="r")
        _reset_counters()
        cupy.cuda.Device().synchronize()
        base = pool.used_bytes()
        cupy.cuda.set_allocator(tracking_malloc)
        try:
            got = a[...]
        finally:
            cupy.cuda.set_allocator(pool.malloc)
    assert isinstance(got, cupy.ndarray)
    assert cupy.asnumpy(got).tobytes() == data.tobytes()
    assert stats.delegated_reads == 0, stats.last_delegation
    assert stats.batches >= data.nbytes // BUDGET, stats  # streamed, not read at once
    assert 0 < stats.peak_staging_bytes <= BUDGET, stats
    assert gpu_decode_stats.cpu_chunks == 0 and gpu_decode_stats.nvcomp_calls >= stats.batches
    held = peak[0] - base - data.nbytes
    print(f"\ndevice pool peak beyond the output: {held} bytes; tracked staging peak "
          f"{stats.peak_staging_bytes}; budget {BUDGET}; batches {stats.batches}")
    assert held <= 4 * BUDGET, (held, stats.peak_staging_bytes)


def test_host_staging_reused_within_the_budget(tmp_path: Any) -> None:
    """Issue 19, item 4 on the GPU path: the pinned bounce buffers of host-staged reads (all
    reads in kvikio's compat mode) come from gds_zarr's pinned pool, reused batch after batch;
    the pinned memory mapped at once stays within 1.25 x the budget."""
    from gds_zarr._hostpool import pinned_pool
    from gds_zarr.io._gpu import _dma_min

    if _dma_min() is not None:
        pytest.skip("GDS moves the large reads by DMA: no host staging to measure")
    budget = 16 << 20
    path = str(tmp_path / "a.zarr")
    data = np.arange(4096 * 4096, dtype="f4").reshape(4096, 4096)  # 64 MiB, 4 shards
    make(path, data, chunks=(256, 256), shards=(2048, 2048), compressors=None)
    pool = pinned_pool()
    pool.release()
    pool.reset_peak()
    maps = pool.maps
    with gds_zarr.enable(device="gpu", memory_budget=budget):
        _reset_counters()
        got = zarr.open_array(GDSStore(path), mode="r")[...]
    assert cupy.asnumpy(got).tobytes() == data.tobytes()
    assert stats.batches >= 8, stats  # batches of several MiB each, every one staged
    assert pool.maps - maps <= 3, (pool.maps - maps, stats.batches)  # reused, not re-pinned
    assert pool.peak <= 1.25 * budget, pool.peak
    assert pool.free_bytes <= budget // 4 + (1 << 20)  # what the pool keeps after a read
