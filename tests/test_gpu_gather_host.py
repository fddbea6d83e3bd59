"""The GPU gather kernel (``gdsz_gather`` in decode/_gpu.py) compiled as host C++ and checked
byte for byte against numpy, without a GPU.

The kernel's source is cut from the very string CuPy compiles (``_gpu._KERNELS``); a prelude
turns ``__global__`` into a plain function and ``threadIdx``/``blockIdx``/``blockDim``/``gridDim``
into globals, and loops play the grid.
Checked: any source and destination offset (word-aligned or not), sizes 0..3 and large ones,
thread counts that divide nothing, several blocks per entry, and that nothing outside the
destination ranges is written.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from _host_kernel import compile_host

from gds_zarr.decode import _gpu

_DRIVER = r"""
extern "C" void gdsz_run(const unsigned char* src, const long long* src_off, unsigned char* dst,
                         const long long* dst_off, const long long* size, long long entries,
                         long long rows, long long threads) {
    blockDim.x = threads; blockDim.y = 1; gridDim.x = entries; gridDim.y = rows;
    for (long long b = 0; b < entries; ++b)
        for (long long r = 0; r < rows; ++r) {
            blockIdx.x = b; blockIdx.y = r;
            for (long long t = 0; t < threads; ++t) {
                threadIdx.x = t; threadIdx.y = 0;
                gdsz_gather(src, src_off, dst, dst_off, size);
            }
        }
}
"""


def _kernel_source() -> str:
    start = _gpu._KERNELS.index('extern "C" __global__ void gdsz_gather(')
    return _gpu._KERNELS[start:]


@pytest.fixture(scope="module")
def gather(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    return compile_host(_kernel_source() + _DRIVER, tmp_path_factory.mktemp("gather"),
                        "gather", flags=["-fno-strict-aliasing"])


def _run(lib: ctypes.CDLL, src: np.ndarray, starts: np.ndarray, sizes: np.ndarray,
         dst: np.ndarray, dst_off: np.ndarray, threads: int, rows: int) -> None:
    arrays = [np.ascontiguousarray(a, np.int64) for a in (starts, dst_off, sizes)]
    lib.gdsz_run(ctypes.c_void_p(src.ctypes.data), ctypes.c_void_p(arrays[0].ctypes.data),
                 ctypes.c_void_p(dst.ctypes.data), ctypes.c_void_p(arrays[1].ctypes.data),
                 ctypes.c_void_p(arrays[2].ctypes.data), ctypes.c_longlong(len(sizes)),
                 ctypes.c_longlong(rows), ctypes.c_longlong(threads))


def _case(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    rng = np.random.default_rng(seed)
    n = 40
    sizes = rng.integers(0, 3000, n).astype(np.int64)
    sizes[:5] = [0, 1, 2, 3, 5]
    sizes[5] = 70_000  # several blocks per entry
    # Slack around the source: the kernel's edge words may read up to 3 bytes outside an entry.
    src = rng.integers(0, 256, int(sizes.sum()) + 64, dtype=np.uint8)
    starts = rng.integers(8, len(src) - 8 - sizes, n).astype(np.int64)
    starts[::3] &= ~np.int64(3)  # some word-aligned sources
    dst_off = np.zeros(n, np.int64)
    at = 8
    for j, gap in enumerate(rng.integers(0, 9, n).tolist()):
        at += 0 if j % 4 == 0 else gap  # some entries back to back
        if j % 5 == 1:
            at = -(-at // 4) * 4  # some word-aligned destinations
        dst_off[j] = at
        at += int(sizes[j])
    return src, starts, sizes, dst_off, at + 16


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("threads", [1, 7, 256])
def test_gather_matches_numpy(gather: ctypes.CDLL, seed: int, threads: int) -> None:
    src, starts, sizes, dst_off, total = _case(seed)
    want = np.full(total, 0xA5, np.uint8)
    for a, n, o in zip(starts.tolist(), sizes.tolist(), dst_off.tolist(), strict=True):
        want[o:o + n] = src[a:a + n]
    _, grid_rows = _gpu.gather_grid(sizes)
    for rows in {1, 3, grid_rows}:
        got = np.full(total, 0xA5, np.uint8)
        _run(gather, src, starts, sizes, got, dst_off, threads, rows)
        np.testing.assert_array_equal(got, want)


def test_gather_grid() -> None:
    assert _gpu.gather_grid(np.array([1, 16_384], np.int64)) == (2, 1)
    assert _gpu.gather_grid(np.array([16_385], np.int64)) == (1, 2)
    assert _gpu.gather_grid(np.array([1 << 40], np.int64)) == (1, 65_535)
    assert _gpu.gather_grid(np.zeros(3, np.int64)) == (3, 1)
