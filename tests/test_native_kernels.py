"""gds_zarr.decode._native: every kernel gives numcodecs' bytes for valid chunks, and accepts
nothing that numcodecs would decode differently or refuse (the CPU decoder then asks numcodecs).

The contract is checked directly on each kernel implementation that loads here (libdeflate from
the ``deflate`` package and Python's zlib for gzip/zlib; the libraries numcodecs links for LZ4
and Blosc; libzstd), with hypothesis mutating real chunks.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable
from typing import Any

import numcodecs
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gds_zarr._batch import BatchRead
from gds_zarr.decode import _native
from gds_zarr.decode._base import BytesStep
from gds_zarr.decode._cpu import CpuDecoder
from gds_zarr.decode.formats import check_blosc, numpy_reader
from gds_zarr.errors import ChunkDecodeError

CODECS: dict[str, tuple[str, Any]] = {
    "zstd": ("zstd", numcodecs.Zstd(level=3)),
    "lz4": ("lz4", numcodecs.LZ4()),
    "blosc-lz4-shuffle": ("blosc", numcodecs.Blosc("lz4", 5, numcodecs.Blosc.SHUFFLE)),
    "blosc-zstd-bitshuffle": ("blosc", numcodecs.Blosc("zstd", 3, numcodecs.Blosc.BITSHUFFLE)),
    "gzip": ("gzip", numcodecs.GZip(level=5)),
    "zlib": ("zlib", numcodecs.Zlib(level=5)),
}


def _implementations(kind: str) -> list[Any]:
    """(id, kernel factory) for every implementation of ``kind`` that loads here."""
    if kind in ("gzip", "zlib"):
        impls = [pytest.param(lambda k=kind: _native._zlib_kernel(31 if k == "gzip" else 15),
                              id="python-zlib")]
        if _native._libdeflate() is not None:
            impls.append(pytest.param(lambda k=kind: _native._deflate_kernel(k), id="libdeflate"))
        return impls
    step = BytesStep(kind, CODECS[{"zstd": "zstd", "lz4": "lz4", "blosc": "blosc-lz4-shuffle"}[
        kind]][1], kind)  # type: ignore[arg-type]
    factory = _native.kernel_for([step], 1 << 16)
    return [pytest.param(factory, id="native")] if factory is not None else []


CASES = [pytest.param(name, impl.values[0], id=f"{name}-{impl.id}")
         for name, (kind, _) in CODECS.items() for impl in _implementations(kind)]


def _chunk(seed: int, nbytes: int = 16384) -> bytes:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 50, nbytes // 4, dtype=np.int32).cumsum().astype("<f4")).tobytes()


def _run(kernel: Callable[[int, int, int, int], int], encoded: bytes,
         cap: int) -> tuple[int, bytes]:
    src = np.frombuffer(encoded, dtype=np.uint8).copy()
    dst = np.zeros(cap, dtype=np.uint8)
    got = kernel(dst.ctypes.data, cap, src.ctypes.data if src.nbytes else 0, src.nbytes)
    return int(got), dst.tobytes()


@pytest.mark.parametrize(("name", "factory"), CASES)
@pytest.mark.parametrize("nbytes", [4, 4096, 16384, 300_000])
def test_valid_chunks_decode_like_numcodecs(name: str, factory: Any, nbytes: int) -> None:
    codec = CODECS[name][1]
    raw = _chunk(nbytes, nbytes)
    encoded = bytes(codec.encode(raw))
    got, out = _run(factory(), encoded, nbytes)
    assert got == nbytes and out == raw == bytes(codec.decode(encoded))


def _numcodecs_result(codec: Any, encoded: bytes, cap: int) -> bytes | None:
    try:
        out = np.asarray(codec.decode(encoded)).reshape(-1).view(np.uint8)
    except Exception:  # noqa: BLE001 - any refusal counts as "refused"
        return None
    return out.tobytes() if out.nbytes == cap else None


@pytest.mark.parametrize(("name", "factory"), CASES)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_kernel_never_accepts_what_numcodecs_would_not(name: str, factory: Any,
                                                         data: st.DataObject) -> None:
    kind, codec = CODECS[name]
    raw = _chunk(7, 4096)
    buf = bytearray(codec.encode(raw))
    op = data.draw(st.sampled_from(["flip", "truncate", "append", "zero-run"]))
    if op == "flip":
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] ^= 1 << data.draw(st.integers(0, 7))
    elif op == "truncate":
        del buf[data.draw(st.integers(0, len(buf) - 1)):]
    elif op == "append":
        buf += data.draw(st.binary(min_size=1, max_size=16))
    else:
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i: i + 8] = bytes(len(buf[i: i + 8]))
    encoded = bytes(buf)
    if kind == "blosc":
        # The decoder checks Blosc headers for the whole batch before any kernel runs.
        start, stop = np.zeros(1, np.int64), np.full(1, len(encoded), np.int64)
        try:
            check_blosc(numpy_reader(np.frombuffer(encoded, np.uint8)), start, stop, len(raw),
                        ["k"])
        except ChunkDecodeError:
            return
    got, out = _run(factory(), encoded, len(raw))
    if got == len(raw):
        assert _numcodecs_result(codec, encoded, len(raw)) == out


def _batch(chunks: list[bytes]) -> BatchRead:
    sizes = np.array([len(c) for c in chunks], dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
    data = np.frombuffer(b"".join(chunks), dtype=np.uint8).copy()
    return BatchRead(data, offsets, sizes, np.ones(len(chunks), bool), "cpu", data.nbytes)


@pytest.mark.parametrize("threads", [1, 2])
def test_decoder_hands_refused_chunks_to_numcodecs(threads: int) -> None:
    """Two-member and zero-padded gzip (numcodecs decodes them, the kernels refuse them) come
    out right; a corrupt chunk raises naming its key."""
    raws = [_chunk(i, 16384) for i in range(300)]
    chunks = [gzip.compress(r, 5) for r in raws]
    chunks[3] = gzip.compress(raws[3][:5000]) + gzip.compress(raws[3][5000:])  # two members
    chunks[7] = chunks[7] + bytes(8)  # padding after the member
    step = BytesStep("gzip", numcodecs.GZip(), "gzip")
    assert _native.kernel_for([step], 16384) is not None
    decoder = CpuDecoder(threads=threads)
    keys = [f"c/{i}" for i in range(len(chunks))]
    out = decoder.decode_batch([step], _batch(chunks), np.arange(len(chunks)), 16384, keys)
    assert [bytes(row) for row in out] == raws
    broken = list(chunks)
    mid = len(broken[123]) // 2
    broken[123] = broken[123][:mid] + bytes([broken[123][mid] ^ 0x10]) + broken[123][mid + 1:]
    with pytest.raises(ChunkDecodeError, match="c/123"):
        decoder.decode_batch([step], _batch(broken), np.arange(len(broken)), 16384, keys)


def test_zlib_trailing_bytes_follow_numcodecs() -> None:
    """Whatever numcodecs does with bytes after a zlib stream, the decoder does the same."""
    raw = _chunk(1, 4096)
    encoded = zlib.compress(raw) + b"tail"
    step = BytesStep("zlib", numcodecs.Zlib(), "zlib")
    want = _numcodecs_result(numcodecs.Zlib(), encoded, len(raw))
    decoder = CpuDecoder(threads=1)
    if want is None:
        with pytest.raises(ChunkDecodeError):
            decoder.decode_batch([step], _batch([encoded]), np.arange(1), len(raw), ["k"])
    else:
        out = decoder.decode_batch([step], _batch([encoded]), np.arange(1), len(raw), ["k"])
        assert bytes(out[0]) == want
