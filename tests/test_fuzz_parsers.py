"""Property tests (bounded hypothesis budgets) over the parsers that see untrusted bytes.

* range planning (``plan_reads``) with extreme offsets: a correct plan or ``ValueError``;
* the shard index parser: a valid table or ``ShardIndexError``, never an entry that overflows;
* the frame header checks (``decode/formats.py``): ``ChunkDecodeError`` or a payload, never
  another exception, and never a rejection of a frame numcodecs decodes to the expected size;
* random corruptions of real chunks through the CPU decoder: the right bytes or
  ``ChunkDecodeError``, never another exception type, never a crash.

The same targets run under atheris (coverage-guided, unbounded) from ``fuzz/``.
"""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import numcodecs
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gds_zarr._batch import BatchRead
from gds_zarr.decode import formats
from gds_zarr.decode._base import BytesStep
from gds_zarr.decode._cpu import CpuDecoder
from gds_zarr.errors import ChunkDecodeError, ShardIndexError
from gds_zarr.planning.ranges import plan_reads
from gds_zarr.planning.shards import ShardLayout, parse_indexes

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
BIG = 1 << 62

# ------------------------------------------------------------------------------ plan_reads


@st.composite
def extreme_requests(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    n = draw(st.integers(1, 12))
    files = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    base = draw(st.sampled_from([0, 1 << 40, BIG - (1 << 20), BIG]))
    starts = [base - draw(st.integers(0, 1 << 20)) if base else draw(st.integers(0, 4096))
              for _ in range(n)]
    lengths = draw(st.lists(st.integers(0, 1 << 16), min_size=n, max_size=n))
    gap = draw(st.sampled_from([0, 64, 1 << 16, BIG, (1 << 63) - 1]))
    size = draw(st.sampled_from([1, 4096, 1 << 24, BIG, (1 << 63) - 1]))
    s = np.array(starts, dtype=np.int64)
    return np.array(files, np.int64), s, s + np.array(lengths, np.int64), gap, size


@FUZZ
@given(extreme_requests())
def test_plan_reads_is_correct_or_refuses(req: Any) -> None:
    files, starts, stops, gap, size = req
    try:
        plan = plan_reads(files, starts, stops, max_gap=gap, max_size=size)
    except ValueError:
        return
    rf, ro, rs, rd = plan.read_file, plan.read_offset, plan.read_size, plan.read_dest
    assert (rs > 0).all() and (ro >= 0).all()
    assert plan.total_size == int(rs.sum())
    assert (np.diff(rd) == rs[:-1]).all() and (len(rd) == 0 or rd[0] == 0)
    for i in np.flatnonzero(stops > starts).tolist():
        # Request i lies inside one read of its file, at the right place in the staging buffer.
        hit = (rf == files[i]) & (ro <= starts[i]) & (stops[i] <= ro + rs)
        assert hit.any(), (i, files[i], starts[i], stops[i])
        dest = rd[hit] + (starts[i] - ro[hit])
        assert plan.request_dest[i] in dest.tolist()
        assert 0 <= plan.request_dest[i] <= plan.total_size - (stops[i] - starts[i])


# ------------------------------------------------------------------------------ shard index

LAYOUTS = [ShardLayout((4,), (n,), loc, crc) for n in (1, 4) for loc in ("start", "end")
           for crc in (False, True)]


@FUZZ
@given(st.sampled_from(LAYOUTS), st.binary(min_size=0, max_size=80), st.booleans(),
       st.data())
def test_shard_index_parser_is_valid_or_raises(layout: ShardLayout, raw: bytes, present: bool,
                                               data: st.DataObject) -> None:
    if data.draw(st.booleans()) and len(raw) >= layout.index_nbytes:
        raw = raw[: layout.index_nbytes]  # exactly the size: reaches the entry checks
    if layout.index_crc32c and data.draw(st.booleans()) and len(raw) == layout.index_nbytes:
        import google_crc32c

        table = raw[:-4]
        raw = table + google_crc32c.value(table).to_bytes(4, "little")  # a valid checksum
    buf = np.frombuffer(b"\xaa" * 3 + raw, np.uint8)  # not at offset 0 of the buffer
    batch = BatchRead(buf, np.array([3]), np.array([len(raw) if present else 0]),
                      np.array([present]))
    try:
        offsets, nbytes, empty = parse_indexes(batch, ["s/0"], layout)
    except ShardIndexError as e:
        assert e.key == "s/0"
        return
    n = int(np.prod(layout.chunks_per_shard))
    assert offsets.shape == nbytes.shape == empty.shape == (1, n)
    used = ~empty
    assert (offsets[used].astype(object) + nbytes[used].astype(object) < 2**64).all()
    assert (nbytes[used] <= np.uint64(1 << 62)).all()
    if not present:
        assert empty.all()


# ------------------------------------------------------------------------------ frame checks

EXPECTED = 4096
RAW = (np.cumsum(np.random.default_rng(0).normal(size=EXPECTED // 4))).astype("<f4").tobytes()
FRAMES = {
    "zstd": numcodecs.Zstd(level=1).encode(RAW),
    "zstd-checksum": numcodecs.Zstd(level=1, checksum=True).encode(RAW),
    "gzip": numcodecs.GZip(level=1).encode(RAW),
    "zlib": numcodecs.Zlib(level=1).encode(RAW),
    "lz4": numcodecs.LZ4().encode(RAW),
}
CHECKS = {"zstd": formats.check_zstd, "zstd-checksum": formats.check_zstd,
          "gzip": formats.check_gzip, "zlib": formats.check_zlib, "lz4": formats.check_lz4}
DECODE = {"zstd": numcodecs.Zstd().decode, "zstd-checksum": numcodecs.Zstd().decode,
          "gzip": numcodecs.GZip().decode, "zlib": numcodecs.Zlib().decode,
          "lz4": numcodecs.LZ4().decode}


@st.composite
def mutated(draw: st.DrawFn, frame: bytes) -> bytes:
    b = bytearray(frame)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "extend", "splice", "header"]))
        if op == "flip" and b:
            i = draw(st.integers(0, len(b) - 1))
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and b:
            b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
        elif op == "header" and b:  # the first bytes carry the sizes the checks trust
            b[draw(st.integers(0, min(len(b), 18) - 1))] = draw(st.integers(0, 255))
        elif op == "truncate":
            del b[draw(st.integers(0, len(b))):]
        elif op == "extend":
            b += draw(st.binary(min_size=1, max_size=16))
        elif op == "splice" and b:
            i = draw(st.integers(0, len(b)))
            b[i:i] = draw(st.binary(min_size=1, max_size=8))
    return bytes(b)


def _check(kind: str, chunk: bytes) -> formats.Payload:
    buf = np.frombuffer(b"\x00" * 5 + chunk + b"\xff" * 7, np.uint8)
    return CHECKS[kind](formats.numpy_reader(buf), np.array([5]), np.array([5 + len(chunk)]),
                        EXPECTED, ["c/0"])


def _decodes_exactly(kind: str, chunk: bytes) -> bool:
    try:
        return bytes(DECODE[kind](chunk)) == RAW
    except Exception:  # noqa: BLE001 - any failure: not a valid encoding of RAW
        return False


@pytest.mark.parametrize("kind", list(FRAMES))
def test_valid_frames_pass_their_check(kind: str) -> None:
    p = _check(kind, FRAMES[kind])
    assert not p.cpu_only.any()


@pytest.mark.parametrize("kind", list(FRAMES))
@FUZZ
@given(data=st.data())
def test_frame_checks_raise_only_decode_errors(kind: str, data: st.DataObject) -> None:
    chunk = data.draw(st.one_of(mutated(FRAMES[kind]), st.binary(max_size=64)))
    try:
        p = _check(kind, chunk)
    except ChunkDecodeError as e:
        assert e.key == "c/0"
        # No false alarm: what numcodecs decodes to exactly the chunk must not be refused.
        assert not _decodes_exactly(kind, chunk), (
            f"{kind} check refused a valid chunk: {e}")
        return
    assert len(p.starts) == len(p.stops) == len(p.cpu_only) == 1
    assert 5 <= p.starts[0] <= p.stops[0] <= 5 + len(chunk)


def test_gzip_multi_member_goes_to_the_cpu() -> None:
    # numcodecs decodes a multi-member gzip chunk; nvCOMP cannot, and ISIZE only covers the
    # last member, so the pre-check hands it to the CPU decoder instead of refusing it.
    chunk = gzip.compress(RAW[:1000]) + gzip.compress(RAW[1000:])
    assert _decodes_exactly("gzip", chunk)
    assert _check("gzip", chunk).cpu_only.tolist() == [True]


@FUZZ
@given(st.binary(max_size=40), st.integers(0, 8))
def test_crc32c_host_check_raises_only_decode_errors(payload: bytes, cut: int) -> None:
    chunk = numcodecs.CRC32C().encode(payload)
    bad = chunk[: max(0, len(chunk) - cut)]
    buf = np.frombuffer(bad, np.uint8)
    try:
        formats.check_crc32c_host(buf, np.array([0]), np.array([len(bad)]), ["c/0"])
    except ChunkDecodeError:
        assert cut > 0
        return
    assert cut == 0 or bad == chunk


# ------------------------------------------------------------------------------ CPU decoder

STEPS = {
    # Chains whose format carries a checksum of the decoded bytes: garbage is impossible.
    "zstd+crc32c": ([BytesStep("crc32c", numcodecs.CRC32C(), "crc32c"),
                     BytesStep("zstd", numcodecs.Zstd(), "zstd")], True),
    "zstd-checksum": ([BytesStep("zstd", numcodecs.Zstd(), "zstd")], True),
    "gzip": ([BytesStep("gzip", numcodecs.GZip(), "gzip")], True),
    "zlib": ([BytesStep("zlib", numcodecs.Zlib(), "zlib")], True),
    # Chains without one: a corruption may decode to other bytes of the right size.
    "zstd": ([BytesStep("zstd", numcodecs.Zstd(), "zstd")], False),
    "lz4": ([BytesStep("lz4", numcodecs.LZ4(), "numcodecs.lz4")], False),
    # c-blosc trusts its header: the CPU decoder checks it against the chunk's length first.
    "blosc": ([BytesStep("blosc", numcodecs.Blosc(cname="lz4", shuffle=numcodecs.Blosc.SHUFFLE),
                         "blosc")], False),
}


def _encode(name: str) -> bytes:
    steps, _ = STEPS[name]
    out = RAW
    for step in reversed(steps):
        if name == "zstd-checksum":
            return numcodecs.Zstd(level=1, checksum=True).encode(RAW)
        out = step.codec.encode(out)
    return bytes(out)


ENCODED = {name: _encode(name) for name in STEPS}


@pytest.mark.parametrize("name", list(STEPS))
@FUZZ
@given(data=st.data())
def test_cpu_decoder_gives_the_bytes_or_a_decode_error(name: str, data: st.DataObject) -> None:
    steps, checked = STEPS[name]
    good = ENCODED[name]
    bad = data.draw(mutated(good))
    # A batch of three: the corrupt chunk between two good ones, so over-reads would show.
    parts = [good, bad, good]
    sizes = np.array([len(p) for p in parts], np.int64)
    offsets = np.cumsum(sizes) - sizes
    src = BatchRead(np.frombuffer(b"".join(parts), np.uint8).copy(), offsets, sizes,
                    np.ones(3, bool))
    try:
        rows = CpuDecoder(threads=1).decode_batch(steps, src, np.arange(3), EXPECTED,
                                                  ["c/0", "c/1", "c/2"])
    except ChunkDecodeError as e:
        assert e.key == "c/1"
        return
    assert rows.shape == (3, EXPECTED)
    assert bytes(rows[0]) == RAW and bytes(rows[2]) == RAW
    if checked:
        assert bytes(rows[1]) == RAW, "a checksummed format decoded a corruption silently"


@FUZZ
@given(st.binary(max_size=64), st.sampled_from(list(STEPS)))
def test_cpu_decoder_on_random_bytes(blob: bytes, name: str) -> None:
    steps, _ = STEPS[name]
    assume(blob != ENCODED[name])
    src = BatchRead(np.frombuffer(blob, np.uint8).copy(), np.array([0]), np.array([len(blob)]),
                    np.ones(1, bool))
    try:
        rows = CpuDecoder(threads=1).decode_batch(steps, src, np.arange(1), EXPECTED, ["k"])
    except ChunkDecodeError as e:
        assert e.key == "k"
        return
    assert rows.shape == (1, EXPECTED)


def test_zlib_roundtrip_reference() -> None:
    # The zlib frames above are the real thing: what Python's zlib writes and reads.
    assert zlib.decompress(FRAMES["zlib"]) == RAW


def test_plan_reads_coalesces_near_the_offset_limit() -> None:
    # Found by the property above: ranges near 2**62 in several files used to overflow the
    # per-file shift, so two ranges 85 bytes apart in one file were no longer merged.
    b = (1 << 62) - 10
    plan = plan_reads(np.array([0, 1, 2, 3, 2]), np.array([b, b, b, b, b - 90]),
                      np.array([b + 5, b + 5, b + 5, b + 5, b - 85]), max_gap=100,
                      max_size=(1 << 63) - 1)
    assert plan.read_file.tolist() == [0, 1, 2, 3]
    assert plan.read_size.tolist() == [5, 5, 95, 5]
    with pytest.raises(ValueError, match="2\\*\\*62"):
        plan_reads(np.zeros(1), np.array([0]), np.array([(1 << 62) + 1]))


def test_holes_stay_within_max_gap_when_a_long_request_overlaps_a_split() -> None:
    # Found by tests/test_ranges.py's property: [0, 302) is longer than max_size and stands
    # alone; [1, 2) and [3, 4) used to share a read with a 1-byte hole although max_gap is 0.
    plan = plan_reads(np.zeros(3), np.array([0, 1, 3]), np.array([302, 2, 4]), max_gap=0,
                      max_size=301)
    assert sorted(zip(plan.read_offset.tolist(), plan.read_size.tolist(), strict=False)) == [
        (0, 302), (1, 1), (3, 1)]
