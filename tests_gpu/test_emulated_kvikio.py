"""The emulated kvikio (tests/emulated_gpu/kvikio) behaves as kvikio 26.10 does (issue 18).

Each test pins one behaviour of the real library, read from the kvikio-cu12 26.10 wheel (probed
without a GPU where it can run: defaults, environment parsing, argument checks, open flags) or
from kvikio's C++ sources (file_handle.cpp, posix_io.hpp, remote_handle.cpp, libcurl.cpp), and
what makes the stand-in strict: a read lands when its future is waited on, device ranges are
checked against the emulated allocations, a dead context fails device I/O, kvikio's writes are
not ordered with CUDA streams. Remote files are read from real servers on 127.0.0.1: an HTTP
server with Range support (tests/_servers.py) and moto's S3 server.

Runs where tests/emulated_gpu is on ``sys.path`` (the emulated leg puts it first)::

    PYTHONPATH=tests/emulated_gpu python -m pytest tests_gpu/test_emulated_kvikio.py -q
"""

from __future__ import annotations

import http.server
import os
import sys
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.emulator

pytest.importorskip("_emucuda")
emulated = pytest.importorskip("kvikio._emulated", reason="the emulated kvikio is not first on "
                                                          "sys.path")

import kvikio
import kvikio.cufile_driver
import kvikio.defaults
from _emucuda import errors, memory, streams
from kvikio.remote_file import RemoteEndpointType, RemoteFile

_TESTS = str(Path(__file__).resolve().parents[1] / "tests")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from _servers import RangeServer, create_bucket, start_moto

PAGE = 4096
SIZE = 100_003  # not a multiple of the page: the end of the file is partial


class DeviceBuffer:
    """``nbytes`` of emulated device memory exposed as a CUDA array (as a CuPy array is).

    ``shape`` may claim more bytes than were allocated (an out-of-bounds destination).
    """

    def __init__(self, nbytes: int, device: int = 0, *, shape: int | None = None,
                 offset: int = 0) -> None:
        self.alloc = memory.allocate(nbytes, device)
        self.nbytes = nbytes
        self.ptr = self.alloc.ptr + offset
        self.__cuda_array_interface__ = {
            "shape": (nbytes - offset if shape is None else shape,), "typestr": "|u1",
            "data": (self.ptr, False), "version": 3, "strides": None, "stream": 1}

    def host(self) -> np.ndarray:
        """The bytes on the device (the test reads them behind the emulator's back)."""
        return self.alloc.array()[: self.nbytes].copy()

    def fill(self, value: int) -> None:
        self.alloc.array()[: self.nbytes] = value

    def free(self) -> None:
        memory.free(self.alloc)


class CudaView:
    """A CUDA array interface over any pointer (a bad one, for the fault tests)."""

    def __init__(self, ptr: int, nbytes: int) -> None:
        self.__cuda_array_interface__ = {"shape": (nbytes,), "typestr": "|u1",
                                         "data": (ptr, False), "version": 3}


@pytest.fixture(autouse=True)
def clean_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test sees kvikio's defaults as a fresh process does, no GDS, no records."""
    for name in list(os.environ):
        if name.startswith(("KVIKIO_", "AWS_")) or name == emulated.GDS_ENV:
            monkeypatch.delenv(name)
    emulated.reset_defaults()
    emulated.set_gds(None)
    emulated.clear_records()
    yield
    emulated.reset_defaults()
    emulated.set_gds(None)
    streams.revive_all()


@pytest.fixture
def data_file(tmp_path: Path) -> tuple[Path, bytes]:
    data = np.random.default_rng(0).integers(0, 256, SIZE, np.uint8).tobytes()
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    return path, data


def _u8(b: bytes) -> np.ndarray:
    return np.frombuffer(b, np.uint8)


# ---------------------------------------------------------------- CuFile reads


def test_version_and_names() -> None:
    assert kvikio.__version__ == "26.10.00"  # kvikio's VERSION file (the wheel says 26.10.0)
    assert kvikio.is_remote_file_available()
    assert not hasattr(kvikio, "Mmap")  # not emulated: absent rather than wrong


def test_pread_into_host_memory_lands_at_get(data_file: tuple[Path, bytes]) -> None:
    path, data = data_file
    buf = np.zeros(1000, np.uint8)
    with kvikio.CuFile(path, "r") as f:
        fut = f.pread(buf, 500, 1234)
        assert not buf.any()  # nothing before the future is waited on
        assert fut.get() == 500
        assert (buf[:500] == _u8(data[1234:1734])).all() and not buf[500:].any()
        assert f.read(buf) == 1000  # size None: the whole buffer, offset 0
        assert (buf == _u8(data[:1000])).all()
    assert [r.route for r in emulated.records()] == ["host", "host"]


def test_pread_into_device_memory_lands_at_get(data_file: tuple[Path, bytes]) -> None:
    path, data = data_file
    dev = DeviceBuffer(SIZE)
    f = kvikio.CuFile(str(path))
    fut = f.pread(dev, SIZE - 3, 3)
    assert emulated.records() == [] and not dev.host().any()
    assert fut.done() is False  # first poll: not yet
    assert not dev.host().any()
    assert fut.done() is True  # a later poll completes it (polling loops end)
    assert (dev.host()[: SIZE - 3] == _u8(data[3:])).all()
    assert fut.get() == SIZE - 3
    with pytest.raises(RuntimeError, match="No associated state"):
        fut.get()  # std::future::get twice
    with pytest.raises(ValueError, match="does not refer to a valid shared state"):
        fut.done()
    assert [r.route for r in emulated.records()] == ["bounce"]  # compat mode


def test_tasks_split_as_parallel_io(data_file: tuple[Path, bytes]) -> None:
    path, data = data_file
    dev = DeviceBuffer(SIZE)
    with kvikio.CuFile(path) as f:
        assert f.pread(dev, 50_000, 1000, task_size=16_384).get() == 50_000
    assert [(r.file_offset, r.size) for r in emulated.records()] == [
        (1000, 16384), (17384, 16384), (33768, 16384), (50152, 848)]
    assert (dev.host()[:50_000] == _u8(data[1000:51_000])).all()
    emulated.clear_records()
    with kvikio.defaults.set("task_size", 30_000), kvikio.CuFile(path) as f:
        f.read(dev, 60_000)
    assert [r.size for r in emulated.records()] == [30_000, 30_000]


def test_reading_past_the_end_raises_as_posix_io_does(data_file: tuple[Path, bytes]) -> None:
    path, data = data_file
    host = np.zeros(100, np.uint8)
    f = kvikio.CuFile(path)
    fut = f.pread(host, 100, SIZE - 40)  # async: the error comes with the future
    with pytest.raises(RuntimeError, match=r"posix_io\.hpp:\d+: POSIX error on pread: EOF"):
        fut.get()
    assert (host[:40] == _u8(data[-40:])).all()  # the bytes before the end landed
    big = DeviceBuffer(40_000)
    fut = f.pread(big, 40_000, SIZE - 30_000)
    with pytest.raises(RuntimeError, match="POSIX error on pread: EOF"):
        fut.get()
    small = DeviceBuffer(100)
    with pytest.raises(RuntimeError, match="POSIX error on pread: EOF"):
        f.pread(small, 100, SIZE - 10)  # below gds_threshold: done in pread() itself


def test_reading_past_the_end_with_gds_is_a_short_read(data_file: tuple[Path, bytes]) -> None:
    emulated.set_gds(True)
    path, data = data_file
    dev = DeviceBuffer(8 * PAGE)
    with kvikio.CuFile(path) as f:
        assert f.pread(dev, 8 * PAGE, 24 * PAGE).get() == SIZE - 24 * PAGE  # cuFileRead
    assert (dev.host()[: SIZE - 24 * PAGE] == _u8(data[24 * PAGE:])).all()


def test_buffer_arguments_are_checked_as_kvikio_does(data_file: tuple[Path, bytes]) -> None:
    path, _ = data_file
    f = kvikio.CuFile(path)
    buf = np.zeros(10, np.uint8)
    with pytest.raises(ValueError, match=r"^Size is greater than the size of the buffer$"):
        f.pread(buf, 11)
    with pytest.raises(ValueError, match=r"^Array must be contiguous$"):
        f.pread(np.zeros((10, 10), np.uint8)[:, ::2])
    assert f.pread(np.zeros((4, 4), np.uint8, order="F")).get() == 16  # F order is contiguous
    with pytest.raises(TypeError, match="a bytes-like object is required, not 'list'"):
        f.pread([1, 2, 3])
    with pytest.raises(OverflowError, match="can't convert negative value to size_t"):
        f.pread(buf, 5, -1)
    with pytest.raises(OverflowError, match="can't convert negative value to size_t"):
        f.pread(buf, -1)
    with pytest.raises(TypeError, match=r"Argument 'file_offset' has incorrect type \(expected "
                                        r"int, got NoneType\)"):
        f.pread(buf, 5, None)
    with pytest.raises(TypeError, match="Argument 'size' has incorrect type"):
        f.pread(buf, "5")
    with pytest.raises(ValueError, match="read-only buffer"):  # the emulator refuses it
        f.pread(np.frombuffer(b"0123456789", np.uint8))
    with pytest.raises(ValueError, match=r"^Non-CUDA buffers not supported$"):
        f.raw_read(buf)
    assert f.pread(buf, 0, 10 * SIZE).get() == 0  # nothing to read: nothing checked
    strided = CudaView(DeviceBuffer(64).ptr, 32)
    strided.__cuda_array_interface__["strides"] = (2,)
    with pytest.raises(ValueError, match=r"^Array must be contiguous$"):
        f.pread(strided)


def test_out_of_bounds_destination_faults_naming_the_call(
        data_file: tuple[Path, bytes]) -> None:
    path, _ = data_file
    f = kvikio.CuFile(path)
    dev = DeviceBuffer(30_000, shape=40_000)  # claims more than was allocated
    fut = f.pread(dev, 40_000)  # the range is checked when the bytes move
    with pytest.raises(errors.Fault, match=r"kvikio\.CuFile\.pread.*past the end") as e:
        fut.get()
    assert isinstance(e.value, RuntimeError)  # what every libkvikio error is in Python
    assert isinstance(e.value, emulated.DeviceFault)
    with pytest.raises(errors.Fault, match=r"kvikio\.CuFile\.pread"):
        f.pread(DeviceBuffer(100, shape=600), 600)  # a synchronous small read: at once
    with pytest.raises(errors.Fault, match="illegal address"):
        f.pread(CudaView(0x1000, 20_000)).get()  # no allocation holds it
    gone = DeviceBuffer(20_000)
    fut = f.pread(gone, 20_000)
    gone.free()  # freed before the future is waited on: kvikio would write into freed memory
    with pytest.raises(errors.Fault, match="illegal address"):
        fut.get()
    assert not streams.is_dead(0)  # a bad range in a copy is not a sticky error


def test_a_handle_closed_before_its_futures_are_waited_on(
        data_file: tuple[Path, bytes]) -> None:
    """libkvikio's tasks use the handle's descriptors when they run: closing (or dropping) the
    handle first leaves them a closed descriptor, or another file's."""
    path, _ = data_file
    host = np.zeros(1000, np.uint8)
    f = kvikio.CuFile(path)
    fut = f.pread(host)
    f.close()
    with pytest.raises(RuntimeError, match="closed or garbage-collected before this future"):
        fut.get()
    fut = kvikio.CuFile(path).pread(DeviceBuffer(20_000))  # the handle is dropped at once
    with pytest.raises(RuntimeError, match="POSIX error: Operation not permitted"):
        fut.get()


@pytest.mark.fresh_process
def test_a_dead_context_fails_device_reads(data_file: tuple[Path, bytes]) -> None:
    path, data = data_file
    dev = DeviceBuffer(20_000, device=1)
    host = np.zeros(100, np.uint8)

    def boom() -> None:
        raise errors.Fault("test: an out-of-bounds kernel")

    streams.enqueue(streams.LEGACY, 1, boom, "test kernel")
    with pytest.raises(errors.CUDARuntimeError):
        streams.synchronize(streams.LEGACY, 1)
    f = kvikio.CuFile(path)
    with pytest.raises(errors.CUDARuntimeError, match="CUDA_ERROR_ILLEGAL_ADDRESS") as e:
        f.pread(dev, 20_000)
    assert e.value.status == 700 and isinstance(e.value, RuntimeError)
    assert f.pread(host).get() == 100  # host memory needs no device
    assert (host == _u8(data[:100])).all()


def test_reads_are_not_stream_ordered(data_file: tuple[Path, bytes]) -> None:
    """Queued stream work that writes the buffer runs after kvikio's write: a real race."""
    path, data = data_file
    dev = DeviceBuffer(20_000)
    stream = streams.new_stream(0, non_blocking=True)
    streams.enqueue(stream, 0, lambda: dev.fill(7), "a kernel still writing the buffer")
    f = kvikio.CuFile(path)
    assert f.pread(dev, 20_000).get() == 20_000
    assert (dev.host() == _u8(data[:20_000])).all()  # get() did not wait for the stream
    streams.synchronize(stream, 0)
    assert (dev.host() == 7).all()  # ... whose work then overwrote what kvikio read


def test_gds_reads_synchronize_the_legacy_stream_first(data_file: tuple[Path, bytes]) -> None:
    """libkvikio's pread calls cuStreamSynchronize(0) before DMA (not in compat mode)."""
    path, _ = data_file
    dev = DeviceBuffer(20_000)
    ran: list[str] = []
    streams.enqueue(streams.LEGACY, 0, lambda: ran.append("compat"), "legacy work")
    f = kvikio.CuFile(path)
    f.pread(dev, 20_000).get()
    assert ran == []
    streams.synchronize(streams.LEGACY, 0)
    emulated.set_gds(True)
    streams.enqueue(streams.LEGACY, 0, lambda: ran.append("gds"), "legacy work")
    g = kvikio.CuFile(path)
    fut = g.pread(dev, 20_000)
    assert ran == ["compat", "gds"]  # at pread(), before the DMA
    fut.get()


# ---------------------------------------------------------------- GDS routes


def test_gds_routes_follow_alignment(data_file: tuple[Path, bytes]) -> None:
    emulated.set_gds(True)
    path, data = data_file
    assert kvikio.cufile_driver.get("is_gds_available")
    assert not kvikio.defaults.is_compat_mode_preferred()
    dev = DeviceBuffer(16 * PAGE)  # a whole number of pages: it starts on a page
    assert dev.ptr % PAGE == 0
    f = kvikio.CuFile(path)
    f.pread(dev, 8 * PAGE, 4 * PAGE).get()
    f.pread(dev, 8 * PAGE, 4 * PAGE + 1).get()  # unaligned file offset
    f.pread(dev, 5 * PAGE + 7, 0).get()  # unaligned size: the last 7 bytes are not DMA
    f.pread(DeviceBuffer(16 * PAGE, offset=512), 8 * PAGE, 0).get()  # unaligned address
    f.pread(dev, 1000, 0).get()  # below gds_threshold: kvikio's bounce buffer
    f.pread(np.zeros(8 * PAGE, np.uint8), 8 * PAGE, 0).get()  # host memory
    assert [(r.route, r.size) for r in emulated.records()] == [
        ("dma", 8 * PAGE), ("dma_unaligned", 8 * PAGE), ("dma", 5 * PAGE),
        ("dma_unaligned", 7), ("dma_unaligned", 8 * PAGE), ("bounce", 1000), ("host", 8 * PAGE)]
    assert (dev.host()[:1000] == _u8(data[:1000])).all()
    with kvikio.defaults.set("compat_mode", kvikio.CompatMode.ON):
        emulated.clear_records()
        h = kvikio.CuFile(path)
        h.pread(dev, 8 * PAGE, 0).get()
        assert [r.route for r in emulated.records()] == ["bounce"]


def test_compat_mode_off_without_gds_fails_to_open(data_file: tuple[Path, bytes]) -> None:
    path, _ = data_file
    with kvikio.defaults.set("compat_mode", kvikio.CompatMode.OFF):
        with pytest.raises(RuntimeError, match="NVFS driver initialization error"):
            kvikio.CuFile(path)
        emulated.set_gds(True)
        kvikio.CuFile(path).close()


def test_auto_falls_back_to_compat_where_o_direct_fails(
        data_file: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system without O_DIRECT (tmpfs before Linux 6.6, some FUSE ones): under AUTO the
    handle silently becomes a compat one, under OFF opening fails."""
    path, _ = data_file
    real_open = os.open

    def no_direct(p: Any, flags: int, mode: int = 0o777) -> int:
        if flags & os.O_DIRECT:
            raise OSError(22, "Invalid argument")
        return real_open(p, flags, mode)

    monkeypatch.setattr(os, "open", no_direct)
    emulated.set_gds(True)
    dev = DeviceBuffer(8 * PAGE)
    with kvikio.CuFile(path) as f:
        assert not f.is_direct_io_supported()
        f.read(dev)
    assert [r.route for r in emulated.records()] == ["bounce"]
    with kvikio.defaults.set("compat_mode", kvikio.CompatMode.OFF):
        with pytest.raises(RuntimeError, match=r"^Unable to open file\. .*Invalid argument$"):
            kvikio.CuFile(path)


# ---------------------------------------------------------------- writes


def test_pwrite_reads_the_device_buffer_at_get(tmp_path: Path) -> None:
    dev = DeviceBuffer(50_000)
    dev.fill(1)
    out = tmp_path / "out.bin"
    with kvikio.CuFile(out, "w") as f:
        fut = f.pwrite(dev, 50_000, 0)
        dev.fill(2)  # still in flight: kvikio copies out of the buffer when its tasks run
        assert fut.get() == 50_000
        small = DeviceBuffer(100)
        small.fill(3)
        fut = f.pwrite(small, 100, 50_000)
        small.fill(4)
        assert fut.get() == 100
        host = np.full(10, 5, np.uint8)
        assert f.write(host, file_offset=50_100) == 10
    got = out.read_bytes()
    assert got == b"\x02" * 50_000 + b"\x04" * 100 + b"\x05" * 10


def test_writes_through_a_read_handle_fail(data_file: tuple[Path, bytes]) -> None:
    path, _ = data_file
    f = kvikio.CuFile(path, "r")
    with pytest.raises(RuntimeError, match="POSIX error: Operation not permitted"):
        f.pwrite(np.zeros(10, np.uint8)).get()
    with pytest.raises(RuntimeError, match="POSIX error: Operation not permitted"):
        f.pwrite(DeviceBuffer(10))  # below gds_threshold: at the call


# ---------------------------------------------------------------- the handle


def test_open_flags_and_handle_state(data_file: tuple[Path, bytes], tmp_path: Path) -> None:
    path, _ = data_file
    f = kvikio.CuFile(path)
    assert f.open_flags() & os.O_ACCMODE == os.O_RDONLY and f.fileno() >= 0
    assert f.is_direct_io_supported()  # auto_direct_io_write is on by default
    assert not f.closed
    f.close()
    f.close()
    assert f.closed and f.fileno() == -1
    with pytest.raises(RuntimeError, match=r"^Unable to retrieve open flags\. Linux system/library "
                                           r"function call error at: .*file_utils\.cpp:168: Bad "
                                           r"file descriptor$"):
        f.open_flags()
    assert kvikio.CuFile(path, "r+").open_flags() & os.O_ACCMODE == os.O_RDWR
    assert kvikio.CuFile(tmp_path / "new.bin", "w").open_flags() & os.O_ACCMODE == os.O_WRONLY
    assert kvikio.CuFile(path, "rb").open_flags() & os.O_ACCMODE == os.O_RDONLY
    with pytest.raises(ValueError, match="Open flag 'a' isn't supported"):
        kvikio.CuFile(path, "a")
    with pytest.raises(ValueError, match=r"file_utils\.cpp:142: Unknown file open flag"):
        kvikio.CuFile(path, "x")
    with pytest.raises(ValueError, match=r"file_utils\.cpp:130: Unknown file open flag"):
        kvikio.CuFile(path, "")
    with pytest.raises(RuntimeError, match=r"^Unable to open file\. .*file_utils\.cpp:160: No "
                                           r"such file or directory$"):
        kvikio.CuFile(tmp_path / "missing.bin")
    with pytest.raises(TypeError, match=r"expected str, bytes or os\.PathLike object, not int"):
        kvikio.CuFile(3)
    with kvikio.CuFile(path) as g:
        assert not g.closed
    assert g.closed


def test_raw_read_and_write(data_file: tuple[Path, bytes], tmp_path: Path) -> None:
    path, data = data_file
    dev = DeviceBuffer(1024)  # a whole number of granules: nothing after it is usable
    f = kvikio.CuFile(path)
    assert f.raw_read(dev, 100, 10, 50) == 100  # synchronous: lands now
    assert (dev.host()[50:150] == _u8(data[10:110])).all()
    with pytest.raises(errors.Fault, match=r"kvikio\.CuFile\.raw_read"):
        f.raw_read(dev, 1024, 0, 1)  # size fits the buffer, dev_offset + size does not
    out = kvikio.CuFile(tmp_path / "raw.bin", "w")
    assert out.raw_write(dev, 100, 0, 50) == 100
    out.close()
    assert (tmp_path / "raw.bin").read_bytes() == data[10:110]


def test_raw_read_async(data_file: tuple[Path, bytes]) -> None:
    path, data = data_file
    dev = DeviceBuffer(1000)
    stream = streams.new_stream(0, non_blocking=True)
    f = kvikio.CuFile(path)
    fut = f.raw_read_async(dev, stream, 100, 0)  # compat: the stream is synchronized, then read
    assert (dev.host()[:100] == _u8(data[:100])).all()
    assert fut.check_bytes_done() == 100
    emulated.set_gds(True)  # cuFile's stream API: queued on the stream
    g = kvikio.CuFile(path)
    fut = g.raw_read_async(dev, stream, 100, 200)
    assert (dev.host()[:100] == _u8(data[:100])).all()
    assert fut.check_bytes_done() == 100  # synchronizes the stream
    assert (dev.host()[:100] == _u8(data[200:300])).all()


def test_page_cache_helpers(data_file: tuple[Path, bytes]) -> None:
    path, _ = data_file
    cached, total = kvikio.get_page_cache_info(path)
    assert total == -(-SIZE // PAGE) and 0 <= cached <= total
    assert kvikio.get_page_cache_info(str(path), SIZE + 1) == (0, 0)
    kvikio.drop_file_page_cache(path)


def test_buffer_registration_needs_device_memory() -> None:
    kvikio.memory_register(DeviceBuffer(100))
    kvikio.memory_deregister(DeviceBuffer(100))
    with pytest.raises(RuntimeError, match="CUDA_ERROR_INVALID_VALUE"):
        kvikio.memory_register(np.zeros(10))
    assert kvikio.bounce_buffer_free() == 0


# ---------------------------------------------------------------- defaults


def test_defaults_values_and_aliases() -> None:
    d = kvikio.defaults
    assert d.get("compat_mode") is kvikio.CompatMode.AUTO
    assert d.get("num_threads") == d.get("thread_pool_nthreads") == 1
    assert d.get("task_size") == 4 << 20 and d.get("gds_threshold") == 16 << 10
    assert d.get("bounce_buffer_size") == 16 << 20
    assert d.get("http_status_codes") == [429, 500, 502, 503, 504]
    assert (d.get("http_max_attempts"), d.get("http_timeout")) == (3, 60)
    assert (d.get("auto_direct_io_read"), d.get("auto_direct_io_write")) == (False, True)
    assert d.get("remote_io_backend") is kvikio.RemoteIOBackend.EASY_THREADPOOL
    assert d.get("remote_io_num_reactors") == 1
    assert d.get("remote_io_max_concurrent_requests") == 256
    assert d.is_compat_mode_preferred()  # AUTO without a cuFile driver
    with pytest.raises(KeyError, match="bogus"):
        d.get("bogus")


def test_defaults_set_applies_at_once_and_reverts_in_a_with_block() -> None:
    d = kvikio.defaults
    cm = d.set({"num_threads": 8, "task_size": 1 << 20})  # applies now, context manager or not
    assert (d.get("num_threads"), d.get("task_size")) == (8, 1 << 20)
    assert isinstance(cm, d.ConfigContextManager)
    with d.set("task_size", 12345) as nothing:
        assert nothing is None and d.get("task_size") == 12345
        with d.set({"gds_threshold": 0, "compat_mode": kvikio.CompatMode.ON}):
            assert d.get("gds_threshold") == 0 and d.get("compat_mode") is kvikio.CompatMode.ON
        assert d.get("gds_threshold") == 16 << 10
    assert d.get("task_size") == 1 << 20
    d.set("compat_mode", 0)
    assert d.get("compat_mode") is kvikio.CompatMode.OFF and not d.is_compat_mode_preferred()
    assert d.set("remote_io_num_reactors", 2) is None  # process-lifetime: no context manager


def test_defaults_set_rejects_what_kvikio_rejects() -> None:
    d = kvikio.defaults
    msg = r"^Valid arguments are kvikio\.defaults\.set\(config: dict\) or"
    for args in ((), ([1],), (1, 2), ("a", 1, 2)):
        with pytest.raises(ValueError, match=msg):
            d.set(*args)
    with pytest.raises(KeyError, match="bogus"):
        d.set({"task_size": 5, "bogus": 1})
    assert d.get("task_size") == 5  # the keys before the bad one were set
    with pytest.raises(ValueError, match=r"defaults\.cpp:225: number of threads must be a "
                                         r"positive integer$"):
        d.set("num_threads", 0)
    with pytest.raises(ValueError, match=r"defaults\.cpp:239: task size must be a positive"):
        d.set("task_size", 0)
    with pytest.raises(OverflowError, match="can't convert negative value to size_t"):
        d.set("task_size", -5)
    with pytest.raises(TypeError, match=r"^Argument 'nbytes' has incorrect type \(expected int, "
                                        r"got NoneType\)$"):
        d.set("task_size", None)
    with pytest.raises(TypeError, match="an integer is required"):
        d.set("compat_mode", "ON")
    with pytest.raises(OverflowError, match="value too large to convert to uint8_t"):
        d.set("compat_mode", 256)
    d.set("compat_mode", 5)  # stored as the C++ enum; reading it back fails
    with pytest.raises(ValueError, match=r"^5 is not a valid CompatMode$"):
        d.get("compat_mode")
    with pytest.raises(ValueError, match=r"^5 is not a valid CompatMode$"):
        d.set("compat_mode", 0)  # set() reads the old value first: stuck, as in kvikio
    emulated.reset_defaults()
    with pytest.raises(TypeError, match=r"expected list, got tuple"):
        d.set("http_status_codes", (500,))
    with pytest.raises(ValueError, match=r"\['remote_io_num_reactors'\] are fixed for the "
                                         r"process's remaining lifetime"):
        d.set({"remote_io_num_reactors": 2})
    d.set("auto_direct_io_read", "x")  # a C++ bool: any truthy object
    assert d.get("auto_direct_io_read") is True
    d.set("num_threads", 2.5)  # Cython converts floats with int()
    assert d.get("num_threads") == 2


@pytest.mark.parametrize(("env", "name", "value"), [
    ({"KVIKIO_COMPAT_MODE": "ON"}, "compat_mode", kvikio.CompatMode.ON),
    ({"KVIKIO_COMPAT_MODE": " off "}, "compat_mode", kvikio.CompatMode.OFF),
    ({"KVIKIO_COMPAT_MODE": "Yes"}, "compat_mode", kvikio.CompatMode.ON),
    ({"KVIKIO_COMPAT_MODE": "auto"}, "compat_mode", kvikio.CompatMode.AUTO),
    ({"KVIKIO_NTHREADS": "7"}, "num_threads", 7),
    ({"KVIKIO_NUM_THREADS": "5"}, "num_threads", 5),
    ({"KVIKIO_NTHREADS": "4", "KVIKIO_NUM_THREADS": "4"}, "num_threads", 4),
    ({"KVIKIO_NTHREADS": "4x"}, "num_threads", 4),  # std::stringstream >> int
    ({"KVIKIO_TASK_SIZE": "1048576"}, "task_size", 1 << 20),
    ({"KVIKIO_TASK_SIZE": "1e6"}, "task_size", 1),
    ({"KVIKIO_GDS_THRESHOLD": "0"}, "gds_threshold", 0),
    ({"KVIKIO_BOUNCE_BUFFER_SIZE": "65536"}, "bounce_buffer_size", 65536),
    ({"KVIKIO_HTTP_STATUS_CODES": " 500 , 501 "}, "http_status_codes", [500, 501]),
    ({"KVIKIO_HTTP_STATUS_CODES": ""}, "http_status_codes", [429, 500, 502, 503, 504]),
    ({"KVIKIO_AUTO_DIRECT_IO_READ": "yes"}, "auto_direct_io_read", True),
    ({"KVIKIO_AUTO_DIRECT_IO_READ": "2"}, "auto_direct_io_read", True),
    ({"KVIKIO_REMOTE_IO_BACKEND": "MULTI_POLL"}, "remote_io_backend",
     kvikio.RemoteIOBackend.MULTI_POLL),
])
def test_environment(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], name: str,
                     value: Any) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    emulated.reset_defaults()
    assert kvikio.defaults.get(name) == value


@pytest.mark.parametrize(("env", "message"), [
    ({"KVIKIO_COMPAT_MODE": "bogus"}, r"compat_mode\.cpp:28: Unknown compatibility mode: bogus"),
    ({"KVIKIO_NTHREADS": "0"}, r"defaults\.cpp:99: KVIKIO_NTHREADS has to be a positive integer"),
    ({"KVIKIO_NTHREADS": "abc"}, r"defaults\.hpp:42: unknown config value KVIKIO_NTHREADS=abc"),
    ({"KVIKIO_NTHREADS": "4", "KVIKIO_NUM_THREADS": "5"},
     r"defaults\.hpp:105: Environment variable KVIKIO_NUM_THREADS \(5\) has already been set by "
     r"its alias KVIKIO_NTHREADS \(4\) with a different value\."),
    ({"KVIKIO_TASK_SIZE": "0"}, r"defaults\.cpp:115: KVIKIO_TASK_SIZE has to be a positive"),
    ({"KVIKIO_GDS_THRESHOLD": "-1"}, r"defaults\.cpp:121: KVIKIO_GDS_THRESHOLD has to be"),
    ({"KVIKIO_BOUNCE_BUFFER_SIZE": "0"}, r"defaults\.cpp:128: KVIKIO_BOUNCE_BUFFER_SIZE"),
    ({"KVIKIO_HTTP_STATUS_CODES": "500,abc"},
     r"http_status_codes\.cpp:24: KVIKIO_HTTP_STATUS_CODES: invalid format"),
    ({"KVIKIO_AUTO_DIRECT_IO_READ": "maybe"},
     r"defaults\.cpp:42: unknown config value KVIKIO_AUTO_DIRECT_IO_READ=maybe"),
    # The thread pool is built before the rest: its error wins.
    ({"KVIKIO_TASK_SIZE": "0", "KVIKIO_NTHREADS": "0"}, r"KVIKIO_NTHREADS has to be"),
    ({"KVIKIO_TASK_SIZE": "0", "KVIKIO_COMPAT_MODE": "x"}, r"Unknown compatibility mode: x"),
])
def test_bad_environment_fails_every_call(monkeypatch: pytest.MonkeyPatch,
                                          env: dict[str, str], message: str) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    emulated.reset_defaults()
    for call in (lambda: kvikio.defaults.get("task_size"),
                 kvikio.defaults.is_compat_mode_preferred,
                 lambda: kvikio.defaults.set("gds_threshold", 1)):
        with pytest.raises(ValueError, match=f"^KvikIO failure at: /__w/kvikio/kvikio/cpp/.*"
                                             f"{message}"):
            call()
    for k in env:
        monkeypatch.delenv(k)
    assert kvikio.defaults.get("task_size") == 4 << 20  # built once the environment is fixed


def test_compat_mode_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    d = kvikio.defaults
    assert d.is_compat_mode_preferred()  # AUTO, no GDS on the emulated device
    monkeypatch.setenv("EMULATED_GPU_GDS", "1")
    assert not d.is_compat_mode_preferred()
    with d.set("compat_mode", kvikio.CompatMode.ON):
        assert d.is_compat_mode_preferred()
    monkeypatch.setenv("KVIKIO_COMPAT_MODE", "OFF")
    monkeypatch.setenv("EMULATED_GPU_GDS", "0")
    emulated.reset_defaults()
    assert not d.is_compat_mode_preferred()


# ---------------------------------------------------------------- cufile_driver


def test_cufile_driver_without_gds() -> None:
    drv = kvikio.cufile_driver
    drv.properties._reset()
    assert drv.get("is_gds_available") is False  # the failed first read is caught
    assert drv.get("major_version") == 0 and drv.get("allow_compat_mode") is False
    assert drv.libcufile_version() == (1, 14)
    drv.properties._reset()
    with pytest.raises(RuntimeError, match="NVFS driver initialization error"):
        drv.get("major_version")  # the first read of a property raises ...
    assert drv.get("major_version") == 0  # ... and later ones see zeros, as libkvikio's do
    with pytest.raises(RuntimeError, match="Unable to open GDS file driver: NVFS driver "
                                           "initialization error"):
        drv.driver_open()


def test_cufile_driver_with_gds() -> None:
    emulated.set_gds(True)
    drv = kvikio.cufile_driver
    assert drv.get("is_gds_available") is True
    assert (drv.get("major_version"), drv.get("minor_version")) == (2, 17)
    assert drv.get("allow_compat_mode") is True and drv.get("per_buffer_cache_size") == 1024
    with drv.set({"poll_mode": True, "max_device_cache_size": 4096}):
        assert drv.get("poll_mode") is True and drv.get("max_device_cache_size") == 4096
    assert drv.get("poll_mode") is False and drv.get("max_device_cache_size") == 131072
    with pytest.raises(KeyError, match="This property is read-only"):
        drv.set("is_gds_available", False)
    with pytest.raises(KeyError):
        drv.get("bogus")
    drv.driver_open()
    drv.driver_close()


# ---------------------------------------------------------------- RemoteFile over HTTP


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[RangeServer, bytes]]:
    data = np.random.default_rng(1).integers(0, 256, 300_000, np.uint8).tobytes()
    (tmp_path / "obj.bin").write_bytes(data)
    server = RangeServer(tmp_path, stall_seconds=3)
    yield server, data
    server.close()


def test_http_reads_into_host_and_device(http_server: tuple[RangeServer, bytes]) -> None:
    server, data = http_server
    f = RemoteFile.open_http(f"{server.url}/obj.bin")
    assert f.nbytes() == len(data) and f.remote_endpoint_type() is RemoteEndpointType.HTTP
    assert server.total("HEAD") == 1 and server.total("GET") == 0
    host = np.zeros(1000, np.uint8)
    fut = f.pread(host, 1000, 5000)
    assert server.total("GET") == 0 and not host.any()  # nothing until the future is waited on
    assert fut.get() == 1000 and (host == _u8(data[5000:6000])).all()
    dev = DeviceBuffer(len(data))
    with kvikio.defaults.set("task_size", 100_000):
        assert f.read(dev) == len(data)  # three range requests
    assert (dev.host() == _u8(data)).all() and server.total("GET") == 4
    g = RemoteFile.open_http(f"{server.url}/obj.bin", nbytes=len(data))  # no HEAD
    assert server.total("HEAD") == 1 and g.read(host, 10, 20) == 10
    assert [r.route for r in emulated.records()] == ["http"] * 5


def test_http_read_past_the_end(http_server: tuple[RangeServer, bytes]) -> None:
    server, data = http_server
    f = RemoteFile.open_http(f"{server.url}/obj.bin")
    fut = f.pread(np.zeros(1000, np.uint8), 1000, len(data) - 500)
    with pytest.raises(ValueError, match=rf"cannot read {len(data) - 500}\+1000 bytes into a "
                                         rf"{len(data)} bytes file \({server.url}/obj\.bin\)$"):
        fut.get()
    assert f.pread(np.zeros(1, np.uint8), 0, 10 * len(data)).get() == 0  # nothing to read


def test_http_errors(http_server: tuple[RangeServer, bytes]) -> None:
    server, _ = http_server
    with pytest.raises(RuntimeError, match=r"libcurl\.cpp:\d+: curl_easy_perform\(\) error \(The "
                                           r"requested URL returned error: 404\)$"):
        RemoteFile.open_http(f"{server.url}/missing.bin")
    with pytest.raises(RuntimeError, match=r"Failed to connect to 127\.0\.0\.1 port 1 after \d+ "
                                           r"ms: Could not connect to server"):
        RemoteFile.open_http("http://127.0.0.1:1/x.bin")
    f = RemoteFile.open_http(f"{server.url}/obj.bin")
    server.faults["obj"] = ["503"]
    kvikio.defaults.set("http_max_attempts", 1)
    with pytest.raises(RuntimeError, match=r"reached maximum number of attempts \(1\)\. Reason: "
                                           r"Got HTTP code 503\."):
        f.read(np.zeros(10, np.uint8))
    server.faults["obj"] = ["403"]  # not a status to retry
    with pytest.raises(RuntimeError, match="returned error: 403"):
        f.read(np.zeros(10, np.uint8))
    server.faults["obj"] = ["reset"]
    with pytest.raises(RuntimeError, match="curl_easy_perform"):
        f.read(np.zeros(100_000, np.uint8))


def test_http_retries_a_503(http_server: tuple[RangeServer, bytes],
                            capsys: pytest.CaptureFixture[str]) -> None:
    server, data = http_server
    f = RemoteFile.open_http(f"{server.url}/obj.bin")
    server.faults["obj"] = ["503"]
    host = np.zeros(100, np.uint8)
    assert f.read(host) == 100 and (host == _u8(data[:100])).all()
    assert "KvikIO: Got HTTP code 503. Retrying after 500ms (attempt 1 of 3)." in (
        capsys.readouterr().out)


def test_http_server_without_range_support(tmp_path: Path) -> None:
    """Python's http.server answers a range request with the whole file: too many bytes."""
    (tmp_path / "obj.bin").write_bytes(b"x" * 50_000)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))

    class Quiet(handler.func):  # type: ignore[name-defined, misc]
        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/obj.bin"
        f = RemoteFile.open_http(url)
        assert f.nbytes() == 50_000
        with pytest.raises(OverflowError, match=r"maybe the server doesn't support file ranges\? "
                                                r"\[.*Failure writing output to destination"):
            f.read(np.zeros(100, np.uint8), 100, 10)
        whole = np.zeros(50_000, np.uint8)
        assert f.read(whole) == 50_000 and (whole == ord("x")).all()  # all of it fits
    finally:
        server.shutdown()
        server.server_close()


def test_remote_device_destination_is_checked(http_server: tuple[RangeServer, bytes]) -> None:
    server, _ = http_server
    f = RemoteFile.open_http(f"{server.url}/obj.bin")
    fut = f.pread(DeviceBuffer(1000, shape=3000), 3000, 0)
    with pytest.raises(errors.Fault, match=r"kvikio\.RemoteFile\.pread"):
        fut.get()


def test_open_infers_the_endpoint(http_server: tuple[RangeServer, bytes]) -> None:
    server, data = http_server
    url = f"{server.url}/obj.bin"
    assert kvikio.infer_remote_endpoint_type(url) is RemoteEndpointType.HTTP
    assert kvikio.infer_remote_endpoint_type("s3://bucket/key") is RemoteEndpointType.S3_PUBLIC
    f = RemoteFile.open(url)
    assert f.remote_endpoint_type() is RemoteEndpointType.HTTP and f.nbytes() == len(data)
    with pytest.raises(RuntimeError, match="S3 is not in the allowlist"):
        RemoteFile.open(url, RemoteEndpointType.S3, [RemoteEndpointType.HTTP])
    with pytest.raises(RuntimeError, match="Unsupported endpoint URL"):
        kvikio.infer_remote_endpoint_type("ftp://host/x")


# ---------------------------------------------------------------- RemoteFile over S3 (moto)


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    pytest.importorskip("moto")
    with start_moto() as endpoint:
        create_bucket(endpoint, "gdsz-bucket")
        yield endpoint


@pytest.fixture
def s3_object(moto_endpoint: str) -> tuple[str, str, bytes]:
    boto3 = pytest.importorskip("boto3")
    data = np.random.default_rng(2).integers(0, 256, 70_000, np.uint8).tobytes()
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    s3.put_object(Bucket="gdsz-bucket", Key="dir/a b.bin", Body=data, ACL="public-read")
    return moto_endpoint, "dir/a b.bin", data


def test_s3_signed_reads(s3_object: tuple[str, str, bytes],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint, key, data = s3_object
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_REGION", "us-east-1")  # kvikio reads AWS_DEFAULT_REGION only
    with pytest.raises(ValueError, match=r"env\.cpp:20: S3: must provide `aws_region` if "
                                         r"AWS_DEFAULT_REGION isn't set\.$"):
        RemoteFile.open_s3("gdsz-bucket", key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    f = RemoteFile.open_s3("gdsz-bucket", key)
    assert f.nbytes() == len(data) and f.remote_endpoint_type() is RemoteEndpointType.S3
    dev = DeviceBuffer(len(data))
    assert f.pread(dev).get() == len(data) and (dev.host() == _u8(data)).all()
    g = RemoteFile.open_s3_url(f"s3://gdsz-bucket/{key}", nbytes=len(data))
    host = np.zeros(100, np.uint8)
    assert g.read(host, 100, 7) == 100 and (host == _u8(data[7:107])).all()
    h = RemoteFile.open_s3_url(f"{endpoint}/gdsz-bucket/{key.replace(' ', '%20')}")
    assert h.nbytes() == len(data)
    with pytest.raises(ValueError, match=r"^Unsupported protocol: ftp://x/y$"):
        RemoteFile.open_s3_url("ftp://x/y")
    with pytest.raises(ValueError, match="does not match the expected S3 URL format"):
        RemoteFile.open_s3_url("s3://bucket-only")
    with pytest.raises(RuntimeError, match="returned error: 404"):
        RemoteFile.open_s3("gdsz-bucket", "missing")


def test_s3_public_needs_an_http_url(s3_object: tuple[str, str, bytes]) -> None:
    endpoint, key, data = s3_object
    url = f"{endpoint}/gdsz-bucket/{key}"
    f = RemoteFile.open_s3_public(url)  # unsigned; the space is encoded as kvikio encodes it
    assert f.nbytes() == len(data) and f.remote_endpoint_type() is RemoteEndpointType.S3_PUBLIC
    host = np.zeros(100, np.uint8)
    assert f.read(host, 100, 1) == 100 and (host == _u8(data[1:101])).all()
    g = RemoteFile.open_s3_public(f"s3://gdsz-bucket/{key}", nbytes=len(data))  # no request
    with pytest.raises(RuntimeError, match=r"KvikIO detects an URL error at: .*url\.cpp:\d+: "
                                           r"Unsupported URL scheme"):
        g.read(host)  # libcurl cannot fetch an s3:// URL


def test_s3_presigned_url(s3_object: tuple[str, str, bytes]) -> None:
    boto3 = pytest.importorskip("boto3")
    endpoint, key, data = s3_object
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "gdsz-bucket", "Key": key})
    f = RemoteFile.open_s3_presigned_url(url)  # sized by a 1-byte GET (no HEAD on presigned)
    assert f.nbytes() == len(data)
    host = np.zeros(100, np.uint8)
    assert f.read(host, 100, 30) == 100 and (host == _u8(data[30:130])).all()
