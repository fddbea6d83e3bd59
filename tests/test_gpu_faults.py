"""How the GPU decoder sorts nvCOMP failures, checked on the CPU with a stand-in codec.

nvCOMP cannot run here, so :class:`NvcompDecoder` is given a fake codec factory (and a fake
context probe): everything around the call (sorting, the dead-context registry, the codec cache,
the once-per-read log) is the real code. The exception texts are nvCOMP 6.0's own (strings of
libnvcomp.so.6 and nvcomp_impl) and CUDA's (cudaGetErrorString).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from gds_zarr.decode import _gpu
from gds_zarr.decode._gpu import NvcompDecoder, classify_failure, sticky_reason
from gds_zarr.decode.formats import Payload
from gds_zarr.errors import CUDAContextError, GDSZarrError, GPUDecodeError


class FakeCUDARuntimeError(RuntimeError):
    """Shaped like CuPy's CUDARuntimeError: a ``status`` (cudaError_t) and its text."""

    def __init__(self, status: int, text: str) -> None:
        self.status = status
        super().__init__(text)


class FakeCodec:
    """Raises ``error`` from ``decode`` (and counts calls); returns sizes otherwise."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.calls = 0

    def decode(self, n: int) -> list[int]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return [16] * n


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    _gpu._DEAD.clear()
    yield
    _gpu._DEAD.clear()


def _decoder(codec: FakeCodec, probe: str | None = None) -> NvcompDecoder:
    return NvcompDecoder(codec_factory=lambda algorithm, device, stream: codec,
                         probe=lambda: probe)


ILLEGAL = "cudaErrorIllegalAddress: an illegal memory access was encountered"


@pytest.mark.parametrize(("error", "kind"), [
    (ValueError("Chunk size 70000 must not exceed 65536 bytes"), "refused"),
    (RuntimeError("The batch size exceeds the maximum supported batch size"), "refused"),
    (RuntimeError("Maximum chunk size for LZ4 is 16777216"), "refused"),
    (ValueError("Output buffer 3 is too small to hold the data, capacity 16"), "refused"),
    (RuntimeError("HW Decompression engine is not supported"), "refused"),
    (MemoryError("out of memory allocating 1073741824 bytes"), "refused"),
    (FakeCUDARuntimeError(700, ILLEGAL), "sticky"),
    (FakeCUDARuntimeError(719, "cudaErrorLaunchFailure: unspecified launch failure"), "sticky"),
    (RuntimeError("Encountered Cuda Error from previous asynchronous launches: an illegal "
                  "memory access was encountered"), "sticky"),
    (RuntimeError("CUDA Runtime API failure: unknown error : code=719"), "sticky"),
    (RuntimeError("CUDA Runtime API failure: CUDA driver version is insufficient for CUDA "
                  "runtime version : code=35"), "error"),
    (FakeCUDARuntimeError(2, "cudaErrorMemoryAllocation: out of memory"), "refused"),
    (FakeCUDARuntimeError(1, "cudaErrorInvalidValue: invalid argument"), "error"),
    (TypeError("decode(): incompatible function arguments"), "error"),
    (RuntimeError("Unsupported buffer type. Buffer type must be CUDA or CPU"), "error"),
    (AttributeError("'Codec' object has no attribute 'decode'"), "error"),
    (GPUDecodeError("c/0", "out of memory"), "error"),  # ours: never mistaken for a refusal
])
def test_classify_failure(error: BaseException, kind: str) -> None:
    assert classify_failure(error) == kind


def test_sticky_error_found_in_the_chain() -> None:
    try:
        try:
            raise FakeCUDARuntimeError(700, ILLEGAL)
        except RuntimeError as inner:
            raise ValueError("nvCOMP decode failed") from inner
    except ValueError as outer:
        assert classify_failure(outer) == "sticky"
        reason = sticky_reason(outer)
        assert reason is not None and reason.startswith("cudaErrorIllegalAddress")


def _call(dec: NvcompDecoder, codec_calls: int = 3, *, stream: int = 7,
          keys: tuple[str, ...] = ("c/0/1", "c/0/2")) -> list[int]:
    return dec._call_nvcomp("Zstd", 0, stream, keys[0], lambda c: c.decode(codec_calls))


def test_a_working_codec_answers() -> None:
    assert _call(_decoder(FakeCodec())) == [16, 16, 16]


def test_refusal_goes_to_the_cpu() -> None:
    codec = FakeCodec(ValueError("Chunk size 70000 must not exceed 65536 bytes"))
    with pytest.raises(_gpu._Refused, match="nvCOMP Zstd refused: ValueError") as info:
        _call(_decoder(codec))
    assert isinstance(info.value.__cause__, ValueError)


def test_api_error_names_the_first_key_and_chains_the_original() -> None:
    original = TypeError("decode(): incompatible function arguments")
    with pytest.raises(GPUDecodeError) as info:
        _call(_decoder(FakeCodec(original)))
    assert info.value.key == "c/0/1" and info.value.__cause__ is original
    assert "c/0/1" in str(info.value) and "incompatible function arguments" in str(info.value)
    assert isinstance(info.value, GDSZarrError) and isinstance(info.value, RuntimeError)


def test_sticky_error_is_reported_once_then_nothing_runs(
        caplog: pytest.LogCaptureFixture) -> None:
    dead = FakeCodec(FakeCUDARuntimeError(700, ILLEGAL))
    with caplog.at_level(logging.ERROR, logger=_gpu.__name__), \
            pytest.raises(CUDAContextError) as info:
        _call(_decoder(dead))
    assert str(info.value).startswith("the CUDA context is no longer usable: device 0: "
                                      "cudaErrorIllegalAddress")
    assert info.value.key == "c/0/1"
    assert not isinstance(info.value, GPUDecodeError)  # its own class: not a batch failure
    # A later batch on that device: the same error at once, nvCOMP not called again.
    healthy = FakeCodec()
    with caplog.at_level(logging.ERROR, logger=_gpu.__name__), \
            pytest.raises(CUDAContextError, match="reported earlier"):
        _call(_decoder(healthy), keys=("c/9/9",))
    assert healthy.calls == 0
    assert len([r for r in caplog.records if "no longer usable" in r.getMessage()]) == 1
    # Another device is not affected.
    assert _decoder(healthy)._call_nvcomp("Zstd", 1, 7, "k", lambda c: c.decode(1)) == [16]


@pytest.mark.parametrize("error", [RuntimeError("nvcomp: internal error 11"),
                                   ValueError("Chunk size 9 must not exceed 8 bytes")])
def test_probe_finds_a_fault_behind_any_failure(error: BaseException) -> None:
    # A fault may surface as some other error (or a refusal); the probe's answer wins, so no
    # CPU fallback is tried on a dead context.
    with pytest.raises(CUDAContextError, match="an illegal memory access") as info:
        _call(_decoder(FakeCodec(error), probe=ILLEGAL))
    assert info.value.__cause__ is error


@pytest.mark.parametrize(("error", "raised"), [
    (RuntimeError("The requested operation or configuration is not supported"), _gpu._Refused),
    (TypeError("__init__(): incompatible constructor arguments"), GPUDecodeError),
    (FakeCUDARuntimeError(700, ILLEGAL), CUDAContextError),
])
def test_codec_construction_follows_the_same_rules(error: BaseException,
                                                   raised: type[Exception]) -> None:
    def factory(algorithm: str, device: int, stream: int) -> Any:
        raise error

    dec = NvcompDecoder(codec_factory=factory, probe=lambda: None)
    with pytest.raises(raised):
        dec._call_nvcomp("LZ4", 0, 7, "c/0", lambda c: c.decode(1))


def test_codecs_are_kept_per_algorithm_device_stream_and_thread() -> None:
    made: list[tuple[str, int, int]] = []

    def factory(algorithm: str, device: int, stream: int) -> FakeCodec:
        made.append((algorithm, device, stream))
        return FakeCodec()

    dec = NvcompDecoder(codec_factory=factory, probe=lambda: None)
    for algorithm, device, stream in [("Zstd", 0, 7), ("Zstd", 0, 7), ("Zstd", 0, 8),
                                      ("LZ4", 0, 7), ("Zstd", 1, 7)]:
        dec._call_nvcomp(algorithm, device, stream, "k", lambda c: c.decode(1))
    assert made == [("Zstd", 0, 7), ("Zstd", 0, 8), ("LZ4", 0, 7), ("Zstd", 1, 7)]
    t = threading.Thread(target=dec._call_nvcomp,
                         args=("Zstd", 0, 7, "k", lambda c: c.decode(1)))
    t.start()
    t.join()
    assert made[-1] == ("Zstd", 0, 7) and len(made) == 5  # a new thread: its own codec


def test_refusal_is_counted_and_logged_once_per_read(caplog: pytest.LogCaptureFixture) -> None:
    dec = _decoder(FakeCodec())
    p = Payload(np.arange(4, dtype=np.int64), np.arange(4, dtype=np.int64) + 10,
                np.zeros(4, bool))
    live = np.array([True, False, True, True])
    refusal = _gpu._Refused("nvCOMP Zstd refused: ValueError: Chunk size 9 must not exceed 8")
    _gpu.gpu_decode_stats.reset()
    with caplog.at_level(logging.DEBUG, logger=_gpu.__name__):
        for read_id in ("read-1", "read-1", "read-1", "read-2", None, None):
            data, _, _, to_cpu = dec._refused(_step(), refusal, "data", p, live, 16,
                                              read_id)
            assert data == "data" and to_cpu.tolist() == live.tolist()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4  # read-1 once, read-2 once, each batch without a read id
    assert "decoding 3 chunks on the CPU" in warnings[0].getMessage()
    assert _gpu.gpu_decode_stats.nvcomp_failures == 6
    assert _gpu.gpu_decode_stats.refused_chunks == 18


def _step() -> Any:
    import numcodecs

    from gds_zarr.decode._base import BytesStep

    return BytesStep("zstd", numcodecs.Zstd(), "zstd")


def test_cupys_own_exceptions_are_sorted() -> None:
    # CuPy's exception classes construct without a driver (the cu12 leg without one has them).
    runtime = pytest.importorskip("cupy_backends.cuda.api.runtime")
    memory = pytest.importorskip("cupy.cuda.memory")
    assert classify_failure(runtime.CUDARuntimeError(700)) == "sticky"  # IllegalAddress
    assert classify_failure(runtime.CUDARuntimeError(719)) == "sticky"  # LaunchFailure
    assert classify_failure(runtime.CUDARuntimeError(2)) == "refused"  # MemoryAllocation
    assert classify_failure(runtime.CUDARuntimeError(1)) == "error"  # InvalidValue
    assert classify_failure(memory.OutOfMemoryError(1 << 30, 1 << 30, 0)) == "refused"
    reason = sticky_reason(runtime.CUDARuntimeError(700))
    assert reason is not None and reason.startswith("cudaErrorIllegalAddress")
