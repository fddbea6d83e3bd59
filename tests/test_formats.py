"""Header checks of encoded chunks (gds_zarr.decode.formats), the checksum models of the GPU
kernels, and the scatter reference (gds_zarr.decode._scatter_gpu), all on real encoded bytes."""

from __future__ import annotations

import gzip
import itertools
import struct
import zlib
from pathlib import Path

import google_crc32c
import numcodecs
import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from gds_zarr.decode import formats as f
from gds_zarr.decode._scatter_gpu import _scatter_reference
from gds_zarr.errors import ChunkDecodeError
from gds_zarr.planning.chunks import scatter_plan

EXPECTED = 4096


def _raw(seed: int, n: int = EXPECTED) -> bytes:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 7, n, dtype=np.uint8) * 3).tobytes()  # compressible, not trivial


def _batch(chunks: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Concatenate chunks with a gap between them (as a coalesced read leaves them)."""
    pad = b"\xAA" * 3
    buf = pad.join(chunks) + pad
    sizes = np.array([len(c) for c in chunks], np.int64)
    starts = np.cumsum(sizes + len(pad)) - sizes - len(pad)
    return np.frombuffer(buf, np.uint8), starts, starts + sizes, [f"c/{i}" for i in
                                                                  range(len(chunks))]


def _check(check, chunks: list[bytes], expected: int = EXPECTED) -> f.Payload:
    data, starts, stops, keys = _batch(chunks)
    return check(f.numpy_reader(data), starts, stops, expected, keys)


def _raises(check, chunks: list[bytes], bad: int, match: str, expected: int = EXPECTED) -> None:
    with pytest.raises(ChunkDecodeError, match=match) as info:
        _check(check, chunks, expected)
    assert info.value.key == f"c/{bad}"


# ------------------------------------------------------------------------------ valid chunks

@pytest.mark.parametrize("level,checksum", [(1, False), (5, True), (19, True), (-3, False)])
def test_zstd_numcodecs_frames_pass(level: int, checksum: bool) -> None:
    codec = numcodecs.Zstd(level=level, checksum=checksum)
    chunks = [bytes(codec.encode(_raw(i))) for i in range(6)]
    p = _check(f.check_zstd, chunks)
    assert not p.cpu_only.any()
    assert (p.stops - p.starts).tolist() == [len(c) for c in chunks]


def test_zstd_incompressible_and_constant_chunks_pass() -> None:
    codec = numcodecs.Zstd(level=3)
    rnd = np.random.default_rng(1).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    chunks = [bytes(codec.encode(rnd)), bytes(codec.encode(b"\0" * 300_000))]
    assert not _check(f.check_zstd, chunks, 300_000).cpu_only.any()


def _frame(payload: bytes, *, fcs: bool, checksum: bool = False) -> bytes:
    """A hand-made zstd frame holding one raw block (valid per RFC 8878)."""
    if fcs:  # single segment, 1- or 2-byte content size
        head = bytes([0x20 | (0x40 if len(payload) > 255 else 0) | (4 if checksum else 0)])
        head += (struct.pack("<B", len(payload)) if len(payload) <= 255
                 else struct.pack("<H", len(payload) - 256))
    else:  # window descriptor 0 (1 KiB), no content size
        head = bytes([4 if checksum else 0, 0])
    block = struct.pack("<I", (len(payload) << 3) | 1)[:3]
    tail = b"\0\0\0\0" if checksum else b""
    return struct.pack("<I", f.ZSTD_MAGIC) + head + block + payload + tail


def test_handmade_frames_match_numcodecs() -> None:
    payload = _raw(3, 700)
    frame = _frame(payload, fcs=True)
    assert bytes(numcodecs.Zstd().decode(frame)) == payload  # the frame is real zstd
    assert not _check(f.check_zstd, [frame], 700).cpu_only.any()


def test_zstd_without_content_size_or_skippable_goes_to_cpu() -> None:
    payload = _raw(4, 700)
    skippable = struct.pack("<II", 0x184D2A53, 5) + b"hello"
    chunks = [_frame(payload, fcs=True), _frame(payload, fcs=False), skippable + _frame(
        payload, fcs=True)]
    assert _check(f.check_zstd, chunks, 700).cpu_only.tolist() == [False, True, True]


def test_gzip_and_zlib_payloads_and_trailers() -> None:
    raws = [_raw(i) for i in range(4)]
    gz = [bytes(numcodecs.GZip(level=lv).encode(r))
          for lv, r in zip((1, 5, 9, 1), raws, strict=True)]
    gz[3] = gzip.compress(raws[3], mtime=0)[:3] + bytes([0x1E]) + gzip.compress(raws[3])[4:10] + (
        b"\x03\x00abc" + b"name\0" + b"comment\0" + b"\x00\x00") + zlib.compress(raws[3])[2:-4] + (
        struct.pack("<II", zlib.crc32(raws[3]), len(raws[3])))  # FEXTRA|FNAME|FCOMMENT|FHCRC
    assert gzip.decompress(gz[3]) == raws[3]  # the hand-made member is real gzip
    data, starts, stops, keys = _batch(gz)
    p = f.check_gzip(f.numpy_reader(data), starts, stops, EXPECTED, keys)
    assert p.trailer is not None and p.trailer.tolist() == [zlib.crc32(r) for r in raws]
    assert p.deflate_starts is not None
    for ds, stop, r in zip(p.deflate_starts, stops, raws, strict=True):
        assert zlib.decompressobj(-15).decompress(data[ds:stop].tobytes()) == r

    zl = [bytes(numcodecs.Zlib(level=lv).encode(r))
          for lv, r in zip((1, 6, 9, 0), raws, strict=True)]
    data, starts, stops, keys = _batch(zl)
    p = f.check_zlib(f.numpy_reader(data), starts, stops, EXPECTED, keys)
    assert p.trailer is not None and p.trailer.tolist() == [zlib.adler32(r) for r in raws]
    for a, b, r in zip(p.starts, p.stops, raws, strict=True):
        assert zlib.decompress(data[a:b].tobytes(), wbits=-15) == r  # raw DEFLATE, as nvCOMP


def test_lz4_prefix_stripped() -> None:
    chunks = [bytes(numcodecs.LZ4(acceleration=a).encode(_raw(i))) for i, a in enumerate((1, 9))]
    p = _check(f.check_lz4, chunks)
    assert (p.stops - p.starts).tolist() == [len(c) - 4 for c in chunks]


def _zarr_chunk_files(tmp_path: Path, compressors: list) -> tuple[np.ndarray, list[bytes], int]:
    a = np.arange(64 * 48, dtype="<f4").reshape(64, 48) % 17
    z = zarr.create_array(zarr.storage.LocalStore(tmp_path), shape=a.shape, chunks=(16, 16),
                          dtype=a.dtype, compressors=compressors, fill_value=0)
    z[...] = a
    files = sorted(p for p in tmp_path.rglob("c/*/*") if p.is_file())
    return a, [p.read_bytes() for p in files], 16 * 16 * 4


def test_zarr_v3_zstd_crc32c_chunks(tmp_path: Path) -> None:
    from zarr.codecs import Crc32cCodec, ZstdCodec

    _, chunks, nbytes = _zarr_chunk_files(tmp_path, [ZstdCodec(level=3, checksum=True),
                                                     Crc32cCodec()])
    data, starts, stops, keys = _batch(chunks)
    p = f.check_crc32c_host(data, starts, stops, keys)  # outermost on decode: crc32c
    z = f.check_zstd(f.numpy_reader(data), p.starts, p.stops, nbytes, keys)
    assert not z.cpu_only.any() and len(chunks) == 12

    flipped = bytearray(chunks[5])
    flipped[len(flipped) // 2] ^= 0x10
    data, starts, stops, keys = _batch([*chunks[:5], bytes(flipped)])
    with pytest.raises(ChunkDecodeError, match="stored checksum 0x") as info:
        f.check_crc32c_host(data, starts, stops, keys)
    assert (info.value.key, info.value.codec) == ("c/5", "crc32c")


def test_zarr_v3_gzip_chunks(tmp_path: Path) -> None:
    from zarr.codecs import GzipCodec

    _, chunks, nbytes = _zarr_chunk_files(tmp_path, [GzipCodec(level=5)])
    assert not _check(f.check_gzip, chunks, nbytes).cpu_only.any()


# ------------------------------------------------------------------------------- corruptions

def _zstd_chunks() -> list[bytes]:
    return [bytes(numcodecs.Zstd(level=3, checksum=True).encode(_raw(i))) for i in range(3)]


@pytest.mark.parametrize("mutate,match", [
    (lambda c: b"", "empty"),
    (lambda c: c[:3], "truncated"),
    (lambda c: b"\x28\xb5\x2f\xfe" + c[4:], "magic 0xFE2FB528"),
    (lambda c: c[:4] + bytes([c[4] | 0x08]) + c[5:], "reserved bit"),
    (lambda c: c[:len(c) // 2], "truncated"),
    (lambda c: c[:-1], "truncated"),
    (lambda c: c + b"\0\0", "after the end of the zstd frame"),
    (lambda c: c + c, "after the end of the zstd frame"),
])
def test_zstd_corruptions(mutate, match: str) -> None:
    chunks = _zstd_chunks()
    chunks[1] = mutate(chunks[1])
    _raises(f.check_zstd, chunks, 1, match)


def test_zstd_huge_declared_size_is_rejected_without_allocating() -> None:
    huge = struct.pack("<I", f.ZSTD_MAGIC) + bytes([0xE0]) + struct.pack("<Q", 1 << 50)
    chunks = _zstd_chunks()
    chunks[2] = huge + b"\x01\x00\x00"
    _raises(f.check_zstd, chunks, 2, f"content size of {1 << 50} bytes, expected {EXPECTED}")


def test_zstd_wrong_size_dictionary_and_window() -> None:
    chunks = _zstd_chunks()
    _raises(f.check_zstd, chunks, 0, "content size of 4096 bytes, expected 4000", expected=4000)
    with_dict = struct.pack("<I", f.ZSTD_MAGIC) + bytes([0x01, 0x00, 7]) + b"\x01\x00\x00"
    _raises(f.check_zstd, [chunks[0], with_dict], 1, "dictionary 7")
    big_window = struct.pack("<I", f.ZSTD_MAGIC) + bytes([0x00, 0xFF]) + b"\x01\x00\x00"
    _raises(f.check_zstd, [big_window], 0, "window size 2\\*\\*41")


def test_zstd_reserved_block_type_and_oversized_block() -> None:
    frame = bytearray(_frame(_raw(0, 200), fcs=True))
    frame[6] = (frame[6] & ~0x06) | 0x06  # block type 3
    _raises(f.check_zstd, [bytes(frame)], 0, "reserved block type", expected=200)
    big = struct.pack("<I", f.ZSTD_MAGIC) + b"\x20\x05" + struct.pack("<I", (300_000 << 3) | 1)[:3]
    _raises(f.check_zstd, [big], 0, "exceeds the 131072-byte limit", expected=5)


def _gzip_chunks() -> list[bytes]:
    return [bytes(numcodecs.GZip(level=5).encode(_raw(i))) for i in range(3)]


@pytest.mark.parametrize("mutate,match", [
    (lambda c: b"", "empty"),
    (lambda c: c[:12], "truncated"),
    (lambda c: b"\x1f\x8c" + c[2:], "magic 1f8c"),
    (lambda c: c[:2] + b"\x07" + c[3:], "method 7"),
])
def test_gzip_corruptions(mutate, match: str) -> None:
    chunks = _gzip_chunks()
    chunks[1] = mutate(chunks[1])
    _raises(f.check_gzip, chunks, 1, match)


@pytest.mark.parametrize("mutate", [
    pytest.param(lambda c: c[:-3], id="truncated-trailer"),
    pytest.param(lambda c: c[:-4] + struct.pack("<I", EXPECTED + 1), id="isize"),
    pytest.param(lambda c: gzip.compress(_raw(9)[:2048]) + gzip.compress(_raw(9)[2048:]),
                 id="multi-member"),
    pytest.param(lambda c: c + bytes(8), id="zero-padding"),
    pytest.param(lambda c: c[:3] + b"\x80" + c[4:], id="reserved-flag"),
])
def test_gzip_doubtful_members_go_to_the_cpu(mutate) -> None:
    # Corrupt, or valid but beyond nvCOMP (several members, padding, reserved flags Python's
    # gzip ignores): the CPU decoder decides, so the GPU path answers as the CPU path does.
    chunks = _gzip_chunks()
    chunks[1] = mutate(chunks[1])
    assert _check(f.check_gzip, chunks).cpu_only.tolist() == [False, True, False]


def test_gzip_overlong_name_goes_to_cpu() -> None:
    raw = _raw(2)
    member = (b"\x1f\x8b\x08\x08\0\0\0\0\0\xff" + b"n" * (f.GZIP_MAX_FIELD + 10) + b"\0"
              + zlib.compress(raw)[2:-4] + struct.pack("<II", zlib.crc32(raw), len(raw)))
    assert gzip.decompress(member) == raw
    assert _check(f.check_gzip, [member, *_gzip_chunks()]).cpu_only.tolist() == [True] + [False] * 3


@pytest.mark.parametrize("mutate,match", [
    (lambda c: b"", "empty"),
    (lambda c: c[:5], "truncated"),
    (lambda c: bytes([c[0] & 0xF0 | 7]) + c[1:], "method 7"),
    (lambda c: bytes([c[0] ^ 0x01]) + c[1:], "header check failed|method"),
    (lambda c: c[:1] + bytes([c[1] ^ 0x01]) + c[2:], "header check failed"),
    (lambda c: b"\x78\xbb" + c[2:], "preset dictionary"),
    (lambda c: b"\x88\x1c" + c[2:], "exceeds 32 KiB"),
])
def test_zlib_corruptions(mutate, match: str) -> None:
    chunks = [bytes(numcodecs.Zlib(level=5).encode(_raw(i))) for i in range(3)]
    chunks[2] = mutate(chunks[2])
    _raises(f.check_zlib, chunks, 2, match)


@pytest.mark.parametrize("mutate,match", [
    (lambda c: b"", "empty"),
    (lambda c: c[:4], "truncated"),
    (lambda c: struct.pack("<i", EXPECTED * 2) + c[4:], "prefix says 8192 bytes"),
    (lambda c: struct.pack("<i", -1) + c[4:], "prefix says -1 bytes"),
    (lambda c: c + b"\0" * (EXPECTED * 2), "exceeds LZ4's bound"),
])
def test_lz4_corruptions(mutate, match: str) -> None:
    chunks = [bytes(numcodecs.LZ4().encode(_raw(i))) for i in range(2)]
    chunks[0] = mutate(chunks[0])
    _raises(f.check_lz4, chunks, 0, match)


def test_crc32c_truncated() -> None:
    data, starts, stops, keys = _batch([b"abcdefgh", b"abc"])
    with pytest.raises(ChunkDecodeError, match="truncated") as info:
        f.check_crc32c_host(data, starts, stops, keys)
    assert info.value.key == "c/1"


# ---------------------------------------------------------------------------------- fuzzing

_CHECKS = [f.check_zstd, f.check_gzip, f.check_zlib, f.check_lz4]
_SEEDS = {f.check_zstd: _zstd_chunks()[0], f.check_gzip: _gzip_chunks()[0],
          f.check_zlib: bytes(numcodecs.Zlib().encode(_raw(0))),
          f.check_lz4: bytes(numcodecs.LZ4().encode(_raw(0)))}


@settings(max_examples=150, deadline=None)
@given(which=st.sampled_from(_CHECKS), blob=st.binary(max_size=64))
def test_fuzz_random_bytes(which, blob: bytes) -> None:
    """Any bytes: a Payload or a ChunkDecodeError, nothing else."""
    try:
        _check(which, [blob])
    except ChunkDecodeError as e:
        assert e.key == "c/0"


@settings(max_examples=200, deadline=None)
@given(which=st.sampled_from(_CHECKS), flips=st.lists(
    st.tuples(st.integers(0, 40), st.integers(0, 7)), min_size=1, max_size=3),
    cut=st.one_of(st.none(), st.integers(0, 60)))
def test_fuzz_corrupted_real_chunks(which, flips, cut) -> None:
    """Bit flips in the header region and truncations of real chunks: clean errors only."""
    chunk = bytearray(_SEEDS[which])
    for pos, bit in flips:
        chunk[pos % len(chunk)] ^= 1 << bit
    if cut is not None:
        chunk = chunk[: len(chunk) - cut]
    try:
        p = _check(which, [bytes(chunk)])
    except ChunkDecodeError:
        return
    assert 0 <= p.starts[0] <= p.stops[0]


# ------------------------------------------------------------------ checksum kernel models

@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(0, 2000), min_size=1, max_size=4),
       seg=st.sampled_from([1, 7, 64, 1000, 4096]), seed=st.integers(0, 2**16))
def test_segmented_checksums_match_libraries(sizes: list[int], seg: int, seed: int) -> None:
    chunks = [np.random.default_rng(seed + i).integers(0, 256, n, dtype=np.uint8).tobytes()
              for i, n in enumerate(sizes)]
    data, starts, stops, _ = _batch(chunks)
    assert f.crc_segments_reference(data, starts, stops, f.CRC32C_POLY, seg).tolist() == [
        google_crc32c.value(c) for c in chunks]
    assert f.crc_segments_reference(data, starts, stops, f.CRC32_POLY, seg).tolist() == [
        zlib.crc32(c) for c in chunks]
    assert f.adler32_segments_reference(data, starts, stops, seg).tolist() == [
        zlib.adler32(c) for c in chunks]


def test_segment_table_covers_every_byte_once() -> None:
    starts, stops = np.array([10, 100, 100]), np.array([95, 100, 109])
    chunk, start, length, after = f.segment_table(starts, stops, 8)
    covered = np.concatenate([np.arange(s, s + n) for s, n in zip(start, length, strict=False)])
    expected = np.concatenate([np.arange(a, b) for a, b in zip(starts, stops, strict=False)])
    assert np.array_equal(covered, expected)
    assert np.array_equal(start + length + after, stops[chunk])


def test_crc_shift_is_zlib_combine() -> None:
    a, b = _raw(1, 1000), _raw(2, 333)
    assert f.crc_shift(zlib.crc32(a), len(b), f.CRC32_POLY) ^ zlib.crc32(b) == zlib.crc32(a + b)


# ------------------------------------------------------------------------ scatter reference

def _projections(selection: tuple[slice, ...], shape: tuple[int, ...],
                 chunks: tuple[int, ...]):
    """Per-chunk (chunk coords, chunk selection, out selection) for slices with steps."""
    per_dim = []
    for s, n, c in zip(selection, shape, chunks, strict=True):
        idx = np.arange(n)[s]
        entries = []
        for cid in np.unique(idx // c):
            pos = np.flatnonzero(idx // c == cid)
            local = idx[pos] - cid * c
            entries.append((int(cid), slice(int(local[0]), int(local[-1]) + 1, s.step or 1),
                            slice(int(pos[0]), int(pos[-1]) + 1)))
        per_dim.append(entries)
    for combo in itertools.product(*per_dim):
        yield tuple(e[0] for e in combo), tuple(e[1] for e in combo), tuple(e[2] for e in combo)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_scatter_reference_matches_numpy(data) -> None:
    ndim = data.draw(st.integers(1, 4))
    shape = tuple(data.draw(st.lists(st.integers(1, 9), min_size=ndim, max_size=ndim)))
    chunks = tuple(data.draw(st.integers(1, n + 2)) for n in shape)
    sel = tuple(slice(data.draw(st.integers(0, n - 1)), data.draw(st.integers(0, n)),
                      data.draw(st.integers(1, 3))) for n in shape)
    dtype = data.draw(st.sampled_from(["u1", "<i2", ">f4", "<c16", "?"]))
    a = np.random.default_rng(0).integers(0, 100, shape).astype(dtype)
    grid = [range(-(-n // c)) for n, c in zip(shape, chunks, strict=False)]
    coords = list(itertools.product(*grid))
    decoded = np.zeros((len(coords), int(np.prod(chunks)) * a.dtype.itemsize), np.uint8)
    for r, cc in enumerate(coords):  # zarr stores edge chunks at full shape
        block = np.zeros(chunks, a.dtype)
        src = a[tuple(slice(i * c, (i + 1) * c) for i, c in zip(cc, chunks, strict=False))]
        block[tuple(slice(0, m) for m in src.shape)] = src
        decoded[r] = block.reshape(-1).view(np.uint8)
    expected = a[sel]
    proj = list(_projections(sel, shape, chunks))
    rows = np.array([coords.index(cc) for cc, _, _ in proj], np.int64)
    plan = scatter_plan(rows, [p[1] for p in proj], [p[2] for p in proj], chunks, expected.shape)
    assert plan is not None
    out = np.zeros(expected.shape, a.dtype)
    _scatter_reference(out, decoded, plan)
    assert np.array_equal(out, expected)


def test_scatter_reference_strided_output_and_f_order_chunks() -> None:
    a = np.arange(6 * 8, dtype="<i4").reshape(6, 8)
    chunks = (3, 4)
    coords = list(itertools.product(range(2), range(2)))
    decoded = np.stack([np.asfortranarray(a[i * 3:(i + 1) * 3, j * 4:(j + 1) * 4]).ravel(
        order="F").view(np.uint8) for i, j in coords])
    big = np.full((6, 16), -1, "<i4")
    out = big[:, ::2]  # a strided view: the scatter writes through its strides
    proj = list(_projections((slice(0, 6), slice(0, 8)), a.shape, chunks))
    rows = np.array([coords.index(cc) for cc, _, _ in proj], np.int64)
    plan = scatter_plan(rows, [p[1] for p in proj], [p[2] for p in proj], chunks, out.shape)
    assert plan is not None
    _scatter_reference(out, decoded, plan, chunk_strides=(1, 3))  # F order of (3, 4)
    assert np.array_equal(out, a) and (big[:, 1::2] == -1).all()
