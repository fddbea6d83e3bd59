"""The GPU decoder on a real GPU: aligned staging, in-place rows, known-size decode, how nvCOMP
failures are sorted, and the caller's device and stream.

Twin of tests/test_gpu_faults.py and tests/test_gpu_staging.py (which check the same logic on
the CPU). The happy paths run in this process; the test that provokes a device fault runs in a
child process of its own (``fresh_process``). Skips cleanly without a usable GPU.
"""

from __future__ import annotations

import logging
import threading
import zlib
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest

from gds_zarr._device import gpu_status

if not gpu_status().usable:
    pytest.skip(f"GPU path not usable: {gpu_status().reason}", allow_module_level=True)

cupy = pytest.importorskip("cupy")

from decode_cases import FailingCodec, raw
from decode_cases import encode as _encode
from decode_cases import rows as _expected  # local names batch and rows are taken

from gds_zarr._batch import BatchRead
from gds_zarr._device import current_cuda_target
from gds_zarr.decode import _gpu, formats
from gds_zarr.decode._base import BytesStep
from gds_zarr.decode._gpu import NvcompDecoder, device_crc32, gpu_decode_stats
from gds_zarr.decode._scatter_gpu import contiguous_rows
from gds_zarr.errors import CUDAContextError, GPUDecodeError
from gds_zarr.io._gpu import KvikioIOBackend
from gds_zarr.planning.chunks import scatter_plan
from gds_zarr.planning.staging import READ_ALIGN

NBYTES = 64 * 64 * 4
N = 24
STEPS = {
    "zstd": [BytesStep("zstd", numcodecs.Zstd(level=1), "zstd")],
    "lz4": [BytesStep("lz4", numcodecs.LZ4(), "lz4")],
    "gzip": [BytesStep("gzip", numcodecs.GZip(level=5), "gzip")],
    "zlib": [BytesStep("zlib", numcodecs.Zlib(level=6), "zlib")],
}


def _chunk_files(root: Path, kind: str, n: int = N) -> tuple[list[str], list[bytes]]:
    raws = [raw(i, NBYTES) for i in range(n)]
    paths = []
    for i, r in enumerate(raws):
        p = root / f"c{i}"
        p.write_bytes(_encode(STEPS[kind], r))
        paths.append(str(p))
    return paths, raws


def _whole(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(n, np.int64), np.full(n, -1, np.int64)


def test_whole_chunk_files_land_aligned_and_decode_in_place(tmp_path: Path) -> None:
    paths, raws = _chunk_files(tmp_path, "zstd")
    batch = KvikioIOBackend().read_batch(paths, *_whole(N))
    assert batch.data.data.ptr % READ_ALIGN == 0
    # Each chunk lands where nvCOMP's zstd input must start (8 bytes): staged on the host in
    # compat mode, at a page by DMA under GDS (planning/staging.layout_reads).
    assert (np.asarray(batch.offsets) % 8 == 0).all()
    gpu_decode_stats.reset()
    out = NvcompDecoder().decode_batch(STEPS["zstd"], batch, np.arange(N), NBYTES,
                                       [f"c{i}" for i in range(N)])
    np.testing.assert_array_equal(cupy.asnumpy(out), _expected(raws))
    assert gpu_decode_stats.repacked_chunks == 0  # read where nvCOMP wants them
    assert gpu_decode_stats.rows_in_place == 1  # nvCOMP's slots are the rows returned
    assert gpu_decode_stats.nvcomp_calls == 1 and gpu_decode_stats.device_chunks == N


@pytest.mark.parametrize("kind", ["zstd", "gzip"])
def test_rows_decode_straight_into_the_callers_output(tmp_path: Path, kind: str) -> None:
    # An output whose chunks are contiguous (whole rows of 64x64 float32 chunks, stacked).
    paths, raws = _chunk_files(tmp_path, kind)
    batch = KvikioIOBackend().read_batch(paths, *_whole(N))
    target = cupy.full((N * 64, 64), -1, cupy.float32)
    rows = target.view(cupy.uint8).reshape(N, NBYTES)
    gpu_decode_stats.reset()
    got = NvcompDecoder().decode_batch(STEPS[kind], batch, np.arange(N), NBYTES,
                                       [f"c{i}" for i in range(N)], out=rows)
    assert got is rows and gpu_decode_stats.rows_in_place == 1  # nvCOMP wrote them there
    np.testing.assert_array_equal(cupy.asnumpy(target).view(np.uint8).reshape(N, NBYTES),
                                  _expected(raws))
    with pytest.raises(ValueError, match="C-contiguous uint8"):
        NvcompDecoder().decode_batch(STEPS[kind], batch, np.arange(N), NBYTES,
                                     [f"c{i}" for i in range(N)], out=rows[:, ::2])


def test_contiguous_rows_is_a_view_of_a_cupy_output() -> None:
    plan = scatter_plan(np.arange(4), [(slice(0, 16, 1), slice(0, 32, 1))] * 4,
                        [(slice(i * 16, (i + 1) * 16, 1), slice(0, 32, 1)) for i in range(4)],
                        (16, 32), (64, 32))
    assert plan is not None
    out = cupy.zeros((64, 32), cupy.float32)
    rows = contiguous_rows(out, plan, 4)
    assert rows is not None and rows.shape == (4, 16 * 32 * 4) and rows.data.ptr == out.data.ptr
    rows[...] = 0x3F
    assert bool((out.view(cupy.uint8) == 0x3F).all())


def test_zlib_files_read_through_a_bounce_buffer_land_with_their_input_aligned(
        tmp_path: Path) -> None:
    """In compat mode, or below kvikio's gds_threshold, a zlib chunk file is read on the host
    and placed 2 bytes past a multiple of 4: nvCOMP reads the Deflate input in place
    (planning/staging.py, layout_reads)."""
    from gds_zarr.io import _gpu as kvikio_backend
    from gds_zarr.planning.staging import PAYLOADS, reading_for

    paths, raws = _chunk_files(tmp_path, "zlib")
    with reading_for(PAYLOADS["zlib"]):
        batch = KvikioIOBackend().read_batch(paths, *_whole(N))
    dma_min = kvikio_backend._dma_min()
    files = np.array([Path(p).stat().st_size for p in paths], np.int64)
    bounced = np.ones(N, bool) if dma_min is None else files < dma_min
    addr = batch.data.data.ptr + np.asarray(batch.offsets)
    assert ((addr[bounced] + 2) % 4 == 0).all() and (addr[~bounced] % READ_ALIGN == 0).all()
    gpu_decode_stats.reset()
    out = NvcompDecoder().decode_batch(STEPS["zlib"], batch, np.arange(N), NBYTES,
                                       [f"c{i}" for i in range(N)])
    np.testing.assert_array_equal(cupy.asnumpy(out), _expected(raws))
    assert gpu_decode_stats.repacked_chunks == (0 if bounced.all() else N), (dma_min, files)


def test_gather_any_offsets_matches_numpy() -> None:
    """The word-wide gather (funnel-shifted loads) at every source and destination offset."""
    rng = np.random.default_rng(0)
    src = rng.integers(0, 256, 300_000, dtype=np.uint8)
    sizes = np.array([0, 1, 2, 3, 5, 4096, 70_001, 999], np.int64)
    starts = np.array([7, 1, 2, 3, 0, 4093, 101, 250_001], np.int64)
    dst_off = np.cumsum(sizes + 3) - sizes
    want = np.full(int(dst_off[-1] + sizes[-1] + 8), 0xA5, np.uint8)
    for a, n, o in zip(starts.tolist(), sizes.tolist(), dst_off.tolist(), strict=True):
        want[o:o + n] = src[a:a + n]
    got = cupy.full(len(want), 0xA5, cupy.uint8)
    _gpu._gather(cupy.asarray(src), starts, sizes, got, dst_off)
    np.testing.assert_array_equal(cupy.asnumpy(got), want)


@pytest.mark.parametrize("mode", ["host", "kvikio"])
def test_inner_chunks_of_one_file_are_placed_on_the_host_or_gathered_once(
        tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shard's inner chunks read together: read on the host (compat mode, or a read below
    gds_threshold), each lands aligned and nothing is re-packed; read by DMA (or handed to
    kvikio by ``gpu_bounced_reads='kvikio'``) they lie where the file puts them and one gather
    packs them."""
    from gds_zarr.io import _gpu as kvikio_backend

    monkeypatch.setenv("GDS_ZARR_GPU_BOUNCED_READS", mode)

    raws = [raw(i, NBYTES) for i in range(N)]
    enc = [_encode(STEPS["zstd"], r) for r in raws]
    (tmp_path / "shard").write_bytes(b"".join(enc))
    sizes = np.array([len(e) for e in enc], np.int64)
    starts = np.cumsum(sizes) - sizes
    dma_min = kvikio_backend._dma_min()
    by_dma = dma_min is not None and int(sizes.sum()) >= dma_min
    backend = KvikioIOBackend()
    batch = backend.read_batch([str(tmp_path / "shard")] * N, starts, starts + sizes)
    addr = batch.data.data.ptr + np.asarray(batch.offsets)
    assert ((addr % 8) != 0).any() == by_dma, (dma_min, int(sizes.sum()))
    assert backend.stats.reads == 1  # one preadv or one kvikio pread
    gpu_decode_stats.reset()
    out = NvcompDecoder().decode_batch(STEPS["zstd"], batch, np.arange(N), NBYTES,
                                       [f"s[{i}]" for i in range(N)])
    np.testing.assert_array_equal(cupy.asnumpy(out), _expected(raws))
    assert gpu_decode_stats.repacked_chunks == (N if by_dma else 0)
    assert gpu_decode_stats.nvcomp_calls == 1


@pytest.mark.parametrize("kind", ["lz4", "gzip", "zlib"])
def test_known_size_decode(tmp_path: Path, kind: str) -> None:
    paths, raws = _chunk_files(tmp_path, kind)
    batch = KvikioIOBackend().read_batch(paths, *_whole(N))
    gpu_decode_stats.reset()
    out = NvcompDecoder().decode_batch(STEPS[kind], batch, np.arange(N), NBYTES,
                                       [f"c{i}" for i in range(N)])
    np.testing.assert_array_equal(cupy.asnumpy(out), _expected(raws))
    assert gpu_decode_stats.nvcomp_calls == 1 and gpu_decode_stats.nvcomp_failures == 0


def _host_batch(raws: list[bytes], kind: str) -> BatchRead:
    enc = [_encode(STEPS[kind], r) for r in raws]
    sizes = np.array([len(e) for e in enc], np.int64)
    return BatchRead(data=cupy.asarray(np.frombuffer(b"".join(enc), np.uint8)),
                     offsets=np.cumsum(sizes) - sizes, sizes=sizes,
                     present=np.ones(len(enc), bool), device="gpu")


def test_a_refusal_decodes_those_chunks_on_the_cpu(caplog: pytest.LogCaptureFixture) -> None:
    raws = [raw(i, NBYTES) for i in range(N)]
    refusing = FailingCodec(ValueError("Chunk size 70000 must not exceed 65536 bytes"))
    dec = NvcompDecoder(codec_factory=lambda a, d, s: refusing)
    gpu_decode_stats.reset()
    with caplog.at_level(logging.WARNING, logger=_gpu.__name__):
        for _ in range(3):
            out = dec.decode_batch(STEPS["zstd"], _host_batch(raws, "zstd"), np.arange(N),
                                   NBYTES, [f"c{i}" for i in range(N)], read_id="one read")
            np.testing.assert_array_equal(cupy.asnumpy(out), _expected(raws))
    assert gpu_decode_stats.refused_chunks == 3 * N and gpu_decode_stats.cpu_chunks == 3 * N
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 1


def test_an_api_error_raises_naming_the_first_key() -> None:
    raws = [raw(i, NBYTES) for i in range(4)]
    broken = FailingCodec(TypeError("decode(): incompatible function arguments"))
    dec = NvcompDecoder(codec_factory=lambda a, d, s: broken)
    with pytest.raises(GPUDecodeError) as info:
        dec.decode_batch(STEPS["zstd"], _host_batch(raws, "zstd"), np.array([2, 0, 1, 3]),
                         NBYTES, ["a", "b", "c", "d"])
    assert info.value.key == "c" and isinstance(info.value.__cause__, TypeError)
    assert int(cupy.arange(4).sum()) == 6  # the context is fine: nothing was hidden


def test_a_non_default_stream_is_followed(tmp_path: Path) -> None:
    paths, raws = _chunk_files(tmp_path, "gzip")
    stream = cupy.cuda.Stream(non_blocking=True)
    dec = NvcompDecoder()
    device = cupy.cuda.Device().id
    with stream:
        target = current_cuda_target()
        batch = KvikioIOBackend().read_batch(paths, *_whole(N))
        out = dec.decode_batch(STEPS["gzip"], batch, np.arange(N), NBYTES,
                               [f"c{i}" for i in range(N)])
        stream.synchronize()
    np.testing.assert_array_equal(cupy.asnumpy(out), _expected(raws))
    assert ("Gzip", device, stream.ptr) in dec._local.codecs
    # Another thread (as zarr's and the pipeline's are) runs on the caller's stream when told.
    seen: list[Any] = []

    def work() -> None:
        rows = dec.decode_batch(STEPS["gzip"], batch, np.arange(N), NBYTES,
                                [f"c{i}" for i in range(N)], target=target)
        stream.synchronize()
        seen.append((cupy.asnumpy(rows), sorted(dec._local.codecs)))

    t = threading.Thread(target=work)
    t.start()
    t.join()
    np.testing.assert_array_equal(seen[0][0], _expected(raws))
    assert seen[0][1] == [("Gzip", device, stream.ptr)]


@pytest.mark.skipif(gpu_status().device_count < 2, reason="needs two CUDA devices")
def test_the_second_device_is_followed(tmp_path: Path) -> None:
    paths, raws = _chunk_files(tmp_path, "zstd")
    with cupy.cuda.Device(1):
        target = current_cuda_target()
    batch = KvikioIOBackend().read_batch(paths, *_whole(N), target=target)
    assert batch.data.device.id == 1
    out = NvcompDecoder().decode_batch(STEPS["zstd"], batch, np.arange(N), NBYTES,
                                       [f"c{i}" for i in range(N)])
    assert out.device.id == 1
    np.testing.assert_array_equal(cupy.asnumpy(out), _expected(raws))
    # The CRC tables exist per device: a checksum on device 0, then on device 1.
    chunks = [b"gds_zarr" * 1000, b"x" * 4097]
    for dev in (0, 1):
        with cupy.cuda.Device(dev):
            data = cupy.asarray(np.frombuffer(b"".join(chunks), np.uint8))
            got = device_crc32(data, np.array([0, 8000]), np.array([8000, 12_097]),
                               formats.CRC32_POLY)
        assert got.tolist() == [zlib.crc32(c) for c in chunks]


@pytest.mark.fresh_process  # kills the CUDA context of its process on purpose
def test_a_device_fault_is_reported_once_as_a_dead_context() -> None:
    raws = [raw(i, NBYTES) for i in range(4)]
    batch = _host_batch(raws, "zstd")
    dec = NvcompDecoder()
    fault = cupy.RawKernel(
        'extern "C" __global__ void gdsz_fault(int* p) { *(volatile int*)p = 1; }', "gdsz_fault")
    fault((1,), (1,), (np.uint64(8),))  # a write to address 8: cudaErrorIllegalAddress
    with pytest.raises(CUDAContextError, match="the CUDA context is no longer usable") as info:
        dec.decode_batch(STEPS["zstd"], batch, np.arange(4), NBYTES, ["a", "b", "c", "d"])
        cupy.cuda.get_current_stream().synchronize()  # if the decode did not meet it first
    assert info.value.key == "a"
    with pytest.raises(CUDAContextError, match="reported earlier"):
        dec.decode_batch(STEPS["zstd"], batch, np.arange(4), NBYTES, ["a", "b", "c", "d"])


@pytest.mark.parametrize("bounced", ["host", "kvikio"])
def test_a_file_shorter_than_its_stat_is_a_chunk_read_error(
        tmp_path: Path, bounced: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that shrank between its ``stat`` and its read: a ChunkReadError naming it, from
    both read paths (kvikio raises from ``pread`` itself for reads below gds_threshold)."""
    from gds_zarr import settings
    from gds_zarr.errors import ChunkReadError

    path = tmp_path / "short"
    path.write_bytes(bytes(1000))
    real = KvikioIOBackend._stat

    def longer(self: Any, p: str, resolve: Any) -> Any:
        got = real(self, p, resolve)
        return got[0], got[1] + 500, got[2]  # the file as it was when stat-ed: longer

    monkeypatch.setattr(KvikioIOBackend, "_stat", longer)
    with settings.set(gpu_bounced_reads=bounced), pytest.raises(ChunkReadError, match="short"):
        KvikioIOBackend().read_batch([str(path)], np.array([0]), np.array([-1]))
