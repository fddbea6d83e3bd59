"""The emulated device's kernel runner (tests/emulated_gpu/_emucuda/kernels.py), on its own.

Every kernel gds_zarr ships runs over its real grid and is checked against the numpy (or zlib)
reference; then what makes the emulator strict: barriers, atomics, shared memory, out-of-bounds
and misaligned accesses that raise ``Fault`` instead of crashing, CUDA's launch limits, argument
types, compile errors, the disk cache.

Runs only where ``tests/emulated_gpu`` is on ``sys.path`` (the emulated leg puts it first on
PYTHONPATH), so the CPU suite never imports the stand-ins::

    PYTHONPATH=tests/emulated_gpu python -m pytest tests_gpu/test_emulated_kernels.py -q
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.emulator

pytest.importorskip("_emucuda")
if shutil.which("g++") is None:
    pytest.skip("the emulated device compiles kernels with g++", allow_module_level=True)

from _emucuda import kernels, memory
from _emucuda.errors import Fault
from _emucuda.kernels import CompileError, CUDADriverError, Pointer

from gds_zarr.decode import _blosc_gpu, _gpu, _scatter_gpu, formats
from gds_zarr.planning.blosc import unshuffle_blocks
from gds_zarr.planning.chunks import scatter_plan

_EMULATED = str(Path(kernels.__file__).resolve().parents[1])


class Device:
    """Device allocations for one test, freed at its end."""

    def __init__(self) -> None:
        self.allocs: list[memory.Allocation] = []

    def empty(self, nbytes: int, device: int = 0) -> memory.Allocation:
        a = memory.allocate(nbytes, device)
        self.allocs.append(a)
        return a

    def put(self, host: np.ndarray) -> Pointer:
        """A device copy of ``host``; its pointer."""
        raw = np.ascontiguousarray(host).reshape(-1).view(np.uint8)
        a = self.empty(max(raw.size, 1))
        a.array()[:raw.size] = raw
        return Pointer(a.ptr)

    def zeros(self, n: int, dtype: np.dtype | type) -> Pointer:
        return self.put(np.zeros(n, dtype))

    @staticmethod
    def get(p: Pointer, n: int, dtype: np.dtype | type) -> np.ndarray:
        dt = np.dtype(dtype)
        a = memory.find(p.address)
        assert a is not None
        off = p.address - a.ptr
        return a.array()[off:off + n * dt.itemsize].view(dt).copy()


@pytest.fixture
def dev() -> Iterator[Device]:
    d = Device()
    yield d
    for a in d.allocs:
        memory.free(a)


def _module(code: str, *options: str, **kw: object) -> kernels.Module:
    return kernels.compile_module(textwrap.dedent(code), options, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- shipped kernels


def _chunks(rng: np.random.Generator, n: int, largest: int) -> tuple[np.ndarray, np.ndarray,
                                                                      np.ndarray]:
    sizes = rng.integers(0, largest, n).astype(np.int64)
    sizes[:4] = [0, 1, _gpu._SEGMENT, _gpu._SEGMENT + 1]
    data = rng.integers(0, 256, int(sizes.sum()) + 7, dtype=np.uint8)
    starts = np.cumsum(sizes) - sizes + 3
    return data, starts, starts + sizes


@pytest.mark.parametrize("poly", [0xEDB88320, 0x82F63B78])
def test_crc32_kernel_matches_zlib_and_the_reference(dev: Device, poly: int) -> None:
    rng = np.random.default_rng(1)
    data, starts, stops = _chunks(rng, 40, 30_000)
    chunk, start, length, after = formats.segment_table(starts, stops, _gpu._SEGMENT)
    out = dev.zeros(len(starts), np.uint32)
    f = kernels.compile_module(_gpu._KERNELS).get_function("gdsz_crc32")
    assert f.uses_barrier
    f.launch((*_gpu._grid(len(chunk)), 1, 1), (_gpu._THREADS, 1, 1), [
        dev.put(data), *(dev.put(a) for a in (chunk, start, length, after)),
        dev.put(formats.crc_table(poly)), dev.put(formats.crc_shift_table(poly)),
        np.uint32(poly), out, np.int64(len(chunk))])
    got = dev.get(out, len(starts), np.uint32)
    if poly == 0xEDB88320:
        want = [zlib.crc32(data[a:b].tobytes()) for a, b in zip(starts, stops, strict=True)]
        assert got.tolist() == want
    few = slice(0, 6)
    assert np.array_equal(got[few], formats.crc_segments_reference(
        data, starts[few], stops[few], poly, _gpu._SEGMENT))


def test_adler32_kernel_matches_zlib(dev: Device) -> None:
    rng = np.random.default_rng(2)
    data, starts, stops = _chunks(rng, 50, 40_000)
    chunk, start, length, after = formats.segment_table(starts, stops, _gpu._SEGMENT)
    sums = dev.zeros(2 * len(starts), np.uint64)
    f = kernels.compile_module(_gpu._KERNELS).get_function("gdsz_adler32")
    assert not f.uses_barrier
    f.launch(_gpu._grid(len(chunk)), (_gpu._THREADS,), [
        dev.put(data), *(dev.put(a) for a in (chunk, start, length, after)), sums,
        np.int64(len(chunk))])
    s, t = dev.get(sums, 2 * len(starts), np.uint64).reshape(-1, 2).T
    n = (stops - starts).astype(np.uint64)
    mod = np.uint64(formats.ADLER_MOD)
    got = ((((n % mod + t) % mod) << np.uint64(16)) | ((1 + s) % mod)).astype(np.uint32)
    want = [zlib.adler32(data[a:b].tobytes()) for a, b in zip(starts, stops, strict=True)]
    assert got.tolist() == want
    assert np.array_equal(got, formats.adler32_segments_reference(data, starts, stops,
                                                                  _gpu._SEGMENT))


def test_gather_kernel_copies_every_entry_and_nothing_else(dev: Device) -> None:
    rng = np.random.default_rng(3)
    n = 60
    sizes = rng.integers(0, 5000, n).astype(np.int64)
    sizes[:6] = [0, 1, 2, 3, 5, 70_000]  # several block rows for the last
    src = rng.integers(0, 256, int(sizes.sum()) + 64, dtype=np.uint8)
    starts = rng.integers(0, len(src) - sizes, n).astype(np.int64)
    dst_off = np.cumsum(sizes + rng.integers(0, 9, n)) - sizes
    total = int((dst_off + sizes).max()) + 16
    dst = dev.put(np.full(total, 0xAB, np.uint8))
    f = kernels.compile_module(_gpu._KERNELS).get_function("gdsz_gather")
    f.launch(_gpu.gather_grid(sizes), (_gpu._THREADS,),
             [dev.put(src), dev.put(starts), dst, dev.put(dst_off), dev.put(sizes)])
    want = np.full(total, 0xAB, np.uint8)
    for s, d, k in zip(starts.tolist(), dst_off.tolist(), sizes.tolist(), strict=True):
        want[d:d + k] = src[s:s + k]
    assert np.array_equal(dev.get(dst, total, np.uint8), want)


@pytest.mark.parametrize("itemsize", sorted(_scatter_gpu._ITEM_TYPES))
def test_scatter_kernel_matches_the_numpy_twin(dev: Device, itemsize: int) -> None:
    rng = np.random.default_rng(itemsize)
    chunk_shape, out_shape = (6, 5, 7), (12 * 12, 13, 30)
    dtype = np.dtype(f"V{itemsize}") if itemsize == 16 else np.dtype(f"u{itemsize}")
    rows, csel, osel = [], [], []
    for j in range(12):  # units with steps, partial chunks, one element, whole chunks
        cnt = [int(rng.integers(1, s + 1)) for s in chunk_shape]
        cs = [int(rng.integers(0, s - c + 1)) for s, c in zip(chunk_shape, cnt, strict=True)]
        os_ = [int(rng.integers(0, s - 2 * c + 2)) for s, c in zip(out_shape, cnt, strict=True)]
        os_[0] = 12 * j + int(rng.integers(0, 12 - 2 * cnt[0] + 2))  # units do not overlap
        step = [1 + (j + d) % 2 for d in range(3)]
        rows.append(j % 4)
        csel.append(tuple(slice(a, a + c) for a, c in zip(cs, cnt, strict=True)))
        osel.append(tuple(slice(a, a + c * st, st)
                          for a, c, st in zip(os_, cnt, step, strict=True)))
    plan = scatter_plan(np.array(rows), csel, osel, chunk_shape, out_shape)
    assert plan is not None
    decoded = rng.integers(0, 256, (4, int(np.prod(chunk_shape)) * itemsize), dtype=np.uint8)
    out = np.zeros(out_shape, dtype)
    _scatter_gpu._scatter_reference(out, decoded, plan)
    n = len(plan.rows)
    total = np.prod(plan.count, axis=1, dtype=np.int64)
    cstr = np.array(_scatter_gpu._c_strides(chunk_shape), np.int64)
    ostr = np.array(_scatter_gpu._c_strides(out_shape), np.int64)
    d_out = dev.zeros(int(np.prod(out_shape)) * itemsize, np.uint8)
    src = _scatter_gpu._KERNEL.replace("ITEM", _scatter_gpu._ITEM_TYPES[itemsize])
    f = kernels.compile_module(src).get_function("gdsz_scatter")
    grid_y = int(min(_scatter_gpu._MAX_GRID_Y, max(1, -(-int(total.max()) // 256))))
    f.launch((n, grid_y), (256,), [
        dev.put(decoded), np.int64(int(np.prod(chunk_shape))), d_out,
        *(dev.put(np.ascontiguousarray(a, np.int64)) for a in (
            plan.rows, plan.chunk_start, plan.chunk_step, plan.out_start, plan.out_step,
            np.maximum(plan.count, 1), total, cstr, ostr)), np.int32(3)])
    got = dev.get(d_out, out.nbytes, np.uint8)
    assert np.array_equal(got, out.reshape(-1).view(np.uint8))


def test_blosc_unshuffle_kernel_matches_the_numpy_twin(dev: Device) -> None:
    rng = np.random.default_rng(5)
    # (size, shuffle, typesize): byte and bit shuffles, leftovers, no shuffle
    blocks = [(4096, 1, 4), (4000, 1, 3), (8192, 2, 8), (2048, 2, 4), (1000, 0, 2),
              (777, 1, 7), (4096, 2, 1), (64, 1, 16), (5, 1, 4)]
    size = np.array([b[0] for b in blocks], np.int64)
    shuffle = np.array([b[1] for b in blocks], np.int8)
    ts = np.array([b[2] for b in blocks], np.int64)
    off = np.cumsum(size) - size
    stage = rng.integers(0, 256, int(size.sum()), dtype=np.uint8)
    want = np.zeros_like(stage)
    unshuffle_blocks(stage, want, off, size, shuffle, ts)
    out = dev.zeros(stage.size, np.uint8)
    f = kernels.compile_module(_blosc_gpu.UNSHUFFLE_KERNEL).get_function("gdsz_blosc_unshuffle")
    f.launch((len(blocks),), (_blosc_gpu._THREADS,),
             [dev.put(stage), out, dev.put(off), dev.put(size), dev.put(shuffle), dev.put(ts)])
    assert np.array_equal(dev.get(out, stage.size, np.uint8), want)


def test_scatter_over_a_large_grid_runs_in_seconds(dev: Device) -> None:
    """The shape of grid the pipeline tests launch: (4096, 16) blocks of 256 threads."""
    units, per_unit = 4096, 16 * 256
    chunk_shape = (per_unit,)
    decoded = np.arange(units * per_unit, dtype=np.uint32).view(np.uint8).reshape(units, -1)
    tables = [np.arange(units, dtype=np.int64)[:, None] * 0 for _ in range(5)]
    rows = np.arange(units, dtype=np.int64)
    cstart, cstep, ostep = tables[0], tables[1] + 1, tables[2] + 1
    ostart = rows[:, None] * per_unit
    count = np.full((units, 1), per_unit, np.int64)
    d_out = dev.zeros(units * per_unit, np.uint32)
    f = kernels.compile_module(_scatter_gpu._KERNEL.replace("ITEM", "unsigned int")
                               ).get_function("gdsz_scatter")
    args = [dev.put(decoded), np.int64(per_unit), d_out, dev.put(rows),
            *(dev.put(np.ascontiguousarray(a, np.int64)) for a in (
                cstart, cstep, ostart, ostep, count, count[:, 0], np.array([1]), np.array([1]))),
            np.int32(len(chunk_shape))]
    t0 = time.perf_counter()
    f.launch((units, 16), (256,), args)
    elapsed = time.perf_counter() - t0
    assert np.array_equal(dev.get(d_out, units * per_unit, np.uint32),
                          np.arange(units * per_unit, dtype=np.uint32))
    assert elapsed < 20, f"{elapsed:.1f} s for 16.8 M threads"


# ---------------------------------------------------------------------------------- CUDA semantics


_REDUCE = r"""
extern "C" __global__ void block_sum(const int* in, long long* out, int* counts, int n) {
    __shared__ long long part[256];
    const int t = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    const int nt = blockDim.x * blockDim.y * blockDim.z;
    const int i = blockIdx.x * nt + t;
    part[t] = i < n ? in[i] : 0;
    int positive = __syncthreads_count(i < n && in[i] > 0);
    for (int s = nt / 2; s > 0; s >>= 1) {
        if (t < s) part[t] += part[t + s];
        __syncthreads();
    }
    if (t == 0) { out[blockIdx.x] = part[0]; counts[blockIdx.x] = positive; }
}
"""


@pytest.mark.parametrize(("block", "options"), [
    ((256, 1, 1), ()), ((16, 16, 1), ()), ((8, 4, 2), ()),
    ((128, 2, 1), ("-DEMUCUDA_FORCE_UCONTEXT",))])  # the fibers of machines other than x86-64
def test_shared_memory_reduction_with_barriers(dev: Device, block: tuple[int, int, int],
                                               options: tuple[str, ...]) -> None:
    nt = block[0] * block[1] * block[2]
    n = 10_000
    host = np.random.default_rng(0).integers(-1000, 1000, n).astype(np.int32)
    nblocks = -(-n // nt)
    out, counts = dev.zeros(nblocks, np.int64), dev.zeros(nblocks, np.int32)
    f = _module(_REDUCE, *options).get_function("block_sum")
    assert f.uses_barrier
    f.launch((nblocks,), block, [dev.put(host), out, counts, np.int32(n)])
    padded = np.zeros(nblocks * nt, np.int64)
    padded[:n] = host
    assert np.array_equal(dev.get(out, nblocks, np.int64), padded.reshape(nblocks, nt).sum(1))
    assert np.array_equal(dev.get(counts, nblocks, np.int32),
                          (padded.reshape(nblocks, nt) > 0).sum(1))


def test_barrier_reached_through_a_device_function_and_early_exit(dev: Device) -> None:
    m = _module(r"""
        __device__ void sync_all() { __syncthreads(); }
        extern "C" __global__ void shift(const int* in, int* out, int n) {
            __shared__ int s[128];
            int t = threadIdx.x;
            s[t] = in[blockIdx.x * 128 + t];
            sync_all();
            if (t >= n) return;                     // threads that end count as arrived
            out[blockIdx.x * 128 + t] = s[(t + 1) % 128];
        }
    """)
    f = m.get_function("shift")
    assert f.uses_barrier
    host = np.arange(512, dtype=np.int32)
    out = dev.put(np.full(512, -1, np.int32))
    f.launch((4,), (128,), [dev.put(host), out, np.int32(100)])
    want = np.full((4, 128), -1, np.int32)
    want[:, :100] = np.roll(host.reshape(4, 128), -1, axis=1)[:, :100]
    assert np.array_equal(dev.get(out, 512, np.int32), want.reshape(-1))


def test_barrier_in_a_functor_makes_every_kernel_use_fibers(dev: Device) -> None:
    m = _module(r"""
        struct Sync { __device__ void operator()() const { __syncthreads(); } };
        extern "C" __global__ void k(int* p) {
            __shared__ int s[64];
            s[threadIdx.x] = threadIdx.x;
            Sync()();
            p[threadIdx.x] = s[63 - threadIdx.x];
        }
    """)
    f = m.get_function("k")
    assert f.uses_barrier
    p = dev.zeros(64, np.int32)
    f.launch((1,), (64,), [p])
    assert dev.get(p, 64, np.int32).tolist() == list(range(63, -1, -1))


def test_static_shared_memory_starts_out_as_garbage(dev: Device) -> None:
    f = _module(r"""
        extern "C" __global__ void peek(unsigned int* out) {
            __shared__ unsigned int s[4];
            if (threadIdx.x == 0) out[blockIdx.x] = s[blockIdx.x % 4];
            s[blockIdx.x % 4] = 0;                      // the next block must not see this
        }
    """).get_function("peek")
    out = dev.zeros(8, np.uint32)
    f.launch((8,), (1,), [out])
    assert (dev.get(out, 8, np.uint32) == 0xFFFFFFFF).all()


def test_dynamic_shared_memory(dev: Device) -> None:
    f = _module(r"""
        extern "C" __global__ void reverse(const float* in, float* out) {
            extern __shared__ __align__(16) float buf[];
            const unsigned t = threadIdx.x, n = blockDim.x;
            buf[t] = in[blockIdx.x * n + t];
            __syncthreads();
            out[blockIdx.x * n + t] = buf[n - 1 - t];
        }
    """).get_function("reverse")
    host = np.arange(3 * 200, dtype=np.float32)
    out = dev.zeros(host.size, np.float32)
    f.launch((3,), (200,), [dev.put(host), out], shared_mem=200 * 4)
    assert np.array_equal(dev.get(out, host.size, np.float32),
                          host.reshape(3, 200)[:, ::-1].reshape(-1))
    # (the window is rounded up to 16 bytes, CUDA's alignment of dynamic shared memory)
    with pytest.raises(Fault, match=r"reverse: illegal write at 0x[0-9a-f]+: \d+ bytes past the "
                                    r"end of the 768-byte dynamic shared memory"):
        f.launch((3,), (200,), [dev.put(host), out], shared_mem=192 * 4)


def test_atomics(dev: Device) -> None:
    m = _module(r"""
        extern "C" __global__ void atomics(int* i, unsigned int* u, unsigned long long* ull,
                                           long long* ll, float* f, double* d) {
            const int g = blockIdx.x * blockDim.x + threadIdx.x;
            atomicAdd(i, 1); atomicSub(i + 1, 2); atomicMax(i + 2, g); atomicMin(i + 3, -g);
            atomicAdd(u, 3u); atomicSub(u + 1, 1u); atomicMax(u + 2, (unsigned)g);
            atomicMin(u + 3, (unsigned)g + 5u); atomicOr(u + 4, 1u << (g % 32));
            atomicXor(u + 5, (unsigned)g); atomicAnd(u + 6, ~(1u << (g % 16)));
            atomicInc(u + 7, 9u); atomicDec(u + 8, 9u);
            atomicAdd(ull, 1ull << 33); atomicMax(ull + 1, (unsigned long long)g << 40);
            atomicOr(ull + 2, 1ull << (g % 64)); atomicXor(ull + 3, (unsigned long long)g);
            atomicMax(ll, (long long)g - 100000000000ll); atomicMin(ll + 1, -(long long)g);
            atomicAdd(f, 0.5f); atomicAdd(d, 0.25);
            atomicExch(i + 4, 7); atomicCAS(u + 9, 0u, (unsigned)g + 1u);
        }
    """)
    n = 64 * 8
    i = dev.put(np.array([0, 0, -1, 0, 0], np.int32))
    u = dev.put(np.array([0, 0, 0, 0xFFFFFFFF, 0, 0, 0xFFFFFFFF, 0, 0, 0], np.uint32))
    ull, ll = dev.zeros(4, np.uint64), dev.put(np.array([-2**62, 0], np.int64))
    f32, f64 = dev.zeros(1, np.float32), dev.zeros(1, np.float64)
    m.get_function("atomics").launch((8,), (64,), [i, u, ull, ll, f32, f64])
    g = np.arange(n)
    assert dev.get(i, 5, np.int32).tolist() == [n, -2 * n, n - 1, -(n - 1), 7]
    got = dev.get(u, 10, np.uint32).tolist()
    xor = 0
    for v in g.tolist():
        xor ^= v
    assert got[:7] == [3 * n, (-n) % 2**32, n - 1, 5, 0xFFFFFFFF, xor, 0xFFFF0000]
    assert got[7] == n % 10 and 1 <= got[9] <= n  # atomicInc wraps at 9; one CAS won
    assert got[8] == (-n) % 10
    assert dev.get(ull, 4, np.uint64).tolist() == [n << 33, (n - 1) << 40, 2**64 - 1, xor]
    assert dev.get(ll, 2, np.int64).tolist() == [n - 1 - 100000000000, -(n - 1)]
    assert dev.get(f32, 1, np.float32)[0] == n * 0.5
    assert dev.get(f64, 1, np.float64)[0] == n * 0.25


def test_atomics_cuda_lacks_do_not_compile() -> None:
    with pytest.raises(CompileError, match="atomicAdd"):
        _module(r"""
            extern "C" __global__ void k(long long* p) { atomicAdd(p, 1ll); }
        """)


def test_blocks_and_threads_run_in_a_shuffled_order(dev: Device) -> None:
    f = _module(r"""
        extern "C" __global__ void order(unsigned int* seen, unsigned int* next) {
            unsigned int k = atomicAdd(next, 1u);
            seen[k] = blockIdx.x * blockDim.x + threadIdx.x;
        }
    """).get_function("order")
    seen, nxt = dev.zeros(64 * 32, np.uint32), dev.zeros(1, np.uint32)
    f.launch((64,), (32,), [seen, nxt])
    got = dev.get(seen, 64 * 32, np.uint32)
    assert sorted(got.tolist()) == list(range(64 * 32))  # every thread ran once
    blocks = got.reshape(64, 32) // 32
    assert (blocks == blocks[:, :1]).all()                # a block runs whole, then the next
    assert blocks[:, 0].tolist() != list(range(64))       # not in index order
    assert (got.reshape(64, 32) % 32 != np.arange(32)).any()


def test_builtins_indices_and_intrinsics(dev: Device) -> None:
    f = _module(r"""
        extern "C" __global__ void where(unsigned int* out) {
            const unsigned int b = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
            const unsigned int t = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x
                                   + threadIdx.x;
            const unsigned int g = b * blockDim.x * blockDim.y * blockDim.z + t;
            out[4 * g] = g;
            out[4 * g + 1] = min(g, 7u) + max(3, (int)t) + __popc(g) + __ldg(out + 4 * g);
            out[4 * g + 2] = __brev(g) ^ __byte_perm(g, 0x01020304u, 0x3210);
            out[4 * g + 3] = __umulhi(g, 0x80000000u) + __clz((int)g) + __ffs((int)g);
        }
    """).get_function("where")
    n = 3 * 2 * 2 * 4 * 2 * 3
    out = dev.zeros(4 * n, np.uint32)
    f.launch((3, 2, 2), (4, 2, 3), [out])
    got = dev.get(out, 4 * n, np.uint32).reshape(n, 4).astype(np.int64)
    g = np.arange(n)
    t = g % 24
    assert got[:, 0].tolist() == g.tolist()
    pop = np.array([bin(v).count("1") for v in g.tolist()])
    assert got[:, 1].tolist() == (np.minimum(g, 7) + np.maximum(3, t) + pop + g).tolist()
    brev = np.array([int(f"{v:032b}"[::-1], 2) for v in g.tolist()])
    assert got[:, 2].tolist() == (brev ^ g).tolist()
    clz = np.array([32 - v.bit_length() for v in g.tolist()])
    ffs = np.array([(v & -v).bit_length() for v in g.tolist()])
    assert got[:, 3].tolist() == (g // 2 + clz + ffs).tolist()


def test_templates_and_cxx_linkage_need_name_expressions(dev: Device) -> None:
    code = r"""
        template <typename T, int N> __global__ void fill(T* out) {
            out[blockIdx.x * blockDim.x + threadIdx.x] = (T)N;
        }
        __global__ void plain(int* out) { out[threadIdx.x] = 5; }
    """
    m = _module(code, name_expressions=["fill<float, 3>", "fill<long long, 9>", "plain"])
    out = dev.zeros(64, np.float32)
    m.get_function("fill<float, 3>").launch((2,), (32,), [out])
    assert (dev.get(out, 64, np.float32) == 3).all()
    p = m.get_function("fill<long long, 9>").params
    assert p[0].is_pointer and p[0].ctype == "T*"
    m.get_function("plain").launch((1,), (16,), [out])
    with pytest.raises(CUDADriverError, match="CUDA_ERROR_NOT_FOUND: named symbol not found"
                                              r".*C\+\+ linkage") as e:
        _module(code).get_function("plain")
    assert e.value.status == 500
    with pytest.raises(CompileError, match="name expression"):
        _module(code, name_expressions=["nothing<int>"])


def test_options_carry_over_and_unknown_ones_are_ignored(dev: Device) -> None:
    code = r"""
        extern "C" __global__ void k(int* out) { out[threadIdx.x] = VALUE * SCALE + __CUDA_ARCH__; }
    """
    m = _module(code, "-DVALUE=4", "--define-macro=SCALE=10", "-std=c++11", "--use_fast_math",
                "-lineinfo", "-arch=compute_75", "--fmad=false", "-Xptxas", "-G")
    out = dev.zeros(4, np.int32)
    m.get_function("k").launch((1,), (4,), [out])
    assert (dev.get(out, 4, np.int32) == 40 + 750).all()


def test_kernels_declared_by_macros_or_left_out_by_if(dev: Device) -> None:
    m = _module(r"""
        #define SCALE_KERNEL(name, k)                                        \
            extern "C" __global__ void name(int* p) {                        \
                __syncthreads(); p[threadIdx.x] *= k;                        \
            }
        SCALE_KERNEL(twice, 2)
        SCALE_KERNEL(thrice, 3)
        #if __CUDA_ARCH__ < 100
        extern "C" __global__ void ancient(int* p) { undefined_on_purpose(); }
        #endif
    """)
    assert sorted(m.kernel_names) == ["thrice", "twice"]
    assert m.get_function("twice").uses_barrier
    p = dev.put(np.arange(8, dtype=np.int32))
    m.get_function("twice").launch((1,), (8,), [p])
    m.get_function("thrice").launch((1,), (8,), [p])
    assert dev.get(p, 8, np.int32).tolist() == [6 * i for i in range(8)]


def test_params_parsed_from_the_signature() -> None:
    m = kernels.compile_module(_scatter_gpu._KERNEL.replace("ITEM", "gdsz_v16"))
    f = m.get_function("gdsz_scatter")
    assert [p.ctype for p in f.params[:3]] == ["const gdsz_v16*", "const long long", "gdsz_v16*"]
    assert [p.is_pointer for p in f.params] == [True, False] + [True] * 10 + [False]
    assert [p.sizeof for p in f.params] == [8] * 12 + [4]
    assert f.params[-1].ctype == "const int" and f.params[-1].kind == "integral"


# ---------------------------------------------------------------------------------- strictness


_OOB = r"""
extern "C" __global__ void poke(const unsigned char* src, unsigned char* dst, long long at,
                                int write) {
    if (blockIdx.x == 1 && threadIdx.x == 3) {
        if (write) dst[at] = 1; else dst[0] = src[at];
    }
}
"""


@pytest.mark.parametrize("write", [0, 1])
@pytest.mark.parametrize("where", ["one past the end", "far away"])
def test_out_of_bounds_access_raises_fault_and_the_process_lives(
        dev: Device, write: int, where: str) -> None:
    f = _module(_OOB).get_function("poke")
    buf = dev.empty(4096)
    at = 4096 if where == "one past the end" else 0x20000 - buf.ptr  # below every mapping
    with pytest.raises(Fault) as e:
        f.launch((4,), (32,), [Pointer(buf.ptr), Pointer(buf.ptr), np.int64(at), np.int32(write)])
    msg = str(e.value)
    assert msg.startswith("kernel poke: illegal " + ("write" if write else "read"))
    assert "block (1, 0, 0), thread (3, 0, 0)" in msg
    assert "line 5 of the kernel source" in msg
    if where == "one past the end":
        assert "0 bytes past the end of a 4096-byte device 0 allocation" in msg
        assert "test_emulated_kernels.py" in msg  # where it was allocated
    else:
        assert "illegal write at 0x20000: outside every allocation" in msg or write == 0
    # the process lives on, and so does the module
    f.launch((4,), (32,), [Pointer(buf.ptr), Pointer(buf.ptr), np.int64(5), np.int32(1)])
    assert buf.array()[5] == 1


def test_non_canonical_address_faults(dev: Device) -> None:
    f = _module(_OOB).get_function("poke")
    buf = dev.empty(4096)
    with pytest.raises(Fault, match="kernel poke: illegal access of a non-canonical address"):
        f.launch((4,), (32,), [Pointer(buf.ptr), Pointer(buf.ptr), np.int64(1 << 62),
                               np.int32(1)])


def test_fault_inside_a_barrier_kernel(dev: Device) -> None:
    f = _module(r"""
        extern "C" __global__ void k(int* p, int at) {
            __shared__ int s[32];
            s[threadIdx.x] = threadIdx.x;
            __syncthreads();
            p[at + s[threadIdx.x]] = 1;
        }
    """).get_function("k")
    buf = dev.empty(512)
    with pytest.raises(Fault, match=r"kernel k: illegal write .* past the end"):
        f.launch((2,), (32,), [Pointer(buf.ptr), np.int32(512 // 4)])
    f.launch((2,), (32,), [Pointer(buf.ptr), np.int32(0)])


@pytest.mark.parametrize("kernel", ["rec", "rec_fibers"])
def test_stack_overflow_faults(dev: Device, kernel: str) -> None:
    m = _module(r"""
        __device__ __noinline__ int deep(volatile int* p, int n) {
            volatile char pad[512];
            pad[0] = (char)n;
            return n == 0 ? p[0] : deep(p, n - 1) + pad[0];
        }
        extern "C" __global__ void rec(int* p, int n) { p[1] = deep(p, n); }
        extern "C" __global__ void rec_fibers(int* p, int n) { __syncthreads(); p[1] = deep(p, n); }
    """)
    f = m.get_function(kernel)
    p = dev.zeros(2, np.int32)
    f.launch((1,), (2,), [p, np.int32(100)])
    with pytest.raises(Fault, match=f"kernel {kernel}: illegal write .*stack"):
        f.launch((1,), (2,), [p, np.int32(10**8)])
    f.launch((1,), (2,), [p, np.int32(100)])


def test_freed_memory_faults(dev: Device) -> None:
    f = _module(r"""
        extern "C" __global__ void k(int** table) { *table[0] = 1; }
    """).get_function("k")
    victim = memory.allocate(512, 0)
    table = dev.put(np.array([victim.ptr], np.uint64))
    memory.free(victim)
    with pytest.raises(Fault, match="illegal write"):
        f.launch((1,), (1,), [table])


def test_pointer_arguments_must_lie_in_a_live_allocation(dev: Device) -> None:
    f = _module(_OOB).get_function("poke")
    buf = dev.empty(1000)
    ok = [Pointer(buf.ptr), Pointer(buf.ptr), np.int64(0), np.int32(0)]
    f.launch((1,), (1,), ok)
    f.launch((1,), (1,), [None, Pointer(buf.ptr + 1024), np.int64(0), np.int32(0)])  # NULL, end
    with pytest.raises(Fault, match=r"poke: parameter 1 \(unsigned char\*\) is 0x[0-9a-f]+, not "
                                    r"inside a live allocation: \d+ bytes past the end"):
        f.launch((1,), (1,), [Pointer(buf.ptr), Pointer(buf.ptr + 1032), np.int64(0), np.int32(0)])
    host = np.zeros(16, np.uint8)
    with pytest.raises(Fault, match=r"parameter 0 .* not inside a live allocation"):
        f.launch((1,), (1,), [Pointer(host.ctypes.data), *ok[1:]])
    pinned = dev.empty(512, device=-1)  # mapped pinned host memory: kernels may use it
    f.launch((1,), (1,), [Pointer(pinned.ptr), *ok[1:]], device=0)
    other = dev.empty(512, device=1)
    with pytest.raises(Fault, match="memory of device 1, in a launch on device 0"):
        f.launch((1,), (1,), [Pointer(other.ptr), *ok[1:]], device=0)


def test_misaligned_access_faults(dev: Device) -> None:
    f = _module(r"""
        extern "C" __global__ void k(const unsigned char* p, unsigned int* out, int off) {
            out[0] = *(const unsigned int*)(p + off);
        }
    """).get_function("k")
    buf, out = dev.empty(64), dev.zeros(1, np.uint32)
    f.launch((1,), (1,), [Pointer(buf.ptr), out, np.int32(4)])
    with pytest.raises(Fault, match=r"misaligned load of 'const unsigned int' at 0x[0-9a-f]+ "
                                    r"\(needs 4-byte alignment\) at line 3"):
        f.launch((1,), (1,), [Pointer(buf.ptr), out, np.int32(2)])
    g = _module(r"""
        extern "C" __global__ void k(unsigned char* p) { atomicAdd((unsigned int*)(p + 1), 1u); }
    """).get_function("k")
    with pytest.raises(Fault, match="misaligned atomicAdd"):
        g.launch((1,), (1,), [Pointer(buf.ptr)])


def test_device_assert_and_trap(dev: Device) -> None:
    m = _module(r"""
        #include <assert.h>
        extern "C" __global__ void k(const int* p) { assert(p[threadIdx.x] < 3); }
        extern "C" __global__ void t() { if (blockIdx.x == 2) __trap(); }
    """)
    m.get_function("k").launch((1,), (3,), [dev.put(np.array([0, 1, 2], np.int32))])
    with pytest.raises(Fault, match=r"kernel k: device-side assertion `p\[threadIdx.x\] < 3` "
                                    r"failed .* thread \(1, 0, 0\)"):
        m.get_function("k").launch((1,), (3,), [dev.put(np.array([0, 5, 2], np.int32))])
    with pytest.raises(Fault, match=r"__trap\(\) called, in block \(2, 0, 0\)"):
        m.get_function("t").launch((4,), (1,), [])


def test_integer_division_by_zero_faults(dev: Device) -> None:
    f = _module(r"""
        extern "C" __global__ void k(int* p, int d) { p[0] = p[1] / d; }
    """).get_function("k")
    with pytest.raises(Fault, match="integer division by zero"):
        f.launch((1,), (1,), [dev.zeros(2, np.int32), np.int32(0)])


@pytest.mark.parametrize(("grid", "block", "shared"), [
    ((1,), (1025,), 0), ((1,), (32, 32, 2), 0), ((1,), (1, 1, 65), 0), ((1,), (1, 1025, 1), 0),
    ((2**31,), (1,), 0), ((1, 65536), (1,), 0), ((1, 1, 65536), (1,), 0), ((0,), (1,), 0),
    ((1,), (0,), 0), ((1, 0), (1,), 0), ((1,), (32,), 48 * 1024 + 1), ((1,), (32,), -1)])
def test_launch_configuration_limits(grid: tuple[int, ...], block: tuple[int, ...],
                                     shared: int) -> None:
    f = _module(r"""extern "C" __global__ void k() {}""").get_function("k")
    with pytest.raises(CUDADriverError, match="CUDA_ERROR_INVALID_VALUE: invalid argument") as e:
        f.launch(grid, block, [], shared_mem=shared)
    assert e.value.status == 1


def test_launch_configuration_at_the_limits_runs() -> None:
    f = _module(r"""extern "C" __global__ void k() {}""").get_function("k")
    for grid, block in [((1, 65535), (1,)), ((2, 1, 65535), (1,)), ((1,), (1024,)),
                        ((1,), (1, 1024)), ((1,), (16, 1, 64)), ((3, 2, 2), (8, 8, 16))]:
        f.launch(grid, block, [], shared_mem=48 * 1024)


def test_prepare_checks_at_once_and_run_checks_pointers_when_it_runs(dev: Device) -> None:
    """As on hardware: cuLaunchKernel refuses a bad configuration when the launch is issued; a
    bad pointer shows only when the kernel runs (an illegal address at the next synchronize)."""
    f = _module(_OOB).get_function("poke")
    with pytest.raises(CUDADriverError):
        f.prepare((1,), (2048,), [None, None, np.int64(0), np.int32(0)])
    with pytest.raises(TypeError):
        f.prepare((1,), (1,), [None, None, 0, np.int32(0), 1])
    buf = memory.allocate(512, 0)
    launch = f.prepare((2,), (8,), [Pointer(buf.ptr), Pointer(buf.ptr), np.int64(1),
                                    np.int32(1)])
    memory.free(buf)
    with pytest.raises(Fault, match=r"parameter 0 \(const unsigned char\*\) is 0x[0-9a-f]+, "
                                    r"not inside a live allocation"):
        launch.run()
    live = dev.empty(512)
    launch = f.prepare((2,), (8,), [Pointer(live.ptr), Pointer(live.ptr), np.int64(1),
                                    np.int32(1)])
    launch.run()
    assert live.array()[1] == 1


def test_launch_bounds(dev: Device) -> None:
    f = _module(r"""
        #define THREADS 128
        extern "C" __global__ void __launch_bounds__(THREADS, 2) k(int* p) { p[threadIdx.x] = 1; }
    """).get_function("k")
    assert f.max_threads_per_block == 128
    f.launch((1,), (128,), [dev.zeros(128, np.int32)])
    with pytest.raises(CUDADriverError, match="CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES"):
        f.launch((1,), (129,), [dev.zeros(129, np.int32)])


def test_static_plus_dynamic_shared_memory_limit() -> None:
    f = _module(r"""
        extern "C" __global__ void k(float* p) {
            __shared__ float s[8192];
            extern __shared__ float d[];
            s[threadIdx.x] = d[threadIdx.x]; p[0] = s[0];
        }
    """).get_function("k")
    assert f.shared_size_bytes == 32768
    with pytest.raises(CUDADriverError, match="32768 static"):
        f.launch((1,), (1,), [None], shared_mem=16 * 1024 + 4)


def test_argument_types_are_checked(dev: Device) -> None:
    f = _module(r"""
        extern "C" __global__ void k(float* p, int n, double x, unsigned long long m) { }
    """).get_function("k")
    p = dev.zeros(4, np.float32)
    f.launch((1,), (1,), [p, np.int32(1), np.float64(2), np.uint64(3)])
    f.launch((1,), (1,), [p, np.uint32(1), 2.0, 3])  # Python scalars convert as CuPy does
    bad = [
        ([p, np.int32(1), np.float64(2)], r"takes 4 arguments, 3 given"),
        ([np.int32(5), np.int32(1), np.float64(2), np.uint64(3)],
         r"parameter 0 \(float\*\) is a pointer"),
        ([p, p, np.float64(2), np.uint64(3)], r"parameter 1 \(int\) .* not a pointer"),
        ([p, np.int64(1), np.float64(2), np.uint64(3)],
         r"parameter 1 \(int\) is 4 bytes, the argument is int64 \(8 bytes\)"),
        ([p, 1, np.float64(2), np.uint64(3)], r"parameter 1 \(int\) is 4 bytes"),
        ([p, np.float32(1), np.float64(2), np.uint64(3)],
         r"parameter 1 \(int\) is a integral parameter, the argument is float32"),
        ([p, np.int32(1), np.int64(2), np.uint64(3)],
         r"parameter 2 \(double\) is a float parameter, the argument is int64"),
        ([p, np.int32(1), np.float64(2), "x"], r"parameter 3 \(unsigned long long\) takes a numpy"),
    ]
    for args, msg in bad:
        with pytest.raises(TypeError, match=msg):
            f.launch((1,), (1,), args)
    # A 64-bit integer is a raw address (``a.data.ptr``), as CuPy packs it: a bad one faults.
    f.launch((1,), (1,), [np.uint64(p.address), np.int32(1), np.float64(2), np.uint64(3)])
    with pytest.raises(Fault, match=r"parameter 0 \(float\*\) is 0x5, not inside"):
        f.launch((1,), (1,), [np.int64(5), np.int32(1), np.float64(2), np.uint64(3)])


# ---------------------------------------------------------------------------------- compiling


def test_compile_errors_name_the_kernel_source_line() -> None:
    code = "extern \"C\" __global__ void k(int* p) {\n    p[0] = undefined_thing;\n}\n"
    with pytest.raises(CompileError, match=r"kernel\.cu:2:\d+: error: .*undefined_thing") as e:
        kernels.compile_module(code)
    assert e.value.source == code


@pytest.mark.parametrize("body", [
    "p[0] = __shfl_down_sync(0xffffffffu, p[0], 1);", "__syncwarp();",
    "p[0] = __ballot_sync(0xffffffffu, 1);"])
def test_warp_intrinsics_do_not_compile(body: str) -> None:
    with pytest.raises(CompileError, match="poisoned"):
        kernels.compile_module(f'extern "C" __global__ void k(unsigned* p) {{ {body} }}')


def test_inline_ptx_does_not_compile() -> None:
    with pytest.raises(CompileError, match="inline PTX"):
        kernels.compile_module('extern "C" __global__ void k(unsigned* p) '
                               '{ asm("mov.u32 %0, %%laneid;" : "=r"(p[0])); }')


def test_disk_cache_is_shared_by_processes(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMULATED_GPU_CACHE", str(tmp_path))
    code = f'extern "C" __global__ void k(int* p) {{ p[0] = {time.time_ns()}ll % 1000; }}'
    script = textwrap.dedent(f"""
        from _emucuda import kernels
        kernels.compile_module({code!r}).get_function("k")
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([_EMULATED, *sys.path]),
           "EMULATED_GPU_CACHE": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]  # the same kernel at once
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    built = sorted(x.name for x in tmp_path.glob("kernel-*.so"))
    assert len(built) == 1 and not list(tmp_path.glob(".kernel-*"))
    t0 = time.perf_counter()
    kernels.compile_module(code).get_function("k")  # loaded from the disk cache
    assert time.perf_counter() - t0 < 0.5


def test_faults_outside_kernels_still_reach_faulthandler(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import ctypes, faulthandler
        import numpy as np
        from _emucuda import kernels, memory
        faulthandler.enable()
        f = kernels.compile_module('extern "C" __global__ void k(int* p) { p[1024] = 1; }'
                                   ).get_function("k")
        a = memory.allocate(4096, 0)
        try:
            f.launch((1,), (1,), [kernels.Pointer(a.ptr)])
        except Exception as e:
            print("caught", type(e).__name__, flush=True)
        ctypes.string_at(8)  # a real crash, outside any kernel
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([_EMULATED, *sys.path])}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert "caught Fault" in done.stdout
    assert done.returncode == -11, done.stderr
    assert "Fatal Python error: Segmentation fault" in done.stderr


def test_launches_from_several_threads(dev: Device) -> None:
    m1 = _module(_REDUCE)
    m2 = kernels.compile_module(_gpu._KERNELS)
    host = np.arange(4096, dtype=np.int32)
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for _ in range(5):
                out, counts = dev.zeros(16, np.int64), dev.zeros(16, np.int32)
                m1.get_function("block_sum").launch((16,), (256,),
                                                    [dev.put(host), out, counts, np.int32(4096)])
                assert dev.get(out, 16, np.int64).sum() == host.sum()
                data = np.full(10_000, k, np.uint8)
                chunk, start, length, after = formats.segment_table(
                    np.array([0]), np.array([10_000]), _gpu._SEGMENT)
                sums = dev.zeros(2, np.uint64)
                m2.get_function("gdsz_adler32").launch((1,), (256,), [
                    dev.put(data), *(dev.put(a) for a in (chunk, start, length, after)), sums,
                    np.int64(len(chunk))])
                assert dev.get(sums, 1, np.uint64)[0] == (10_000 * k) % 65521
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
