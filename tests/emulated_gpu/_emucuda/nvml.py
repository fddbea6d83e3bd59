"""The NVIDIA Management Library (``libnvidia-ml.so.1``) of the emulated machine.

``pynvml`` (the nvidia-ml-py package) is a ``ctypes`` binding: each of its functions looks up a C
entry point of the library (``_nvmlGetFunctionPointer("nvmlDeviceGetCount_v2")``), calls it with
``ctypes`` arguments and turns the ``nvmlReturn_t`` into an ``NVMLError`` subclass. The emulated
``pynvml`` (tests/emulated_gpu/pynvml.py) is that binding, unchanged, loading this library in place
of the driver's. So return types, string conversion, structures and error classes are the real
binding's; what is emulated is the C API, as NVML's reference manual documents it:

- ``nvmlInitWithFlags`` / ``nvmlShutdown`` count references; every other call before the first
  init or after the last shutdown returns ``NVML_ERROR_UNINITIALIZED``.
- Devices are the machine's physical GPUs (_emucuda/devices.py), in index order; NVML ignores
  ``CUDA_VISIBLE_DEVICES``. Handles are opaque pointers; a pointer that is not a handle returns
  ``NVML_ERROR_INVALID_ARGUMENT``, as does an index past the last device; an unknown UUID or PCI
  bus id returns ``NVML_ERROR_NOT_FOUND``.
- The emulated GPUs are not MIG capable: ``nvmlDeviceGetMigMode`` and the MIG queries return
  ``NVML_ERROR_NOT_SUPPORTED``; ``nvmlDeviceIsMigDeviceHandle`` says no.
- Memory: ``total`` is ``EMULATED_GPU_MEMORY``; ``used`` counts this process's allocations on the
  device (other processes' are not known here); utilization is not modelled
  (``NVML_ERROR_NOT_SUPPORTED``, as on GPUs that lack the counter).
- Compute processes: the live processes holding a context on the device (devices.py), with the
  memory used when it is this process, else ``NVML_VALUE_NOT_AVAILABLE``.
- CPU affinity: every CPU of the host (one NUMA node).
- An entry point not listed here does not exist in this library: pynvml then raises
  ``NVMLError_FunctionNotFound``, as with a driver too old for the call.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import Any

from . import devices as _devices

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_UNKNOWN = 999

#: nvmlErrorString's texts, as NVIDIA's DCGM copies them from NVML (nvml_error_strings.h); the
#: emulated library answers "Unknown Error" for the others, which it never returns.
_ERROR_STRINGS = {
    0: "Success", 1: "Uninitialized", 2: "Invalid Argument", 3: "Not Supported",
    4: "Insufficient Permissions", 5: "Already Initialized", 6: "Not Found",
    7: "Insufficient Size", 8: "Insufficient External Power", 9: "Driver Not Loaded",
    10: "Timeout", 11: "Interrupt Request Issue", 12: "NVML Shared Library Not Found",
    13: "Function Not Found", 14: "Corrupted infoROM", 15: "GPU is lost",
    16: "GPU requires reset", 17: "GPU access blocked by the operating system",
    18: "Driver/library version mismatch", 19: "In use by another client",
    20: "Insufficient Memory", 23: "Insufficient Resources", 999: "Unknown Error",
}

#: The driver the emulated machine reports: R570, whose CUDA version is 12.8 (the emulated
#: CuPy's cudaDriverGetVersion says 12080 too).
DRIVER_VERSION = "570.124.06"
NVML_VERSION = "12.570.124.06"
CUDA_DRIVER_VERSION = 12080
_VALUE_NOT_AVAILABLE_ULL = ctypes.c_ulonglong(-1).value


def _value(x: Any) -> int:
    """A C scalar argument: a Python int or a ctypes simple instance."""
    return int(x.value if isinstance(x, ctypes._SimpleCData) else x)


def _target(ref: Any) -> Any:
    """The object an output argument points to (``byref(obj)`` or a ctypes array/structure)."""
    return getattr(ref, "_obj", ref)


def _set_pointer(ref: Any, address: int) -> None:
    obj = _target(ref)
    ctypes.cast(ctypes.pointer(obj), ctypes.POINTER(ctypes.c_void_p))[0] = address


def _write_string(buf: Any, length: Any, text: str) -> int:
    data = text.encode() + b"\0"
    if _value(length) < len(data):
        return NVML_ERROR_INSUFFICIENT_SIZE
    ctypes.memmove(_target(buf), data, len(data))
    return NVML_SUCCESS


def _char_p(x: Any) -> bytes:
    if isinstance(x, ctypes.c_char_p):
        return x.value or b""
    return bytes(x)


class EmulatedNVML:
    """``CDLL("libnvidia-ml.so.1")`` of the emulated machine: the entry points are attributes
    (Python callables taking ctypes arguments, returning ``nvmlReturn_t``)."""

    _name = "libnvidia-ml.so.1 (emulated)"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refcount = 0
        # One opaque handle (the address of a small buffer) per physical device.
        self._handle_mem = [(ctypes.c_char * 16)() for _ in _devices.physical()]
        self._by_address = {ctypes.addressof(m): i for i, m in enumerate(self._handle_mem)}

    def __repr__(self) -> str:
        return f"<{self._name}>"

    def __getattr__(self, name: str) -> Callable[..., int]:
        fn = _ENTRY_POINTS.get(name)
        if fn is None:
            raise AttributeError(f"{self._name}: undefined symbol: {name}")
        bound = _EntryPoint(self, name, fn)
        setattr(self, name, bound)  # as ctypes caches a CDLL's function pointers
        return bound

    # helpers for the entry points
    def _ready(self) -> bool:
        return self._refcount > 0

    def _device(self, handle: Any) -> int | None:
        try:
            address = ctypes.cast(handle, ctypes.c_void_p).value
        except (ctypes.ArgumentError, TypeError):
            return None
        return self._by_address.get(address or 0)

    def _handle_of(self, index: int) -> int:
        return ctypes.addressof(self._handle_mem[index])


class _EntryPoint:
    """One C function of the library (``restype``/``argtypes`` settable, as on ctypes')."""

    def __init__(self, lib: EmulatedNVML, name: str, fn: Callable[..., Any]) -> None:
        self._lib, self.__name__, self._fn = lib, name, fn
        self.restype: Any = ctypes.c_int
        self.argtypes: Any = None

    def __call__(self, *args: Any) -> Any:
        return self._fn(self._lib, *args)

    def __repr__(self) -> str:
        return f"<_FuncPtr {self.__name__} of {self._lib!r}>"


# ---------------------------------------------------------------- the entry points

_ENTRY_POINTS: dict[str, Callable[..., Any]] = {}


def _entry(name: str, *, needs_init: bool = True, device_arg: bool = False
           ) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Register an entry point; ``needs_init``: NVML_ERROR_UNINITIALIZED before nvmlInit;
    ``device_arg``: the first argument is a device handle, passed on as its index."""

    def register(fn: Callable[..., int]) -> Callable[..., int]:
        def entry(lib: EmulatedNVML, *args: Any) -> Any:
            if needs_init and not lib._ready():
                return NVML_ERROR_UNINITIALIZED
            if device_arg:
                if not args:
                    return NVML_ERROR_INVALID_ARGUMENT
                index = lib._device(args[0])
                if index is None:
                    return NVML_ERROR_INVALID_ARGUMENT
                return fn(lib, index, *args[1:])
            return fn(lib, *args)

        entry.__name__ = name
        _ENTRY_POINTS[name] = entry
        return fn

    return register


@_entry("nvmlInitWithFlags", needs_init=False)
def _init_with_flags(lib: EmulatedNVML, flags: Any) -> int:
    with lib._lock:
        lib._refcount += 1
    return NVML_SUCCESS


@_entry("nvmlInit_v2", needs_init=False)
def _init_v2(lib: EmulatedNVML) -> int:
    return _init_with_flags(lib, 0)


@_entry("nvmlShutdown", needs_init=False)
def _shutdown(lib: EmulatedNVML) -> int:
    with lib._lock:
        if lib._refcount == 0:
            return NVML_ERROR_UNINITIALIZED
        lib._refcount -= 1
    return NVML_SUCCESS


@_entry("nvmlErrorString", needs_init=False)
def _error_string(lib: EmulatedNVML, result: Any) -> bytes:
    # A const char* (pynvml sets restype = c_char_p): the text, as bytes.
    return _ERROR_STRINGS.get(_value(result), "Unknown Error").encode()


@_entry("nvmlSystemGetDriverVersion")
def _driver_version(lib: EmulatedNVML, buf: Any, length: Any) -> int:
    return _write_string(buf, length, DRIVER_VERSION)


@_entry("nvmlSystemGetNVMLVersion")
def _nvml_version(lib: EmulatedNVML, buf: Any, length: Any) -> int:
    return _write_string(buf, length, NVML_VERSION)


@_entry("nvmlSystemGetCudaDriverVersion")
def _cuda_driver_version(lib: EmulatedNVML, out: Any) -> int:
    _target(out).value = CUDA_DRIVER_VERSION
    return NVML_SUCCESS


_ENTRY_POINTS["nvmlSystemGetCudaDriverVersion_v2"] = _ENTRY_POINTS[
    "nvmlSystemGetCudaDriverVersion"]


@_entry("nvmlDeviceGetCount_v2")
def _count(lib: EmulatedNVML, out: Any) -> int:
    _target(out).value = _devices.PHYSICAL_COUNT
    return NVML_SUCCESS


@_entry("nvmlDeviceGetHandleByIndex_v2")
def _handle_by_index(lib: EmulatedNVML, index: Any, out: Any) -> int:
    i = _value(index)
    if not 0 <= i < _devices.PHYSICAL_COUNT:
        return NVML_ERROR_INVALID_ARGUMENT
    _set_pointer(out, lib._handle_of(i))
    return NVML_SUCCESS


@_entry("nvmlDeviceGetHandleByUUID")
def _handle_by_uuid(lib: EmulatedNVML, uuid: Any, out: Any) -> int:
    text = _char_p(uuid).decode(errors="replace")
    for d in _devices.physical():
        if d.uuid == text:
            _set_pointer(out, lib._handle_of(d.index))
            return NVML_SUCCESS
    return NVML_ERROR_NOT_FOUND


@_entry("nvmlDeviceGetHandleByPciBusId_v2")
def _handle_by_pci_bus_id(lib: EmulatedNVML, bus_id: Any, out: Any) -> int:
    text = _char_p(bus_id).decode(errors="replace").upper()
    for d in _devices.physical():
        if text in (d.nvml_pci_bus_id, d.pci_bus_id):
            _set_pointer(out, lib._handle_of(d.index))
            return NVML_SUCCESS
    return NVML_ERROR_NOT_FOUND


@_entry("nvmlDeviceGetIndex", device_arg=True)
def _index(lib: EmulatedNVML, index: int, out: Any) -> int:
    _target(out).value = index
    return NVML_SUCCESS


@_entry("nvmlDeviceGetMinorNumber", device_arg=True)
def _minor(lib: EmulatedNVML, index: int, out: Any) -> int:
    _target(out).value = index  # /dev/nvidia<minor>
    return NVML_SUCCESS


@_entry("nvmlDeviceGetName", device_arg=True)
def _name(lib: EmulatedNVML, index: int, buf: Any, length: Any) -> int:
    return _write_string(buf, length, _devices.NAME)


@_entry("nvmlDeviceGetUUID", device_arg=True)
def _uuid(lib: EmulatedNVML, index: int, buf: Any, length: Any) -> int:
    return _write_string(buf, length, _devices.PhysicalDevice(index).uuid)


@_entry("nvmlDeviceGetPciInfo_v3", device_arg=True)
def _pci_info(lib: EmulatedNVML, index: int, out: Any) -> int:
    d, info = _devices.PhysicalDevice(index), _target(out)
    info.busIdLegacy = d.pci_bus_id.encode()
    info.busId = d.nvml_pci_bus_id.encode()
    info.domain, info.bus, info.device = 0, d.pci_bus, 0
    info.pciDeviceId = 0x233010DE  # device id << 16 | NVIDIA's vendor id (an H100's)
    info.pciSubSystemId = 0
    return NVML_SUCCESS


@_entry("nvmlDeviceGetCudaComputeCapability", device_arg=True)
def _compute_capability(lib: EmulatedNVML, index: int, major: Any, minor: Any) -> int:
    _target(major).value, _target(minor).value = _devices.COMPUTE_CAPABILITY
    return NVML_SUCCESS


def _used_here(index: int) -> int:
    from . import memory

    ordinal = _devices.ordinal_of(index)
    return 0 if ordinal is None else memory.in_use(ordinal)


@_entry("nvmlDeviceGetMemoryInfo", device_arg=True)
def _memory_info(lib: EmulatedNVML, index: int, out: Any) -> int:
    from . import memory

    info, used = _target(out), _used_here(index)
    info.total, info.used, info.free = memory.DEVICE_MEMORY, used, memory.DEVICE_MEMORY - used
    return NVML_SUCCESS


@_entry("nvmlDeviceGetMemoryInfo_v2", device_arg=True)
def _memory_info_v2(lib: EmulatedNVML, index: int, out: Any) -> int:
    info = _target(out)
    if info.version != 0x02000028:  # nvmlMemory_v2
        return 25  # NVML_ERROR_ARGUMENT_VERSION_MISMATCH
    from . import memory

    used = _used_here(index)
    info.total, info.reserved = memory.DEVICE_MEMORY, 0
    info.used, info.free = used, memory.DEVICE_MEMORY - used
    return NVML_SUCCESS


@_entry("nvmlDeviceGetUtilizationRates", device_arg=True)
def _utilization(lib: EmulatedNVML, index: int, out: Any) -> int:
    return NVML_ERROR_NOT_SUPPORTED


def _cpu_set(index: int, size: Any, out: Any) -> int:
    words, array = _value(size), _target(out)
    if words <= 0:
        return NVML_ERROR_INVALID_ARGUMENT
    bits = [0] * words
    for cpu in range(os.cpu_count() or 1):
        if cpu // 64 < words:
            bits[cpu // 64] |= 1 << (cpu % 64)
    for i, b in enumerate(bits):
        array[i] = b
    return NVML_SUCCESS


@_entry("nvmlDeviceGetCpuAffinity", device_arg=True)
def _cpu_affinity(lib: EmulatedNVML, index: int, size: Any, out: Any) -> int:
    return _cpu_set(index, size, out)


@_entry("nvmlDeviceGetCpuAffinityWithinScope", device_arg=True)
def _cpu_affinity_scope(lib: EmulatedNVML, index: int, size: Any, out: Any, scope: Any) -> int:
    if _value(scope) not in (0, 1):  # NVML_AFFINITY_SCOPE_NODE, _SOCKET
        return NVML_ERROR_INVALID_ARGUMENT
    return _cpu_set(index, size, out)


def _processes(lib: EmulatedNVML, index: int, count: Any, infos: Any) -> int:
    pids = _devices.context_holders(index)
    c = _target(count)
    if infos is None or c.value < len(pids):
        needed = len(pids)
        c.value = needed
        return NVML_SUCCESS if needed == 0 else NVML_ERROR_INSUFFICIENT_SIZE
    array = _target(infos)
    for i, pid in enumerate(pids):
        array[i].pid = pid
        array[i].usedGpuMemory = (_used_here(index) if pid == os.getpid()
                                  else _VALUE_NOT_AVAILABLE_ULL)
        array[i].gpuInstanceId = 0xFFFFFFFF  # not a MIG device
        array[i].computeInstanceId = 0xFFFFFFFF
    c.value = len(pids)
    return NVML_SUCCESS


for _v in ("nvmlDeviceGetComputeRunningProcesses_v2", "nvmlDeviceGetComputeRunningProcesses_v3"):
    _entry(_v, device_arg=True)(_processes)


@_entry("nvmlDeviceGetMigMode", device_arg=True)
def _mig_mode(lib: EmulatedNVML, index: int, current: Any, pending: Any) -> int:
    return NVML_ERROR_NOT_SUPPORTED


@_entry("nvmlDeviceIsMigDeviceHandle", device_arg=True)
def _is_mig(lib: EmulatedNVML, index: int, out: Any) -> int:
    _target(out).value = 0
    return NVML_SUCCESS


@_entry("nvmlDeviceGetMaxMigDeviceCount", device_arg=True)
def _max_mig(lib: EmulatedNVML, index: int, out: Any) -> int:
    return NVML_ERROR_NOT_SUPPORTED


@_entry("nvmlDeviceGetMigDeviceHandleByIndex", device_arg=True)
def _mig_by_index(lib: EmulatedNVML, index: int, i: Any, out: Any) -> int:
    return NVML_ERROR_NOT_SUPPORTED


@_entry("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", device_arg=True)
def _from_mig(lib: EmulatedNVML, index: int, out: Any) -> int:
    return NVML_ERROR_INVALID_ARGUMENT  # not a MIG device handle


#: The entry points this library has (the tests compare them with what callers need).
ENTRY_POINTS = frozenset(_ENTRY_POINTS)

_LIBRARY: EmulatedNVML | None = None


def load() -> EmulatedNVML:
    """The library, as ``CDLL("libnvidia-ml.so.1")`` would give it (one per process)."""
    global _LIBRARY
    if _LIBRARY is None:
        _LIBRARY = EmulatedNVML()
    return _LIBRARY
