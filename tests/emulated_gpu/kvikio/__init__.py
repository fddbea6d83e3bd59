"""Emulated kvikio 26.10 for the emulated CUDA device of ``tests/emulated_gpu``.

Put ``tests/emulated_gpu`` first on ``PYTHONPATH`` and ``import kvikio`` gives this package:
kvikio's Python API (``CuFile``, ``IOFuture``, ``defaults``, ``cufile_driver``,
``RemoteFile``, buffer and stream registration, page-cache helpers) with the behaviour of
libkvikio 26.10, reading real files and real HTTP/S3 servers into the emulated device's memory.

What it models (sources: the kvikio-cu12 26.10 wheel, probed without a GPU, and kvikio's C++
and Cython sources):

* compat mode (POSIX through a bounce buffer) and, with ``EMULATED_GPU_GDS=1``, GDS (cuFile
  DMA for device reads of at least ``gds_threshold`` bytes, page-aligned or through cuFile's
  bounce buffers); ``KVIKIO_COMPAT_MODE=AUTO`` means compat unless the device has GDS.
* futures: the bytes move when ``IOFuture.get()`` is called, never at ``pread``; kvikio's
  I/O is not ordered with CUDA streams, so a read into memory that queued stream work still
  uses races with it here too.
* every device range is checked against the emulated allocations: an access outside them
  raises :class:`kvikio._emulated.DeviceFault` (an ``_emucuda.errors.Fault`` and a
  RuntimeError) naming the call; a dead device context makes device I/O raise.

Emulator-only helpers live in :mod:`kvikio._emulated` (the route each I/O took, the GDS switch).
"""

from __future__ import annotations

# As in kvikio, ``kvikio.defaults`` and ``kvikio.cufile_driver`` are not imported here: code
# must ``import kvikio.defaults`` itself (``import kvikio`` alone leaves them unbound).
from ._lib.defaults import CompatMode, RemoteIOBackend, RemoteReactorDispatch  # noqa: F401
from .buffer import bounce_buffer_free, memory_deregister, memory_register
from .cufile import CuFile, drop_file_page_cache, get_page_cache_info
from .remote_file import (
    RemoteEndpointType,
    RemoteFile,
    infer_remote_endpoint_type,
    is_remote_file_available,
)
from .stream import stream_deregister, stream_register
from .utils import kvikio_deprecation_notice

__version__ = "26.10.00"  # kvikio's own VERSION file says 26.10.00 (the wheel is 26.10.0)
__git_commit__ = "05530d767aeb55f63db59a7bb64f2745e8061eee5"

__all__ = [
    "CuFile",
    "RemoteEndpointType",
    "RemoteFile",
    "__git_commit__",
    "__version__",
    "bounce_buffer_free",
    "drop_file_page_cache",
    "get_page_cache_info",
    "infer_remote_endpoint_type",
    "is_remote_file_available",
    "kvikio_deprecation_notice",
    "memory_deregister",
    "memory_register",
    "stream_deregister",
    "stream_register",
]
