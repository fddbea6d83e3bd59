"""The emulated ``nvidia.nvcomp.nvcomp_impl``: nvCOMP 6's Python API on the emulated device.

The contract is nvidia-nvcomp-cu12 6.0.0.12's, read from the wheel (signatures and docstrings
of ``nvcomp_impl``, the messages in ``nvcomp_impl*.so`` and ``libnvcomp.so.6``, the C headers
in ``nvidia/libnvcomp/include``) and from NVIDIA's Python API pages; tests/
test_emulated_api_nvcomp.py compares every callable here with the installed wheel.

What the emulator does, case by case (source of each choice in brackets):

- **Stream order.** ``Codec.decode`` / ``encode`` only *queue* their work on the codec's stream
  (``cuda_stream``, else a new non-blocking stream of ``device_id``); the work reads its inputs
  when it runs, at a synchronization point. ``BatchArray.buffer_sizes``, indexing and ``cpu()``
  wait for the work that produced the batch ["Waits for the work that produced this batch"].
  Without a ``decompression_config``, decode first synchronizes the stream and sizes every
  chunk, as ``configure_decompression`` does [decode docstring]. An input whose
  ``__cuda_array_interface__`` names a stream is read after the work queued there when it was
  wrapped (CUDA Array Interface v3's consumer rule).
- **Bounds.** Every input, output and scratch range is checked against its allocation when the
  work runs (``memory.view``): out of bounds is a ``Fault`` naming the call and the entry
  (``nvcomp.Codec.decode input 3``), which the device reports as an illegal address (code 700)
  at the synchronization point and which kills the device's context [on hardware: silent
  corruption or cudaErrorIllegalAddress]. ``as_arrays`` refuses an entry outside its buffer at
  once (ValueError) ["Entry ... which does not fit in the ...-byte buffer it is carved from"].
- **Alignment.** Every input and output address must be a multiple of
  ``get_required_decompression_alignment()`` (Zstd 8, Gzip 8, LZ4 4, Deflate 4, Snappy 1:
  ``nvcomp<Alg>RequiredDecompressionAlignment`` in the 6.0 headers). A misaligned entry raises
  RuntimeError at the call, before anything is queued [libnvcomp.so.6's manager has the message
  "... buffer is not aligned to the required alignment of N" and throws on the host; the C API
  calls it undefined behaviour].
- **Output slot too small.** ValueError at the call when a slot of ``out`` is smaller than the
  size the config (or the size query) gives ["a ValueError is raised when any of them is too
  small to hold the decompressed data"]. A chunk that decodes to more than its config said
  fails on the device like corrupt input (next item) [C API: status nvcompErrorCannotDecompress
  for an overflowing chunk].
- **Corrupt input.** nvCOMP documents undefined behaviour and the Python API returns no status
  per chunk [zstd.h, deflate.h: "Providing a corrupt buffer for decompression will result in
  undefined behavior"; lz4.h: status nvcompErrorCannotDecompress with the CUDA backend]. The
  emulator reports such a chunk as decoded to **0 bytes** in ``buffer_sizes`` and fills its slot
  with the byte 0xDB, so a caller that trusts the bytes without checking the sizes reads garbage,
  as it might on hardware. It never raises for corrupt input and never kills the context for it
  (hardware may; a caller cannot rely on either). Gzip: the CRC-32 and ISIZE trailer are not
  checked (gzip.h promises no check) and bytes after the first member are ignored ["Does not
  support multi-member gzip files"]. A Zstd frame without a content size decodes with a config;
  the size query (no config) reports it as 0 bytes.
- **Limits.** A chunk larger than ``nvcomp<Alg>DecompressionMaxAllowedChunkSize`` raises
  RuntimeError "Chunk size N must not exceed M bytes" at the call [libnvcomp.so.6 message].
- **Scratch.** Each decode asks the allocator given to ``set_device_allocator`` (else an
  internal pool) for its scratch, with the codec's device current, and writes to both ends of it
  when the work runs: an allocator returning too little memory, memory of another device, or
  memory freed before the work ran shows as a Fault. Outputs that nvCOMP allocates (``out``
  omitted) come from the same allocator.
- **A dead context** (an earlier fault): every call that touches the device raises RuntimeError
  "CUDA Runtime API failure: an illegal memory access was encountered : code=700." (the format
  of nvCOMP's CUDA errors seen on 6.0.0.12), chained to the emulator's error.
- **Algorithms.** Zstd, LZ4, Deflate, Gzip and Snappy decode and encode through host libraries
  (``_host_codecs``). GDeflate, Cascaded, Bitcomp and ANS, which the real Codec knows, raise the
  ValueError the real one gives for an unknown algorithm, saying they are not emulated.
  ``NVCOMP_NATIVE`` and ``WITH_UNCOMPRESSED_SIZE`` bitstreams use an emulator-private header:
  they round-trip here but are not byte-compatible with nvCOMP's.
"""

from __future__ import annotations

import functools
import inspect
import math
import struct
import sys
import threading
import typing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, overload

import numpy as np

from . import _dlpack
from . import _host_codecs as hc
from ._pybind import cast_error, incompatible, make_enum, suggest, type_name

__version__ = "6.0.0"  # what nvidia-nvcomp-cu12 6.0.0.12 reports (nvcomp_impl.__version__)
__cuda_version__ = 12090
__emulated__ = True

__all__ = [
    "ASYMMETRIC",
    "BITCOMP_LOSSLESS",
    "BITCOMP_LOSSY_FP_TO_SIGNED",
    "BITCOMP_LOSSY_FP_TO_UNSIGNED",
    "CASCADED_BITPACK",
    "COMPUTE_AND_NO_VERIFY",
    "COMPUTE_AND_VERIFY",
    "COMPUTE_AND_VERIFY_IF_PRESENT",
    "DELTA",
    "FOR",
    "NONE",
    "NO_COMPUTE_AND_VERIFY_IF_PRESENT",
    "NO_COMPUTE_NO_VERIFY",
    "NVCOMP_BITSHUFFLE_LSB_FIRST",
    "NVCOMP_BITSHUFFLE_MSB_FIRST",
    "NVCOMP_BITSHUFFLE_NONE",
    "NVCOMP_DECOMPRESS_BACKEND_CUDA",
    "NVCOMP_DECOMPRESS_BACKEND_DEFAULT",
    "NVCOMP_DECOMPRESS_BACKEND_HARDWARE",
    "RLE",
    "STRIDED_DEVICE",
    "STRIDED_HOST",
    "SYMMETRIC",
    "UNSPECIFIED",
    "Array",
    "ArrayBufferKind",
    "BatchArray",
    "BitcompMode",
    "BitshuffleMode",
    "BitstreamKind",
    "CascadedCoarseGrainedEncoding",
    "CascadedFineGrainedEncoding",
    "CascadedMode",
    "CascadedTerminalCodec",
    "ChecksumPolicy",
    "Codec",
    "CompressConfig",
    "CudaStream",
    "DecompressBackend",
    "DecompressConfig",
    "ExecutionPolicy",
    "as_array",
    "as_arrays",
    "from_dlpack",
    "set_device_allocator",
    "set_host_allocator",
    "set_pinned_allocator",
]

F = TypeVar("F", bound=Callable[..., Any])

# ---------------------------------------------------------------- enums (values as in 6.0.0.12)

BitstreamKind = make_enum(
    "BitstreamKind", "How nvCOMP frames compressed data: NVCOMP_NATIVE (nvCOMP's own header, "
    "chunked, checksums possible), RAW (the bare format, as CPU libraries write it), "
    "WITH_UNCOMPRESSED_SIZE (RAW behind a size field, payload 16-byte aligned).",
    {"NVCOMP_NATIVE": 0, "RAW": 1, "WITH_UNCOMPRESSED_SIZE": 2})
ArrayBufferKind = make_enum(
    "ArrayBufferKind", "Where an Array's data lives: STRIDED_DEVICE (GPU-accessible) or "
    "STRIDED_HOST (host-accessible).", {"STRIDED_DEVICE": 1, "STRIDED_HOST": 2})
ExecutionPolicy = make_enum(
    "ExecutionPolicy", "Kernels tuned for concurrency with other device work (CONCURRENCY, the "
    "default) or for latency (LATENCY).", {"CONCURRENCY": 0, "LATENCY": 1})
ChecksumPolicy = make_enum(
    "ChecksumPolicy", "Whether compression computes checksums and decompression verifies them "
    "(NVCOMP_NATIVE only).",
    {"NO_COMPUTE_NO_VERIFY": 0, "COMPUTE_AND_NO_VERIFY": 1, "NO_COMPUTE_AND_VERIFY_IF_PRESENT": 2,
     "COMPUTE_AND_VERIFY_IF_PRESENT": 3, "COMPUTE_AND_VERIFY": 4})
DecompressBackend = make_enum(
    "DecompressBackend", "Which engine decompresses: nvCOMP's choice, the hardware engine, or "
    "CUDA kernels.",
    {"NVCOMP_DECOMPRESS_BACKEND_DEFAULT": 0, "NVCOMP_DECOMPRESS_BACKEND_HARDWARE": 1,
     "NVCOMP_DECOMPRESS_BACKEND_CUDA": 2})
CascadedMode = make_enum("CascadedMode", "Cascaded compression mode.",
                         {"ASYMMETRIC": 1, "SYMMETRIC": 2})
BitcompMode = make_enum(
    "BitcompMode", "Bitcomp compression mode (lossless, or lossy through quantization).",
    {"BITCOMP_LOSSLESS": 0, "BITCOMP_LOSSY_FP_TO_SIGNED": 1, "BITCOMP_LOSSY_FP_TO_UNSIGNED": 2})
BitshuffleMode = make_enum(
    "BitshuffleMode", "Whether LZ4 bitshuffles data around compression, and in which bit order.",
    {"NVCOMP_BITSHUFFLE_NONE": 0, "NVCOMP_BITSHUFFLE_MSB_FIRST": 1,
     "NVCOMP_BITSHUFFLE_LSB_FIRST": 2})
CascadedTerminalCodec = make_enum(
    "CascadedTerminalCodec", "Cascaded terminal codecs (OR-combinable).",
    {"UNSPECIFIED": 0, "CASCADED_BITPACK": 1}, arithmetic=True)
CascadedFineGrainedEncoding = make_enum(
    "CascadedFineGrainedEncoding", "Cascaded fine-grained encodings (OR-combinable).",
    {"NONE": 0, "DELTA": 1, "RLE": 2, "FOR": 4}, arithmetic=True)
CascadedCoarseGrainedEncoding = make_enum(
    "CascadedCoarseGrainedEncoding", "Cascaded coarse-grained encodings.", {"NONE": 0})

# The real module exports these enums' members at module level (``py::export_values``); NONE
# is CascadedCoarseGrainedEncoding's, exported last.
STRIDED_DEVICE = ArrayBufferKind.STRIDED_DEVICE  # type: ignore[attr-defined]
STRIDED_HOST = ArrayBufferKind.STRIDED_HOST  # type: ignore[attr-defined]
NO_COMPUTE_NO_VERIFY = ChecksumPolicy.NO_COMPUTE_NO_VERIFY  # type: ignore[attr-defined]
COMPUTE_AND_NO_VERIFY = ChecksumPolicy.COMPUTE_AND_NO_VERIFY  # type: ignore[attr-defined]
NO_COMPUTE_AND_VERIFY_IF_PRESENT = \
    ChecksumPolicy.NO_COMPUTE_AND_VERIFY_IF_PRESENT  # type: ignore[attr-defined]
COMPUTE_AND_VERIFY_IF_PRESENT = \
    ChecksumPolicy.COMPUTE_AND_VERIFY_IF_PRESENT  # type: ignore[attr-defined]
COMPUTE_AND_VERIFY = ChecksumPolicy.COMPUTE_AND_VERIFY  # type: ignore[attr-defined]
NVCOMP_DECOMPRESS_BACKEND_DEFAULT = \
    DecompressBackend.NVCOMP_DECOMPRESS_BACKEND_DEFAULT  # type: ignore[attr-defined]
NVCOMP_DECOMPRESS_BACKEND_HARDWARE = \
    DecompressBackend.NVCOMP_DECOMPRESS_BACKEND_HARDWARE  # type: ignore[attr-defined]
NVCOMP_DECOMPRESS_BACKEND_CUDA = \
    DecompressBackend.NVCOMP_DECOMPRESS_BACKEND_CUDA  # type: ignore[attr-defined]
ASYMMETRIC = CascadedMode.ASYMMETRIC  # type: ignore[attr-defined]
SYMMETRIC = CascadedMode.SYMMETRIC  # type: ignore[attr-defined]
BITCOMP_LOSSLESS = BitcompMode.BITCOMP_LOSSLESS  # type: ignore[attr-defined]
BITCOMP_LOSSY_FP_TO_SIGNED = BitcompMode.BITCOMP_LOSSY_FP_TO_SIGNED  # type: ignore[attr-defined]
BITCOMP_LOSSY_FP_TO_UNSIGNED = \
    BitcompMode.BITCOMP_LOSSY_FP_TO_UNSIGNED  # type: ignore[attr-defined]
NVCOMP_BITSHUFFLE_NONE = BitshuffleMode.NVCOMP_BITSHUFFLE_NONE  # type: ignore[attr-defined]
NVCOMP_BITSHUFFLE_MSB_FIRST = BitshuffleMode.NVCOMP_BITSHUFFLE_MSB_FIRST  # type: ignore[attr-defined]
NVCOMP_BITSHUFFLE_LSB_FIRST = BitshuffleMode.NVCOMP_BITSHUFFLE_LSB_FIRST  # type: ignore[attr-defined]
UNSPECIFIED = CascadedTerminalCodec.UNSPECIFIED  # type: ignore[attr-defined]
CASCADED_BITPACK = CascadedTerminalCodec.CASCADED_BITPACK  # type: ignore[attr-defined]
DELTA = CascadedFineGrainedEncoding.DELTA  # type: ignore[attr-defined]
RLE = CascadedFineGrainedEncoding.RLE  # type: ignore[attr-defined]
FOR = CascadedFineGrainedEncoding.FOR  # type: ignore[attr-defined]
NONE = CascadedCoarseGrainedEncoding.NONE  # type: ignore[attr-defined]

# ---------------------------------------------------------------- the emulated device


def _emu() -> tuple[Any, Any, Any]:
    """The device model (``_emucuda``), imported on first use so that this module imports
    without it (the API comparison test loads it alone)."""
    from _emucuda import errors, memory, streams

    return errors, memory, streams


def _cuda_failure(e: Exception) -> RuntimeError:
    """nvCOMP's form of a CUDA error (seen on 6.0.0.12: ``CUDA Runtime API failure: <text> :
    code=<n>.``), keeping the emulator's detail (which call faulted, where)."""
    errors, _, _ = _emu()
    status = getattr(e, "status", 0)
    _name, text = errors.ERRORS.get(status, ("", "unknown error"))
    detail = str(e).split(": ", 1)[1] if ": " in str(e) else str(e)
    detail = detail[len(text):].strip() if detail.startswith(text) else detail
    return RuntimeError(f"CUDA Runtime API failure: {text} : code={status}."
                        + (f" {detail}" if detail else ""))


def _api(fn: F) -> F:
    """Entry points: the emulator's CUDA errors surface as nvCOMP's RuntimeError."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            errors = sys.modules.get("_emucuda.errors")  # not loaded: not the emulator's error
            if errors is None:
                raise
            if isinstance(e, errors.CUDARuntimeError):
                raise _cuda_failure(e) from e
            if isinstance(e, errors.OutOfMemoryError) and getattr(e, "_nvcomp_pool", False):
                raise RuntimeError("CUDA Runtime API failure: out of memory : code=2.") from e
            raise

    return wrapper  # type: ignore[return-value]


def _alive(device: int) -> None:
    _emu()[2].check_alive(device)


def _handle(stream: Any) -> int:
    """A ``cudaStream_t`` as the emulator's stream handle (``cudaStreamLegacy`` 1 -> 0)."""
    if isinstance(stream, bool) or not isinstance(stream, int):
        raise cast_error(stream)
    return 0 if int(stream) == 1 else int(stream)


def _dview(ptr: int, nbytes: int, what: str, device: int) -> np.ndarray:
    """Device-side access to ``[ptr, ptr + nbytes)``: must lie in one live allocation of
    ``device`` (or pinned host memory), else a Fault naming ``what``."""
    _, memory, _ = _emu()
    memory.check(ptr, nbytes, what, device=device)
    return memory.view(ptr, nbytes, what, device=device)  # type: ignore[no-any-return]


def _hview(ptr: int, nbytes: int, what: str) -> np.ndarray:
    """Host-side access (NumPy or pinned memory)."""
    return _emu()[1].view(ptr, nbytes, what)  # type: ignore[no-any-return]


# ---------------------------------------------------------------- allocators

_allocators: dict[str, Any] = {"device": None, "host": None, "pinned": None}
_alloc_lock = threading.Lock()


class _PoolBlock:
    """A block of nvCOMP's internal device pool (freed when dropped)."""

    def __init__(self, nbytes: int, device: int) -> None:
        _, memory, _ = _emu()
        try:
            self._alloc = memory.allocate(nbytes, device)
        except MemoryError as e:
            e._nvcomp_pool = True  # type: ignore[attr-defined]
            raise
        self.ptr = self._alloc.ptr

    def __del__(self) -> None:
        try:
            _emu()[1].free(self._alloc)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _device_alloc(nbytes: int, device: int, stream: int) -> tuple[int, Any]:
    """``nbytes`` of device memory from the device allocator: (address, owner to keep)."""
    if nbytes <= 0:
        return 0, None
    with _alloc_lock:
        fn = _allocators["device"]
    if fn is None:
        b = _PoolBlock(nbytes, device)
        return b.ptr, b
    _, _, streams = _emu()
    saved = streams.current_device()
    streams.set_current_device(device)  # nvCOMP calls it with the codec's device current
    try:
        obj = fn(int(nbytes), CudaStream._make(stream, device))
    finally:
        streams.set_current_device(saved)
    ptr = obj.ptr  # AttributeError as the real one raises for an object without ``ptr``
    if isinstance(ptr, bool) or not isinstance(ptr, int):
        raise cast_error(ptr)
    return int(ptr), obj


def _set_allocator(kind: str, allocator: object) -> None:
    with _alloc_lock:
        _allocators[kind] = allocator


@_api
def set_device_allocator(allocator: object = None) -> None:
    """Route nvCOMP's future device allocations (scratch, outputs it allocates) through
    ``allocator(nbytes: int, stream: CudaStream) -> object with .ptr``; None: the internal pool.

    The emulator calls it for every decode's scratch, with the codec's device current, and keeps
    the returned object until the work that uses it has run.
    """
    _set_allocator("device", allocator)


@_api
def set_host_allocator(allocator: object = None) -> None:
    """Route nvCOMP's future pageable host allocations through ``allocator`` (stored; the
    emulator's host copies use NumPy memory)."""
    _set_allocator("host", allocator)


@_api
def set_pinned_allocator(allocator: object = None) -> None:
    """Route nvCOMP's future pinned host allocations through ``allocator`` (stored; see
    :func:`set_host_allocator`)."""
    _set_allocator("pinned", allocator)


# ---------------------------------------------------------------- streams


class CudaStream:
    """A CUDA stream as nvCOMP hands it to allocators: ``ptr`` (the ``cudaStream_t``),
    ``device``, ``is_special`` (the default, legacy or per-thread stream)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(f"{type_name(CudaStream)}: No constructor defined!")

    @classmethod
    def _make(cls, handle: int, device: int, owned: bool = False) -> CudaStream:
        s = cls.__new__(cls)
        s._ptr, s._device, s._owned = int(handle), int(device), owned
        return s

    @staticmethod
    @_api
    def borrow(cuda_stream: int, device_idx: int = -1) -> CudaStream:
        """A view of the existing stream ``cuda_stream`` (its device: ``device_idx``, the
        current one for the special streams, else the stream's own)."""
        _, _, streams = _emu()
        h = _handle(cuda_stream)
        actual = streams.stream_device(h)
        if actual is None:
            dev = streams.current_device() if device_idx == -1 else int(device_idx)
        else:
            if device_idx not in (-1, actual):
                raise ValueError(f"Attempting to borrow stream {cuda_stream} for device "
                                 f"{device_idx}, but the stream's actual device is {actual}")
            dev = actual
        return CudaStream._make(int(cuda_stream), dev)

    @staticmethod
    @_api
    def make_new(device_idx: int = -1) -> CudaStream:
        """A new stream on ``device_idx`` (-1: the current device), owned by the result."""
        _, _, streams = _emu()
        dev = streams.current_device() if device_idx == -1 else int(device_idx)
        _alive(dev)
        return CudaStream._make(streams.new_stream(dev, non_blocking=False), dev, owned=True)

    @property
    def ptr(self) -> int:
        """The ``cudaStream_t`` as an int."""
        return self._ptr  # type: ignore[no-any-return]

    @property
    def device(self) -> int:
        """The device the stream belongs to."""
        return self._device  # type: ignore[no-any-return]

    @property
    def is_special(self) -> bool:
        """True for the default (0), legacy (1) and per-thread (2) streams."""
        return self._ptr in (0, 1, 2)


# ---------------------------------------------------------------- arrays


class _Entries:
    """The entries shared by a BatchArray and the Arrays viewing it: one region each
    (address, capacity, used size), a common element type, where they live, and the work
    that produces them (sizes written when it runs)."""

    def __init__(self, ptrs: list[int], caps: list[int], sizes: list[int], dtype: np.dtype,
                 host: bool, device: int, stream: int, owners: list[Any]) -> None:
        self.ptrs, self.caps, self.sizes = ptrs, caps, sizes
        self.dtype, self.host, self.device, self.stream = dtype, host, device, stream
        self.owners = owners
        self.producer: Any = None  # Event of the work that writes these entries
        self.waits: list[Any] = []  # Events of CAI producer streams to order after
        self.shape: tuple[int, ...] | None = None  # a wrapped N-d source (one entry)
        self.strides: tuple[int, ...] | None = None
        self.external = True  # fixed capacity (False: nvCOMP's own memory, may grow)

    def __len__(self) -> int:
        return len(self.ptrs)

    def wait(self) -> None:
        """Block until the producing work has run (its sizes are then final)."""
        if self.producer is not None:
            errors, _, streams = _emu()
            try:
                streams.synchronize_event(self.producer)
            except errors.CUDARuntimeError as e:
                raise _cuda_failure(e) from e

    def order_after(self, stream: int, device: int) -> None:
        """Make later work on ``stream`` wait for the producer and the CAI streams (events
        of work on ``stream`` itself are ordered already)."""
        _, _, streams = _emu()
        for ev in (self.producer, *self.waits):
            w = None if ev is None else ev.work
            if w is None or w.done or (w.stream.handle == stream and w.stream.device == device):
                continue
            streams.wait_event(stream, device, ev)

    def allocations(self) -> list[Any]:
        """The emulator allocations the entries lie in (kept mapped by queued work)."""
        _, memory, _ = _emu()
        found = {id(a): a for a in (memory.find(p) for p in self.ptrs if p) if a is not None}
        return list(found.values())


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    out, acc = [], itemsize
    for d in reversed(shape):
        out.append(acc)
        acc *= max(int(d), 1)
    return tuple(reversed(out))


def _is_c_contiguous(shape: tuple[int, ...], strides: tuple[int, ...] | None,
                     itemsize: int) -> bool:
    if strides is None:
        return True
    want = _c_strides(shape, itemsize)
    return all(s == w for s, w, d in zip(strides, want, shape, strict=True) if d > 1)


def _wrap(obj: Any, cuda_stream: int) -> _Entries:
    """One entry over ``obj`` (DLPack capsule, ``__cuda_array_interface__``,
    ``__array_interface__`` or ``__dlpack__``), keeping ``obj`` alive."""
    _, memory, streams = _emu()
    if isinstance(obj, Array):
        e = obj._e
        i = obj._i
        w = _Entries([e.ptrs[i]], [e.caps[i]], [e.sizes[i]], e.dtype, e.host, e.device,
                     _handle(cuda_stream), [obj])
        w.producer, w.waits, w.shape, w.strides = e.producer, list(e.waits), obj.shape, None
        return w
    if obj is None:
        raise ValueError("Object cannot be None")
    if type(obj).__name__ == "PyCapsule":
        return _from_imported(_dlpack.read(obj), obj, cuda_stream)
    cai = getattr(obj, "__cuda_array_interface__", None)
    host = False
    if cai is None:
        cai = getattr(obj, "__array_interface__", None)
        host = True
    if cai is None:
        if hasattr(obj, "__dlpack__"):
            return _from_imported(_dlpack.read(obj.__dlpack__()), obj, cuda_stream)
        raise ValueError("Neither __cuda_array_interface__ nor __dlpack__ are supported by the "
                         "object.")
    iface = "__array_interface__" if host else "__cuda_array_interface__"
    if int(cai.get("version", 0)) < 2:
        raise ValueError(f"Unsupported {iface} with version < 2")
    if not all(k in cai for k in ("shape", "typestr", "data")):
        raise ValueError(f"Unsupported {iface} with missing field(s)")
    dtype = np.dtype(cai["typestr"])
    shape = tuple(int(d) for d in cai["shape"])
    strides = cai.get("strides")
    strides = None if strides is None else tuple(int(s) for s in strides)
    ptr = int(cai["data"][0] or 0)
    nbytes = math.prod(shape) * dtype.itemsize
    device = -1
    if not host:
        a = memory.find(ptr) if ptr else None
        # Device memory: its device. Pinned or unknown memory named by a CAI: the current
        # device (an unknown address faults when the work touches it, as on hardware).
        device = a.device if a is not None and a.device >= 0 else streams.current_device()
        _alive(device)
    e = _Entries([ptr], [nbytes], [nbytes], dtype, host, device, _handle(cuda_stream), [obj])
    e.shape, e.strides = shape, strides
    if not host and "stream" in cai and cai["stream"] is not None:
        s = cai["stream"]
        if int(s) == 0:
            raise ValueError("Invalid for stream to be 0")
        ev = streams.Event()
        streams.record(ev, _handle(int(s)), device)
        e.waits.append(ev)
    return e


def _from_imported(t: _dlpack.Imported, keep: Any, cuda_stream: int) -> _Entries:
    """One entry over a consumed DLPack tensor (``t`` releases it when the entry dies)."""
    if t.device_type not in (_dlpack.KDL_CPU, _dlpack.KDL_CUDA, _dlpack.KDL_CUDA_HOST):
        raise ValueError("Unsupported device in DLTensor. Only CUDA-accessible memory buffers "
                         "can be wrapped")
    host = t.device_type != _dlpack.KDL_CUDA
    device = -1 if host else t.device_id
    if not host:
        _alive(device)
    nbytes = math.prod(t.shape) * t.dtype.itemsize
    e = _Entries([t.ptr], [nbytes], [nbytes], t.dtype, host, device, _handle(cuda_stream),
                 [t, keep])
    e.shape, e.strides = t.shape, t.strides
    return e


class Array:
    """An nvCOMP array: a typed buffer in host or device memory (a wrapped source, a decoded
    or encoded entry, or a copy). It exposes ``__cuda_array_interface__`` (v3, with the stream
    to synchronize on), DLPack, and for host arrays ``__array_interface__`` and the buffer
    protocol."""

    _e: _Entries
    _i: int

    @_api
    def __init__(self, src_object: object, cuda_stream: int = 0) -> None:
        """Wrap ``src_object`` (see :func:`as_array`); it stays alive with the array."""
        self._e, self._i = _wrap(src_object, cuda_stream), 0

    @classmethod
    def _view(cls, e: _Entries, i: int) -> Array:
        a = cls.__new__(cls)
        a._e, a._i = e, i
        return a

    # -- layout (sizes of produced arrays are known once the producing work has run)

    def _nbytes(self) -> int:
        self._e.wait()
        return int(self._e.sizes[self._i])

    @property
    def shape(self) -> tuple[int, ...]:
        if self._e.shape is not None:
            return self._e.shape
        return (self._nbytes() // self._e.dtype.itemsize,)

    @property
    def strides(self) -> tuple[int, ...]:
        """Strides in bytes."""
        if self._e.strides is not None:
            return self._e.strides
        return _c_strides(self.shape, self._e.dtype.itemsize)

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def capacity(self) -> int:
        """Bytes of memory behind the array."""
        return int(self._e.caps[self._i])

    @property
    def item_size(self) -> int:
        """Bytes per element."""
        return int(self._e.dtype.itemsize)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        return self._e.dtype

    @property
    def precision(self) -> int:
        """Significant bits of the data type (0: all of them)."""
        return 0

    @property
    def buffer_size(self) -> int:
        """Bytes the array holds."""
        return self._nbytes() if self._e.shape is None else self.size * self.item_size

    @property
    def buffer_kind(self) -> Any:
        return STRIDED_HOST if self._e.host else STRIDED_DEVICE

    # -- interchange

    def _interface(self) -> dict[str, Any]:
        contiguous = _is_c_contiguous(self.shape, self._e.strides, self.item_size)
        return {"shape": self.shape, "strides": None if contiguous else self._e.strides,
                "typestr": self._e.dtype.str, "data": (int(self._e.ptrs[self._i]), False),
                "version": 3}

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        d = self._interface()
        # CAI v3: 1 is the legacy default stream; 0 is not allowed.
        d["stream"] = 1 if self._e.stream == 0 else self._e.stream
        return d

    @property
    def __array_interface__(self) -> dict[str, Any]:
        if not self._e.host:
            raise RuntimeError("Unable to initialize __array_interface__: the array is in "
                               "device memory (use .cpu())")
        self._e.wait()
        return self._interface()

    def __buffer__(self, flags: int, /) -> memoryview:
        if not self._e.host:
            raise BufferError("Buffer is not CPU-accessible: the array is in device memory")
        self._e.wait()
        n = self.buffer_size
        return memoryview(_hview(self._e.ptrs[self._i], n, "nvcomp.Array buffer")).cast(
            "B").cast(self._e.dtype.char, self.shape) if n else memoryview(b"")

    def __release_buffer__(self, buffer: memoryview, /) -> None:
        buffer.release()

    def __dlpack_device__(self) -> tuple[int, int]:
        if self._e.host:
            return (_dlpack.KDL_CPU, 0)
        return (_dlpack.KDL_CUDA, self._e.device)

    @_api
    def __dlpack__(self, stream: object = None) -> Any:
        """Export as a DLPack capsule; a device array orders ``stream`` after its producer."""
        if self._e.host:
            self._e.wait()
        else:
            self._e.order_after(0 if stream is None else _handle(stream), self._e.device)
        dev_type, dev_id = self.__dlpack_device__()
        return _dlpack.export(int(self._e.ptrs[self._i]), self.shape, self._e.dtype, dev_type,
                              dev_id, self)

    @_api
    def to_dlpack(self, cuda_stream: object = None) -> Any:
        """As ``__dlpack__(cuda_stream)``."""
        return self.__dlpack__(cuda_stream)

    # -- copies

    @_api
    def cpu(self) -> object:
        """A host copy (self if already on the host); waits for the producing work."""
        if self._e.host:
            return self
        return _to_host(self._e, [self._i], keep_shape=self._e.shape)._view_first()

    @_api
    def cuda(self, synchronize: bool = True, cuda_stream: int = 0) -> object:
        """A device copy on the current device (self if already on a device), queued on
        ``cuda_stream``; ``synchronize`` waits for it."""
        if not self._e.host:
            return self
        return _to_device(self._e, [self._i], synchronize, cuda_stream,
                          keep_shape=self._e.shape)._view_first()

    def __repr__(self) -> str:
        where = "host" if self._e.host else f"device {self._e.device}"
        return (f"<nvcomp.Array {self._e.dtype} at 0x{int(self._e.ptrs[self._i]):x} on {where} "
                f"(emulated)>")


class BatchArray:
    """A batch of arrays (one entry per chunk) as nvCOMP's batched calls take and return:
    ``len()``, indexing (views that must not outlive the batch), ``buffer_sizes``, ``cpu()``,
    ``cuda()``. Indexing, ``buffer_sizes`` and ``cpu()`` wait for the work that produced it."""

    _e: _Entries

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(f"{type_name(BatchArray)}: No constructor defined!")

    @classmethod
    def _make(cls, e: _Entries) -> BatchArray:
        b = cls.__new__(cls)
        b._e = e
        return b

    def __len__(self) -> int:
        """Number of arrays in the batch."""
        return len(self._e)

    @_api
    def __getitem__(self, index: int) -> object:
        """Entry ``index`` (negative: from the end) as an Array viewing the batch."""
        if isinstance(index, bool) or not isinstance(index, int):
            raise incompatible("__getitem__", [f"(self: {type_name(BatchArray)}, index: int) -> "
                                               f"object"], (self, index), {})
        n = len(self._e)
        i = index + n if index < 0 else index
        if not 0 <= i < n:
            raise IndexError("BatchArray index out of range")
        self._e.wait()
        return Array._view(self._e, i)

    @property
    def buffer_sizes(self) -> list[int]:
        """Bytes held by every entry; waits for the producing work."""
        self._e.wait()
        return [int(s) for s in self._e.sizes]

    @_api
    def cpu(self) -> object:
        """A copy of the batch in host memory (self if every entry is there already)."""
        if self._e.host:
            return self
        return _to_host(self._e, list(range(len(self._e))))

    @_api
    def cuda(self, synchronize: bool = True, cuda_stream: int = 0) -> object:
        """A copy of the batch in device memory (self if every entry is there already)."""
        if not self._e.host:
            return self
        return _to_device(self._e, list(range(len(self._e))), synchronize, cuda_stream)

    def _view_first(self) -> Array:
        return Array._view(self._e, 0)

    def __repr__(self) -> str:
        where = "host" if self._e.host else f"device {self._e.device}"
        return f"<nvcomp.BatchArray of {len(self._e)} on {where} (emulated)>"


def _to_host(e: _Entries, idx: list[int], keep_shape: tuple[int, ...] | None = None
             ) -> BatchArray:
    """Copy entries ``idx`` of device entries ``e`` to new NumPy buffers (a blocking copy)."""
    _, _, streams = _emu()
    _alive(e.device)
    e.wait()
    sizes = [int(e.sizes[i]) for i in idx]
    bufs = [np.empty(max(s, 1), np.uint8) for s in sizes]
    src = [int(e.ptrs[i]) for i in idx]

    def copy() -> None:
        for k, (p, s) in enumerate(zip(src, sizes, strict=True)):
            bufs[k][:s] = _dview(p, s, f"nvcomp cpu() copy of entry {idx[k]}", e.device)

    e.order_after(e.stream, e.device)
    streams.enqueue(e.stream, e.device, copy, "nvcomp cpu() copy (device to host)",
                    keep=[e, *e.allocations()])
    streams.synchronize(e.stream, e.device)
    out = _Entries([b.ctypes.data for b in bufs], sizes, sizes, e.dtype, True, -1, e.stream,
                   bufs)
    out.shape = keep_shape
    return BatchArray._make(out)


def _to_device(e: _Entries, idx: list[int], synchronize: bool, cuda_stream: int,
               keep_shape: tuple[int, ...] | None = None) -> BatchArray:
    """Copy host entries ``idx`` to new device memory on the current device, queued on
    ``cuda_stream`` (reading the host bytes when the copy runs)."""
    _, _, streams = _emu()
    dev = streams.current_device()
    h = _handle(cuda_stream)
    _alive(dev)
    e.wait()
    sizes = [int(e.sizes[i]) for i in idx]
    owners, ptrs = [], []
    for s in sizes:
        p, o = _device_alloc(s, dev, h)
        ptrs.append(p)
        owners.append(o)
    src = [int(e.ptrs[i]) for i in idx]

    def copy() -> None:
        for k, (p, q, s) in enumerate(zip(src, ptrs, sizes, strict=True)):
            _dview(q, s, f"nvcomp cuda() copy of entry {idx[k]}", dev)[:] = _hview(
                p, s, f"nvcomp cuda() copy source {idx[k]}")

    out = _Entries(ptrs, sizes, sizes, e.dtype, False, dev, h, owners)
    out.shape, out.external = keep_shape, False
    streams.enqueue(h, dev, copy, "nvcomp cuda() copy (host to device)",
                    keep=[e, out, *out.allocations()])
    ev = streams.Event()
    streams.record(ev, h, dev)
    out.producer = ev
    if synchronize:
        streams.synchronize(h, dev)
    return BatchArray._make(out)


@_api
def as_array(source: object, cuda_stream: int = 0) -> Array:
    """Wrap ``source`` (DLPack capsule, ``__cuda_array_interface__``, ``__array_interface__``
    or ``__dlpack__``) as an Array without copying; ``source`` stays alive with it.

    ``cuda_stream`` is the stream the array's consumers synchronize on.
    """
    a = Array.__new__(Array)
    a._e, a._i = _wrap(source, cuda_stream), 0
    return a


@_api
def from_dlpack(source: object, cuda_stream: int = 0) -> Array:
    """Wrap a DLPack capsule, or an object with ``__dlpack__``, as an Array (zero-copy)."""
    if type(source).__name__ != "PyCapsule":
        if not hasattr(source, "__dlpack__"):
            raise ValueError("Neither __cuda_array_interface__ nor __dlpack__ are supported by "
                             "the object.")
        source = source.__dlpack__(stream=cuda_stream or None)  # type: ignore[attr-defined]
    return as_array(source, cuda_stream)


def _is_int_list(v: object) -> bool:
    return (isinstance(v, (list, tuple)) and not isinstance(v, str)
            and all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in v))


@overload
def as_arrays(buffer: object, offsets: list[int], sizes: list[int],
              cuda_stream: int = 0) -> BatchArray: ...


@overload
def as_arrays(sources: list[object], cuda_stream: int = 0) -> BatchArray: ...


@_api
def as_arrays(*args: Any, **kwargs: Any) -> BatchArray:
    """A BatchArray over existing memory, without copying.

    ``as_arrays(buffer, offsets, sizes, cuda_stream=0)`` carves entries out of ONE contiguous
    buffer: entry ``k`` is ``sizes[k]`` bytes at byte ``offsets[k]`` (its fixed capacity when
    used as ``out``); ``as_arrays(sources, cuda_stream=0)`` takes one object per entry. Entries
    take the element type of their source. Every entry must lie inside its buffer (ValueError);
    addresses should be aligned as the codec requires (``get_required_*_alignment``).
    """
    which, a = _dispatch(as_arrays, args, kwargs)
    if which == 0:
        return _carve(a["buffer"], a["offsets"], a["sizes"], a["cuda_stream"])
    return _gather_sources(a["sources"], a["cuda_stream"])


def _carve(buffer: object, offsets: Sequence[int], sizes: Sequence[int],
           cuda_stream: int) -> BatchArray:
    if len(offsets) != len(sizes):
        raise ValueError(f"offsets and sizes must have the same length, got {len(offsets)} and "
                         f"{len(sizes)}")
    if len(sizes) == 0:
        raise ValueError("Cannot create a BatchArray from an empty sizes table")
    base = _wrap(buffer, cuda_stream)
    shape = base.shape or (base.sizes[0] // base.dtype.itemsize,)
    if not _is_c_contiguous(shape, base.strides, base.dtype.itemsize):
        raise ValueError("Cannot carve a BatchArray out of a non-contiguous buffer")
    total, item = int(base.sizes[0]), base.dtype.itemsize
    ptrs, caps = [], []
    for k, (off, size) in enumerate(zip(offsets, sizes, strict=True)):
        off, size = int(off), int(size)
        if off < 0 or size < 0 or off + size > total:
            raise ValueError(f"Entry {k} spans [{off}, {off} + {size}), which does not fit in the "
                             f"{total}-byte buffer it is carved from")
        if size % item:
            raise ValueError(f"Source {k} is {size} bytes, which is not a whole number of {item}"
                             f"-byte elements")
        ptrs.append(base.ptrs[0] + off)
        caps.append(size)
    e = _Entries(ptrs, caps, list(caps), base.dtype, base.host, base.device, base.stream,
                 base.owners)
    e.producer, e.waits = base.producer, base.waits
    return BatchArray._make(e)


def _gather_sources(sources: Sequence[object], cuda_stream: int) -> BatchArray:
    if len(sources) == 0:
        raise ValueError("Cannot create a BatchArray from an empty list of sources")
    parts = [_wrap(s, cuda_stream) for s in sources]
    first = parts[0]
    for k, p in enumerate(parts):
        shape = p.shape or (p.sizes[0] // p.dtype.itemsize,)
        if not _is_c_contiguous(shape, p.strides, p.dtype.itemsize):
            raise ValueError(f"Source {k} is not C-contiguous; make a contiguous copy of it first")
        if p.host != first.host or p.device != first.device:
            raise ValueError("All sources of a BatchArray must be in the same memory")
    e = _Entries([p.ptrs[0] for p in parts], [p.caps[0] for p in parts],
                 [p.sizes[0] for p in parts], first.dtype, first.host, first.device,
                 _handle(cuda_stream), [p.owners for p in parts])
    e.waits = [w for p in parts for w in (p.producer, *p.waits) if w is not None]
    return BatchArray._make(e)


# ---------------------------------------------------------------- overload dispatch

_SIGS: dict[Any, list[inspect.Signature]] = {}


def _overload_sigs(fn: Callable[..., Any]) -> list[inspect.Signature]:
    key = (getattr(fn, "__module__", None), getattr(fn, "__qualname__", None))
    sigs = _SIGS.get(key)
    if sigs is None:
        sigs = _SIGS[key] = [inspect.signature(o) for o in typing.get_overloads(fn)]
    return sigs


def _accepts(annotation: str, value: object, default: object) -> bool:
    """Would pybind11 convert ``value`` to a parameter annotated ``annotation``?"""
    if value is None and default is None:
        return True
    t = annotation.replace(" ", "")
    if t in ("object", "Any"):
        return True
    if t == "int":
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if t == "str":
        return isinstance(value, str)
    if t == "list[int]":
        return _is_int_list(value)
    if t == "list[object]":
        return isinstance(value, (list, tuple))
    cls = globals().get(t)
    return isinstance(cls, type) and isinstance(value, cls)


def _dispatch(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
              ) -> tuple[int, dict[str, Any]]:
    """Which overload of ``fn`` takes the arguments, as pybind11 picks (the first whose
    parameters all convert), and the bound arguments with defaults."""
    sigs = _overload_sigs(fn)
    for k, sig in enumerate(sigs):
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError:
            continue
        bound.apply_defaults()
        if all(_accepts(str(p.annotation), bound.arguments[name], p.default)
               for name, p in sig.parameters.items() if name != "self"):
            return k, dict(bound.arguments)
    shown = [f"{fn.__name__}{_pretty(s)}" for s in sigs]
    raise incompatible(fn.__name__, shown, args, kwargs)


def _pretty(sig: inspect.Signature) -> str:
    parts = []
    for name, p in sig.parameters.items():
        ann = str(p.annotation).replace("'", "")
        if name == "self":
            ann = "nvidia.nvcomp.nvcomp_impl.Codec"
        elif ann in ("Array", "BatchArray", "DecompressConfig", "CompressConfig"):
            ann = f"nvidia.nvcomp.nvcomp_impl.{ann}"
        txt = f"{name}: {ann}"
        if p.default is not inspect.Parameter.empty:
            txt += f" = {p.default!r}"
        parts.append(txt)
    return f"({', '.join(parts)}) -> {sig.return_annotation}"


# ---------------------------------------------------------------- configs


class CompressConfig:
    """A compression configuration (``Codec.compression_config``): the uncompressed size of
    each entry. Pass it to ``encode`` or to ``decompression_config``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(f"{type_name(CompressConfig)}: No constructor defined!")

    @classmethod
    def _make(cls, sizes: list[int], batch: bool, codec: Codec) -> CompressConfig:
        c = cls.__new__(cls)
        c._sizes, c._batch, c._algorithm = sizes, batch, codec._algorithm
        return c


class DecompressConfig:
    """A decompression configuration (``Codec.decompression_config``): the decoded size of each
    entry, known without reading the data (from a CompressConfig) or read from it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(f"{type_name(DecompressConfig)}: No constructor defined!")

    @classmethod
    def _make(cls, sizes: list[int], batch: bool) -> DecompressConfig:
        c = cls.__new__(cls)
        c._sizes, c._batch = sizes, batch
        return c


# ---------------------------------------------------------------- the codec

_ALGORITHMS = {a.lower(): a for a in ("LZ4", "Snappy", "GDeflate", "Deflate", "Gzip", "Zstd",
                                      "Cascaded", "Bitcomp", "ANS")}
#: Every keyword ``Codec()`` accepts in 6.0.0.12 (others: ValueError "Unsupported argument").
_CODEC_KWARGS = (
    "algorithm", "device_id", "cuda_stream", "uncomp_chunk_size", "bitstream_kind",
    "execution_policy", "checksum_policy", "decompress_backend", "use_de_sort", "data_type",
    "bitshuffle_mode", "algorithm_type", "mode", "delta", "states_per_lane",
    "histogram_reduction_log2", "max_sub_chunk_count", "skip_validate", "compression_level",
    "terminal_codecs", "fine_grained_encodings", "coarse_grained_encodings",
)
_ENUM_KWARGS = {"bitstream_kind": BitstreamKind, "execution_policy": ExecutionPolicy,
                "checksum_policy": ChecksumPolicy, "decompress_backend": DecompressBackend,
                "bitshuffle_mode": BitshuffleMode}
_INT_KWARGS = ("device_id", "uncomp_chunk_size", "algorithm_type", "states_per_lane",
               "histogram_reduction_log2", "max_sub_chunk_count", "compression_level")

#: The emulator's NVCOMP_NATIVE header: magic, algorithm, decoded size; payload at 32.
_NATIVE_MAGIC = b"EMUNVCMP"
_NATIVE_HEADER = 32
_WUS_HEADER = 16  # WITH_UNCOMPRESSED_SIZE: u64 size, payload at the next 16-byte boundary
_ALG_CODE = {a: i for i, a in enumerate(hc.EMULATED, 1)}
_POISON = 0xDB  # fills the slot of a chunk that failed to decode
_SCRATCH_FIXED = 64 << 10
_SCRATCH_PER_CHUNK = 64  # device pointer, size and status tables


class Codec:
    """An nvCOMP codec bound to one algorithm, device and stream (one per thread).

    ``Codec(algorithm=..., device_id=..., cuda_stream=..., bitstream_kind=..., ...)`` takes
    keywords only. ``decode`` and ``encode`` queue their work on the codec's stream and return
    at once; results are read after the work has run (``buffer_sizes``, indexing, ``cpu()``,
    or any synchronization of the stream).
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Codec:
        if args:  # keywords only, as pybind11's ``Codec(**kwargs)`` says
            raise incompatible("__init__", [f"{type_name(Codec)}(**kwargs)"], args, kwargs,
                               constructor=True)
        return super().__new__(cls)

    @_api
    def __init__(self, **kwargs: Any) -> None:
        """Create a codec; see the module docstring for what the emulator supports."""
        for k in kwargs:
            if k not in _CODEC_KWARGS:
                raise ValueError(f'Unsupported argument: "{k}".{suggest(k, _CODEC_KWARGS)}')
        for k, cls in _ENUM_KWARGS.items():
            if k in kwargs and not isinstance(kwargs[k], cls):
                if kwargs[k] is None:
                    raise incompatible("__init__", [f"{type_name(Codec)}(**kwargs)"], (),
                                       kwargs, constructor=True)
                raise cast_error(kwargs[k])
        for k in _INT_KWARGS:
            if k in kwargs and (isinstance(kwargs[k], bool) or not isinstance(kwargs[k], int)):
                raise cast_error(kwargs[k])
        algorithm = kwargs.get("algorithm", "")
        if not isinstance(algorithm, str):
            raise RuntimeError(f"Unable to cast Python instance of type {type(algorithm)} to C++ "
                               f"type 'std::__cxx11::basic_string<char, std::char_traits<char>, "
                               f"std::allocator<char> >'")
        name = _ALGORITHMS.get(algorithm.lower()) if algorithm else ""
        if name is None:
            raise ValueError(f'Unknown algorithm: "{algorithm}".')
        if name and name not in hc.EMULATED:
            raise ValueError(f'Unknown algorithm: "{algorithm}". [emulated nvCOMP: {name} is an '
                             f'nvCOMP 6 algorithm the emulator does not implement; it emulates '
                             f'{", ".join(hc.EMULATED)}]')
        _, memory, streams = _emu()
        device = int(kwargs.get("device_id", streams.current_device()))
        memory.check_device(device, streams.device_count())
        _alive(device)
        if "cuda_stream" in kwargs and kwargs["cuda_stream"] is not None:
            stream = _handle(kwargs["cuda_stream"])
            owner = streams.stream_device(stream)
            if owner is not None and owner != device:
                raise ValueError("Codec CUDA stream and device id mismatched.")
        else:
            stream = streams.new_stream(device, non_blocking=True)  # nvCOMP's internal stream
        self._algorithm: str = name
        self._device = device
        self._stream = stream
        self._kind = kwargs.get("bitstream_kind", BitstreamKind.NVCOMP_NATIVE)  # type: ignore
        self._algorithm_type = int(kwargs.get("algorithm_type", 1))
        self._chunk = int(kwargs.get("uncomp_chunk_size", 65536))
        self._data_type = kwargs.get("data_type", "")
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"<nvcomp.Codec {self._algorithm or '(deduced)'} {self._kind.name} on device "
                f"{self._device}, stream 0x{self._stream:x} (emulated)>")

    # -- context manager

    def __enter__(self) -> object:
        """The codec itself."""
        return self

    def __exit__(self, exc_type: type | None = None, exc_value: object | None = None,
                 traceback: object | None = None) -> None:
        """Release the codec's resources (nothing to release here)."""
        return None

    # -- alignment and sizes

    def get_required_decompression_alignment(self) -> int:
        """Alignment in bytes every decode input and output address needs (16 when the
        algorithm is to be deduced)."""
        return hc.DECOMPRESSION_ALIGNMENT.get(self._algorithm, 16)

    def get_required_compression_alignment(self) -> int:
        """Alignment in bytes every encode input and output address needs (16 when the
        algorithm is to be deduced)."""
        return hc.COMPRESSION_ALIGNMENT.get(self._algorithm, 16)

    @_api
    def get_uncomp_buffer_size(self, source: Array) -> int:
        """Decoded size of one compressed Array (synchronizes the codec's stream)."""
        if not isinstance(source, Array):
            raise incompatible("get_uncomp_buffer_size",
                               [f"(self: {type_name(Codec)}, source: {type_name(Array)}) -> int"],
                               (self, source), {})
        return self._query_sizes(_single(source), "get_uncomp_buffer_size")[0]

    @_api
    def get_max_comp_buffer_size(self, source: Array) -> int:
        """Upper bound on the encoded size of ``source``."""
        if not isinstance(source, Array):
            raise incompatible("get_max_comp_buffer_size",
                               [f"(self: {type_name(Codec)}, source: {type_name(Array)}) -> int"],
                               (self, source), {})
        return self._max_encoded(source.buffer_size)

    def _max_encoded(self, n: int) -> int:
        return hc.max_compressed_size(self._need_algorithm(), n) + self._header_bytes()

    def _header_bytes(self) -> int:
        if self._kind == BitstreamKind.NVCOMP_NATIVE:  # type: ignore[attr-defined]
            return _NATIVE_HEADER
        if self._kind == BitstreamKind.WITH_UNCOMPRESSED_SIZE:  # type: ignore[attr-defined]
            return _WUS_HEADER
        return 0

    def _need_algorithm(self) -> str:
        if not self._algorithm:
            raise ValueError('Unknown algorithm: "". [emulated nvCOMP: a Codec without an '
                             'algorithm can only decode NVCOMP_NATIVE data]')
        return self._algorithm

    # -- configs

    @overload
    def compression_config(self, uncompressed_size: int) -> CompressConfig: ...

    @overload
    def compression_config(self, uncompressed_sizes: list[int]) -> CompressConfig: ...

    @_api
    def compression_config(self, *args: Any, **kwargs: Any) -> CompressConfig:
        """The config of an encode of ``uncompressed_size`` bytes, or of a batch of
        ``uncompressed_sizes``; no synchronization."""
        which, a = _dispatch(Codec.compression_config, (self, *args), kwargs)
        if which == 0:
            n = int(a["uncompressed_size"])
            if n <= 0:
                raise ValueError("compression_config: uncompressed_size must be greater than zero")
            return CompressConfig._make([n], False, self)
        sizes = [int(s) for s in a["uncompressed_sizes"]]
        if not sizes:
            raise ValueError("compression_config: uncompressed_sizes must not be empty")
        if any(s < 0 for s in sizes):
            raise cast_error(-1)
        if not any(s > 0 for s in sizes):
            raise ValueError("compression_config: at least one uncompressed_size must be greater "
                             "than zero")
        return CompressConfig._make(sizes, True, self)

    @overload
    def decompression_config(self, src: Array) -> DecompressConfig: ...

    @overload
    def decompression_config(self, srcs: BatchArray) -> DecompressConfig: ...

    @overload
    def decompression_config(self, compression_config: CompressConfig) -> DecompressConfig: ...

    @_api
    def decompression_config(self, *args: Any, **kwargs: Any) -> DecompressConfig:
        """A decode config: from a CompressConfig (no synchronization, no reading), or read
        from compressed data (synchronizes the codec's stream)."""
        which, a = _dispatch(Codec.decompression_config, (self, *args), kwargs)
        if which == 2:
            cc = a["compression_config"]
            if cc is None:
                raise ValueError("decompression_config(compression_config): compression_config "
                                 "must not be null")
            return DecompressConfig._make(list(cc._sizes), cc._batch)
        if which == 0:
            return DecompressConfig._make(
                self._query_sizes(_single(a["src"]), "decompression_config"), False)
        return DecompressConfig._make(self._query_sizes(a["srcs"]._e, "decompression_config"),
                                      True)

    # -- decode

    @overload
    def decode(self, src: Array, data_type: str = "", out: object = None,
               decompression_config: DecompressConfig = None) -> object: ...

    @overload
    def decode(self, srcs: BatchArray, data_type: str = "", out: object = None,
               decompression_config: DecompressConfig = None) -> object: ...

    @_api
    def decode(self, *args: Any, **kwargs: Any) -> object:
        """Queue the decode of one Array or of a BatchArray (one entry per chunk).

        ``out``: where to decode (a BatchArray for a batch: every slot keeps its capacity and a
        slot too small for its chunk raises ValueError). ``decompression_config``: the decoded
        sizes (from ``decompression_config``); without it the stream is synchronized and every
        chunk sized first. Returns the decoded Array / BatchArray (``out`` when given); a chunk
        that does not decode shows as 0 bytes in ``buffer_sizes``.
        """
        which, a = _dispatch(Codec.decode, (self, *args), kwargs)
        cfg = a["decompression_config"]
        if which == 0:
            if cfg is not None and cfg._batch:
                raise ValueError("DecompressConfig was built for a batch; pass it to "
                                 "decode(BatchArray)")
            out = a["out"]
            out_e = None if out is None else _single_out(out, self._device)
            e = self._decode(_single(a["src"]), a["data_type"], out_e, cfg, single=True)
            return Array._view(e, 0)
        if cfg is not None and not cfg._batch:
            raise ValueError("DecompressConfig was built for a single array; pass it to "
                             "decode(Array) instead")
        out = a["out"]
        if out is not None and not isinstance(out, BatchArray):
            raise ValueError("out= parameter of the batch overload must be an nvcomp.BatchArray")
        e = self._decode(a["srcs"]._e, a["data_type"], None if out is None else out._e, cfg,
                         single=False)
        return out if out is not None else BatchArray._make(e)

    def _check_inputs(self, e: _Entries, what: str) -> None:
        if e.host:
            _, memory, _ = _emu()
            for p in e.ptrs:
                a = memory.find(p) if p else None
                if a is None or a.device >= 0:
                    raise RuntimeError(f"Buffer is not CUDA-accessible [emulated nvCOMP: {what} "
                                       f"input at 0x{p:x} is pageable host memory]")
        elif e.device != self._device:
            raise ValueError("Input array and Codec device id mismatched.")

    def _check_aligned(self, ptrs: Sequence[int], what: str, which: str, align: int,
                       step: str) -> None:
        for k, p in enumerate(ptrs):
            if int(p) % align:
                raise RuntimeError(
                    f"{which} buffer is not aligned to the required alignment of {align} "
                    f"[emulated nvCOMP: {what} {which.lower()} {k} at 0x{int(p):x} is "
                    f"{int(p) % align} bytes past a multiple of {align} "
                    f"(nvcomp{self._algorithm}Required{step}Alignment)]")

    def _payload(self, raw: bytes) -> tuple[str, bytes, int | None]:
        """(algorithm, RAW bytes, declared size) of one compressed chunk of this bitstream."""
        if self._kind == BitstreamKind.NVCOMP_NATIVE:  # type: ignore[attr-defined]
            if len(raw) < _NATIVE_HEADER or raw[:8] != _NATIVE_MAGIC:
                raise hc.CorruptChunk("The passed data was not compressed with NVCOMP_NATIVE "
                                      "bitstream kind.")
            code = raw[8]
            alg = next((a for a, c in _ALG_CODE.items() if c == code), None)
            if alg is None or (self._algorithm and alg != self._algorithm):
                raise hc.CorruptChunk("The passed data was not compressed with requested codec")
            return alg, raw[_NATIVE_HEADER:], struct.unpack_from("<Q", raw, 16)[0]
        alg = self._need_algorithm()
        if self._kind == BitstreamKind.WITH_UNCOMPRESSED_SIZE:  # type: ignore[attr-defined]
            if len(raw) < _WUS_HEADER:
                raise hc.CorruptChunk("truncated WITH_UNCOMPRESSED_SIZE header")
            return alg, raw[_WUS_HEADER:], struct.unpack_from("<Q", raw)[0]
        return alg, raw, None

    def _chunk_size(self, raw: bytes) -> int:
        alg, data, declared = self._payload(raw)
        return int(declared) if declared is not None else hc.decoded_size(alg, data)

    def _order_inputs(self, *entries: _Entries | None) -> None:
        for e in entries:
            if e is not None:
                e.order_after(self._stream, self._device)

    def _query_sizes(self, e: _Entries, what: str) -> list[int]:
        """nvCOMP's ``configure_decompression``: synchronize the stream, then size every chunk
        (a Zstd/Snappy field, a walk for LZ4/Deflate/Gzip; 0 when it cannot be known)."""
        _, _, streams = _emu()
        _alive(self._device)
        self._check_inputs(e, f"nvcomp.Codec.{what}")
        self._order_inputs(e)
        streams.synchronize(self._stream, self._device)
        ptrs, caps, dev = list(e.ptrs), [int(s) for s in e.sizes], self._device

        def size_all() -> list[int]:
            out = []
            for k, (p, n) in enumerate(zip(ptrs, caps, strict=True)):
                raw = bytes(_dview(p, n, f"nvcomp.Codec.{what} input {k}", dev))
                try:
                    out.append(self._chunk_size(raw))
                except hc.CorruptChunk as err:
                    if "NVCOMP_NATIVE" in str(err) or "requested codec" in str(err):
                        raise _HostError(str(err)) from None
                    out.append(0)
            return out

        try:
            return streams.run_now(self._stream, dev, size_all,  # type: ignore[no-any-return]
                                   f"nvcomp.Codec.{what} ({self._algorithm}, {len(ptrs)} "
                                   f"chunks: size query)")
        except _HostError as err:
            raise RuntimeError(str(err)) from None

    def _decode(self, e: _Entries, data_type: str, out: _Entries | None,
                cfg: DecompressConfig | None, *, single: bool) -> _Entries:
        """Check, size, allocate and queue one batched decode; the output entries."""
        _, _, streams = _emu()
        what = "nvcomp.Codec.decode"
        dev, stream = self._device, self._stream
        _alive(dev)
        n = len(e)
        self._check_inputs(e, what)
        if cfg is not None and len(cfg._sizes) != n:
            raise ValueError(f"DecompressConfig was built for batch with {len(cfg._sizes)} "
                             f"arrays, got batch with {n} arrays.")
        if out is not None:
            if len(out) != n:
                raise ValueError(f"Output buffer count ({len(out)}) does not match input buffer "
                                 f"count ({n})")
            if out.host:
                raise ValueError("All external buffers passed as out= parameter need to be GPU "
                                 "available")
            if out.device != dev:
                raise ValueError("External buffer passed as out= parameter is on a different "
                                 "CUDA device than the codec")
        sizes = list(cfg._sizes) if cfg is not None else self._query_sizes(e, "decode")
        if self._algorithm:
            limit = hc.MAX_CHUNK[self._algorithm]
            for s in sizes:
                if s > limit:
                    raise RuntimeError(f"Chunk size {s} must not exceed {limit} bytes")
        if out is None:
            dtype = _output_dtype(data_type)
            offs, total = [], 0
            for s in sizes:
                offs.append(total)
                total += -(-max(int(s), 1) // 256) * 256
            base, owner = _device_alloc(total, dev, stream)
            out = _Entries([base + o for o in offs], [int(s) for s in sizes],
                           [int(s) for s in sizes], dtype, False, dev, stream, [owner])
            out.external = False
        else:
            for k, (cap, need) in enumerate(zip(out.caps, sizes, strict=True)):
                if int(cap) < int(need):
                    if single and not out.external:
                        _grow(out, int(need), dev, stream)
                        continue
                    if single:
                        raise ValueError(f"Array size {int(cap)} is too small to hold the data, "
                                         f"requested size: {int(need)}")
                    raise ValueError(f"Output array {k} capacity {int(cap)} is too small to hold "
                                     f"the data, {int(need)} bytes required")
        align = self.get_required_decompression_alignment()
        self._check_aligned(e.ptrs, what, "Input", align, "Decompression")
        self._check_aligned(out.ptrs, what, "Output", align, "Decompression")
        scratch_n = _SCRATCH_FIXED + _SCRATCH_PER_CHUNK * n
        scratch, scratch_owner = _device_alloc(scratch_n, dev, stream)

        src_ptrs, src_sizes = [int(p) for p in e.ptrs], [int(s) for s in e.sizes]
        dst_ptrs, dst_caps = [int(p) for p in out.ptrs], [int(c) for c in out.caps]
        out_e = out

        def work() -> None:
            v = _dview(scratch, scratch_n, f"{what} scratch (from the device allocator)", dev)
            v[:64] = 0xCD  # nvCOMP writes its scratch: both ends, so a short block shows
            v[-64:] = 0xCD
            decoded = []
            for k in range(n):
                raw = bytes(_dview(src_ptrs[k], src_sizes[k], f"{what} input {k}", dev))
                slot = _dview(dst_ptrs[k], dst_caps[k], f"{what} output {k}", dev)
                try:
                    alg, data, declared = self._payload(raw)
                    got = hc.decode(alg, data, dst_caps[k])
                    if declared is not None and len(got) != declared:
                        raise hc.CorruptChunk("size field disagrees with the data")
                except hc.CorruptChunk:
                    slot[:] = _POISON
                    decoded.append(0)
                    continue
                slot[:len(got)] = np.frombuffer(got, np.uint8)
                decoded.append(len(got))
            out_e.sizes[:] = decoded  # the device's "actual decompressed bytes"

        self._order_inputs(e, out)
        keep = [e, out, scratch_owner, *e.allocations(), *out.allocations()]
        with self._lock:
            streams.enqueue(stream, dev, work, f"{what} ({self._algorithm or 'native'}, {n} "
                                               f"chunks)", keep=keep)
            ev = streams.Event()
            streams.record(ev, stream, dev)
        out.producer, out.waits = ev, []
        return out

    # -- encode

    @overload
    def encode(self, array: Array, out: object = None,
               compression_config: CompressConfig = None) -> object: ...

    @overload
    def encode(self, srcs: BatchArray, out: object = None,
               compression_config: CompressConfig = None) -> object: ...

    @_api
    def encode(self, *args: Any, **kwargs: Any) -> object:
        """Queue the encode of one Array or of a BatchArray; the encoded Array / BatchArray
        (sizes known once the work has run). ``out`` slots must hold the worst case
        (``get_max_comp_buffer_size``), else ValueError."""
        which, a = _dispatch(Codec.encode, (self, *args), kwargs)
        cc = a["compression_config"]
        if which == 0:
            if cc is not None and cc._batch:
                raise ValueError("CompressConfig was built for a batch; pass it to "
                                 "encode(BatchArray)")
            out = a["out"]
            e = self._encode(_single(a["array"]), None if out is None else
                             _single_out(out, self._device), cc, single=True)
            return Array._view(e, 0)
        if cc is not None and not cc._batch:
            raise ValueError("CompressConfig was built for a single array; pass it to "
                             "encode(Array) instead")
        out = a["out"]
        if out is not None and not isinstance(out, BatchArray):
            raise ValueError("out= parameter of the batch overload must be an nvcomp.BatchArray")
        e = self._encode(a["srcs"]._e, None if out is None else out._e, cc, single=False)
        return out if out is not None else BatchArray._make(e)

    def _encode(self, e: _Entries, out: _Entries | None, cc: CompressConfig | None, *,
                single: bool) -> _Entries:
        _, _, streams = _emu()
        what = "nvcomp.Codec.encode"
        dev, stream = self._device, self._stream
        alg = self._need_algorithm()
        _alive(dev)
        self._check_inputs(e, what)
        n = len(e)
        e.wait()  # the sizes of produced inputs
        sizes = [int(s) for s in e.sizes]
        if cc is not None:
            if len(cc._sizes) != n:
                raise ValueError(f"CompressConfig was built for batch with {len(cc._sizes)} "
                                 f"arrays, got batch with {n} arrays.")
            for s, want in zip(sizes, cc._sizes, strict=True):
                if s != want:
                    raise ValueError(f"Array size {s} does not match CompressConfig's expected "
                                     f"size {want}")
        bounds = [self._max_encoded(s) for s in sizes]
        if out is None:
            offs, total = [], 0
            for b in bounds:
                offs.append(total)
                total += -(-b // 256) * 256
            base, owner = _device_alloc(total, dev, stream)
            out = _Entries([base + o for o in offs], bounds, list(bounds), np.dtype(np.uint8),
                           False, dev, stream, [owner])
            out.external = False
        else:
            if len(out) != n:
                raise ValueError(f"Output buffer count ({len(out)}) does not match input buffer "
                                 f"count ({n})")
            if out.host or out.device != dev:
                raise ValueError("External buffer passed as out= parameter need to be GPU "
                                 "available")
            for k, (cap, need) in enumerate(zip(out.caps, bounds, strict=True)):
                if int(cap) < need:
                    if single and not out.external:
                        _grow(out, need, dev, stream)
                        continue
                    raise ValueError(f"Output array {k} capacity {int(cap)} is too small to hold "
                                     f"the data, {need} bytes required")
        align = self.get_required_compression_alignment()
        self._check_aligned(e.ptrs, what, "Input", align, "Compression")
        self._check_aligned(out.ptrs, what, "Output", align, "Compression")
        src_ptrs = [int(p) for p in e.ptrs]
        dst_ptrs, dst_caps = [int(p) for p in out.ptrs], [int(c) for c in out.caps]
        kind, level = self._kind, self._algorithm_type
        out_e = out

        def work() -> None:
            written = []
            for k in range(n):
                raw = bytes(_dview(src_ptrs[k], sizes[k], f"{what} input {k}", dev))
                body = hc.encode(alg, raw, level)
                if kind == BitstreamKind.NVCOMP_NATIVE:  # type: ignore[attr-defined]
                    body = (_NATIVE_MAGIC + bytes([_ALG_CODE[alg]]) + bytes(7)
                            + struct.pack("<Q", len(raw)) + bytes(8) + body)
                elif kind == BitstreamKind.WITH_UNCOMPRESSED_SIZE:  # type: ignore[attr-defined]
                    body = struct.pack("<Q", len(raw)) + bytes(8) + body
                slot = _dview(dst_ptrs[k], dst_caps[k], f"{what} output {k}", dev)
                slot[:len(body)] = np.frombuffer(body, np.uint8)
                written.append(len(body))
            out_e.sizes[:] = written

        self._order_inputs(e, out)
        with self._lock:
            streams.enqueue(stream, dev, work, f"{what} ({alg}, {n} chunks)",
                            keep=[e, out, *e.allocations(), *out.allocations()])
            ev = streams.Event()
            streams.record(ev, stream, dev)
        out.producer, out.waits = ev, []
        return out


class _HostError(Exception):
    """A size query found data the host-side configure step refuses (raised after the sync)."""


def _single(a: Array) -> _Entries:
    """A one-entry batch over Array ``a`` (sharing its memory and producer)."""
    e = a._e
    i = a._i
    if len(e) == 1:
        return e  # the array's own entries: a decode into it updates (and may grow) it
    s = _Entries([e.ptrs[i]], [e.caps[i]], [e.sizes[i]], e.dtype, e.host, e.device, e.stream,
                 [a])
    s.producer, s.waits, s.external = e.producer, list(e.waits), e.external
    if e.shape is not None:
        s.sizes = [a.buffer_size]
    return s


def _single_out(out: object, device: int) -> _Entries:
    """The ``out`` of a single-array call: an nvcomp Array (nvCOMP's own: may grow) or any
    external buffer (fixed capacity)."""
    if isinstance(out, Array):
        return _single(out)
    e = _wrap(out, 0)
    if e.host:
        raise ValueError("External buffer passed as out= parameter need to be GPU available")
    if e.device != device:
        raise ValueError("External buffer passed as out= parameter is on a different CUDA device "
                         "than the codec")
    return e


def _grow(e: _Entries, need: int, device: int, stream: int) -> None:
    """Give nvCOMP-owned entry 0 a new block of ``need`` bytes (a native Array resized)."""
    ptr, owner = _device_alloc(need, device, stream)
    e.ptrs[0], e.caps[0] = ptr, need
    e.owners.append(owner)


_DTYPES = ("|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8")


def _output_dtype(data_type: str) -> np.dtype:
    """The element type of outputs nvCOMP allocates (``''``: bytes)."""
    if not data_type:
        return np.dtype(np.uint8)
    try:
        dt = np.dtype(data_type)
    except TypeError:
        raise ValueError("Unknown output data type") from None
    if dt.str not in _DTYPES and dt.str.replace("<", "|") not in _DTYPES:
        raise ValueError("Unknown output data type")
    return dt
