"""The GPU batch staging layout (gds_zarr/planning/staging.py), checked on the CPU.

The reads are replayed on numpy "files": every request must find its own bytes at its
destination after the widened, aligned reads, exactly as kvikio would land them on the device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from gds_zarr.planning.ranges import plan_reads
from gds_zarr.planning.staging import (
    DEFAULT_PAYLOAD,
    IOV_SEGMENTS,
    PAYLOADS,
    READ_ALIGN,
    Payload,
    ReadLayout,
    align_up,
    batch_staging_bytes,
    chain_payload,
    current_payload,
    input_layout,
    layout_reads,
    output_layout,
    reading_for,
    unit_staging_bytes,
)


def _replay(files: list[np.ndarray], fid: np.ndarray, lo: np.ndarray, hi: np.ndarray,
            max_gap: int, max_size: int, **placement: Any) -> ReadLayout:
    """Lay the requests out, carry out its reads on numpy "files" as kvikio (DMA reads) and
    ``preadv`` (host calls) would, and check every request finds its bytes."""
    plan = plan_reads(fid, lo, hi, max_gap=max_gap, max_size=max_size)
    sizes = np.array([len(f) for f in files], np.int64)
    lay = layout_reads(plan, hi - lo, sizes, **placement)
    a, h = lay.dma, lay.host
    # DMA reads: at pages of the file and of the staging, after the host area.
    assert (a.read_dest % READ_ALIGN == 0).all() and (a.read_offset % READ_ALIGN == 0).all()
    assert (a.read_dest >= lay.host_size).all() and lay.host_size % READ_ALIGN == 0
    assert (a.read_offset + a.read_size <= sizes[a.read_file]).all()  # never past the end
    if placement.get("dma_min", 0) == 0:
        assert h.ncalls == 0  # every read may go by DMA: nothing is host-staged
    if placement.get("dma_min", 0) is None:
        assert a.nreads == 0  # compat mode: everything is
    if max_gap == 0:  # no gap bytes taken along (not counted): within the budget's count
        bound = unit_staging_bytes(hi - lo, 0, steps=0)
        assert lay.total_size <= int(bound[hi > lo].sum())
    ends = a.read_dest + a.read_size
    assert (ends[:-1] <= a.read_dest[1:]).all() and int(ends.max(initial=0)) <= lay.total_size
    # Host calls: segments in file order, never overlapping, at most IOV_SEGMENTS each, and
    # no two segments share staging bytes.
    seg_ends = h.seg_dest + h.seg_size
    assert int(seg_ends.max(initial=0)) <= lay.host_size
    by_dest = np.argsort(h.seg_dest)
    assert (seg_ends[by_dest][:-1] <= h.seg_dest[by_dest][1:]).all()
    assert (np.diff(h.call_bounds) >= 1).all() and (np.diff(h.call_bounds) <= IOV_SEGMENTS).all()
    assert (h.gaps() >= 0).all()
    staging = np.full(lay.total_size, 0xEE, np.uint8)
    for f, off, size, dest in zip(a.read_file, a.read_offset, a.read_size, a.read_dest,
                                  strict=True):
        staging[dest : dest + size] = files[f][off : off + size]
    for c in range(h.ncalls):
        data = files[h.call_file[c]]
        for j in range(h.call_bounds[c], h.call_bounds[c + 1]):
            o, n, d = h.seg_offset[j], h.seg_size[j], h.seg_dest[j]
            assert o + n <= len(data)
            staging[d : d + n] = data[o : o + n]
    for i in range(len(fid)):
        got = staging[lay.request_dest[i] : lay.request_dest[i] + hi[i] - lo[i]]
        np.testing.assert_array_equal(got, files[fid[i]][lo[i] : hi[i]])
    # A whole file read by DMA starts at a page; a host-staged request has its payload aligned.
    payload = placement.get("payload") or DEFAULT_PAYLOAD
    dma_req = lay.request_dest >= lay.host_size
    live = hi > lo
    assert (lay.request_dest[(lo == 0) & live & dma_req] % READ_ALIGN == 0).all()
    placed = lay.request_dest[live & ~dma_req] + payload.offset
    assert (placed % payload.align == 0).all()
    return lay


def _random_requests(rng: np.random.Generator
                     ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Seven files and 60 requests of them: ranges, empty requests, whole files."""
    files = [rng.integers(0, 256, int(rng.integers(1, 40_000)), dtype=np.uint8)
             for _ in range(7)]
    n = 60
    fid = rng.integers(0, len(files), n)
    lens = np.array([len(files[f]) for f in fid])
    lo = (rng.random(n) * lens).astype(np.int64)
    hi = np.minimum(lens, lo + rng.integers(0, 9000, n)).astype(np.int64)
    hi[::9] = lo[::9]  # empty requests
    lo[::7], hi[::7] = 0, lens[::7]  # whole files
    return files, fid, lo, hi


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dma_min", [0, None, 16_384])
def test_laid_out_reads_land_every_request(seed: int, dma_min: int | None) -> None:
    rng = np.random.default_rng(seed)
    files, fid, lo, hi = _random_requests(rng)
    _replay(files, fid, lo, hi, max_gap=int(rng.integers(0, 5000)),
            max_size=int(rng.integers(1, 20_000)), dma_min=dma_min)


def test_one_file_per_chunk_needs_no_widening_past_the_end() -> None:
    files = [np.arange(n, dtype=np.int64).astype(np.uint8) for n in (16_384, 5000, 4096, 1)]
    fid = np.arange(4)
    lo = np.zeros(4, np.int64)
    hi = np.array([len(f) for f in files], np.int64)
    plan = plan_reads(fid, lo, hi, max_gap=0, max_size=1 << 20)
    a = layout_reads(plan, hi - lo, hi).dma
    assert a.read_size.tolist() == [16_384, 5000, 4096, 1]  # whole files, not rounded up
    assert a.read_dest.tolist() == [0, 16_384, 16_384 + 8192, 16_384 + 8192 + 4096]
    _replay(files, fid, lo, hi, 0, 1 << 20)


def test_empty_batch() -> None:
    z = np.zeros(3, np.int64)
    for dma_min in (0, None):
        a = layout_reads(plan_reads(z, z, z), z, np.zeros(1, np.int64), dma_min=dma_min)
        assert a.dma.nreads == 0 and a.host.ncalls == 0 and a.total_size == a.host_size == 0
        assert a.request_dest.tolist() == [0, 0, 0]


def test_align_up_and_bad_alignment() -> None:
    assert align_up(0, 8) == 0 and align_up(1, 8) == 8 and align_up(16, 8) == 16
    assert align_up(np.array([0, 5, 4096]), 4096).tolist() == [0, 4096, 4096]
    with pytest.raises(ValueError, match="positive"):
        align_up(3, 0)
    plan = plan_reads(np.zeros(1, np.int64), np.zeros(1, np.int64), np.ones(1, np.int64))
    with pytest.raises(ValueError, match="power of two"):
        layout_reads(plan, np.ones(1, np.int64), np.ones(1, np.int64), align=3000)


def test_input_layout_in_place_only_when_every_entry_is_aligned() -> None:
    starts = np.array([0, 4096, 4100, 8194, 12_288 + 4], np.int64)
    sizes = np.array([100, 50, 7, 33, 9], np.int64)
    lay = input_layout(0, starts, sizes, 8)
    assert lay.aligned.tolist() == [True, True, False, False, False]
    assert not lay.in_place
    assert lay.packed_offset.tolist() == [0, 104, 160, 168, 208]
    assert lay.packed_nbytes == 104 + 56 + 8 + 40 + 16
    assert (lay.packed_offset % 8 == 0).all()
    whole = input_layout(0, starts[:2], sizes[:2], 8)
    assert whole.in_place and whole.packed_nbytes == 0
    # LZ4 (alignment 4): whole chunk files read at pages, each skipping its 4-byte prefix.
    assert input_layout(1 << 20, np.array([4, 4100]), sizes[:2], 4).in_place
    # The base address counts: a buffer 4 bytes past an 8-byte boundary shifts everything.
    assert not input_layout(4, starts[:2], sizes[:2], 8).aligned.any()


def test_output_layout() -> None:
    lay = output_layout(3, 16_384, 8)
    assert lay.rows_in_place and lay.stride == 16_384 and lay.nbytes == 3 * 16_384
    odd = output_layout(3, 1001, 8)
    assert not odd.rows_in_place and odd.stride == 1008
    assert odd.offsets.tolist() == [0, 1008, 2016] and odd.nbytes == 3024
    assert output_layout(0, 64, 16).nbytes == 1  # never a zero-byte allocation


def test_batch_staging_bytes_bounds_the_layout() -> None:
    rng = np.random.default_rng(3)
    enc = rng.integers(1, 30_000, 50).astype(np.int64)
    decoded = 64 * 64 * 4 + 3  # slots padded: rows need their own buffer
    fid = np.arange(len(enc))
    plan = plan_reads(fid, np.zeros(len(enc), np.int64), enc, max_gap=0, max_size=1 << 30)
    reads = layout_reads(plan, enc, enc)
    inputs = input_layout(0, reads.request_dest + 2, enc - 6, 16)  # zlib: everything moves
    out = output_layout(len(enc), decoded, 16)
    used = reads.total_size + inputs.packed_nbytes + out.nbytes + len(enc) * decoded
    bound = batch_staging_bytes(enc, decoded, decode_align=16)
    assert used <= bound < used + len(enc) * 2 * READ_ALIGN + out.nbytes
    assert batch_staging_bytes(enc, 4096, steps=0) == int(
        align_up(enc + READ_ALIGN - 1, READ_ALIGN).sum()) + len(enc) * 4096


def test_unit_staging_bytes_sum_to_the_batch() -> None:
    enc = np.array([1, 4096, 70_000], np.int64)
    per = unit_staging_bytes(enc, 16_384)
    assert per.dtype == np.int64 and int(per.sum()) == batch_staging_bytes(enc, 16_384)
    # One chunk of 1 byte: a page of read staging, 16 packed, a 16 KiB slot (the row).
    assert per[0] == 4096 + 16 + 16_384


ZLIB = PAYLOADS["zlib"]  # nvCOMP's Deflate input: 2 bytes in, aligned to 4


def _files(rng: np.random.Generator, sizes: list[int]) -> list[np.ndarray]:
    return [rng.integers(0, 256, n, dtype=np.uint8) for n in sizes]


@pytest.mark.parametrize("dma_min", [None, 0, 16_384])
def test_zlib_chunk_files_land_with_their_payload_aligned_unless_read_by_dma(
        dma_min: int | None) -> None:
    """A whole zlib chunk file: in compat mode (None) or below kvikio's gds_threshold the read
    is bounced anyway, so it is read on the host and placed for nvCOMP (no packed copy); by
    DMA it keeps its page."""
    rng = np.random.default_rng(5)
    lens = [3000, 5000, 16_384, 40_000, 7, 100_000]
    files = _files(rng, lens)
    n = len(files)
    hi = np.array(lens, np.int64)
    a = _replay(files, np.arange(n), np.zeros(n, np.int64), hi, 0, 1 << 20,
                payload=ZLIB, dma_min=dma_min)
    by_dma = np.zeros(n, bool) if dma_min is None else hi >= dma_min  # one read per file
    payload_at = a.request_dest + ZLIB.offset
    assert (payload_at[~by_dma] % ZLIB.align == 0).all()
    assert (a.request_dest[by_dma] % READ_ALIGN == 0).all()
    assert a.dma.nreads == by_dma.sum() and (a.dma.read_offset == 0).all()
    assert (a.host.seg_offset == 0).all()  # host reads are the file, not widened
    inputs = input_layout(0, payload_at, hi - 6, ZLIB.align)
    assert inputs.in_place == (not by_dma.any())  # nvCOMP reads them where they landed
    # Read by DMA, every zlib input is 2 bytes off its page: the whole call repacks.
    paged = layout_reads(plan_reads(np.arange(n), np.zeros(n, np.int64), hi, max_gap=0,
                                    max_size=1 << 20), hi, hi, payload=ZLIB)
    assert not input_layout(0, paged.request_dest + 2, hi - 6, 4).aligned.any()


@pytest.mark.parametrize("dma_min", [None, 16_384, 0])
def test_inner_chunks_are_placed_unless_their_read_goes_by_dma(dma_min: int | None) -> None:
    """Inner chunks of one shard read together: on the host (compat mode, or a coalesced read
    below gds_threshold) one preadv scatters each to an aligned slot, so nvCOMP reads all in
    place; by DMA the read keeps its pages and the inputs lie where the file puts them (the
    one case the decoder gathers)."""
    rng = np.random.default_rng(6)
    shard = _files(rng, [200_000])
    # Chunks 0-3 back to back (one coalesced read); chunk 4 far away (a read of its own),
    # chunk 5 a small one after a gap.
    lo = np.array([100, 5_101, 9_000, 13_333, 150_003, 153_100], np.int64)
    hi = np.array([5_101, 9_000, 13_333, 20_000, 153_000, 153_200], np.int64)
    fid = np.zeros(len(lo), np.int64)
    zstd = PAYLOADS["zstd"]
    a = _replay(shard, fid, lo, hi, 4096, 1 << 20, payload=zstd, dma_min=dma_min)
    inputs = input_layout(0, a.request_dest, hi - lo, zstd.align)
    if dma_min is None:
        assert a.dma.nreads == 0 and a.host.ncalls == 2
        assert a.host.call_bounds.tolist() == [0, 4, 6]  # two preadv calls
        assert a.host.gaps().tolist() == [0, 0, 0, 0, 100, 0]  # chunk 4 to 5: scratch
        assert inputs.in_place
    elif dma_min == 16_384:  # the 20 KiB read goes by DMA, the 8 KiB one on the host
        assert a.dma.nreads == 1 and a.host.ncalls == 1
        assert ((a.request_dest[:4] - lo[:4]) % READ_ALIGN == 0).all()  # address = offset
        assert not inputs.in_place
    else:
        assert a.host.ncalls == 0 and not inputs.in_place


def test_host_calls_split_at_overlaps_and_at_the_iovec_limit() -> None:
    rng = np.random.default_rng(8)
    data = _files(rng, [4 * IOV_SEGMENTS * 10 + 100])
    n = 2 * IOV_SEGMENTS + 5
    lo = np.arange(n, dtype=np.int64) * 10
    hi = lo + 7  # 3 gap bytes between segments
    # Duplicates share a slot; an overlapping range starts a call of its own.
    lo = np.concatenate([lo, lo[:3], [12]])
    hi = np.concatenate([hi, hi[:3], [19]])
    fid = np.zeros(len(lo), np.int64)
    a = _replay(data, fid, lo, hi, 16, 1 << 30, dma_min=None)
    assert len(a.host.seg_offset) == n + 1  # the duplicates are no segments of their own
    assert a.request_dest[n:n + 3].tolist() == a.request_dest[:3].tolist()
    sizes = np.diff(a.host.call_bounds)
    assert sizes.max() == IOV_SEGMENTS and a.host.ncalls == 4, sizes.tolist()


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("payload", [PAYLOADS["zlib"], PAYLOADS["lz4"], Payload(3, 16)])
def test_placed_reads_land_every_request_within_the_budget(seed: int, payload: Payload) -> None:
    """_replay checks every request's bytes, the DMA pages, the budget bound (no gaps) and
    that every host-staged request has its payload aligned."""
    rng = np.random.default_rng(seed)
    files, fid, lo, hi = _random_requests(rng)
    for dma_min, gap in ((None, 0), (None, 3000), (0, 0), (16_384, 0), (16_384, 3000)):
        lay = _replay(files, fid, lo, hi, gap, int(rng.integers(1, 20_000)), payload=payload,
                      dma_min=dma_min)
        if dma_min is None:
            assert lay.total_size == lay.host_size


def test_chain_payload() -> None:
    assert chain_payload(["zstd"]) == Payload(0, 8)
    assert chain_payload(["crc32c", "zlib"]) == Payload(2, 4)
    assert chain_payload(["lz4", "crc32c"]) == Payload(4, 4)
    for kinds in (["blosc"], [], ["crc32c"], ["zstd", "gzip"], ["zstd", "numcodecs"]):
        assert chain_payload(kinds) is None, kinds


def test_reading_for_sets_the_payload_for_the_block() -> None:
    assert current_payload() is None
    with reading_for(ZLIB):
        assert current_payload() == ZLIB
    assert current_payload() is None
