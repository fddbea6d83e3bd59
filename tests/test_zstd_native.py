"""gds_zarr.decode._zstd_native: libzstd through ctypes agrees with numcodecs, byte for byte,
and turns every libzstd error into ZstdError; both library sources it can load work."""

from __future__ import annotations

import numcodecs
import numpy as np
import pytest

from gds_zarr.decode import _zstd_native as zn

pytestmark = pytest.mark.skipif(not zn.available(), reason="no libzstd could be loaded here")


def _decode(frame: bytes, capacity: int) -> bytes:
    src = np.frombuffer(frame, dtype=np.uint8)
    dst = np.empty(capacity, dtype=np.uint8)
    n = zn.decompress_into(dst.ctypes.data, capacity, src.ctypes.data, src.nbytes)
    return dst[:n].tobytes()


@pytest.mark.parametrize("level", [-5, 1, 3, 19])
@pytest.mark.parametrize("checksum", [False, True])
def test_agrees_with_numcodecs(level: int, checksum: bool) -> None:
    rng = np.random.default_rng(abs(level) + 100 * checksum)
    raw = rng.integers(0, 64, 50_000, dtype=np.int16).tobytes()
    frame = numcodecs.Zstd(level=level, checksum=checksum).encode(raw)
    assert _decode(frame, len(raw)) == raw == numcodecs.Zstd().decode(frame)


def test_empty_payload() -> None:
    frame = numcodecs.Zstd().encode(b"")
    assert _decode(frame, 0) == b""


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda f: f[: len(f) // 2], id="truncated"),
        pytest.param(lambda f: b"\x00\x01\x02\x03" + f[4:], id="bad-magic"),
        pytest.param(lambda f: f[:-1] + bytes([f[-1] ^ 0xFF]), id="checksum-flip"),
    ],
)
def test_corrupt_frames_raise(mutate: object) -> None:
    raw = np.arange(8192, dtype=np.uint16).tobytes()
    frame = mutate(numcodecs.Zstd(checksum=True).encode(raw))  # type: ignore[operator]
    with pytest.raises(zn.ZstdError):
        _decode(frame, len(raw))


def test_empty_input_decodes_to_nothing() -> None:
    # libzstd accepts zero input bytes as zero frames; callers compare the decoded size with the
    # chunk's (the CPU decoder does), which is how a zero-length chunk file is caught.
    assert _decode(b"", 16) == b""


def test_output_larger_than_capacity_raises() -> None:
    raw = bytes(10_000)
    frame = numcodecs.Zstd().encode(raw)
    with pytest.raises(zn.ZstdError, match=r"(?i)destination|too small"):
        _decode(frame, len(raw) - 1)


def test_thread_decompressor() -> None:
    raw = np.arange(4096, dtype=np.int32).tobytes()
    frame = np.frombuffer(numcodecs.Zstd().encode(raw), dtype=np.uint8)
    fn, ctx = zn.thread_decompressor()
    dst = np.empty(len(raw), dtype=np.uint8)
    n = fn(ctx, dst.ctypes.data, dst.nbytes, frame.ctypes.data, frame.nbytes)
    lib = zn._library()
    assert not lib.ZSTD_isError(n) and n == len(raw) and dst.tobytes() == raw
    bad = fn(ctx, dst.ctypes.data, dst.nbytes, frame.ctypes.data, 3)
    assert lib.ZSTD_isError(bad)


@pytest.mark.parametrize("source", ["system", "numcodecs"])
def test_each_library_source_binds(source: str) -> None:
    """The system libzstd and numcodecs' statically linked copy both bind and decode."""
    import numcodecs.zstd as nz

    path = str(nz.__file__) if source == "numcodecs" else "libzstd.so.1"
    assert path in zn._candidates()
    if source == "numcodecs":  # the copy zarr itself decodes with comes first
        assert zn._candidates()[0] == path
    try:
        lib = zn._bind(path)
    except OSError as e:
        pytest.skip(f"{source} libzstd not loadable here: {e}")
    raw = bytes(range(256)) * 64
    frame = np.frombuffer(numcodecs.Zstd().encode(raw), dtype=np.uint8)
    dst = np.empty(len(raw), dtype=np.uint8)
    ctx = lib.ZSTD_createDCtx()
    try:
        n = lib.ZSTD_decompressDCtx(ctx, dst.ctypes.data, dst.nbytes, frame.ctypes.data,
                                    frame.nbytes)
    finally:
        lib.ZSTD_freeDCtx(ctx)
    assert n == len(raw) and dst.tobytes() == raw
