"""The GPU Blosc path's host parts, without a GPU: the unshuffle kernel's C source compiled as
host C++ and run against the numpy twin on real numcodecs chunks, and the nvCOMP stream groups.

The kernel's source is the very string CuPy compiles (``_blosc_gpu.UNSHUFFLE_KERNEL``); here a
prelude turns ``__global__`` into a plain function and ``threadIdx``/``blockIdx``/``blockDim``
into globals, and a loop plays the grid, so its index arithmetic is checked byte for byte.
"""

from __future__ import annotations

import ctypes

import numcodecs
import numpy as np
import pytest
from _host_kernel import compile_host

from gds_zarr.decode import _blosc_gpu, _native
from gds_zarr.decode._base import BytesStep
from gds_zarr.decode.formats import numpy_reader
from gds_zarr.planning.blosc import SHUFFLE_NONE, BloscPlan, plan_blosc, unshuffle_blocks

_DRIVER = r"""
extern "C" void gdsz_run(const unsigned char* src, unsigned char* dst, const long long* off,
                         const long long* size, const signed char* shuffle,
                         const long long* typesize, long long nblocks, long long threads) {
    blockDim.x = threads;
    for (long long b = 0; b < nblocks; ++b) {
        blockIdx.x = b;
        for (long long t = 0; t < threads; ++t) {
            threadIdx.x = t;
            gdsz_blosc_unshuffle(src, dst, off, size, shuffle, typesize);
        }
    }
}
"""


@pytest.fixture(scope="module")
def host_kernel(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    return compile_host(_blosc_gpu.UNSHUFFLE_KERNEL + _DRIVER,
                        tmp_path_factory.mktemp("kernel"), "unshuffle")


def _chunks() -> tuple[list[bytes], list[np.ndarray], int]:
    nbytes = 4 * 3 * 7 * 11 * 40  # a multiple of typesizes 1-4, 7, 8, 11, 12
    chunks, raws = [], []
    rng = np.random.default_rng(0)
    for ts, shuffle, bs, cname, clevel in [
            (4, 1, 0, "lz4", 5), (4, 2, 1024, "zstd", 5), (8, 2, 0, "lz4", 5),
            (3, 1, 1000, "zstd", 5), (7, 2, 2000, "zstd", 5), (12, 2, 0, "lz4", 5),
            (1, 2, 0, "lz4", 5), (11, 1, 0, "zstd", 5), (2, 0, 512, "lz4", 5),
            (4, 1, 0, "lz4", 0)]:  # clevel 0: memcpyed
        half = nbytes // 2
        raw = np.concatenate([(np.cumsum(rng.integers(0, 2, half)) // 8 % 253).astype(np.uint8),
                              rng.integers(0, 256, nbytes - half, dtype=np.uint8)])
        chunks.append(bytes(numcodecs.Blosc(cname=cname, clevel=clevel, shuffle=shuffle,
                                            blocksize=bs).encode(raw.view(f"V{ts}"))))
        raws.append(raw)
    return chunks, raws, nbytes


def _shuffled_layout(plan: BloscPlan, data: np.ndarray, n: int, nbytes: int) -> np.ndarray:
    """Every stream decoded into its place in the shuffled staging layout (the GPU's stage)."""
    kernels = _native.blosc_stream_kernels()
    stage = np.zeros(n * nbytes, np.uint8)
    base, at = data.ctypes.data, stage.ctypes.data
    for s in range(len(plan.stream_src)):
        dst = int(plan.stream_row[s] * nbytes + plan.stream_dst[s])
        src, size, dsize = int(plan.stream_src[s]), int(plan.stream_size[s]), \
            int(plan.stream_dsize[s])
        if plan.stream_codec[s] < 0:
            stage[dst:dst + dsize] = data[src:src + size]
        else:
            assert kernels[int(plan.stream_codec[s])](at + dst, dsize, base + src, size) == dsize
    return stage


def test_kernel_as_host_code_matches_numpy_and_numcodecs(host_kernel: ctypes.CDLL) -> None:
    chunks, raws, nbytes = _chunks()
    data = np.frombuffer(b"".join(chunks), np.uint8).copy()
    sizes = np.array([len(c) for c in chunks], np.int64)
    starts = np.cumsum(sizes) - sizes
    n = len(chunks)
    plan = plan_blosc(numpy_reader(data), starts, starts + sizes, nbytes,
                      [f"k{j}" for j in range(n)])
    assert not plan.fallback.any() and plan.memcpyed.any()
    assert {0, 1, 2} <= set(plan.block_shuffle.tolist())
    stage = _shuffled_layout(plan, data, n, nbytes)
    off = np.ascontiguousarray(plan.block_row * nbytes + plan.block_dst, np.int64)
    size = np.ascontiguousarray(plan.block_size, np.int64)
    shuffle = np.ascontiguousarray(plan.block_shuffle, np.int8)
    ts = np.ascontiguousarray(plan.block_typesize, np.int64)
    twin = np.zeros_like(stage)
    unshuffle_blocks(stage, twin, off, size, shuffle, ts)
    for threads in (1, 7, 256):  # a thread count that divides nothing, and the launch's
        got = np.full_like(stage, 0xAB)
        host_kernel.gdsz_run(*(ctypes.c_void_p(a.ctypes.data) for a in
                               (stage, got, off, size, shuffle, ts)),
                             ctypes.c_longlong(len(off)), ctypes.c_longlong(threads))
        assert np.array_equal(got, twin)
    want = np.concatenate(raws)
    assert np.array_equal(twin, want)
    assert np.array_equal(np.concatenate([np.frombuffer(bytes(numcodecs.Blosc().decode(c)),
                                                        np.uint8) for c in chunks]), want)


def test_stream_groups_split_by_codec_and_alignment() -> None:
    chunks, _, nbytes = _chunks()
    data = np.frombuffer(b"".join(chunks), np.uint8).copy()
    sizes = np.array([len(c) for c in chunks], np.int64)
    starts = np.cumsum(sizes) - sizes
    n = len(chunks)
    plan = plan_blosc(numpy_reader(data), starts, starts + sizes, nbytes,
                      [f"k{j}" for j in range(n)])
    cpu = np.zeros(n, bool)
    cpu[1] = True
    groups = _blosc_gpu.stream_groups(plan, cpu, nbytes, {"LZ4": 4, "Zstd": 8})
    assert [g.algorithm for g in groups] == ["LZ4", "Zstd"]
    covered = np.concatenate([g.streams for g in groups])
    want = np.flatnonzero((plan.stream_codec >= 0) & ~cpu[plan.stream_row])
    assert np.array_equal(np.sort(covered), want)
    for g, a in zip(groups, (4, 8), strict=True):
        codes = plan.stream_codec[g.streams]
        assert (codes == (1 if g.algorithm == "LZ4" else 4)).all()
        assert np.array_equal(g.out_offsets, plan.stream_row[g.streams] * nbytes
                              + plan.stream_dst[g.streams])
        assert g.direct == bool((g.out_offsets % a == 0).all())
        assert (g.slot_offsets % a == 0).all()
        assert (np.diff(g.slot_offsets) >= plan.stream_dsize[g.streams][:-1]).all()
    # typesize 3 and 7 split streams land at offsets no alignment divides: slots are used
    assert not next(g for g in groups if g.algorithm == "Zstd").direct
    # an unaligned staging base makes every group indirect
    assert not any(g.direct for g in _blosc_gpu.stream_groups(plan, cpu, nbytes,
                                                              {"LZ4": 4, "Zstd": 8}, 2))
    assert (plan.block_shuffle[plan.memcpyed[plan.block_row]] == SHUFFLE_NONE).all()


def test_hook_claims_one_step_blosc_only() -> None:
    blosc = BytesStep("blosc", numcodecs.Blosc(), "blosc")
    zstd = BytesStep("zstd", numcodecs.Zstd(), "zstd")
    assert _blosc_gpu.handles([blosc])
    assert not _blosc_gpu.handles([blosc, zstd]) and not _blosc_gpu.handles([zstd])
    from gds_zarr.decode._gpu import NvcompDecoder

    d = NvcompDecoder.__new__(NvcompDecoder)  # supports() reads no state
    assert d.supports([blosc]) and not d.supports([blosc, zstd])

