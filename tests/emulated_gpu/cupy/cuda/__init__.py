"""``cupy.cuda`` of the emulated device."""

from __future__ import annotations

from cupy_backends.cuda.api import driver

from cupy.cuda import memory, pinned_memory, runtime
from cupy.cuda.device import Device, get_device_id
from cupy.cuda.memory import MemoryPointer, MemoryPool, alloc, set_allocator
from cupy.cuda.pinned_memory import (
    PinnedMemory,
    PinnedMemoryPointer,
    PinnedMemoryPool,
    alloc_pinned_memory,
    set_pinned_memory_allocator,
)
from cupy.cuda.stream import Event, ExternalStream, Stream, get_current_stream, get_elapsed_time

__all__ = ["Device", "Event", "ExternalStream", "MemoryPointer", "MemoryPool", "PinnedMemory",
           "PinnedMemoryPointer", "PinnedMemoryPool", "Stream", "alloc", "alloc_pinned_memory",
           "driver", "get_current_stream", "get_device_id", "get_elapsed_time", "is_available",
           "memory", "pinned_memory", "runtime", "set_allocator", "set_pinned_memory_allocator"]


def is_available() -> bool:
    return True
