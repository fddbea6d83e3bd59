"""gds_zarr.decode._blosc_native: the C kernels of the CPU Blosc twin, and their fallback.

* the unshuffle kernels give the bytes of the numpy twin (``unshuffle_span``) under hypothesis,
  on every vector path this CPU has (AVX2, SSE2, scalar), for byte and bit shuffle, typesizes
  1 to 255 and blocks with bytes left unshuffled at their end;
* the row decoder refuses (1 or -1, never a wrong row) what it cannot decode;
* without the library (``GDS_ZARR_NO_NATIVE=1``, or not built) everything still decodes: the
  default Blosc path is then one c-blosc call per chunk, and the plan runs in Python.

Decoding whole chunks through the twin against numcodecs is tests/test_blosc_plan.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import numcodecs
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gds_zarr._batch import BatchRead
from gds_zarr.decode import _blosc_native, _cpu
from gds_zarr.decode._base import BytesStep
from gds_zarr.decode._cpu import CpuDecoder
from gds_zarr.decode.formats import numpy_reader
from gds_zarr.planning.blosc import (
    SHUFFLE_BIT,
    SHUFFLE_BYTE,
    SHUFFLE_NONE,
    plan_blosc,
    unshuffle_span,
)

LIB = _blosc_native.library()
needs_lib = pytest.mark.skipif(LIB is None, reason="gds_zarr's C kernels are not built here")
STEP = BytesStep("blosc", numcodecs.Blosc(), "blosc")
LEVELS = ["scalar", "sse2", "avx2"]


def _levels() -> list[int]:
    """Every vector level this CPU runs (0 scalar, 1 SSE2, 2 AVX2)."""
    if LIB is None:
        return []
    return list(range(LIB.gz_set_simd_level(9) + 1))


@pytest.fixture(params=_levels(), ids=lambda lv: LEVELS[lv])
def level(request: pytest.FixtureRequest) -> Iterator[int]:
    """Cap the kernels' vector level for one test; the best one is restored after it."""
    assert LIB.gz_set_simd_level(request.param) == request.param
    yield request.param
    LIB.gz_set_simd_level(9)


def test_library_is_built_where_a_compiler_exists() -> None:
    """pip builds the kernels wherever a C compiler is found; a failed build would silently
    leave the slower numpy twin in use."""
    if os.environ.get(_blosc_native.ENV_DISABLE, "") not in ("", "0"):
        pytest.skip(f"{_blosc_native.ENV_DISABLE} is set")
    if not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")):
        pytest.skip("no C compiler here")
    assert LIB is not None, "the C kernels did not build: pip install -v -e . says why"
    assert _blosc_native.simd_level() in LEVELS


@st.composite
def spans(draw: st.DrawFn) -> tuple[np.ndarray, int, int, int]:
    """(src, block, shuffle, typesize): a few blocks of random bytes to unshuffle."""
    t = draw(st.sampled_from([1, 2, 3, 4, 5, 7, 8, 12, 16, 17, 33, 255]))
    shuffle = draw(st.sampled_from([SHUFFLE_NONE, SHUFFLE_BYTE, SHUFFLE_BIT]))
    # items: around the vector widths (16 and 32 items per step) and bit shuffle's groups of 8
    m = draw(st.one_of(st.integers(0, 80), st.sampled_from([128, 256, 520, 1000, 4096])))
    if shuffle == SHUFFLE_BIT:
        m -= m % 8
    tail = draw(st.integers(0, t - 1))
    block = m * t + tail
    if block == 0:
        block, m, tail = t, 1, 0
        if shuffle == SHUFFLE_BIT:
            shuffle = SHUFFLE_BYTE
    nblocks = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    src = np.random.default_rng(seed).integers(0, 256, block * nblocks, dtype=np.uint8)
    return src, block, shuffle, t


@needs_lib
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spans(), st.sampled_from([0, 1, 2]))
def test_unshuffle_matches_the_numpy_twin(span: tuple[np.ndarray, int, int, int],
                                          cap: int) -> None:
    src, block, shuffle, t = span
    want = np.empty_like(src)
    unshuffle_span(src, want, block, shuffle, t)
    level = LIB.gz_set_simd_level(cap)
    try:
        got = np.full_like(src, 0xEE)
        _blosc_native.unshuffle(src, got, block, shuffle, t)
    finally:
        LIB.gz_set_simd_level(9)
    assert np.array_equal(got, want), (LEVELS[level], block, shuffle, t)


@needs_lib
@pytest.mark.parametrize("t", [2, 4, 8, 16])
@pytest.mark.parametrize("shuffle", [SHUFFLE_BYTE, SHUFFLE_BIT])
def test_vector_paths_on_a_large_block(level: int, t: int, shuffle: int) -> None:
    """A 256 KiB block (the vector loops' steady state) on each vector path."""
    src = np.random.default_rng(t).integers(0, 256, 1 << 18, dtype=np.uint8)
    want, got = np.empty_like(src), np.empty_like(src)
    unshuffle_span(src, want, src.nbytes, shuffle, t)
    _blosc_native.unshuffle(src, got, src.nbytes, shuffle, t)
    assert np.array_equal(got, want)


@needs_lib
def test_unshuffle_refuses_spans_it_cannot_do() -> None:
    src = np.zeros(80, np.uint8)
    dst = np.zeros(80, np.uint8)
    with pytest.raises(ValueError, match="no valid span"):
        _blosc_native.unshuffle(src, dst, 32, SHUFFLE_BYTE, 4)  # 80 is no multiple of 32
    with pytest.raises(ValueError, match="no valid span"):
        _blosc_native.unshuffle(src, dst, 80, SHUFFLE_BIT, 4)  # 20 items: not a multiple of 8
    with pytest.raises(ValueError, match="no valid span"):
        _blosc_native.unshuffle(src, dst, 80, 3, 4)  # no such shuffle
    with pytest.raises(ValueError, match="no valid span"):
        _blosc_native.unshuffle(src, dst, 80, SHUFFLE_BYTE, 256)  # Blosc's typesize is a byte
    with pytest.raises(ValueError, match="contiguous uint8"):
        _blosc_native.unshuffle(src, dst[:40], 40, SHUFFLE_BYTE, 4)
    assert not dst.any()


def _batch(chunks: list[bytes]) -> tuple[BatchRead, np.ndarray, np.ndarray]:
    data = np.frombuffer(b"".join(chunks), np.uint8).copy()
    sizes = np.array([len(c) for c in chunks], np.int64)
    offs = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    return BatchRead(data, offs, sizes, np.ones(len(chunks), bool)), offs, offs + sizes


@needs_lib
def test_row_decoder_refuses_what_it_cannot_decode() -> None:
    raw = (np.arange(4096) // 64).astype(np.uint8)  # every stream compressed
    good = bytes(numcodecs.Blosc("lz4", 5, numcodecs.Blosc.SHUFFLE).encode(raw.view("<u4")))
    bad = bytearray(good)
    first = int.from_bytes(good[16:20], "little")  # block 0: its first stream's size, then data
    assert int.from_bytes(good[first:first + 4], "little") < 1024  # compressed, not raw
    bad[first + 4: first + 12] = b"\xff" * 8
    src, starts, stops = _batch([good, bytes(bad)])
    plan = plan_blosc(numpy_reader(src.data), starts, stops, raw.nbytes, ["a", "b"])
    decode = _blosc_native.RowDecoder(plan, src.data).bind()
    assert decode is not None
    row = np.zeros(raw.nbytes, np.uint8)
    assert decode(0, row.ctypes.data, row.nbytes) == 0 and np.array_equal(row, raw)
    assert decode(1, row.ctypes.data, row.nbytes) == 1  # a stream that does not decode
    assert decode(2, row.ctypes.data, row.nbytes) == -1  # no such row
    assert decode(0, row.ctypes.data, row.nbytes - 1) == -1  # a row too small for the plan


@needs_lib
@pytest.mark.parametrize("cname", ["lz4", "blosclz"])
@pytest.mark.parametrize("shuffle", [SHUFFLE_BYTE, SHUFFLE_BIT])
def test_raw_streams_are_read_in_place(cname: str, shuffle: int) -> None:
    """Streams stored raw are unshuffled from the chunk itself (no copy): the byte planes of
    split blocks (typesize 4: noise planes raw, others compressed) and whole blocks that do not
    split (typesize 17); the bytes are numcodecs' either way."""
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, 1 << 16, dtype=np.uint8)
    planes = np.stack([noise[:16384], np.zeros(16384, np.uint8), noise[16384:32768],
                       np.arange(16384, dtype=np.uint8)], axis=1).reshape(-1)
    halves = np.concatenate([np.zeros(17 * 1500, np.uint8), noise[:17 * 1500]])
    for raw, t in ((planes, 4), (halves, 17)):
        # 16320 bytes: 960 items of 17 bytes, a multiple of 8 (else no bit shuffle)
        chunk = bytes(numcodecs.Blosc(cname, 5, shuffle, blocksize=16320).encode(
            raw.view(f"V{t}")))
        src, starts, stops = _batch([chunk])
        plan = plan_blosc(numpy_reader(src.data), starts, stops, raw.nbytes, ["k"])
        raw_dsize = plan.stream_dsize[plan.stream_raw]
        if t == 4:  # raw byte planes of split blocks, beside compressed ones
            assert (raw_dsize == plan.block_size[0] // 4).any() and not plan.stream_raw.all()
        else:  # raw whole blocks (the noise), beside compressed ones (the zeros)
            assert (raw_dsize == plan.block_size[0]).any() and not plan.memcpyed.any()
        assert (plan.block_shuffle == shuffle).any()
        out = CpuDecoder(1, blosc_plan=True).decode_batch([STEP], src, np.arange(1), raw.nbytes,
                                                          ["k"])
        assert np.array_equal(out[0], raw)
        assert np.array_equal(np.frombuffer(numcodecs.Blosc().decode(chunk), np.uint8), raw)


@needs_lib
@pytest.mark.parametrize("t, n", [(255, 300), (200, 399), (130, 259)])
def test_a_raw_whole_block_with_a_long_tail_stays_in_bounds(t: int, n: int) -> None:
    """A shuffled block that does not split, stored raw, with fewer items than tail bytes
    (typesize 255, 300 bytes: one item, 45 tail bytes): its pieces are its t byte planes, not
    (block / items) of them; counting the tail as pieces wrote past the 256 plane pointers on
    the C stack (a crash). Run in a child: a crash fails the test, not the session."""
    script = textwrap.dedent(f"""
        import struct, numcodecs, numpy as np
        from gds_zarr.decode import _blosc_native
        from gds_zarr.decode.formats import numpy_reader
        from gds_zarr.planning.blosc import plan_blosc
        t, n = {t}, {n}
        payload = bytes(np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8))
        # lz4, byte shuffle, do not split; one block of n bytes, one raw stream of n bytes
        head = struct.pack("<BBBBiii", 2, 1, 0x1 | 0x10 | (1 << 5), t, n, n, 24 + n)
        chunk = head + struct.pack("<ii", 20, n) + payload
        ref = np.frombuffer(numcodecs.Blosc().decode(chunk), np.uint8)
        data = np.frombuffer(chunk, np.uint8).copy()
        plan = plan_blosc(numpy_reader(data), np.array([0]), np.array([len(chunk)]), n, ["k"])
        assert plan.stream_raw.all() and (plan.block_shuffle == 1).all()
        decode = _blosc_native.RowDecoder(plan, data).bind()
        out = np.zeros(n, np.uint8)
        assert decode(0, out.ctypes.data, n) == 0 and np.array_equal(out, ref)
        print("ok")
    """)
    got = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert got.returncode == 0 and got.stdout.strip() == "ok", (got.returncode, got.stderr)


@needs_lib
def test_the_plan_is_the_default_blosc_path_with_the_library(monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    calls: list[int] = []
    real = _cpu.plan_parts
    monkeypatch.setattr(_cpu, "plan_parts",
                        lambda *a, **k: calls.append(1) or real(*a, **k))  # type: ignore[func-returns-value]
    raw = np.arange(8192, dtype="<f4").view(np.uint8)
    src, _, _ = _batch([bytes(numcodecs.Blosc().encode(raw.view("<f4")))])
    out = CpuDecoder(1).decode_batch([STEP], src, np.arange(1), raw.nbytes, ["k"])
    assert _cpu.BLOSC_PLAN and calls and np.array_equal(out[0], raw)


def test_without_the_library_everything_still_decodes() -> None:
    """GDS_ZARR_NO_NATIVE=1 (what a build without a compiler gives): no library, the default
    path is c-blosc per chunk, the plan runs in Python with the numpy unshuffle."""
    script = textwrap.dedent("""
        import numcodecs, numpy as np
        from gds_zarr._batch import BatchRead
        from gds_zarr.decode import _blosc_native, _cpu
        from gds_zarr.decode._base import BytesStep
        assert _blosc_native.library() is None and _blosc_native.simd_level() is None
        calls = []
        real = _cpu.plan_parts
        _cpu.plan_parts = lambda *a, **k: calls.append(1) or real(*a, **k)
        step = BytesStep("blosc", numcodecs.Blosc(), "blosc")
        raws = [np.random.default_rng(s).integers(0, 7, 40000, dtype=np.uint8) for s in range(3)]
        chunks = [bytes(numcodecs.Blosc("zstd", 5, sh).encode(r.view("<u4")))
                  for r, sh in zip(raws, (0, 1, 2))]
        data = np.frombuffer(b"".join(chunks), np.uint8).copy()
        sizes = np.array([len(c) for c in chunks], np.int64)
        src = BatchRead(data, np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes,
                        np.ones(3, bool))
        for plan, planned in ((None, False), (True, True)):
            calls.clear()
            out = _cpu.CpuDecoder(2, blosc_plan=plan).decode_batch(
                [step], src, np.arange(3), 40000, ["a", "b", "c"])
            assert np.array_equal(out, np.stack(raws)) and bool(calls) == planned
        print("ok")
    """)
    env = {**os.environ, _blosc_native.ENV_DISABLE: "1"}
    got = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=120)
    assert got.returncode == 0 and got.stdout.strip() == "ok", got.stderr
