"""The Blosc batch plan (``gds_zarr.planning.blosc``) and the CPU decoder that runs it.

Every chunk here is real numcodecs output, and numcodecs' ``Blosc.decode`` is the reference:
the plan path must give its bytes exactly, and refuse (``ChunkDecodeError`` naming the key)
only what numcodecs refuses. Tests taking ``twin`` run on both CPU twins: the C row decoder
(``decode/_blosc_native.c``) and, as without that library, the plan in Python.
"""

from __future__ import annotations

import itertools
from typing import Any

import numcodecs
import numpy as np
import pytest

from gds_zarr._batch import BatchRead
from gds_zarr.decode import _blosc_native, _cpu, _native
from gds_zarr.decode._base import BytesStep
from gds_zarr.decode._cpu import CpuDecoder
from gds_zarr.decode.formats import numpy_reader
from gds_zarr.errors import ChunkDecodeError
from gds_zarr.planning.blosc import (
    SHUFFLE_BIT,
    SHUFFLE_BYTE,
    SHUFFLE_NONE,
    plan_blosc,
    unshuffle_blocks,
)

STEP = BytesStep("blosc", numcodecs.Blosc(), "blosc")
CNAMES = ("lz4", "lz4hc", "zstd", "blosclz", "zlib")
GAP = 7  # bytes of 0xEE between chunks of a batch buffer: a read past a chunk would see them


def raw_bytes(nbytes: int, seed: int) -> np.ndarray:
    """Half smooth (compressible, bits vary per byte plane), half noise (stored raw)."""
    rng = np.random.default_rng(seed)
    half = nbytes // 2
    smooth = (np.cumsum(rng.integers(0, 2, half)) // 8 % 253).astype(np.uint8)
    return np.concatenate([smooth, rng.integers(0, 256, nbytes - half, dtype=np.uint8)])


def encode(raw: np.ndarray, typesize: int, **kw: Any) -> bytes:
    """numcodecs Blosc over ``raw`` seen as items of ``typesize`` bytes (sets the header)."""
    return bytes(numcodecs.Blosc(**kw).encode(raw.view(f"V{typesize}")))


def batch(chunks: list[bytes]) -> BatchRead:
    """One buffer: GAP filler bytes, then each chunk followed by GAP filler bytes."""
    parts, offs, pos = [b"\xee" * GAP], [], GAP
    for c in chunks:
        offs.append(pos)
        parts += [c, b"\xee" * GAP]
        pos += len(c) + GAP
    data = np.frombuffer(b"".join(parts), np.uint8).copy()
    return BatchRead(data, np.array(offs, np.int64), np.array([len(c) for c in chunks],
                                                              np.int64),
                     np.ones(len(chunks), bool))


@pytest.fixture(params=["native", "python"])
def twin(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The CPU twin the test decodes with: the C row decoder, or the plan in Python (numpy
    unshuffle), as where the C library is not built."""
    if request.param == "native" and _blosc_native.library() is None:
        pytest.skip("gds_zarr's C kernels are not built here")
    if request.param == "python":
        monkeypatch.setattr(_blosc_native, "library", lambda: None)
    return str(request.param)


def keys_of(n: int) -> list[str]:
    return [f"a/c/{i}" for i in range(n)]


def decode(chunks: list[bytes], nbytes: int, threads: int = 1) -> np.ndarray:
    src = batch(chunks)
    out: np.ndarray = CpuDecoder(threads, blosc_plan=True).decode_batch(
        [STEP], src, np.arange(len(chunks)), nbytes, keys_of(len(chunks)))
    return out


def reference(chunk: bytes) -> np.ndarray:
    return np.frombuffer(bytes(numcodecs.Blosc().decode(chunk)), np.uint8)


# ------------------------------------------------------------------------ bit-identical matrix

NBYTES = 3 * 3696  # a multiple of every typesize below (lcm of 16, 3, 7, 33 is 3696)


@pytest.mark.parametrize("cname", CNAMES)
@pytest.mark.parametrize("shuffle", [0, 1, 2])
def test_matrix_matches_numcodecs(cname: str, shuffle: int, twin: str) -> None:
    """typesize x clevel x blocksize (auto, forced, forced with a short last block), one batch
    of chunks that differ in every header field, decoded on two threads."""
    chunks, raws = [], []
    for i, (ts, clevel, bs) in enumerate(itertools.product(
            (1, 2, 4, 8, 16, 3, 7, 33), range(10), (0, 256, 1000))):
        if ts not in (1, 4, 7) and clevel not in (0, 1, 5, 9):
            continue  # every clevel for three typesizes, four for the others
        raw = raw_bytes(NBYTES, i)
        chunks.append(encode(raw, ts, cname=cname, clevel=clevel, shuffle=shuffle,
                             blocksize=bs))
        raws.append(raw)
    src = batch(chunks)
    plan = plan_blosc(numpy_reader(src.data), src.offsets, src.offsets + src.sizes, NBYTES,
                      keys_of(len(chunks)))
    assert not plan.fallback.any()
    assert plan.memcpyed.sum() == sum(c[2] & 2 != 0 for c in chunks)
    if shuffle and cname != "zlib":
        assert (plan.block_shuffle == (SHUFFLE_BYTE if shuffle == 1 else SHUFFLE_BIT)).any()
    assert plan.stream_raw.any() and (~plan.stream_raw).any()
    out = decode(chunks, NBYTES, threads=2)
    for j, (chunk, raw) in enumerate(zip(chunks, raws, strict=True)):
        assert np.array_equal(reference(chunk), raw)
        assert np.array_equal(out[j], raw), (j, chunk[:16].hex())


@pytest.mark.parametrize("nbytes", [16, 48, 96, 120])
def test_small_chunks_are_memcpyed(nbytes: int, twin: str) -> None:
    """c-blosc stores buffers under 128 bytes uncompressed (the memcpyed flag)."""
    raws = [raw_bytes(nbytes, s) for s in range(4)]
    chunks = [encode(r, ts, cname="lz4", shuffle=sh)
              for r, ts, sh in zip(raws, (1, 2, 4, 8), (0, 1, 2, 1), strict=True)]
    src = batch(chunks)
    plan = plan_blosc(numpy_reader(src.data), src.offsets, src.offsets + src.sizes, nbytes,
                      keys_of(4))
    assert plan.memcpyed.all() and plan.stream_raw.all()
    assert (plan.block_shuffle == SHUFFLE_NONE).all()
    out = decode(chunks, nbytes)
    assert all(np.array_equal(o, r) for o, r in zip(out, raws, strict=True))


def test_bitshuffle_tail_and_unshuffled_blocks(twin: str) -> None:
    """Bit shuffle of a block of m items with m % 8 != 0 is a plain copy in c-blosc, and a
    block of m % 8 == 0 items but b % typesize != 0 bytes keeps its last bytes as they are."""
    ts = 3
    for nitems in (8 * 50 + 5, 8 * 50, 1001):
        raw = raw_bytes(nitems * ts, nitems)
        for bs in (0, 8 * 3 * 20 + 2, 200):
            chunk = encode(raw, ts, cname="lz4", shuffle=2, blocksize=bs)
            assert np.array_equal(decode([chunk], raw.nbytes)[0], raw)
            assert np.array_equal(reference(chunk), raw)


def test_unshuffle_blocks_is_the_inverse_of_a_shuffle() -> None:
    """The numpy twin on hand-made blocks (the GPU kernel's reference)."""
    rng = np.random.default_rng(3)
    t, m = 4, 16
    items = rng.integers(0, 256, (m, t), dtype=np.uint8)
    byte_shuffled = items.T.reshape(-1)
    bits = np.unpackbits(items, axis=1, bitorder="little").reshape(m, t, 8)
    bit_shuffled = np.packbits(bits.transpose(1, 2, 0).reshape(-1), bitorder="little")
    tail = np.array([9, 8], np.uint8)  # b % t == 2 bytes, never shuffled
    src = np.concatenate([byte_shuffled, tail, bit_shuffled, tail, byte_shuffled])
    dst = np.zeros_like(src)
    b = m * t + 2
    unshuffle_blocks(src, dst, np.array([0, b, 2 * b]), np.array([b, b, m * t]),
                     np.array([SHUFFLE_BYTE, SHUFFLE_BIT, SHUFFLE_NONE], np.int8),
                     np.array([t, t, t]))
    want = np.concatenate([items.reshape(-1), tail, items.reshape(-1), tail, byte_shuffled])
    assert np.array_equal(dst, want)


def test_plan_is_vectorized_over_the_batch(twin: str) -> None:
    """Every block and stream of a batch; streams CSR by row; destinations tile each row."""
    nbytes = 4 * 70001  # 4 full 64 KiB blocks and a short one for LZ4 with typesize 4
    raws = [raw_bytes(nbytes, s) for s in range(3)]
    chunks = [encode(raws[0], 4, cname="lz4", shuffle=1, blocksize=1000),
              encode(raws[1], 4, cname="zstd", shuffle=2),
              encode(raws[2], 1, cname="zlib", shuffle=0, blocksize=4096)]
    src = batch(chunks)
    p = plan_blosc(numpy_reader(src.data), src.offsets, src.offsets + src.sizes, nbytes,
                   keys_of(3))
    assert p.codec.tolist() == [1, 4, 3]
    assert p.typesize.tolist() == [4, 4, 1]
    blocksizes = [int.from_bytes(c[8:12], "little") for c in chunks]
    assert np.diff(p.block_bounds).tolist() == [-(-nbytes // b) for b in blocksizes]
    assert blocksizes[0] == 65536 and np.diff(p.block_bounds)[2] > 1
    for j in range(3):
        s = slice(p.stream_bounds[j], p.stream_bounds[j + 1])
        dst, dsize = p.stream_dst[s], p.stream_dsize[s]
        assert dst[0] == 0 and (dst[1:] == dst[:-1] + dsize[:-1]).all()
        assert dst[-1] + dsize[-1] == nbytes
        assert (p.stream_src[s] >= src.offsets[j]).all()
        assert (p.stream_src[s] + p.stream_size[s] <= src.offsets[j] + src.sizes[j]).all()
    # chunk 0: c-blosc enlarged the forced blocksize to 64 KiB for split LZ4; four full blocks
    # of four streams each, the short last block one stream
    assert np.diff(p.stream_bounds)[0] == 4 * 4 + 1
    assert p.block_size[:5].tolist() == [65536] * 4 + [nbytes - 4 * 65536]
    assert p.block_shuffle[:5].tolist() == [SHUFFLE_BYTE] * 5
    assert p.block_shuffle[5] == SHUFFLE_BIT
    out = decode(chunks, nbytes, threads=2)
    assert all(np.array_equal(o, r) for o, r in zip(out, raws, strict=True))


# ---------------------------------------------------------------------- refused, naming the key

# Zstd does not split, so c-blosc keeps the forced block size: six blocks, the last one short.
GOOD = encode(raw_bytes(NBYTES, 0), 4, cname="zstd", shuffle=1, blocksize=2048)


def _patch(chunk: bytes, at: int, value: bytes) -> bytes:
    return chunk[:at] + value + chunk[at + len(value):]


def _i32(v: int) -> bytes:
    return int(v).to_bytes(4, "little", signed=True)


BAD = {
    "empty": (b"", "empty"),
    "short header": (GOOD[:10], "shorter than the 16-byte header"),
    "truncated": (GOOD[:-1], "truncated"),
    "cbytes too small": (_patch(GOOD, 12, _i32(8)), "truncated"),
    "nbytes": (_patch(GOOD, 4, _i32(NBYTES + 4)), "declares"),
    "version": (_patch(GOOD, 0, b"\x03"), "format version 3"),
    "future flag": (_patch(GOOD, 2, bytes([GOOD[2] | 8])), "reserved bit"),
    "blocksize 0": (_patch(GOOD, 8, _i32(0)), "block size 0"),
    "blocksize negative": (_patch(GOOD, 8, _i32(-4)), "block size -4"),
    "blocksize > nbytes": (_patch(GOOD, 8, _i32(NBYTES + 1)), "block size"),
    "typesize 0": (_patch(GOOD, 3, b"\x00"), "typesize 0"),
    "snappy": (_patch(GOOD, 2, bytes([GOOD[2] & 0x1F | 2 << 5])), "snappy"),
    "codec 7": (_patch(GOOD, 2, bytes([GOOD[2] | 7 << 5])), "not available"),
    "versionlz": (_patch(GOOD, 1, b"\x02"), "format version 2"),
    "block table": (_patch(GOOD, 8, _i32(1)), "block starts do not fit"),
    "block start past the end": (_patch(GOOD, 16, _i32(len(GOOD) - 3)), "outside"),
    "block start negative": (_patch(GOOD, 16, _i32(-1)), "outside"),
    "stream size past the end": (_patch(GOOD, int.from_bytes(GOOD[16:20], "little"),
                                        _i32(len(GOOD))), "runs past"),
    "stream size negative": (_patch(GOOD, int.from_bytes(GOOD[16:20], "little"), _i32(-2)),
                             "runs past"),
    "memcpyed, wrong length": (_patch(GOOD, 2, bytes([GOOD[2] | 2])), "memcpyed"),
    "stream bytes": (_patch(GOOD, int.from_bytes(GOOD[16:20], "little") + 4, b"\xff" * 8),
                     "error during blosc decompression"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_chunks_raise_naming_the_key(name: str, twin: str) -> None:
    chunk, reason = BAD[name]
    with pytest.raises(ChunkDecodeError, match=reason) as info:
        decode([GOOD, chunk, GOOD], NBYTES)
    assert info.value.key == "a/c/1" and info.value.codec in ("blosc",)
    if len(chunk) < 16 or int.from_bytes(chunk[12:16], "little", signed=True) > len(chunk):
        return  # c-blosc would read past the chunk: no reference to compare with
    with pytest.raises(Exception):  # noqa: B017 - numcodecs refuses it as well
        assert reference(chunk).nbytes == NBYTES


def test_reads_stay_inside_each_chunk() -> None:
    """Every byte the plan reads lies inside a chunk, whatever the headers claim."""
    chunks = [GOOD, *(c for c, _ in BAD.values() if len(c) >= 16)]
    src = batch(chunks)
    inside = np.zeros(src.data.size, bool)
    for o, n in zip(src.offsets.tolist(), src.sizes.tolist(), strict=True):
        inside[o:o + n] = True
    seen: list[np.ndarray] = []
    plain = numpy_reader(src.data)

    def reader(pos: np.ndarray, width: int) -> np.ndarray:
        seen.append(np.asarray(pos)[:, None] + np.arange(width))
        return plain(pos, width)

    for j in range(len(chunks)):
        a, b = src.offsets[j:j + 1], src.offsets[j:j + 1] + src.sizes[j:j + 1]
        try:
            plan_blosc(reader, a, b, NBYTES, ["k"])
        except ChunkDecodeError:
            pass
        else:
            assert chunks[j] in (GOOD, BAD["stream bytes"][0])
    idx = np.concatenate([s.reshape(-1) for s in seen])
    assert idx.size and inside[idx].all()


def test_fallback_rows_go_to_c_blosc(twin: str) -> None:
    """A split block whose size is no multiple of its split count is left to c-blosc."""
    # One 1000-byte block of typesize 3, LZ4, split: three raw streams of 333 bytes, and a
    # last byte c-blosc never writes. No encoder writes this; c-blosc still accepts it.
    raw = raw_bytes(999, 1)
    streams = b"".join(_i32(333) + raw[k * 333:(k + 1) * 333].tobytes() for k in range(3))
    frame = (bytes([2, 1, 1 << 5, 3]) + _i32(1000) + _i32(1000) + _i32(16 + 4 + len(streams))
             + _i32(20) + streams)
    src = batch([frame])
    plan = plan_blosc(numpy_reader(src.data), src.offsets, src.offsets + src.sizes, 1000,
                      ["k"])
    assert plan.fallback.tolist() == [True]
    assert plan.stream_bounds.tolist() == [0, 0] and plan.block_bounds.tolist() == [0, 0]
    got = decode([frame], 1000)[0]
    assert np.array_equal(got[:999], raw)  # the last byte is whatever c-blosc left there


def test_decode_each_and_default_path_agree(twin: str) -> None:
    """decode_each through the plan hands over the same rows as the c-blosc kernel path."""
    raws = [raw_bytes(NBYTES, s) for s in range(6)]
    chunks = [encode(r, 4, cname="lz4", shuffle=1) for r in raws]
    src = batch(chunks)
    got: dict[int, bytes] = {}
    CpuDecoder(2, blosc_plan=True).decode_each([STEP], src, np.arange(6), NBYTES, keys_of(6),
                                               lambda j, row: got.__setitem__(j, row.tobytes()))
    default = CpuDecoder(2).decode_batch([STEP], src, np.arange(6), NBYTES, keys_of(6))
    assert [got[j] for j in range(6)] == [r.tobytes() for r in raws]
    assert np.array_equal(default, np.stack(raws))


def test_stream_kernels_are_c_blosc_s_own() -> None:
    """The stream kernels come from numcodecs' c-blosc: all four compressors it ships."""
    assert sorted(_native.blosc_stream_kernels()) == [0, 1, 3, 4]
    assert _cpu._blosc_plannable([STEP], NBYTES)
    assert not _cpu._blosc_plannable([STEP, STEP], NBYTES)


# ----------------------------------------------------------------------- through the pipeline

@pytest.mark.parametrize("zarr_format", [2, 3])
def test_pipeline_reads_blosc_through_the_plan(tmp_path: Any, monkeypatch: Any,
                                               zarr_format: int) -> None:
    """zarr v2 (numcodecs Blosc) and v3 (BloscCodec) arrays read by the pipeline with the plan
    as the CPU Blosc path give zarr's own result, sharded inner chunks included."""
    import zarr
    import zarr.codecs as zc
    from pipeline_cases import DEFAULT, make
    from zarr.storage import LocalStore

    from gds_zarr.pipeline import PIPELINE_PATH, stats

    monkeypatch.setattr(_cpu, "BLOSC_PLAN", True)
    data = np.random.default_rng(0).integers(0, 1000, (70, 90)).astype("<f4")
    path = str(tmp_path / "a.zarr")
    if zarr_format == 2:
        make(path, data, chunks=(32, 40), zarr_format=2, fill_value=0,
             compressors=numcodecs.Blosc(cname="zstd", shuffle=numcodecs.Blosc.BITSHUFFLE))
    else:
        make(path, data, chunks=(8, 10), shards=(32, 40), fill_value=0,
             compressors=zc.BloscCodec(cname="lz4", shuffle="shuffle", typesize=4))
    calls: list[int] = []
    real = _cpu.plan_parts
    monkeypatch.setattr(_cpu, "plan_parts",
                        lambda *a, **k: calls.append(1) or real(*a, **k))  # type: ignore[func-returns-value]
    for pipeline in (DEFAULT, PIPELINE_PATH):
        stats.reset()
        with zarr.config.set({"codec_pipeline.path": pipeline}):
            got = zarr.open_array(LocalStore(path, read_only=True), mode="r")[3:67, 5:]
        assert np.array_equal(got, data[3:67, 5:])
    assert calls and stats.delegated_reads == 0
