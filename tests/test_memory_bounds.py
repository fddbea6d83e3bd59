"""Memory is bounded by the budget, not by what a header claims (issue 19, item 3).

Allocations whose size follows a count found in the data (the audit: docs/architecture.md,
"Memory and counts in the data"). The Blosc plan: a valid frame may hold a block per byte of data
(``blosc_cases.raw_frame``), and the plan holds a few hundred bytes per block: planned whole,
16 MiB of 1-byte blocks took 4 GiB. The plan of a batch now holds at most
``memory_budget // PLAN_SHARE`` bytes: a batch over it is planned in parts, and a chunk whose
plan alone would exceed it is decoded by c-blosc (as zarr does). The GPU twin of these tests is
``tests_gpu/test_blosc_gpu.py::test_gpu_blosc_plan_stays_within_the_budget``.

Decoded sizes (``decode/_bounded.py``): no step decodes to more than the chain takes, whether a
header claims more (refused before numcodecs allocates it) or the stream declares no size (gzip,
zlib, zstd without a content size: decoding stops one byte past the bound); the valid chains
and unusual valid streams below still decode as zarr decodes them. The GPU twin is
``tests_gpu/test_decode_fallbacks_gpu.py::test_a_bomb_left_to_the_host_stops_at_the_chunk_s_size``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
from blosc_cases import raw_frame

import gds_zarr
from gds_zarr._batch import BatchRead
from gds_zarr.decode import _blosc_native
from gds_zarr.decode._base import BytesStep
from gds_zarr.decode._cpu import CpuDecoder
from gds_zarr.decode.formats import numpy_reader

STEP = BytesStep("blosc", numcodecs.Blosc(), "blosc")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["native", "python"])
def twin(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The C row decoder, or the plan in Python (as where the C library is not built)."""
    if request.param == "native" and _blosc_native.library() is None:
        pytest.skip("gds_zarr's C kernels are not built here")
    if request.param == "python":
        monkeypatch.setattr(_blosc_native, "library", lambda: None)
    return str(request.param)


def _batch(chunks: list[bytes]) -> BatchRead:
    data = np.frombuffer(b"".join(chunks), np.uint8).copy()
    sizes = np.array([len(c) for c in chunks], np.int64)
    return BatchRead(data, np.cumsum(sizes) - sizes, sizes, np.ones(len(chunks), bool))


def _tiny_batch(nbytes: int = 1 << 16) -> tuple[list[bytes], list[np.ndarray]]:
    """Eight chunks of 64-byte blocks (1024 blocks each), one of 1-byte blocks between them."""
    rng = np.random.default_rng(0)
    raws = [rng.integers(0, 256, nbytes, dtype=np.uint8) for _ in range(9)]
    chunks = [raw_frame(r, 1 if j == 4 else 64) for j, r in enumerate(raws)]
    return chunks, raws


def test_tiny_blocks_decode_as_c_blosc_does() -> None:
    """The hand-made frames are valid: c-blosc decodes them."""
    chunks, raws = _tiny_batch(4096)
    for c, r in zip(chunks, raws, strict=True):
        assert np.array_equal(np.frombuffer(numcodecs.Blosc().decode(c), np.uint8), r)
    raw = np.random.default_rng(1).integers(0, 256, 4 * 2048 + 5, dtype=np.uint8)
    split = raw_frame(raw, 2048, typesize=16, split=True)
    assert np.array_equal(np.frombuffer(numcodecs.Blosc().decode(split), np.uint8), raw)


def test_plan_parts_stay_within_the_limit() -> None:
    """Parts tile the batch, each plan's rows cost at most the limit, a row over it alone is a
    fallback row without blocks, and the parts' streams are the whole plan's."""
    from gds_zarr.planning.blosc import (
        PLAN_BLOCK_BYTES,
        PLAN_STREAM_BYTES,
        plan_blosc,
        plan_parts,
    )

    chunks, _ = _tiny_batch()
    src = _batch(chunks)
    starts, stops = src.offsets, src.offsets + src.sizes
    keys = [f"c/{j}" for j in range(9)]
    row = 1024 * (PLAN_BLOCK_BYTES + PLAN_STREAM_BYTES)  # a 64-byte-block row's cost
    limit = 2 * row + 1
    reader = numpy_reader(src.data)
    whole = plan_blosc(reader, starts, stops, 1 << 16, keys)
    assert not whole.fallback.any()
    parts = list(plan_parts(reader, starts, stops, 1 << 16, keys, limit))
    assert [(lo, hi) for lo, hi, _ in parts] == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 9)]
    for lo, hi, plan in parts:
        assert len(plan.codec) == hi - lo
        assert plan.fallback.tolist() == [lo + j == 4 for j in range(hi - lo)]
        assert np.diff(plan.block_bounds).tolist() == [0 if lo + j == 4 else 1024
                                                      for j in range(hi - lo)]
        assert len(plan.block_row) * PLAN_BLOCK_BYTES + len(
            plan.stream_row) * PLAN_STREAM_BYTES <= limit
    kept = ~np.isin(whole.stream_row, [4])
    for name in ("stream_src", "stream_size", "stream_dst", "stream_codec"):
        assert np.array_equal(np.concatenate([getattr(p, name) for _, _, p in parts]),
                              getattr(whole, name)[kept])
    assert plan_blosc(reader, starts, stops, 1 << 16, keys, limit=limit).fallback.tolist() == [
        j == 4 for j in range(9)]
    # None: one part, as plan_blosc
    (lo, hi, one), = plan_parts(reader, starts, stops, 1 << 16, keys, None)
    assert (lo, hi) == (0, 9) and np.array_equal(one.stream_src, whole.stream_src)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_decoder_holds_its_plan_within_the_budget(twin: str, threads: int) -> None:
    """memory_budget 4 MiB: the plan may hold 1 MiB. Planned whole, the batch's plan held
    ~18 MiB (the 1-byte-block chunk alone 16 MiB); in parts, the traced peak stays near the
    limit, and every chunk decodes to its bytes."""
    chunks, raws = _tiny_batch()
    src = _batch(chunks)
    keys = [f"c/{j}" for j in range(9)]
    got: dict[int, bytes] = {}
    decoder = CpuDecoder(threads, blosc_plan=True)
    with gds_zarr.settings.set(memory_budget="4MiB"):
        decoder.decode_each([STEP], src, np.arange(9), 1 << 16, keys, lambda j, r: None)  # warm
        tracemalloc.start()
        try:
            decoder.decode_each([STEP], src, np.arange(9), 1 << 16, keys,
                                lambda j, row: got.__setitem__(j, row.tobytes()))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert [got[j] for j in range(9)] == [r.tobytes() for r in raws]
    assert peak < (3 << 20) // 2, peak  # 1 MiB of plan, the rows, and the decoded copies


_CHILD = textwrap.dedent("""
    import json, sys, time
    import numpy as np, zarr
    path, how = sys.argv[1], sys.argv[2]
    if how == "gds_zarr":
        import gds_zarr
        from gds_zarr.store import GDSStore
        gds_zarr.enable(device="cpu", memory_budget="64MiB")
        store = GDSStore(path)
    else:
        from zarr.storage import LocalStore
        store = LocalStore(path, read_only=True)
    a = zarr.open_array(store, mode="r")
    t = time.perf_counter()
    x = a[...]
    seconds = time.perf_counter() - t
    # VmHWM: this process image's own peak (ru_maxrss may carry the parent's over the exec)
    status = open("/proc/self/status").read().split("VmHWM:")[1]
    peak = int(status.split()[0]) * 1024
    print(json.dumps({"seconds": seconds, "peak": peak, "head": x[:64].tolist()}))
""")


def _read_in_child(path: str, how: str) -> dict[str, Any]:
    got = subprocess.run([sys.executable, "-c", _CHILD, path, how], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert got.returncode == 0, got.stderr[-3000:]
    out: dict[str, Any] = json.loads(got.stdout.strip().splitlines()[-1])
    return out


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux's /proc")
def test_a_tiny_block_frame_reads_within_zarr_s_memory_and_time(tmp_path: Path) -> None:
    """One 2 MiB chunk of 1-byte blocks (18 MiB encoded), memory_budget 64 MiB, each read in
    a child process of its own: gds_zarr's peak RSS within 2x zarr's, its time within 5x.
    Planned whole it took ~650 MiB against zarr's ~100 MiB (16 MiB of it: 4 GiB, 13 s)."""
    import zarr

    nbytes = 2 << 20
    raw = np.random.default_rng(0).integers(0, 256, nbytes, dtype=np.uint8)
    path = str(tmp_path / "tiny.zarr")
    zarr.create_array(path, shape=(nbytes,), chunks=(nbytes,), dtype="u1", zarr_format=2,
                      compressors=numcodecs.Blosc(), fill_value=0)
    (tmp_path / "tiny.zarr" / "0").write_bytes(raw_frame(raw, 1))
    ref = _read_in_child(path, "zarr")
    ours = _read_in_child(path, "gds_zarr")
    assert ours["head"] == ref["head"] == raw[:64].tolist()
    assert ours["peak"] <= 2 * ref["peak"], (ours, ref)
    assert ours["seconds"] <= 5 * ref["seconds"] + 0.5, (ours, ref)  # + a busy machine's noise


# ------------------------------------------------------------------- other counts in the data

def _traced_peak(call: Any) -> int:
    tracemalloc.start()
    try:
        call()
        return int(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()


def test_gzip_name_scans_stay_small_whatever_the_flags() -> None:
    """Every chunk of a batch may set FNAME: the scan for its end (up to 4 KiB per chunk) runs
    a few chunks per gather. Scanned all at once, 2000 chunks of 31 bytes took 133 MiB."""
    import gzip
    import io

    from gds_zarr.decode.formats import check_gzip

    buf = io.BytesIO()
    with gzip.GzipFile(filename="n", mode="wb", fileobj=buf, mtime=0) as f:
        f.write(bytes(1024))
    member = buf.getvalue()
    n = 2000
    data = np.frombuffer(member * n, np.uint8)
    starts = np.arange(n, dtype=np.int64) * len(member)
    keys = [f"c/{i}" for i in range(n)]
    got: list[Any] = []
    peak = _traced_peak(lambda: got.append(check_gzip(numpy_reader(data), starts,
                                                      starts + len(member), 1024, keys)))
    assert (got[0].deflate_starts - starts).tolist() == [12] * n  # 10 + "n\0"
    assert not got[0].cpu_only.any()
    assert peak < 8 << 20, peak


def test_large_shard_indexes_are_copied_not_gathered() -> None:
    """Two indexes of 2^20 entries (16 MiB each): parsing holds about twice their bytes. A
    gather of every byte made int64 positions 8x their size (416 MiB in all)."""
    from gds_zarr.planning.shards import ShardLayout, parse_indexes

    n_inner = 1 << 20
    layout = ShardLayout((1,), (n_inner,), "end", True)
    table = np.empty((n_inner, 2), "<u8")
    table[:, 0] = np.arange(n_inner) * 4 + layout.index_nbytes
    table[:, 1] = 4
    index = bytes(numcodecs.CRC32C(location="end").encode(table.tobytes()))
    src = _batch([index, index])
    got: list[Any] = []
    peak = _traced_peak(lambda: got.append(parse_indexes(src, ["s/0", "s/1"], layout)))
    offsets, nbytes, empty = got[0]
    assert (offsets[1] == table[:, 0]).all() and (nbytes[0] == 4).all() and not empty.any()
    assert peak < 5 * len(index), peak


# ------------------------------------------------- decoded sizes: claimed, or not said at all

def _read_fails(path: Path, match: str | None = None) -> int:
    """Read the array through gds_zarr (CPU, 64 MiB budget), expecting a ChunkDecodeError
    (``match``: in its message); the traced peak of the read."""
    import zarr

    from gds_zarr.errors import ChunkDecodeError
    from gds_zarr.store import GDSStore

    def read() -> None:
        with gds_zarr.enable(device="cpu", memory_budget="64MiB"), pytest.raises(
                ChunkDecodeError, match=match):
            zarr.open_array(GDSStore(str(path)), mode="r")[...]

    return _traced_peak(read)


def _zstd_frame(data: bytes = b"", *, zeros: int = 0) -> bytes:
    """A zstd frame without a Frame_Content_Size (as streaming encoders write them), made by
    hand: a 128 KiB window, then ``data`` in raw blocks, or ``zeros`` zero bytes in RLE blocks
    (4 bytes per 128 KiB, so 128 MiB in 4 KiB)."""
    block = 128 << 10
    parts = [b"\x28\xb5\x2f\xfd", bytes([0x00, (17 - 10) << 3])]  # FHD 0, window 2^17

    def header(size: int, kind: int, last: bool) -> bytes:
        return ((size << 3) | (kind << 1) | int(last)).to_bytes(3, "little")

    if zeros:
        sizes = [min(block, zeros - o) for o in range(0, zeros, block)]
        parts += [header(n, 1, k == len(sizes) - 1) + b"\x00" for k, n in enumerate(sizes)]
    else:
        pieces = [data[o: o + block] for o in range(0, len(data), block)] or [b""]
        parts += [header(len(b), 0, k == len(pieces) - 1) + b for k, b in enumerate(pieces)]
    return b"".join(parts)


def test_hand_made_zstd_frames_decode_as_numcodecs_does() -> None:
    """The frames of :func:`_zstd_frame` are valid: numcodecs (libzstd) decodes them, and they
    declare no content size."""
    from gds_zarr.decode._cpu import _zstd_content_size

    raw = np.random.default_rng(2).integers(0, 256, 300_000, np.uint8).tobytes()
    assert bytes(numcodecs.Zstd().decode(_zstd_frame(raw))) == raw
    assert bytes(numcodecs.Zstd().decode(_zstd_frame(zeros=300_000))) == bytes(300_000)
    assert _zstd_content_size(np.frombuffer(_zstd_frame(raw), np.uint8)) is None


@pytest.mark.parametrize("codec", ["blosc", "zstd", "lz4"])
def test_a_compressor_before_a_filter_is_held_to_what_the_filter_takes(tmp_path: Path,
                                                                       codec: str) -> None:
    """zarr v2, compressor then Delta: the compressor is not the last decode step. A header
    claiming 256 MiB (Blosc nbytes, Zstd content size, LZ4's size prefix) for a 4 KiB chunk is
    refused before numcodecs allocates it: Delta takes exactly 4096 bytes. Only the last step's
    claim was checked: numcodecs allocated 256 MiB past a 64 MiB budget (zarr does too)."""
    import struct

    import zarr

    path = tmp_path / "f.zarr"
    compressor = {"blosc": numcodecs.Blosc(), "zstd": numcodecs.Zstd(),
                  "lz4": numcodecs.LZ4()}[codec]
    zarr.create_array(str(path), shape=(1024,), chunks=(1024,), dtype="<f4", zarr_format=2,
                      filters=[numcodecs.Delta("<f4")], compressors=compressor,
                      fill_value=0)[...] = np.arange(1024, dtype="<f4")
    chunk = (path / "0").read_bytes()
    if codec == "blosc":  # nbytes
        chunk = chunk[:4] + struct.pack("<i", 256 << 20) + chunk[8:]
    elif codec == "lz4":  # the size prefix
        chunk = struct.pack("<i", 256 << 20) + chunk[4:]
    else:  # a 4-byte Frame_Content_Size, single segment, in place of zarr's 2-byte one
        assert chunk[4] == 0x60
        chunk = chunk[:4] + bytes([0xA0]) + struct.pack("<I", 256 << 20) + chunk[7:]
    (path / "0").write_bytes(chunk)
    assert _read_fails(path, "declares 268435456 decoded bytes, more than the 4096") < 64 << 20


@pytest.mark.parametrize("codec", ["gzip", "zlib"])
@pytest.mark.parametrize("filtered", [False, True], ids=["alone", "before-delta"])
def test_a_deflate_bomb_stops_at_the_chunk_s_size(tmp_path: Path, codec: str,
                                                  filtered: bool) -> None:
    """A 4 KiB chunk replaced by 128 MiB of zeros deflated (~0.5 MiB): inflating stops one byte
    past what the chain takes. Alone, the native kernel stops at the row's end and numcodecs
    inflated all of it again (~270 MiB traced) before the size check; before a filter,
    numcodecs inflated it at once. zarr inflates it whole."""
    import gzip
    import zlib

    import zarr

    path = tmp_path / "b.zarr"
    compressor = numcodecs.GZip() if codec == "gzip" else numcodecs.Zlib()
    zarr.create_array(str(path), shape=(1024,), chunks=(1024,), dtype="<f4", zarr_format=2,
                      compressors=compressor, filters=[numcodecs.Delta("<f4")] if filtered
                      else None, fill_value=0)[...] = np.arange(1024, dtype="<f4")
    zeros = bytes(128 << 20)
    (path / "0").write_bytes(gzip.compress(zeros, 1) if codec == "gzip"
                             else zlib.compress(zeros, 1))
    del zeros
    match = "more than the 4096 bytes" if filtered else "expected 4096 decoded bytes, found more"
    assert _read_fails(path, match) < 64 << 20


@pytest.mark.parametrize("how", ["v3", "v2", "v2-before-delta"])
def test_a_zstd_frame_without_a_content_size_stops_at_the_chunk_s_size(tmp_path: Path,
                                                                       how: str) -> None:
    """A 4 KiB frame of RLE blocks without a content size, decoding to 128 MiB of zeros: libzstd
    decodes into what the chain takes and stops there. numcodecs streams such a frame into a
    buffer it grows without bound (128 MiB, then a copy), for the row the native kernel
    refused and before a filter alike."""
    import zarr

    path = tmp_path / "z.zarr"
    if how == "v3":
        zarr.create_array(str(path), shape=(1024,), chunks=(1024,), dtype="<f4",
                          compressors=zarr.codecs.ZstdCodec(), fill_value=0)[...] = 1
        key = path / "c" / "0"
    else:
        zarr.create_array(str(path), shape=(1024,), chunks=(1024,), dtype="<f4", zarr_format=2,
                          compressors=numcodecs.Zstd(), fill_value=0,
                          filters=[numcodecs.Delta("<f4")] if how == "v2-before-delta"
                          else None)[...] = 1
        key = path / "0"
    key.write_bytes(_zstd_frame(zeros=128 << 20))
    match = "more than the 4096 bytes" if how == "v2-before-delta" else (
        "expected 4096 decoded bytes, found more")
    assert _read_fails(path, match) < 64 << 20


# ---------------------------------------------------------- every valid chain still decodes

def _gds_and_zarr(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import zarr

    from gds_zarr.store import GDSStore

    with gds_zarr.enable(device="cpu"):
        ours = zarr.open_array(GDSStore(str(path)), mode="r")[...]
    return ours, zarr.open_array(str(path), mode="r")[...]


_FILTERS: dict[str, Any] = {
    "delta-astype": [numcodecs.Delta("<i4", astype="<i2")],
    "fixedscaleoffset": [numcodecs.FixedScaleOffset(offset=100, scale=10, dtype="<f8",
                                                    astype="<u2")],
    "astype": [numcodecs.AsType(encode_dtype="<f4", decode_dtype="<f8")],
    "quantize": [numcodecs.Quantize(digits=2, dtype="<f8", astype="<f4")],
    "bitround": [numcodecs.BitRound(keepbits=10)],
    "shuffle+delta": [numcodecs.Delta("<f8"), numcodecs.Shuffle(elementsize=8)],
}


@pytest.mark.parametrize("compressor", ["zstd", "gzip", "zlib", "blosc", "lz4"])
@pytest.mark.parametrize("filters", list(_FILTERS))
def test_v2_filter_chains_decode_as_zarr_does(tmp_path: Path, compressor: str,
                                              filters: str) -> None:
    """The bound of a compressor before filters is exactly what they take, items of another
    size (astype) included: every chain decodes as zarr decodes it, edge chunks too."""
    import zarr

    dtype = "<i4" if filters == "delta-astype" else ("<f4" if filters == "bitround" else "<f8")
    data = (np.arange(700) % 97 + 0.25).astype(dtype)
    codec = {"zstd": numcodecs.Zstd(), "gzip": numcodecs.GZip(), "zlib": numcodecs.Zlib(),
             "blosc": numcodecs.Blosc(), "lz4": numcodecs.LZ4()}[compressor]
    path = tmp_path / "v.zarr"
    zarr.create_array(str(path), shape=data.shape, chunks=(256,), dtype=dtype, zarr_format=2,
                      filters=_FILTERS[filters], compressors=codec, fill_value=0)[...] = data
    ours, ref = _gds_and_zarr(path)
    np.testing.assert_array_equal(ours, ref)


def test_unusual_valid_streams_decode_as_zarr_does(tmp_path: Path) -> None:
    """Valid chunks no zarr encoder writes, each as zarr decodes it: a zstd frame without a
    content size (alone and before Delta), gzip of two members and zero padding, zlib with
    bytes after its stream."""
    import gzip
    import zlib

    import zarr

    data = np.arange(1024, dtype="<i4")
    raw = data.tobytes()
    deltas = numcodecs.Delta("<i4").encode(data).tobytes()
    cases = {  # name: (compressor, filters, chunk)
        "zstd": (numcodecs.Zstd(), None, _zstd_frame(raw)),
        "zstd-delta": (numcodecs.Zstd(), [numcodecs.Delta("<i4")], _zstd_frame(deltas)),
        "gzip": (numcodecs.GZip(), None, gzip.compress(raw[:1000]) + gzip.compress(raw[1000:])
                 + bytes(5)),
        "gzip-delta": (numcodecs.GZip(), [numcodecs.Delta("<i4")],
                       gzip.compress(deltas[:7]) + gzip.compress(deltas[7:])),
        "zlib": (numcodecs.Zlib(), None, zlib.compress(raw) + b"trailing"),
        "zlib-delta": (numcodecs.Zlib(), [numcodecs.Delta("<i4")],
                       zlib.compress(deltas) + b"x"),
    }
    for name, (codec, filters, chunk) in cases.items():
        path = tmp_path / f"{name}.zarr"
        zarr.create_array(str(path), shape=(1024,), chunks=(1024,), dtype="<i4", zarr_format=2,
                          filters=filters, compressors=codec, fill_value=0)[...] = data
        (path / "0").write_bytes(chunk)
        ours, ref = _gds_and_zarr(path)
        np.testing.assert_array_equal(ref, data, err_msg=name)
        np.testing.assert_array_equal(ours, data, err_msg=name)


@pytest.mark.parametrize("compressors", [["blosc", "zstd"], ["zstd", "gzip"], ["lz4", "zstd"]])
def test_two_compressors_decode_as_zarr_does(tmp_path: Path, compressors: list[str]) -> None:
    """Two compressors (zarr v3): the first decode step's output is the second's frame, whose
    size the chain does not fix; the generous bound (16x plus 64 KiB) refuses none."""
    import zarr
    from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec
    from zarr.codecs.numcodecs import LZ4

    made = {"blosc": BloscCodec(), "zstd": ZstdCodec(), "gzip": GzipCodec(), "lz4": LZ4()}
    data = np.random.default_rng(3).integers(0, 1000, 5000).astype("<i8")
    path = tmp_path / "two.zarr"
    zarr.create_array(str(path), shape=data.shape, chunks=(2048,), dtype="<i8",
                      compressors=[made[c] for c in compressors], fill_value=0)[...] = data
    ours, ref = _gds_and_zarr(path)
    np.testing.assert_array_equal(ref, data)
    np.testing.assert_array_equal(ours, data)


def test_output_bounds_follow_the_chain() -> None:
    """Exact through crc32c and the item filters, generous before a compressor."""
    from gds_zarr.decode._bounded import GENEROUS_FACTOR, GENEROUS_SLACK, output_bounds

    def s(kind: str, codec: Any) -> BytesStep:
        return BytesStep(kind, codec, str(kind))  # type: ignore[arg-type]

    zstd, crc = s("zstd", numcodecs.Zstd()), s("crc32c", numcodecs.CRC32C())
    assert output_bounds([zstd], 4096) == [4096]
    assert output_bounds([crc, zstd], 4096) == [4096 * GENEROUS_FACTOR + GENEROUS_SLACK, 4096]
    assert output_bounds([zstd, crc], 4096) == [4100, 4096]
    delta = s("numcodecs", numcodecs.Delta("<f8", astype="<i2"))
    shuffle = s("numcodecs", numcodecs.Shuffle(elementsize=8))
    assert output_bounds([zstd, shuffle, delta], 800) == [200, 200, 800]
    astype = s("numcodecs", numcodecs.AsType(encode_dtype="<f4", decode_dtype="<f8"))
    assert output_bounds([zstd, astype], 804) == [404, 804]  # a partial item rounds up



def _stream_cases(kind: str) -> dict[str, bytes]:
    """Valid and invalid streams around a 4096-byte payload, for :func:`_bounded` parity."""
    import gzip
    import zlib

    raw = np.arange(1024, dtype="<i4").tobytes()
    if kind == "gzip":
        g = gzip.compress(raw)
        return {"one": g, "two-members": gzip.compress(raw[:9]) + gzip.compress(raw[9:]),
                "padding": g + bytes(9), "garbage": g + b"x", "padding-garbage": g + b"\0\0x",
                "twice": g + g, "truncated": g[:-3], "half-member-after": g + g[:6],
                "empty": b"", "zeros": bytes(20), "short": gzip.compress(raw[:4000]),
                "bomb": gzip.compress(bytes(1 << 20))}
    if kind == "zlib":
        z = zlib.compress(raw)
        return {"one": z, "trailing": z + b"abc", "twice": z + z, "truncated": z[:-2],
                "empty": b"", "short": zlib.compress(raw[:4000]),
                "bomb": zlib.compress(bytes(1 << 20)), "raw-deflate": z[2:-4]}
    f = _zstd_frame(raw)
    return {"no-size": f, "two-frames": _zstd_frame(raw[:100]) + _zstd_frame(raw[100:]),
            "sized": bytes(numcodecs.Zstd().encode(raw)), "trailing": f + b"ab",
            "truncated": f[:-5], "empty": b"", "short": _zstd_frame(raw[:4000]),
            "bomb": _zstd_frame(zeros=1 << 20), "skippable-after": f + b"\x50\x2a\x4d\x18"
            + (3).to_bytes(4, "little") + b"xyz"}


@pytest.mark.parametrize("kind", ["gzip", "zlib", "zstd"])
@pytest.mark.parametrize("into", [False, True], ids=["new", "into-row"])
def test_bounded_decodes_accept_what_numcodecs_accepts(kind: str, into: bool) -> None:
    """On every stream: the same bytes as numcodecs where it decodes to at most 4096 bytes,
    None where it decodes to more, an error where it fails."""
    from gds_zarr.decode._bounded import decoder_for

    codec = {"gzip": numcodecs.GZip(), "zlib": numcodecs.Zlib(), "zstd": numcodecs.Zstd()}[kind]
    bounded = decoder_for(BytesStep(kind, codec, kind))  # type: ignore[arg-type]
    assert bounded is not None
    for name, stream in _stream_cases(kind).items():
        try:
            ref: bytes | None = bytes(codec.decode(stream))
        except Exception:  # noqa: BLE001 - numcodecs' verdict, compared below
            ref = None
        buf = np.frombuffer(stream, np.uint8)
        out = np.full(4096, 7, np.uint8) if into else None
        try:
            got = bounded(buf, 4096, out)
        except Exception as e:  # noqa: BLE001
            assert ref is None, (name, e)
            continue
        assert ref is not None, name
        if len(ref) > 4096:
            assert got is None, name
        else:
            assert got is not None and bytes(got) == ref, name
            assert out is None or not ref or np.shares_memory(np.asarray(got), out), name
