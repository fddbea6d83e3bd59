"""The emulated device's CuPy stand-in is strict where CUDA and CuPy are (issue 18, item 2).

Each test shows one behaviour a GPU has and a lenient test double would hide: device memory
the host cannot read, work that runs only at a synchronization point and in stream order, two
unordered streams in a random order, pinned copies that read their source when they run, and
bounds checked on every copy. They run only on the emulated device (GDS_ZARR_TEST_DEVICE=
emulated); on a real GPU the same programs would be races, not errors.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.emulator

cupy = pytest.importorskip("cupy")


def test_host_cannot_read_device_memory() -> None:
    a = cupy.arange(4)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array"):
        np.asarray(a)
    assert cupy.asnumpy(a).tolist() == [0, 1, 2, 3]
    assert a.get().tolist() == [0, 1, 2, 3]


def test_host_array_where_a_device_array_is_required() -> None:
    with pytest.raises(TypeError, match="Unsupported type"):
        cupy.arange(3) + np.arange(3)
    k = cupy.RawKernel(r'extern "C" __global__ void f(int* x) { x[threadIdx.x] = 1; }', "f")
    with pytest.raises(TypeError, match="host array"):
        k((1,), (4,), (np.zeros(4, np.int32),))


def test_work_runs_at_a_synchronization_point_in_stream_order() -> None:
    from _emucuda import streams

    s = cupy.cuda.Stream(non_blocking=True)
    with s:
        a = cupy.zeros(8, cupy.int32)
        a += 1
        a *= 3
        before = streams.pending()
        assert before >= 3  # queued, not run
        s.synchronize()
        assert streams.pending() < before
        assert a.get().tolist() == [3] * 8


def test_pinned_copy_reads_its_source_when_it_runs() -> None:
    import cupyx

    host = cupyx.empty_pinned((16,), np.uint8)
    host[:] = 1
    dev = cupy.empty(16, cupy.uint8)
    s = cupy.cuda.Stream(non_blocking=True)
    cupy.cuda.runtime.memcpyAsync(dev.data.ptr, host.ctypes.data, 16,
                                  cupy.cuda.runtime.memcpyHostToDevice, s.ptr)
    host[:] = 2  # reused before the copy ran: the device sees 2, as on hardware
    s.synchronize()
    with s:
        assert dev.get().tolist() == [2] * 16


def test_copy_out_of_bounds_raises_naming_the_call() -> None:
    dev = cupy.empty(100, cupy.uint8)
    host = np.zeros(4096, np.uint8)
    with pytest.raises(cupy.cuda.runtime.CUDARuntimeError, match="cudaMemcpyAsync"):
        cupy.cuda.runtime.memcpyAsync(dev.data.ptr, host.ctypes.data, 4096,
                                      cupy.cuda.runtime.memcpyHostToDevice, 0)


def test_array_of_another_device_is_refused() -> None:
    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("one emulated device")
    a = cupy.ones(3)
    with cupy.cuda.Device(1):
        b = cupy.ones(3)
        assert b.device.id == 1
        with pytest.raises(ValueError, match="Array device must be same as the current device"):
            b + a


_RACE = textwrap.dedent("""
    import cupy
    hits = 0
    for trial in range(40):
        s1 = cupy.cuda.Stream(non_blocking=True)
        s2 = cupy.cuda.Stream(non_blocking=True)
        with s1:
            a = cupy.zeros(1, cupy.int64)
            a += 1           # producer
        WAIT
        with s2:
            b = a * 10       # the consumer: without an event, a race
        with s2:
            v = int(b.get()[0])
        hits += v == 10
    print(hits)
""")


def _race(sync: bool) -> int:
    code = _RACE.replace("WAIT", "s2.wait_event(s1.record())" if sync else "pass")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    return int(out.stdout.strip())


def test_unordered_streams_run_in_a_random_order() -> None:
    """Without an event between the streams the consumer sometimes runs first (seeded)."""
    hits = _race(sync=False)
    assert 0 < hits < 40, hits


def test_an_event_orders_two_streams() -> None:
    assert _race(sync=True) == 40


def test_legacy_stream_waits_for_blocking_streams() -> None:
    s = cupy.cuda.Stream()  # blocking: ordered with the legacy default stream
    with s:
        a = cupy.full(4, 5, cupy.int32)
    b = a + 1  # on the legacy stream: waits for s
    assert b.get().tolist() == [6] * 4


def test_pinned_pool_hands_a_buffer_out_again_at_once() -> None:
    """What CuPy's pinned pool does: a buffer freed while a copy still reads it is reused."""
    import cupyx

    dev = cupy.empty(64, cupy.uint8)
    s = cupy.cuda.Stream(non_blocking=True)
    host = cupyx.empty_pinned((64,), np.uint8)
    host[:] = 7
    cupy.cuda.runtime.memcpyAsync(dev.data.ptr, host.ctypes.data, 64,
                                  cupy.cuda.runtime.memcpyHostToDevice, s.ptr)
    address = host.ctypes.data
    del host  # no synchronize: the copy has not run
    other = cupyx.empty_pinned((64,), np.uint8)
    assert other.ctypes.data == address
    other[:] = 9
    s.synchronize()
    with s:
        assert dev.get().tolist() == [9] * 64


def test_device_pool_reuses_a_block_on_its_stream() -> None:
    """A block freed with work still queued is handed to the next allocation on its stream:
    stream-ordered work stays right, an external writer would race (as with CuPy's pool)."""
    s = cupy.cuda.Stream(non_blocking=True)
    with s:
        a = cupy.full(256, 3, cupy.uint8)
        b = a + 1
        ptr = a.data.ptr
        del a
        c = cupy.empty(256, cupy.uint8)
        assert c.data.ptr == ptr
        c.fill(0)
        assert b.get().tolist() == [4] * 256  # b's kernel ran before c's fill, in stream order
    other = cupy.cuda.Stream(non_blocking=True)
    with other:
        d = cupy.empty(256, cupy.uint8)
        assert d.data.ptr != c.data.ptr


def test_per_thread_default_stream_blocks_stay_in_their_thread() -> None:
    """CuPy files the per-thread default stream's blocks per thread (cupy#5069): a block
    freed there is reused by that thread only, although every thread's handle is 2."""
    import threading

    freed: list[int] = []

    def other() -> None:
        with cupy.cuda.Stream.ptds:
            a = cupy.full(4096, 7, cupy.uint8)
            freed.append(a.data.ptr)
            del a

    t = threading.Thread(target=other)
    t.start()
    t.join()
    with cupy.cuda.Stream.ptds:
        b = cupy.empty(4096, cupy.uint8)
        assert b.data.ptr != freed[0]
        ptr = b.data.ptr
        del b
        assert cupy.empty(4096, cupy.uint8).data.ptr == ptr  # this thread's own: reused
