"""``cupy.cuda`` of the emulated device."""

from __future__ import annotations

from cupy.cuda import driver, memory, runtime
from cupy.cuda.device import Device, get_device_id
from cupy.cuda.memory import (
    MemoryPointer,
    MemoryPool,
    PinnedMemoryPool,
    alloc,
    alloc_pinned_memory,
    set_allocator,
    set_pinned_memory_allocator,
)
from cupy.cuda.stream import Event, ExternalStream, Stream, get_current_stream, get_elapsed_time

__all__ = ["Device", "Event", "ExternalStream", "MemoryPointer", "MemoryPool",
           "PinnedMemoryPool", "Stream", "alloc", "alloc_pinned_memory", "driver",
           "get_current_stream", "get_device_id", "get_elapsed_time", "is_available", "memory",
           "runtime", "set_allocator", "set_pinned_memory_allocator"]


def is_available() -> bool:
    return True
