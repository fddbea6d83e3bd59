"""The GPU batch staging layout (gds_zarr/planning/staging.py), checked on the CPU.

The reads are replayed on numpy "files": every request must find its own bytes at its
destination after the widened, aligned reads, exactly as kvikio would land them on the device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from gds_zarr.planning.ranges import ReadPlan, plan_reads
from gds_zarr.planning.staging import (
    PAYLOADS,
    READ_ALIGN,
    Payload,
    align_reads,
    align_up,
    batch_staging_bytes,
    chain_payload,
    current_payload,
    input_layout,
    output_layout,
    reading_for,
    unit_staging_bytes,
)


def _replay(files: list[np.ndarray], fid: np.ndarray, lo: np.ndarray, hi: np.ndarray,
            max_gap: int, max_size: int, **placement: Any) -> ReadPlan:
    plan = plan_reads(fid, lo, hi, max_gap=max_gap, max_size=max_size)
    sizes = np.array([len(f) for f in files], np.int64)
    a = align_reads(plan, hi - lo, sizes, **placement)
    # Reads kept on their pages (all of them without a payload to place).
    paged = (a.read_dest % READ_ALIGN == 0) & (a.read_offset % READ_ALIGN == 0)
    if not placement:
        assert paged.all()
    assert (a.read_offset + a.read_size <= sizes[a.read_file]).all()  # never past the end
    if max_gap == 0:  # no gap bytes taken along (not counted): within the budget's count
        bound = unit_staging_bytes(hi - lo, 0, steps=0)
        assert a.total_size <= int(bound[hi > lo].sum())
    # Reads never overlap in the staging buffer, and the buffer holds them all.
    ends = a.read_dest + a.read_size
    assert (ends[:-1] <= a.read_dest[1:]).all() and int(ends.max(initial=0)) <= a.total_size
    staging = np.full(a.total_size, 0xEE, np.uint8)
    for f, off, size, dest in zip(a.read_file, a.read_offset, a.read_size, a.read_dest,
                                  strict=True):
        staging[dest : dest + size] = files[f][off : off + size]
    for i in range(len(fid)):
        got = staging[a.request_dest[i] : a.request_dest[i] + hi[i] - lo[i]]
        np.testing.assert_array_equal(got, files[fid[i]][lo[i] : hi[i]])
    # A request at the start of a paged read keeps its place within the page: whole files
    # start at a page boundary.
    r = np.searchsorted(a.read_dest, a.request_dest, side="right") - 1
    whole = (lo == 0) & (hi > 0) & paged[r]
    assert (a.request_dest[whole] % READ_ALIGN == 0).all()
    return a


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
def test_aligned_reads_land_every_request(seed: int) -> None:
    rng = np.random.default_rng(seed)
    files, fid, lo, hi = _random_requests(rng)
    _replay(files, fid, lo, hi, max_gap=int(rng.integers(0, 5000)),
            max_size=int(rng.integers(1, 20_000)))


def test_one_file_per_chunk_needs_no_widening_past_the_end() -> None:
    files = [np.arange(n, dtype=np.int64).astype(np.uint8) for n in (16_384, 5000, 4096, 1)]
    fid = np.arange(4)
    lo = np.zeros(4, np.int64)
    hi = np.array([len(f) for f in files], np.int64)
    plan = plan_reads(fid, lo, hi, max_gap=0, max_size=1 << 20)
    a = align_reads(plan, hi - lo, hi)
    assert a.read_size.tolist() == [16_384, 5000, 4096, 1]  # whole files, not rounded up
    assert a.read_dest.tolist() == [0, 16_384, 16_384 + 8192, 16_384 + 8192 + 4096]
    _replay(files, fid, lo, hi, 0, 1 << 20)


def test_empty_batch() -> None:
    z = np.zeros(3, np.int64)
    a = align_reads(plan_reads(z, z, z), z, np.zeros(1, np.int64))
    assert a.nreads == 0 and a.total_size == 0 and a.request_dest.tolist() == [0, 0, 0]


def test_align_up_and_bad_alignment() -> None:
    assert align_up(0, 8) == 0 and align_up(1, 8) == 8 and align_up(16, 8) == 16
    assert align_up(np.array([0, 5, 4096]), 4096).tolist() == [0, 4096, 4096]
    with pytest.raises(ValueError, match="positive"):
        align_up(3, 0)
    plan = plan_reads(np.zeros(1, np.int64), np.zeros(1, np.int64), np.ones(1, np.int64))
    with pytest.raises(ValueError, match="power of two"):
        align_reads(plan, np.ones(1, np.int64), np.ones(1, np.int64), align=3000)


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
    reads = align_reads(plan, enc, enc)
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
    is bounced anyway, so it is placed for nvCOMP (no packed copy); by DMA it keeps its page."""
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
    assert (a.read_offset == 0).all()  # placed reads are the file, not widened
    inputs = input_layout(0, payload_at, hi - 6, ZLIB.align)
    assert inputs.in_place == (not by_dma.any())  # nvCOMP reads them where they landed
    # Without a payload to place, every zlib input is 2 bytes off: the whole call repacks.
    paged = align_reads(plan_reads(np.arange(n), np.zeros(n, np.int64), hi, max_gap=0,
                                   max_size=1 << 20), hi, hi)
    assert not input_layout(0, paged.request_dest + 2, hi - 6, 4).aligned.any()


def test_coalesced_inner_chunks_keep_their_pages_lone_ones_are_placed() -> None:
    """Inner chunks of one shard read together stay where the file puts them (one read, then
    one gather on the device); an inner chunk read by itself is placed like a chunk file."""
    rng = np.random.default_rng(6)
    shard = _files(rng, [200_000])
    # Chunks 0-3 back to back (one coalesced read); chunk 4 far away (a read of its own).
    lo = np.array([100, 5_101, 9_000, 13_333, 150_003], np.int64)
    hi = np.array([5_101, 9_000, 13_333, 20_000, 163_000], np.int64)
    fid = np.zeros(5, np.int64)
    zstd = PAYLOADS["zstd"]
    a = _replay(shard, fid, lo, hi, 4096, 1 << 20, payload=zstd, dma_min=None)
    assert a.nreads == 2
    assert a.read_dest[0] % READ_ALIGN == 0 and a.read_offset[0] % READ_ALIGN == 0
    assert ((a.request_dest[:4] - lo[:4]) % READ_ALIGN == 0).all()  # address = file offset
    assert a.request_dest[4] % zstd.align == 0 and a.read_offset[1] == lo[4]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("payload", [PAYLOADS["zlib"], PAYLOADS["lz4"], Payload(3, 16)])
def test_placed_reads_land_every_request_within_the_budget(seed: int, payload: Payload) -> None:
    rng = np.random.default_rng(seed)
    files, fid, lo, hi = _random_requests(rng)
    for dma_min, gap in ((None, 0), (None, 3000), (0, 0), (16_384, 0), (16_384, 3000)):
        a = _replay(files, fid, lo, hi, gap, int(rng.integers(1, 20_000)), payload=payload,
                    dma_min=dma_min)
        # Every read of one request that is bounced has its payload aligned.
        live = hi > lo
        r = np.searchsorted(a.read_dest, a.request_dest, side="right") - 1
        single = np.bincount(r[live], minlength=a.nreads) == 1
        bounced = np.ones(a.nreads, bool) if dma_min is None else a.read_size < dma_min
        placed = live & (single & bounced)[r]
        assert ((a.request_dest[placed] + payload.offset) % payload.align == 0).all()


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
