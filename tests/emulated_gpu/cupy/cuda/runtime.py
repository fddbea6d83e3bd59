"""``cupy.cuda.runtime`` of the emulated device (the calls gds_zarr and common scripts make)."""

from __future__ import annotations

from typing import Any

import numpy as np
from _emucuda import devices as _devices
from _emucuda import memory as _mem
from _emucuda import streams as _streams
from _emucuda.errors import CUDARuntimeError
from _emucuda.errors import Fault as _Fault
from _emucuda.errors import runtime_error as _runtime_error

__all__ = ["CUDARuntimeError", "deviceGetPCIBusId", "deviceSynchronize", "driverGetVersion",
           "getDevice",
           "getDeviceCount", "getDeviceProperties", "is_hip", "memGetInfo", "memcpy",
           "memcpyAsync", "memset", "memsetAsync", "runtimeGetVersion", "setDevice",
           "streamSynchronize"]

is_hip = False
memcpyHostToHost = 0
memcpyHostToDevice = 1
memcpyDeviceToHost = 2
memcpyDeviceToDevice = 3
memcpyDefault = 4
cudaMemoryTypeHost = 1
cudaMemoryTypeDevice = 2
hostAllocDefault = 0
hostAllocPortable = 1  # cudaHostAllocPortable (pinned for every context: the same here)

#: CUDA 12.8, as the cupy-cuda12x 14 wheels report with a 12.8 driver.
_RUNTIME_VERSION = 12080
_DRIVER_VERSION = 12080


def getDeviceCount() -> int:
    # cudaGetDeviceCount fails with cudaErrorNoDevice when there is none; CuPy raises it. The
    # count is of the devices CUDA_VISIBLE_DEVICES leaves visible (_emucuda/devices.py).
    count = _streams.device_count()
    if count == 0:
        raise _runtime_error(100, _devices.why_none())
    return count


def getDevice() -> int:
    return _streams.current_device()


def setDevice(device: int) -> None:
    _streams.set_current_device(device)


def runtimeGetVersion() -> int:
    return _RUNTIME_VERSION


def driverGetVersion() -> int:
    return _DRIVER_VERSION


def getDeviceProperties(device: int) -> dict[str, Any]:
    _mem.check_device(device, _streams.device_count())
    phys = _devices.physical_of(device)  # the GPU behind this ordinal (CUDA_VISIBLE_DEVICES)
    return {
        "name": _devices.NAME.encode(),
        "totalGlobalMem": _mem.DEVICE_MEMORY, "sharedMemPerBlock": 49152,
        "regsPerBlock": 65536, "warpSize": 32, "maxThreadsPerBlock": 1024,
        "maxThreadsDim": (1024, 1024, 64), "maxGridSize": (2147483647, 65535, 65535),
        "clockRate": 0, "totalConstMem": 65536, "major": 9, "minor": 0,
        "textureAlignment": 512, "multiProcessorCount": 1, "integrated": 0,
        "canMapHostMemory": 1, "computeMode": 0, "concurrentKernels": 1, "ECCEnabled": 0,
        "pciBusID": phys.pci_bus, "pciDeviceID": 0, "pciDomainID": 0, "asyncEngineCount": 1,
        "unifiedAddressing": 1, "memoryClockRate": 0, "memoryBusWidth": 0,
        "l2CacheSize": 0, "maxThreadsPerMultiProcessor": 2048, "uuid": phys.uuid_bytes,
    }


def deviceGetPCIBusId(device: int) -> str:
    """``cudaDeviceGetPCIBusId``: ``"0000:1A:00.0"`` for the GPU behind ordinal ``device``."""
    _mem.check_device(device, _streams.device_count())
    return _devices.physical_of(device).pci_bus_id


def memGetInfo() -> tuple[int, int]:
    d = _streams.current_device()
    return _mem.DEVICE_MEMORY - _mem.in_use(d), _mem.DEVICE_MEMORY


def deviceSynchronize() -> None:
    _streams.synchronize_device(_streams.current_device())


def streamSynchronize(stream: int) -> None:
    _streams.synchronize(int(stream), _streams.current_device())


def _copy_views(dst: int, src: int, size: int, kind: int, what: str, device: int
                ) -> tuple[np.ndarray, np.ndarray, tuple[Any, ...]]:
    """Checked views of both sides of a copy (a bad range: cudaErrorInvalidValue, as CUDA
    validates a copy's pointers when it is issued)."""
    if kind == memcpyDefault:
        kind = {(True, True): memcpyDeviceToDevice, (True, False): memcpyDeviceToHost,
                (False, True): memcpyHostToDevice, (False, False): memcpyHostToHost}[
            (_is_device(src), _is_device(dst))]
    src_dev = kind in (memcpyDeviceToHost, memcpyDeviceToDevice)
    dst_dev = kind in (memcpyHostToDevice, memcpyDeviceToDevice)
    try:
        if src_dev and not _is_device(src):
            raise _Fault(f"{what}: source 0x{src:x} is not device memory "
                        f"({_mem.describe(src)}) but the copy kind says it is")
        if dst_dev and not _is_device(dst):
            raise _Fault(f"{what}: destination 0x{dst:x} is not device memory "
                        f"({_mem.describe(dst)}) but the copy kind says it is")
        if not src_dev and _is_device(src):
            raise _Fault(f"{what}: source 0x{src:x} is device memory, the copy kind says host")
        if not dst_dev and _is_device(dst):
            raise _Fault(f"{what}: destination 0x{dst:x} is device memory, the copy kind says "
                        f"host")
        s = _mem.view(src, size, f"{what} source")
        d = _mem.view(dst, size, f"{what} destination")
    except _Fault as e:
        raise _runtime_error(1, str(e)) from None
    return d, s, (_mem.find(src), _mem.find(dst))


def _is_device(ptr: int) -> bool:
    a = _mem.find(int(ptr))
    return a is not None and a.device >= 0


def _pinned(ptr: int) -> bool:
    a = _mem.find(int(ptr))
    return a is not None and a.device < 0


def memcpyAsync(dst: int, src: int, size: int, kind: int, stream: int) -> None:
    """Queue a copy on ``stream``. Pinned host memory is read (or written) when the copy runs;
    pageable host memory is staged at once, as CUDA does."""
    device = _streams.current_device()
    _streams.check_alive(device)
    d, s, keep = _copy_views(int(dst), int(src), int(size), int(kind), "cudaMemcpyAsync", device)
    if kind == memcpyHostToDevice and not _pinned(src):
        s = s.copy()  # pageable memory: CUDA stages it before returning
    if kind == memcpyDeviceToHost and not _pinned(dst):
        # Into pageable memory the copy is synchronous for the host.
        _streams.run_now(int(stream), device, lambda: d.__setitem__(slice(None), s),
                         "cudaMemcpyAsync")
        return
    _streams.enqueue(int(stream), device, lambda: d.__setitem__(slice(None), s),
                     "cudaMemcpyAsync", keep=keep)


def memcpy(dst: int, src: int, size: int, kind: int) -> None:
    """A copy on the legacy default stream, synchronous for the host."""
    memcpyAsync(dst, src, size, kind, 0)
    _streams.synchronize(0, _streams.current_device())


def memsetAsync(ptr: int, value: int, size: int, stream: int) -> None:
    device = _streams.current_device()
    _streams.check_alive(device)
    try:
        v = _mem.view(int(ptr), int(size), "cudaMemsetAsync", device=device)
    except _Fault as e:
        raise _runtime_error(1, str(e)) from None
    _streams.enqueue(int(stream), device, lambda: v.fill(value & 0xFF), "cudaMemsetAsync",
                     keep=(_mem.find(int(ptr)),))


def memset(ptr: int, value: int, size: int) -> None:
    memsetAsync(ptr, value, size, 0)
    _streams.synchronize(0, _streams.current_device())
