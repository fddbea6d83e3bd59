"""The host half of a GPU batch's reads (io/_cpu.py read_scattered), on real files.

In kvikio's compat mode, and for reads below its ``gds_threshold``, the GPU backend reads on
the host into pinned memory laid out by ``planning.staging.layout_reads`` and copies it to the
device once. Everything but that copy runs here: every request must land at its placed slot
(decode input aligned for nvCOMP) with its own bytes, gaps must go nowhere, and a file that
changes under the batch must raise.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from gds_zarr import settings
from gds_zarr.errors import ChunkReadError
from gds_zarr.io import _cpu as io_cpu
from gds_zarr.io._cpu import read_scattered
from gds_zarr.planning.ranges import plan_reads
from gds_zarr.planning.staging import IOV_SEGMENTS, PAYLOADS, Payload, ReadLayout, layout_reads


def _files(tmp_path: Path, sizes: list[int], seed: int = 0) -> tuple[list[str], list[bytes]]:
    rng = np.random.default_rng(seed)
    paths, blobs = [], []
    for i, n in enumerate(sizes):
        blob = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        p = tmp_path / f"f{i}"
        p.write_bytes(blob)
        paths.append(str(p))
        blobs.append(blob)
    return paths, blobs


def _layout(paths: list[str], fid: np.ndarray, lo: np.ndarray, hi: np.ndarray,
            payload: Payload | None, max_gap: int = 4096) -> ReadLayout:
    sizes = np.array([Path(p).stat().st_size for p in paths], np.int64)
    plan = plan_reads(fid, lo, hi, max_gap=max_gap, max_size=1 << 20)
    return layout_reads(plan, hi - lo, sizes, payload=payload, dma_min=None)


def _check(lay: ReadLayout, out: np.ndarray, blobs: list[bytes], fid: np.ndarray,
           lo: np.ndarray, hi: np.ndarray, payload: Payload | None) -> None:
    p = payload or Payload(0, 16)
    for i in range(len(fid)):
        d = int(lay.request_dest[i])
        assert out[d : d + hi[i] - lo[i]].tobytes() == blobs[fid[i]][lo[i] : hi[i]], i
        if hi[i] > lo[i]:
            assert (d + p.offset) % p.align == 0


@pytest.mark.parametrize("payload", [PAYLOADS["zstd"], PAYLOADS["zlib"], PAYLOADS["lz4"], None])
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("libc", [True, False], ids=["libc-preadv", "os-preadv"])
def test_every_request_lands_placed_with_its_bytes(tmp_path: Path, payload: Payload | None,
                                                   seed: int, libc: bool,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Through libc's preadv and an iovec table, and through the segment-by-segment path
    taken where ctypes finds no preadv."""
    if libc:
        assert io_cpu._libc_preadv() is not None  # Linux: the table path is what runs
    else:
        monkeypatch.setattr(io_cpu, "_libc_preadv", lambda: None)
    rng = np.random.default_rng(seed)
    paths, blobs = _files(tmp_path, [int(rng.integers(1, 300_000)) for _ in range(5)], seed)
    n = 200
    fid = rng.integers(0, len(paths), n)
    lens = np.array([len(blobs[f]) for f in fid], np.int64)
    lo = (rng.random(n) * lens).astype(np.int64)
    hi = np.minimum(lens, lo + rng.integers(0, 20_000, n))
    hi[::11] = lo[::11]  # empty
    lo[::7], hi[::7] = 0, lens[::7]  # whole files
    fid, lo, hi = (np.concatenate([a, a[:20]]) for a in (fid, lo, hi))  # duplicates
    lay = _layout(paths, fid, lo, hi, payload, max_gap=int(rng.integers(0, 8192)))
    out = np.full(lay.host_size, 0xEE, np.uint8)
    sizes = [len(b) for b in blobs]
    with settings.set(io_threads=4):  # several tasks, each with its own descriptors
        got = read_scattered(paths, lay.host, out, file_sizes=sizes)
    assert got == int((lay.host.gaps() + lay.host.seg_size).sum())
    _check(lay, out, blobs, fid, lo, hi, payload)


def test_inner_chunks_of_a_shard_are_one_preadv_each_run(tmp_path: Path) -> None:
    """A shard's inner chunks back to back with gaps: more segments than one preadv takes,
    read from a worker thread (the inline path) and from the main thread (the hop)."""
    paths, blobs = _files(tmp_path, [3 * IOV_SEGMENTS * 37 + 10])
    n = 3 * IOV_SEGMENTS
    lo = np.arange(n, dtype=np.int64) * 37
    hi = lo + 29 + (np.arange(n) % 5)
    fid = np.zeros(n, np.int64)
    lay = _layout(paths, fid, lo, hi, PAYLOADS["zstd"])
    assert lay.host.ncalls == 3 and lay.dma.nreads == 0
    for where in ("main", "worker"):
        out = np.zeros(lay.host_size, np.uint8)
        if where == "main":
            read_scattered(paths, lay.host, out, file_sizes=[len(blobs[0])])
        else:
            t = threading.Thread(target=read_scattered, args=(paths, lay.host, out),
                                 kwargs={"file_sizes": [len(blobs[0])]})
            t.start()
            t.join()
        _check(lay, out, blobs, fid, lo, hi, PAYLOADS["zstd"])


def test_a_file_that_changes_or_goes_raises(tmp_path: Path) -> None:
    paths, blobs = _files(tmp_path, [50_000, 50_000])
    fid = np.array([0, 0, 1])
    lo = np.array([0, 20_000, 100])
    hi = np.array([10_000, 30_000, 40_000])
    lay = _layout(paths, fid, lo, hi, PAYLOADS["zstd"])
    out = np.zeros(lay.host_size, np.uint8)
    Path(paths[1]).write_bytes(blobs[1][:30_000])  # truncated after planning
    with pytest.raises(ChunkReadError, match="changed while being read") as info:
        read_scattered(paths, lay.host, out, file_sizes=[50_000, 50_000])
    assert info.value.key == paths[1]
    Path(paths[1]).unlink()
    with pytest.raises(ChunkReadError, match="disappeared"):
        read_scattered(paths, lay.host, out, file_sizes=[50_000, 50_000])
    # Shorter than the size it was planned with but reported unchanged (a file truncated
    # between fstat and read): the short preadv names where the file ended.
    Path(paths[1]).write_bytes(blobs[1][:30_000])
    with pytest.raises(ChunkReadError, match="file ended at byte 30000"):
        read_scattered(paths, lay.host, out, file_sizes=[50_000, 30_000])


def test_nothing_to_read() -> None:
    lay = layout_reads(plan_reads(np.zeros(0, np.int64), np.zeros(0, np.int64),
                                  np.zeros(0, np.int64)), np.zeros(0, np.int64),
                       np.zeros(0, np.int64), dma_min=None)
    assert read_scattered([], lay.host, np.zeros(0, np.uint8), file_sizes=[]) == 0


def test_out_too_small_or_not_bytes_is_refused(tmp_path: Path) -> None:
    """The iovec table holds raw addresses: a buffer the layout does not fit is refused before
    any read."""
    paths, _ = _files(tmp_path, [10_000])
    lay = _layout(paths, np.zeros(2, np.int64), np.array([0, 5000]), np.array([4000, 9000]),
                  None)
    with pytest.raises(ValueError, match="bytes of out"):
        read_scattered(paths, lay.host, np.zeros(lay.host_size // 2, np.uint8),
                       file_sizes=[10_000])
    with pytest.raises(ValueError, match="uint8"):
        read_scattered(paths, lay.host, np.zeros(lay.host_size, np.uint16), file_sizes=[10_000])


def test_the_setting_can_hand_every_gpu_read_to_kvikio(monkeypatch: pytest.MonkeyPatch) -> None:
    """``gpu_bounced_reads='kvikio'`` (the layout before issue 12, kept to compare on a GPU):
    every read goes to kvikio at its pages; a bad value is refused."""
    from gds_zarr.io import _gpu as kvikio_backend

    with settings.set(gpu_bounced_reads="kvikio"):
        assert kvikio_backend._dma_min() == 0
    monkeypatch.setenv("GDS_ZARR_GPU_BOUNCED_READS", "Kvikio")
    assert settings.get("gpu_bounced_reads") == "kvikio"
    with pytest.raises(ValueError, match="'host' or 'kvikio'"):
        settings.set(gpu_bounced_reads="dma")
