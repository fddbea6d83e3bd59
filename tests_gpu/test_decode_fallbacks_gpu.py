"""The GPU decoder's other roads, each against the CPU decoder bit for bit: chains and chunks left
to the host, nvCOMP refusals (building the codec, the alignment query, the decode; Blosc too),
how failures are sorted (sticky by status or by text alone, unprintable errors, our own errors
passing through), a dead context seen only by the probe after a failure, host inputs on the
current device, and errors of our own outside nvCOMP.

Codecs that fail on purpose stand in for nvCOMP (``codec_factory``); a sticky error they raise
is only text, so the device stays usable: ``_DEAD`` is swapped per test instead of a child
process. The test that faults the device for real runs in a child (``fresh_process``).
Skips cleanly without a usable GPU.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from typing import Any

import numcodecs
import numpy as np
import pytest
from numcodecs.checksum32 import CRC32C

from gds_zarr._device import gpu_status

if not gpu_status().usable:
    pytest.skip(f"GPU path not usable: {gpu_status().reason}", allow_module_level=True)

cupy = pytest.importorskip("cupy")

from decode_cases import FailingCodec, batch, encode, raw, rows, step

from gds_zarr._batch import BatchRead
from gds_zarr.decode import _blosc_gpu, _gpu, formats
from gds_zarr.decode._base import BytesStep
from gds_zarr.decode._cpu import CpuDecoder
from gds_zarr.decode._gpu import NvcompDecoder, gpu_decode_stats
from gds_zarr.errors import ChunkDecodeError, CUDAContextError, GPUDecodeError

NBYTES = 4096
N = 6


ZSTD = [step("zstd", numcodecs.Zstd(level=3))]
BLOSC = [step("blosc", numcodecs.Blosc())]


def _keys(n: int = N) -> list[str]:
    return [f"c/{i}" for i in range(n)]


def _cpu(steps: list[BytesStep], src: BatchRead, index: np.ndarray, nbytes: int = NBYTES
         ) -> np.ndarray:
    """The CPU decoder's rows for the same batch (the reference)."""
    data = src.data if isinstance(src.data, np.ndarray) else cupy.asnumpy(src.data)
    host = BatchRead(data, src.offsets, src.sizes, src.present, "cpu")
    return CpuDecoder(blosc_plan=False).decode_batch(steps, host, index, nbytes,
                                                     _keys(len(src.sizes)))


@pytest.fixture
def dead() -> Iterator[dict[int, str]]:
    """A private record of dead devices, so a pretend sticky error kills no later test."""
    with pytest.MonkeyPatch.context() as m:
        fresh: dict[int, str] = {}
        m.setattr(_gpu, "_DEAD", fresh)
        yield fresh


# ---------------------------------------------------------------- work left to the host


@pytest.mark.parametrize("into", [False, True])
def test_a_chain_nvcomp_cannot_run_is_decoded_on_the_host(into: bool) -> None:
    """Two compressors in one chain: every chunk on the CPU, copied to the rows (or ``out``)."""
    steps = [step("zstd", numcodecs.Zstd(level=1)), step("lz4", numcodecs.LZ4())]
    raws = [raw(i, NBYTES) for i in range(N)]
    src = batch([encode(steps, r) for r in raws])
    index = np.arange(N)[::-1].copy()
    out = cupy.full((N, NBYTES), 7, cupy.uint8) if into else None
    gpu_decode_stats.reset()
    got = NvcompDecoder().decode_batch(steps, src, index, NBYTES, _keys(), out=out)
    assert got is out if into else isinstance(got, cupy.ndarray)
    np.testing.assert_array_equal(cupy.asnumpy(got), _cpu(steps, src, index))
    np.testing.assert_array_equal(cupy.asnumpy(got), rows(raws)[index])
    s = gpu_decode_stats
    assert (s.cpu_chunks, s.device_chunks, s.nvcomp_calls) == (N, 0, 0), s


def _zstd_frame_without_content_size(payload: bytes) -> bytes:
    """A valid zstd frame, one raw block, no content size (window 128 KiB): numcodecs decodes
    it; nvCOMP must not be given it (formats.check_zstd marks it CPU-only)."""
    block = struct.pack("<I", (len(payload) << 3) | 1)[:3]  # last block, raw
    return struct.pack("<I", formats.ZSTD_MAGIC) + bytes([0x00, 0x38]) + block + payload


def test_every_chunk_cpu_only_makes_no_nvcomp_call() -> None:
    """zstd then crc32c, every frame without a content size: no nvCOMP call, no row left for
    the device CRC; all rows from the CPU decoder, which checks the CRC itself."""
    steps = [step("zstd", numcodecs.Zstd()), step("crc32c", CRC32C())]
    raws = [raw(i, NBYTES) for i in range(N)]
    enc = [_zstd_frame_without_content_size(bytes(CRC32C().encode(r))) for r in raws]
    assert bytes(numcodecs.Zstd().decode(enc[0]))[:-4] == raws[0]  # the frame is real zstd
    src = batch(enc)
    gpu_decode_stats.reset()
    got = NvcompDecoder().decode_batch(steps, src, np.arange(N), NBYTES, _keys())
    np.testing.assert_array_equal(cupy.asnumpy(got), rows(raws))
    np.testing.assert_array_equal(cupy.asnumpy(got), _cpu(steps, src, np.arange(N)))
    s = gpu_decode_stats
    assert (s.cpu_chunks, s.device_chunks, s.nvcomp_calls) == (N, 0, 0), s
    # The CRC is still checked (on the host): a flipped trailer byte names its chunk.
    framed = bytearray(CRC32C().encode(raws[3]))
    framed[-1] ^= 0xFF
    enc[3] = _zstd_frame_without_content_size(bytes(framed))
    with pytest.raises(ChunkDecodeError) as info:
        NvcompDecoder().decode_batch(steps, batch(enc), np.arange(N), NBYTES, _keys())
    assert info.value.key == "c/3"


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_a_bomb_left_to_the_host_stops_at_the_chunk_s_size(kind: str) -> None:
    """One chunk decoding to 64 MiB of zeros (gzip: 0.25 MiB; zstd: a 2 KiB frame of RLE blocks
    without a content size): the pre-check leaves it to the CPU decoder, whose decode stops one
    byte past the row (issue 19, item 3): an error naming it, not 64 MiB inflated first."""
    import gzip
    import tracemalloc

    codec = numcodecs.GZip() if kind == "gzip" else numcodecs.Zstd()
    steps = [step(kind, codec)]
    raws = [raw(i, NBYTES) for i in range(N)]
    enc = [encode(steps, r) for r in raws]
    if kind == "gzip":
        enc[2] = gzip.compress(bytes(64 << 20), 1)
    else:  # 512 RLE blocks of 128 KiB of zeros, the last one marked last
        blocks = [struct.pack("<I", (128 << 13) | (1 << 1) | (k == 511))[:3] + b"\0"
                  for k in range(512)]
        enc[2] = struct.pack("<I", formats.ZSTD_MAGIC) + bytes([0x00, 0x38]) + b"".join(blocks)
    src = batch(enc)
    tracemalloc.start()
    try:
        with pytest.raises(ChunkDecodeError, match=f"expected {NBYTES} decoded bytes, found "
                                                   f"more") as info:
            NvcompDecoder().decode_batch(steps, src, np.arange(N), NBYTES, _keys())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.key == "c/2"
    assert peak < 32 << 20, peak


@pytest.mark.parametrize("steps", [[], [step("crc32c", CRC32C())]], ids=["raw", "crc32c"])
def test_a_payload_of_the_wrong_size_names_its_key_as_the_cpu_does(
        steps: list[BytesStep]) -> None:
    raws = [raw(i, NBYTES) for i in range(N)]
    raws[4] = raws[4][:-8]  # 8 bytes short
    src = batch([encode(steps, r) for r in raws])
    with pytest.raises(ChunkDecodeError, match=f"expected {NBYTES} bytes, found {NBYTES - 8}"
                       ) as gpu:
        NvcompDecoder().decode_batch(steps, src, np.arange(N), NBYTES, _keys())
    with pytest.raises(ChunkDecodeError) as cpu:
        _cpu(steps, src, np.arange(N))
    assert gpu.value.key == cpu.value.key == "c/4"


def test_an_empty_batch_returns_no_rows() -> None:
    src = batch([encode(ZSTD, raw(0, NBYTES))])
    got = NvcompDecoder().decode_batch(ZSTD, src, np.arange(0), NBYTES, _keys(1))
    assert isinstance(got, cupy.ndarray) and got.shape == (0, NBYTES)
    out = cupy.empty((0, NBYTES), cupy.uint8)
    assert NvcompDecoder().decode_batch(ZSTD, src, [], NBYTES, _keys(1), out=out) is out


@pytest.mark.skipif(gpu_status().device_count < 2, reason="needs two CUDA devices")
def test_a_host_batch_decodes_on_the_current_device() -> None:
    raws = [raw(i, NBYTES) for i in range(N)]
    src = batch([encode(ZSTD, r) for r in raws], on_device=False)
    with cupy.cuda.Device(1):
        gpu_decode_stats.reset()
        got = NvcompDecoder().decode_batch(ZSTD, src, np.arange(N), NBYTES, _keys())
        assert got.device.id == 1
        np.testing.assert_array_equal(cupy.asnumpy(got), rows(raws))
    assert gpu_decode_stats.nvcomp_calls == 1 and gpu_decode_stats.device_chunks == N


# ---------------------------------------------------------------- refusals and failures


def test_a_codec_that_cannot_be_built_for_lack_of_memory_is_a_refusal() -> None:
    """nvCOMP out of memory while building its codec: the chunks go to the CPU."""
    raws = [raw(i, NBYTES) for i in range(N)]
    src = batch([encode(ZSTD, r) for r in raws])

    def no_memory(algorithm: str, device: int, stream: int) -> Any:
        raise cupy.cuda.memory.OutOfMemoryError(1 << 30, 0, 0)

    gpu_decode_stats.reset()
    got = NvcompDecoder(codec_factory=no_memory).decode_batch(ZSTD, src, np.arange(N), NBYTES,
                                                               _keys())
    np.testing.assert_array_equal(cupy.asnumpy(got), rows(raws))
    s = gpu_decode_stats
    assert (s.nvcomp_failures, s.refused_chunks, s.cpu_chunks, s.nvcomp_calls) == (1, N, N, 0)


def test_an_out_of_memory_outside_nvcomp_is_raised_as_it_is() -> None:
    """The staging buffer does not fit: CuPy's OutOfMemoryError reaches the caller (not a dead
    context, not a GPU decode error), and the device still decodes once memory is back."""
    n = 64  # 256 KiB of rows
    raws = [raw(i, NBYTES) for i in range(n)]
    src = batch([encode(ZSTD, r) for r in raws])
    dec = NvcompDecoder()
    pool = cupy.get_default_memory_pool()
    pool.free_all_blocks()
    limit = pool.get_limit()
    pool.set_limit(size=pool.total_bytes() + (64 << 10))  # the header checks' gathers fit
    try:
        with pytest.raises(cupy.cuda.memory.OutOfMemoryError):
            dec.decode_batch(ZSTD, src, np.arange(n), NBYTES, _keys(n))
    finally:
        pool.set_limit(size=limit)
    got = dec.decode_batch(ZSTD, src, np.arange(n), NBYTES, _keys(n))
    np.testing.assert_array_equal(cupy.asnumpy(got), rows(raws))


def test_a_refused_alignment_query_sends_the_batch_to_the_cpu(
        caplog: pytest.LogCaptureFixture) -> None:
    raws = [raw(i, NBYTES) for i in range(N)]
    src = batch([encode(ZSTD, r) for r in raws])

    class NoAlignment(FailingCodec):
        def get_required_decompression_alignment(self) -> int:
            raise RuntimeError("Zstd decompression is not supported on this device")

    gpu_decode_stats.reset()
    with caplog.at_level(logging.WARNING, logger=_gpu.__name__):
        got = NvcompDecoder(codec_factory=lambda a, d, s: NoAlignment()).decode_batch(
            ZSTD, src, np.arange(N), NBYTES, _keys(), read_id="r")
    np.testing.assert_array_equal(cupy.asnumpy(got), rows(raws))
    assert gpu_decode_stats.refused_chunks == N and gpu_decode_stats.nvcomp_calls == 0
    assert any("not supported" in r.getMessage() for r in caplog.records)


def test_refusals_are_logged_once_per_read_in_a_bounded_memory(
        caplog: pytest.LogCaptureFixture) -> None:
    """The per-read memory of refusals logged is bounded: an old read logs again."""
    raws = [raw(0, NBYTES)]
    src = batch([encode(ZSTD, raws[0])])
    refusing = FailingCodec(ValueError("Chunk size 70000 must not exceed 65536 bytes"))
    dec = NvcompDecoder(codec_factory=lambda a, d, s: refusing)

    def warned(read_id: int) -> bool:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=_gpu.__name__):
            got = dec.decode_batch(ZSTD, src, [0], NBYTES, ["c/0"], read_id=read_id)
        np.testing.assert_array_equal(cupy.asnumpy(got), rows(raws))
        return any("refused" in r.getMessage() for r in caplog.records)

    dec._logged = _gpu._LogOnce(size=2)  # the bound, made small: 64 by default
    assert [warned(r) for r in (0, 1, 0, 2, 2, 0, 1)] == [
        True, True, False, True, False, True, True]  # read 0 forgotten once 1 and 2 came
    assert refusing.decodes == 7


class _Unprintable(RuntimeError):
    """An exception whose message itself fails (as a CUDA error's may, asking the driver)."""

    def __str__(self) -> str:
        raise RuntimeError("cudaGetErrorString failed")


def test_an_error_whose_message_fails_still_names_the_key() -> None:
    src = batch([encode(ZSTD, raw(i, NBYTES)) for i in range(N)])
    dec = NvcompDecoder(codec_factory=lambda a, d, s: FailingCodec(_Unprintable()))
    with pytest.raises(GPUDecodeError, match="_Unprintable") as info:
        dec.decode_batch(ZSTD, src, np.array([2, 0, 1]), NBYTES, _keys())
    assert info.value.key == "c/2" and isinstance(info.value.__cause__, _Unprintable)


def test_our_own_error_from_inside_a_call_passes_through_unchanged() -> None:
    """A gds_zarr error raised inside the nvCOMP call is not sorted again (nor wrapped)."""
    src = batch([encode(ZSTD, raw(i, NBYTES)) for i in range(N)])
    own = ChunkDecodeError("c/4", "zstd", "rejected by a codec of ours")
    dec = NvcompDecoder(codec_factory=lambda a, d, s: FailingCodec(own))
    with pytest.raises(ChunkDecodeError) as info:
        dec.decode_batch(ZSTD, src, np.arange(N), NBYTES, _keys())
    assert info.value is own


@pytest.mark.parametrize("message", [
    "CUDA Runtime API failure: an illegal memory access was encountered : code=700.",
    "Encountered Cuda Error from previous asynchronous launches: misaligned address",
], ids=["by-code", "by-text"])
def test_a_sticky_error_from_nvcomp_marks_the_device_dead(
        message: str, dead: dict[int, str]) -> None:
    """nvCOMP reports a sticky CUDA error (with its code, or its text alone): the batch raises
    CUDAContextError naming the first key; the next batch on that device raises at once,
    without calling nvCOMP; another device goes on."""
    raws = [raw(i, NBYTES) for i in range(N)]
    src = batch([encode(ZSTD, r) for r in raws])
    codec = FailingCodec(RuntimeError(message))
    dec = NvcompDecoder(codec_factory=lambda a, d, s: codec)
    with pytest.raises(CUDAContextError, match="no longer usable") as info:
        dec.decode_batch(ZSTD, src, np.array([3, 1]), NBYTES, _keys())
    assert info.value.key == "c/3" and info.value.__cause__ is codec.error
    assert list(dead) == [cupy.cuda.Device().id]
    with pytest.raises(CUDAContextError, match="reported earlier"):
        dec.decode_batch(ZSTD, src, np.arange(N), NBYTES, _keys())
    assert codec.decodes == 1
    if gpu_status().device_count > 1:
        with cupy.cuda.Device(1):
            got = NvcompDecoder().decode_batch(ZSTD, batch([encode(ZSTD, r) for r in raws]),
                                               np.arange(N), NBYTES, _keys())
            np.testing.assert_array_equal(cupy.asnumpy(got), rows(raws))


@pytest.mark.fresh_process  # kills the CUDA context of its process on purpose
def test_a_fault_seen_only_by_the_probe_is_a_dead_context_not_a_decode_error() -> None:
    """nvCOMP's kernel faults on the stream and the call returns a plain error: the probe's
    synchronization meets the illegal address, so the batch raises CUDAContextError."""
    src = batch([encode(ZSTD, raw(i, NBYTES)) for i in range(N)])
    fault = cupy.RawKernel(
        'extern "C" __global__ void gdsz_fault(int* p) { *(volatile int*)p = 1; }', "gdsz_fault")
    codec = FailingCodec(RuntimeError("nvcomp decompression failed"),
                   on_decode=lambda: fault((1,), (1,), (np.uint64(8),)))  # async, on the stream
    dec = NvcompDecoder(codec_factory=lambda a, d, s: codec)
    with pytest.raises(CUDAContextError, match="cudaErrorIllegalAddress") as info:
        dec.decode_batch(ZSTD, src, np.arange(N), NBYTES, _keys())
    assert info.value.key == "c/0" and info.value.__cause__ is codec.error
    with pytest.raises(CUDAContextError, match="reported earlier"):
        dec.decode_batch(ZSTD, src, np.arange(N), NBYTES, _keys())


def test_nvcomp_without_set_device_allocator_keeps_its_pool_and_decodes(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """An nvCOMP without ``set_device_allocator``: a warning, once; the decode still runs."""
    from nvidia import nvcomp

    monkeypatch.setattr(_gpu, "_ALLOCATOR_SET", False)
    monkeypatch.delattr(nvcomp, "set_device_allocator")
    raws = [raw(i, NBYTES) for i in range(N)]
    src = batch([encode(ZSTD, r) for r in raws])
    gpu_decode_stats.reset()
    with caplog.at_level(logging.WARNING, logger=_gpu.__name__):
        for _ in range(2):
            got = NvcompDecoder().decode_batch(ZSTD, src, np.arange(N), NBYTES, _keys())
            np.testing.assert_array_equal(cupy.asnumpy(got), rows(raws))
    assert [r.getMessage() for r in caplog.records if "own pool" in r.getMessage()] == [
        "nvCOMP's allocations stay in its own pool (set_device_allocator: AttributeError: "
        "module 'nvidia.nvcomp' has no attribute 'set_device_allocator')"]
    assert gpu_decode_stats.nvcomp_calls == 2 and gpu_decode_stats.device_chunks == 2 * N


# ---------------------------------------------------------------- Blosc refusals


BLOSC_NBYTES = 4 * 4096


def _blosc_cases() -> tuple[list[bytes], list[np.ndarray]]:
    """Chunks 0, 2, 4 LZ4 inside, 1, 3, 5 Zstd; shuffled, several blocks each."""
    chunks, raws = [], []
    for i in range(N):
        data = np.frombuffer(raw(i, BLOSC_NBYTES), np.uint8)
        codec = numcodecs.Blosc(cname="lz4" if i % 2 == 0 else "zstd", clevel=5,
                                shuffle=1, blocksize=4096)
        chunks.append(bytes(codec.encode(data.view("V4"))))
        raws.append(data)
    return chunks, raws


def test_blosc_handles_one_step_blosc_chains_only() -> None:
    crc = step("crc32c", CRC32C())
    assert _blosc_gpu.handles(BLOSC) and not _blosc_gpu.handles([*BLOSC, crc])
    assert not _blosc_gpu.handles([]) and not _blosc_gpu.handles(ZSTD)


@pytest.mark.parametrize("where", ["codec", "decode"])
def test_blosc_zstd_refused_goes_to_the_cpu_lz4_stays_on_the_device(
        where: str, caplog: pytest.LogCaptureFixture) -> None:
    """nvCOMP refuses Zstd (building the codec, or its decode): the Zstd chunks are decoded
    on the host, the LZ4 ones on the device; one warning per read; CPU-equal rows."""
    chunks, raws = _blosc_cases()
    src = batch(chunks)
    refusing = FailingCodec(ValueError("Chunk size 70000 must not exceed 65536 bytes"))

    def factory(algorithm: str, device: int, stream: int) -> Any:
        if algorithm != "Zstd":
            return _gpu._nvcomp_codec(algorithm, device, stream)
        if where == "codec":
            raise RuntimeError("Zstd is not supported by this nvCOMP build")
        return refusing

    index = np.arange(N)[::-1].copy()
    dec = NvcompDecoder(codec_factory=factory)
    gpu_decode_stats.reset()
    with caplog.at_level(logging.WARNING, logger=_gpu.__name__):
        for _ in range(2):  # two batches of one read
            got = dec.decode_batch(BLOSC, src, index, BLOSC_NBYTES, _keys(), read_id="read")
            np.testing.assert_array_equal(cupy.asnumpy(got),
                                          _cpu(BLOSC, src, index, BLOSC_NBYTES))
    np.testing.assert_array_equal(cupy.asnumpy(got), np.stack([raws[i] for i in index]))
    s = gpu_decode_stats
    assert (s.nvcomp_failures, s.refused_chunks, s.cpu_chunks) == (2, N, N), s
    assert (s.nvcomp_calls, s.device_chunks) == (2, N), s  # the LZ4 call, twice
    assert len([r for r in caplog.records if "Blosc chunks on the CPU" in r.getMessage()]) == 1


def test_blosc_refusal_of_a_codec_no_chunk_uses_costs_nothing() -> None:
    """Zstd refused, but every chunk is LZ4 inside: nothing is counted as refused."""
    chunks, raws = _blosc_cases()
    src = batch(chunks[0::2])

    def factory(algorithm: str, device: int, stream: int) -> Any:
        if algorithm == "Zstd":
            raise RuntimeError("Zstd is not supported by this nvCOMP build")
        return _gpu._nvcomp_codec(algorithm, device, stream)

    gpu_decode_stats.reset()
    got = NvcompDecoder(codec_factory=factory).decode_batch(BLOSC, src, np.arange(3),
                                                            BLOSC_NBYTES, _keys(3))
    np.testing.assert_array_equal(cupy.asnumpy(got), np.stack(raws[0::2]))
    s = gpu_decode_stats
    assert (s.nvcomp_failures, s.cpu_chunks, s.device_chunks, s.nvcomp_calls) == (0, 0, 3, 1), s
