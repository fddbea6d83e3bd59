"""``kvikio._lib.file_handle``: ``kvikio::FileHandle`` on the emulated device.

Modelled on libkvikio 26.10 (``cpp/src/file_handle.cpp``, ``compat_mode_manager.cpp``,
``detail/posix_io.hpp``, ``detail/parallel_operation.hpp``):

* a handle opens the file twice: plainly, and with ``O_DIRECT`` unless compat mode is preferred
  and neither ``auto_direct_io_read`` nor ``auto_direct_io_write`` is set. In GDS mode it then
  registers with cuFile; under ``AUTO`` a failed ``O_DIRECT`` open (tmpfs, ...) silently makes
  the handle a compat one, under ``OFF`` it raises.
* ``pread``/``pwrite`` into host memory: POSIX I/O split into ``task_size`` tasks.
* into device memory: below ``gds_threshold``, synchronously in the caller through a bounce
  buffer (errors raise from ``pread`` itself); otherwise tasks that use a host bounce buffer and
  a copy (compat) or cuFile (GDS: a ``cuStreamSynchronize(0)`` first, then DMA when file offset,
  size and device address are page aligned, cuFile's own bounce buffers otherwise).
* reading past the end of the file: POSIX paths raise ``POSIX error on pread: EOF`` (the bytes
  before the end have landed); cuFile returns a short count instead, as ``pread(2)`` would.

The emulation moves the bytes when the future is waited on (see :mod:`.future`), checks every
device range against the allocation table (a fault is a :class:`~._common.DeviceFault` naming
the call) and records each task's route (:func:`._common.record`).
"""

from __future__ import annotations

import ctypes
import fcntl
import io
import os
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
from _emucuda import errors, streams

from . import defaults
from ._common import (
    PAGE,
    CUDADriverError,
    as_c_int,
    check_alive,
    check_annotated,
    cufile_fail,
    gds_available,
    kvikio_fail,
    record,
    synchronize_legacy,
    system_error,
)
from .arr import Target, parse_buffer_argument
from .future import IOFuture, IOFutureStream

__all__ = ["CuFile", "drop_file_page_cache", "get_page_cache_info"]

_M644 = 0o644
_O_DIRECT = getattr(os, "O_DIRECT", 0)


def _parse_flags(flags: str, o_direct: bool) -> int:
    """``open_fd_parse_flags`` (file_utils.cpp): "r", "r+", "w", "w+"; "a" is refused."""
    if not flags:
        raise kvikio_fail("src/file_utils.cpp", 130, "Unknown file open flag", ValueError)
    plus = len(flags) > 1 and flags[1] == "+"
    if flags[0] == "r":
        f = os.O_RDWR if plus else os.O_RDONLY
    elif flags[0] == "w":
        f = (os.O_RDWR if plus else os.O_WRONLY) | os.O_CREAT | os.O_TRUNC
    elif flags[0] == "a":
        raise kvikio_fail("src/file_utils.cpp", 141, "Open flag 'a' isn't supported", ValueError)
    else:
        raise kvikio_fail("src/file_utils.cpp", 142, "Unknown file open flag", ValueError)
    f |= os.O_CLOEXEC
    if o_direct:
        f |= _O_DIRECT
    return f


def _open(path: bytes, flags: str, o_direct: bool) -> int:
    oflags = _parse_flags(flags, o_direct)
    try:
        return os.open(path, oflags, _M644)
    except OSError as e:
        raise system_error("Unable to open file.", "src/file_utils.cpp", 160, e.errno) from None


def _split(size: int, file_offset: int, task_size: int,
           first_task_size: int | None = None) -> list[tuple[int, int, int]]:
    """``parallel_io``'s tasks: ``(file_offset, size, buffer_offset)``; the remainder last."""
    if task_size >= size or PAGE >= size:
        return [(file_offset, size, 0)]
    tasks = []
    cur = min(first_task_size or task_size, size)
    tasks.append((file_offset, cur, 0))
    boff, file_offset, size = cur, file_offset + cur, size - cur
    while size > task_size:
        tasks.append((file_offset, task_size, boff))
        boff, file_offset, size = boff + task_size, file_offset + task_size, size - task_size
    tasks.append((file_offset, size, boff))
    return tasks


def _run_tasks(tasks: list[tuple[int, int, int]], op: Callable[[int, int, int], int]) -> int:
    """Run every task (their bytes land even when one fails), then raise as ``parallel_io``'s
    last task does: its own error first, else the first failed task's."""
    total = 0
    errs: list[BaseException | None] = []
    for fo, n, bo in tasks:
        try:
            total += op(fo, n, bo)
            errs.append(None)
        except Exception as e:  # noqa: BLE001 - re-raised below, in parallel_io's order
            errs.append(e)
    for e in [errs[-1], *errs[:-1]]:
        if e is not None:
            raise e
    return total


def _posix_read(fd: int, dest: np.ndarray, offset: int) -> int:
    """``posix_host_io<READ>``: read all of ``dest`` or raise (EOF included)."""
    got, n = 0, dest.size
    while got < n:
        try:
            r = os.preadv(fd, [dest[got:]], offset + got)
        except OSError as e:
            if e.errno == 9:  # EBADF
                raise kvikio_fail("include/kvikio/detail/posix_io.hpp", 89,
                                  "POSIX error: Operation not permitted") from None
            raise kvikio_fail("include/kvikio/detail/posix_io.hpp", 90,
                              f"POSIX error on pread: {os.strerror(e.errno or 0)}") from None
        if r == 0:
            raise kvikio_fail("include/kvikio/detail/posix_io.hpp", 173,
                              "POSIX error on pread: EOF")
        got += r
    return n


def _posix_write(fd: int, src: np.ndarray, offset: int) -> int:
    """``posix_host_io<WRITE>``: write all of ``src`` or raise."""
    done, n = 0, src.size
    while done < n:
        try:
            done += os.pwritev(fd, [src[done:]], offset + done)
        except OSError as e:
            if e.errno == 9:
                raise kvikio_fail("include/kvikio/detail/posix_io.hpp", 89,
                                  "POSIX error: Operation not permitted") from None
            raise kvikio_fail("include/kvikio/detail/posix_io.hpp", 90,
                              f"POSIX error on pwrite: {os.strerror(e.errno or 0)}") from None
    return n


def _cufile_read(fd: int, dest: np.ndarray, offset: int) -> int:
    """``cuFileRead``: like ``pread(2)``, a short count at the end of the file."""
    got, n = 0, dest.size
    while got < n:
        try:
            r = os.preadv(fd, [dest[got:]], offset + got)
        except OSError as e:
            raise cufile_fail("src/file_handle.cpp", 178, os.strerror(e.errno or 0)) from None
        if r == 0:
            break
        got += r
    return got


def _cufile_write(fd: int, src: np.ndarray, offset: int) -> int:
    done, n = 0, src.size
    while done < n:
        try:
            done += os.pwritev(fd, [src[done:]], offset + done)
        except OSError as e:
            raise kvikio_fail("src/file_handle.cpp", 206,
                              f"Unable to write file: {os.strerror(e.errno or 0)}") from None
    return n


def _live_fd(ref: weakref.ref[CuFile]) -> int:
    """The handle's descriptor when a queued task runs. A handle closed (or garbage-collected)
    before its futures were waited on leaves libkvikio's tasks a closed descriptor (or one
    reused by another file): the emulator reports it as the EBADF it is at best."""
    h = ref()
    if h is None or not h._initialized:
        raise kvikio_fail("include/kvikio/detail/posix_io.hpp", 89,
                          "POSIX error: Operation not permitted [emulated device: the CuFile was "
                          "closed or garbage-collected before this future was waited on]")
    return h._fd_off


def _record_dma(what: str, path: str, file_offset: int, size: int, ptr: int) -> None:
    """Record a cuFile transfer: DMA for the whole pages at a page-aligned file offset and
    device address, cuFile's own bounce buffers for the rest (kvikio's docstring: "KvikIO can
    only make use of GDS for reads that are aligned to a page boundary")."""
    if file_offset % PAGE or ptr % PAGE:
        record(what, path, file_offset, size, ptr, "dma_unaligned")
        return
    whole = size - size % PAGE
    if whole:
        record(what, path, file_offset, whole, ptr, "dma")
    if size - whole or not size:
        record(what, path, file_offset + whole, size - whole, ptr + whole, "dma_unaligned")


class CuFile:
    """File handle for GPUDirect Storage (GDS)"""

    def __init__(self, file_path: Any, flags: Any = "r") -> None:
        self._fd_off = self._fd_on = -1
        self._initialized = False
        path = os.fsencode(file_path)
        flags = str(flags)
        requested = defaults._state().compat_mode  # the default argument, read first
        self._path = os.fsdecode(path)
        self._fd_off = _open(path, flags, False)
        preferred = defaults.is_compat_mode_preferred_for(requested)
        try:
            if not (preferred and not defaults.auto_direct_io_read()
                    and not defaults.auto_direct_io_write()):
                try:
                    self._fd_on = _open(path, flags, True)
                except RuntimeError:
                    if requested == defaults.CompatMode.AUTO:
                        preferred = True
                    elif requested != defaults.CompatMode.ON:
                        raise
            if not preferred and not gds_available():
                # cuFileHandleRegister without a driver; AUTO never gets here.
                raise cufile_fail("src/compat_mode_manager.cpp", 80,
                                  "NVFS driver initialization error")
        except BaseException:
            self._close_fds()
            raise
        self._requested = requested
        self._compat = preferred
        # No cufile.json without a cuFile install: async I/O then runs synchronously.
        self._compat_async = preferred or not gds_available()
        self._initialized = True

    def _close_fds(self) -> None:
        for fd in (self._fd_off, self._fd_on):
            if fd != -1:
                os.close(fd)
        self._fd_off = self._fd_on = -1

    def __del__(self) -> None:
        if getattr(self, "_fd_off", -1) != -1 or getattr(self, "_fd_on", -1) != -1:
            self._close_fds()

    def close(self) -> None:
        if self._initialized:
            self._close_fds()
            self._initialized = False

    def closed(self) -> bool:
        return not self._initialized

    def fileno(self) -> int:
        return self._fd_off

    def open_flags(self) -> int:
        try:
            return fcntl.fcntl(self._fd_off, fcntl.F_GETFL)
        except (OSError, ValueError) as e:  # ValueError: Python refuses fd -1 (closed) itself
            raise system_error("Unable to retrieve open flags.", "src/file_utils.cpp", 168,
                               getattr(e, "errno", None) or 9) from None

    def is_direct_io_supported(self) -> bool:
        return self._fd_on != -1

    # ------------------------------------------------------------ threaded I/O (futures)

    def pread(self, buf: Any, size: Any, file_offset: Any, task_size: Any) -> IOFuture:
        check_annotated(size, "size", optional=True)
        check_annotated(file_offset, "file_offset")
        t = parse_buffer_argument(buf, size, True, for_write_into=True)
        off = as_c_int(file_offset)
        ts = as_c_int(task_size if task_size else defaults.task_size())
        return self._io(t, off, ts, write=False, what="kvikio.CuFile.pread")

    def pwrite(self, buf: Any, size: Any, file_offset: Any, task_size: Any) -> IOFuture:
        check_annotated(size, "size", optional=True)
        check_annotated(file_offset, "file_offset")
        t = parse_buffer_argument(buf, size, True)
        off = as_c_int(file_offset)
        ts = as_c_int(task_size if task_size else defaults.task_size())
        return self._io(t, off, ts, write=True, what="kvikio.CuFile.pwrite")

    def _io(self, t: Target, file_offset: int, task_size: int, *, write: bool,
            what: str) -> IOFuture:
        size, path, ref = t.nbytes, self._path, weakref.ref(self)
        if t.is_host:
            if task_size == 0:
                raise kvikio_fail("include/kvikio/detail/parallel_operation.hpp", 205,
                                  "`task_size` must be positive", ValueError)
            move = _posix_write if write else _posix_read

            def host_op(fo: int, n: int, bo: int) -> int:
                view = t.view(bo, n, what)
                record(what, path, fo, n, t.ptr + bo, "host")
                return move(_live_fd(ref), view, fo)

            tasks = _split(size, file_offset, task_size)
            return IOFuture(lambda: _run_tasks(tasks, host_op))

        assert t.device is not None
        check_alive(t.device)  # cuPointerGetAttribute & co. fail in a dead context
        if size < defaults.gds_threshold():
            return self._small_device_io(t, file_offset, write=write, what=what)
        if not self._compat:
            synchronize_legacy(t.device)  # sync_default_stream, once for all tasks
        first = None
        if self._compat and self._fd_on != -1 and defaults.auto_direct_io_read() and not write:
            mis = file_offset % PAGE
            first = task_size - mis if 0 < mis < task_size else None
        compat = self._compat

        def device_op(fo: int, n: int, bo: int) -> int:
            view = t.view(bo, n, what)
            fd = _live_fd(ref)
            if compat:
                record(what, path, fo, n, t.ptr + bo, "bounce")
                return (_posix_write if write else _posix_read)(fd, view, fo)
            _record_dma(what, path, fo, n, t.ptr + bo)
            return (_cufile_write if write else _cufile_read)(fd, view, fo)

        tasks = _split(size, file_offset, task_size, first)
        return IOFuture(lambda: _run_tasks(tasks, device_op))

    def _small_device_io(self, t: Target, file_offset: int, *, write: bool,
                         what: str) -> IOFuture:
        """Below ``gds_threshold`` libkvikio does the whole transfer in ``pread``/``pwrite``
        itself and returns a ready future: its errors raise here. The emulator still moves the
        device bytes at ``get()`` (nothing promises earlier), from a host copy read now."""
        size, fd, path, ref = t.nbytes, self._fd_off, self._path, weakref.ref(self)
        t.view(0, size, what)  # the copy to/from the device would fault now
        if not write:
            staged = np.empty(size, np.uint8)
            _posix_read(fd, staged, file_offset)

            def land() -> int:
                t.view(0, size, what)[:] = staged
                record(what, path, file_offset, size, t.ptr, "bounce")
                return size

            return IOFuture(land)
        try:
            mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
        except OSError:
            mode = -1
        if mode not in (os.O_WRONLY, os.O_RDWR):
            raise kvikio_fail("include/kvikio/detail/posix_io.hpp", 89,
                              "POSIX error: Operation not permitted")

        def write_now() -> int:
            record(what, path, file_offset, size, t.ptr, "bounce")
            return _posix_write(_live_fd(ref), t.view(0, size, what).copy(), file_offset)

        return IOFuture(write_now)

    # ------------------------------------------------------------ raw (device only)

    def _raw(self, t: Target, file_offset: int, dev_offset: int, *, write: bool,
             what: str) -> int:
        """``FileHandle::read``/``write``: synchronous, in the caller, device memory."""
        fd, path, size = self._fd_off, self._path, t.nbytes
        if t.device is not None:
            check_alive(t.device)
        view = t.view(dev_offset, size, what)
        if self._compat:
            record(what, path, file_offset, size, t.ptr + dev_offset, "bounce")
            return (_posix_write if write else _posix_read)(fd, view, file_offset)
        if t.device is not None:
            synchronize_legacy(t.device)
        _record_dma(what, path, file_offset, size, t.ptr + dev_offset)
        return (_cufile_write if write else _cufile_read)(fd, view, file_offset)

    def read(self, buf: Any, size: Any, file_offset: Any, dev_offset: Any) -> int:
        check_annotated(size, "size", optional=True)
        check_annotated(file_offset, "file_offset")
        check_annotated(dev_offset, "dev_offset")
        t = parse_buffer_argument(buf, size, False, for_write_into=True)
        return self._raw(t, as_c_int(file_offset), as_c_int(dev_offset), write=False,
                         what="kvikio.CuFile.raw_read")

    def write(self, buf: Any, size: Any, file_offset: Any, dev_offset: Any) -> int:
        check_annotated(size, "size", optional=True)
        check_annotated(file_offset, "file_offset")
        check_annotated(dev_offset, "dev_offset")
        t = parse_buffer_argument(buf, size, False)
        return self._raw(t, as_c_int(file_offset), as_c_int(dev_offset), write=True,
                         what="kvikio.CuFile.raw_write")

    def _async(self, buf: Any, size: Any, file_offset: Any, dev_offset: Any, st: Any, *,
               write: bool) -> IOFutureStream:
        """``FileHandle::read_async``/``write_async``: without cuFile's stream API (compat
        mode, or no cufile.json) the stream is synchronized and the I/O done at once; with it
        (emulated GDS), the I/O is queued on the stream and runs in stream order."""
        what = "kvikio.CuFile.raw_write_async" if write else "kvikio.CuFile.raw_read_async"
        check_annotated(size, "size", optional=True)
        check_annotated(file_offset, "file_offset")
        check_annotated(dev_offset, "dev_offset")
        handle = as_c_int(st)
        t = parse_buffer_argument(buf, size, False, for_write_into=not write)
        off, doff = as_c_int(file_offset), as_c_int(dev_offset)
        if (self._compat_async and self._requested == defaults.CompatMode.OFF
                and not gds_available()):
            raise kvikio_fail("src/compat_mode_manager.cpp", 95,
                              "Missing cuFile configuration file.")
        device = streams.stream_device(handle)
        if device is None:
            device = t.device if t.device is not None else streams.current_device()
        try:
            if self._compat_async:
                streams.synchronize(handle, device)
                n = self._raw(t, off, doff, write=write, what=what)

                def check() -> int:
                    streams.synchronize(handle, device)
                    return n

                return IOFutureStream(check)
            box: list[int] = []
            path, compat_size, ref = self._path, t.nbytes, weakref.ref(self)

            def work() -> None:
                view = t.view(doff, compat_size, what)
                fd = _live_fd(ref)
                _record_dma(what, path, off, compat_size, t.ptr + doff)
                box.append((_cufile_write if write else _cufile_read)(fd, view, off))

            streams.enqueue(handle, device, work, what)
        except errors.CUDARuntimeError as e:
            raise CUDADriverError(e.status, str(e)) from None

        def check_queued() -> int:
            try:
                streams.synchronize(handle, device)
            except errors.CUDARuntimeError as e:
                raise CUDADriverError(e.status, str(e)) from None
            return box[0] if box else 0

        return IOFutureStream(check_queued)

    def read_async(self, buf: Any, size: Any, file_offset: Any, dev_offset: Any,
                   st: Any) -> IOFutureStream:
        return self._async(buf, size, file_offset, dev_offset, st, write=False)

    def write_async(self, buf: Any, size: Any, file_offset: Any, dev_offset: Any,
                    st: Any) -> IOFutureStream:
        return self._async(buf, size, file_offset, dev_offset, st, write=True)


# ---------------------------------------------------------------- page cache


def _fd_of(file: Any) -> tuple[int, bool]:
    """A descriptor for ``file`` (path, descriptor or file object); True if opened here."""
    if isinstance(file, int):
        return file, False
    if isinstance(file, io.IOBase):
        return file.fileno(), False
    try:
        return os.open(os.fsencode(file), os.O_RDONLY | os.O_CLOEXEC), True
    except OSError as e:
        raise system_error("Unable to open file.", "src/file_utils.cpp", 160, e.errno) from None


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]


def get_page_cache_info(file: Any, offset: int = 0, length: int = 0) -> tuple[int, int]:
    """``(pages in the page cache, pages)`` of a range of ``file`` (mmap + mincore)."""
    fd, mine = _fd_of(file)
    try:
        file_size = os.fstat(fd).st_size
        if offset >= file_size:
            return (0, 0)
        aligned = offset - offset % PAGE
        end = file_size if length == 0 else min(file_size, length + offset)
        padded = end - aligned
        addr = _libc.mmap(None, padded, 1, 2, fd, aligned)  # PROT_READ, MAP_PRIVATE
        if addr in (None, ctypes.c_void_p(-1).value):
            raise system_error("mmap failed.", "src/file_utils.cpp", 226, ctypes.get_errno())
        try:
            pages = -(-padded // PAGE)
            vec = ctypes.create_string_buffer(pages)
            if _libc.mincore(addr, padded, vec) != 0:
                raise system_error("", "src/file_utils.cpp", 233, ctypes.get_errno())
            cached = sum(b & 1 for b in vec.raw[:pages])
        finally:
            _libc.munmap(addr, padded)
        return (cached, pages)
    finally:
        if mine:
            os.close(fd)


def drop_file_page_cache(file: Any, offset: int = 0, length: int = 0,
                         sync_first: bool = True) -> None:
    """``posix_fadvise(POSIX_FADV_DONTNEED)`` over a range of ``file`` (fdatasync first)."""
    fd, mine = _fd_of(file)
    try:
        if sync_first:
            os.fdatasync(fd)
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
    finally:
        if mine:
            os.close(fd)
