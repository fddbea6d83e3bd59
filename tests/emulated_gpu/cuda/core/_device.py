"""``cuda.core.Device`` of the emulated device (cuda-core 1.x, cuda_core/cuda/core/_device.pyx)."""

from __future__ import annotations

import threading
from typing import Any

from _emucuda import devices as _devices
from _emucuda import streams as _streams

from cuda.core._utils.cuda_utils import ComputeCapability, CUDAError, _driver_error

__all__ = ["Device"]

_tls = threading.local()


def _cu_init() -> int:
    """``cuInit(0)``: reads CUDA_VISIBLE_DEVICES (once); fails when no device is visible."""
    n = _devices.count()
    if n == 0:
        raise _driver_error("CUDA_ERROR_NO_DEVICE", _devices.why_none())
    return n


class DeviceProperties:
    """A class to query various attributes of a CUDA device (the ones the emulated device
    models; the others raise ``AttributeError``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("DeviceProperties cannot be instantiated directly. Please use "
                           "Device APIs.")

    @classmethod
    def _init(cls, handle: int) -> DeviceProperties:
        self = cls.__new__(cls)
        self._handle = handle
        return self

    def _props(self) -> dict[str, Any]:
        from cupy.cuda import runtime

        return runtime.getDeviceProperties(self._handle)

    max_threads_per_block = property(lambda self: int(self._props()["maxThreadsPerBlock"]))
    warp_size = property(lambda self: int(self._props()["warpSize"]))
    multiprocessor_count = property(lambda self: int(self._props()["multiProcessorCount"]))
    max_shared_memory_per_block = property(lambda self: int(self._props()["sharedMemPerBlock"]))
    total_constant_memory = property(lambda self: int(self._props()["totalConstMem"]))
    integrated = property(lambda self: bool(self._props()["integrated"]))
    can_map_host_memory = property(lambda self: bool(self._props()["canMapHostMemory"]))
    concurrent_kernels = property(lambda self: bool(self._props()["concurrentKernels"]))
    ecc_enabled = property(lambda self: bool(self._props()["ECCEnabled"]))
    unified_addressing = property(lambda self: bool(self._props()["unifiedAddressing"]))
    async_engine_count = property(lambda self: int(self._props()["asyncEngineCount"]))
    pci_bus_id = property(lambda self: int(self._props()["pciBusID"]))
    pci_device_id = property(lambda self: int(self._props()["pciDeviceID"]))
    pci_domain_id = property(lambda self: int(self._props()["pciDomainID"]))
    compute_capability_major = property(lambda self: int(self._props()["major"]))
    compute_capability_minor = property(lambda self: int(self._props()["minor"]))


class Device:
    """Represent a GPU and act as an entry point for cuda.core features.

    Newly returned Device objects are thread-local singletons for a specified device; creating
    one does not initialize the GPU.

    Parameters
    ----------
    device_id : int, optional
        Device ordinal to return a Device object for. Default value of `None` return the
        currently used device.
    """

    __slots__ = ("__weakref__", "_device_id", "_has_inited", "_properties", "_uuid")

    def __new__(cls, device_id: Device | int | None = None) -> Device:
        if isinstance(device_id, Device):
            return device_id
        device_id = getattr(device_id, "device_id", device_id)
        total = _cu_init()
        if device_id is None:
            # The device of the thread's current context; none current: 0 (cudart's rule). The
            # runtime's current device (cudaSetDevice) is that context's device here.
            device_id = _streams.current_device()
        elif device_id < 0:
            raise ValueError(f"device_id must be >= 0, got {device_id}")
        try:
            devices = _tls.devices
        except AttributeError:
            devices = _tls.devices = []
            for i in range(total):
                d = super().__new__(cls)
                d._device_id, d._has_inited, d._properties, d._uuid = i, False, None, None
                devices.append(d)
        try:
            return devices[device_id]
        except IndexError:
            raise ValueError(f"device_id must be within [0, {len(devices)}), "
                             f"got {device_id}") from None

    def _check_context_initialized(self) -> None:
        if not self._has_inited:
            raise CUDAError(f"Device {self._device_id} is not yet initialized, perhaps you "
                            f"forgot to call .set_current() first?")

    @classmethod
    def get_all_devices(cls) -> tuple[Device, ...]:
        """Query the available device instances."""
        return tuple(cls(i) for i in range(_cu_init()))

    @property
    def device_id(self) -> int:
        """Return device ordinal."""
        return self._device_id

    @property
    def pci_bus_id(self) -> str:
        """Return a PCI Bus Id string for this device."""
        return _devices.physical_of(self._device_id).pci_bus_id[:12]

    @property
    def uuid(self) -> str:
        """Return a UUID for the device (8-4-4-4-12 hex digits, without ``GPU-``)."""
        if self._uuid is None:
            h = _devices.physical_of(self._device_id).uuid_bytes.hex()
            self._uuid = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        return self._uuid

    @property
    def name(self) -> str:
        """Return the device name."""
        return _devices.NAME

    @property
    def properties(self) -> DeviceProperties:
        """Return a DeviceProperties class with information about the device."""
        if self._properties is None:
            self._properties = DeviceProperties._init(self._device_id)
        return self._properties

    @property
    def compute_capability(self) -> ComputeCapability:
        """Return a named tuple with 2 fields: major and minor."""
        return ComputeCapability(*_devices.COMPUTE_CAPABILITY)

    @property
    def arch(self) -> str:
        """Return compute capability as a string (e.g., '75' for CC 7.5)."""
        cc = self.compute_capability
        return f"{cc.major}{cc.minor}"

    def __int__(self) -> int:
        """Return device_id."""
        return self._device_id

    def __repr__(self) -> str:
        return f"<Device {self._device_id} ({self.name})>"

    def __hash__(self) -> int:
        return hash(self.uuid)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Device):
            return NotImplemented
        return self._device_id == other._device_id

    def __reduce__(self) -> tuple[object, ...]:
        return Device, (self.device_id,)

    def set_current(self, ctx: Any = None) -> Any:
        """Set device to be used for GPU executions: initializes CUDA and makes the device's
        primary context current in the calling thread. Explicit contexts (``ctx``) are not
        modelled by the emulated device."""
        if ctx is not None:
            raise NotImplementedError("emulated device: explicit cuda.core Contexts are not "
                                      "modelled; call set_current() for the primary context")
        _streams.set_current_device(self._device_id)  # retains the primary context
        self._has_inited = True
        return None

    def sync(self) -> None:
        """Synchronize the device. Device must be initialized."""
        self._check_context_initialized()
        _streams.synchronize_device(self._device_id)
