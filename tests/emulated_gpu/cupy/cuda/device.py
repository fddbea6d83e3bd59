"""``cupy.cuda.Device`` of the emulated device."""

from __future__ import annotations

from typing import Any

from _emucuda import memory as _mem
from _emucuda import streams as _streams

__all__ = ["Device", "get_device_id"]


class Device:
    """A CUDA device; ``with Device(i):`` makes it current in this thread."""

    def __init__(self, device: Any = None) -> None:
        if device is None:
            device = _streams.current_device()
        self.id = int(device)
        self._stack: list[int] = []

    def __int__(self) -> int:
        return self.id

    def __index__(self) -> int:
        return self.id

    def __repr__(self) -> str:
        return f"<CUDA Device {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self) -> int:
        return hash(("Device", self.id))

    def __enter__(self) -> Device:
        _mem.check_device(self.id, _streams.device_count())
        self._stack.append(_streams.current_device())
        _streams.set_current_device(self.id)
        return self

    def __exit__(self, *exc: object) -> None:
        _streams.set_current_device(self._stack.pop())

    def use(self) -> None:
        _streams.set_current_device(self.id)

    def synchronize(self) -> None:
        _streams.synchronize_device(self.id)

    @property
    def compute_capability(self) -> str:
        return "90"

    @property
    def mem_info(self) -> tuple[int, int]:
        return _mem.DEVICE_MEMORY - _mem.in_use(self.id), _mem.DEVICE_MEMORY

    @property
    def attributes(self) -> dict[str, int]:
        return {"MaxThreadsPerBlock": 1024, "WarpSize": 32, "MultiProcessorCount": 1}

    @property
    def pci_bus_id(self) -> str:
        # CuPy: runtime.deviceGetPCIBusId(self.id), the physical GPU's bus id.
        from cupy.cuda import runtime

        return runtime.deviceGetPCIBusId(self.id)


def get_device_id() -> int:
    return _streams.current_device()
