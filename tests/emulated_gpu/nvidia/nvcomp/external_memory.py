"""``ExternalMemory``: what an allocator given to ``set_*_allocator`` may return when freeing
its memory needs the stream it was handed (the real wheel ships this module too)."""

from __future__ import annotations

from typing import Any

__all__ = ["ExternalMemory"]


class ExternalMemory:
    """Wraps a memory object (anything with ``ptr``) and the ``CudaStream`` it was allocated
    on, so the stream outlives the memory."""

    def __init__(self, mem_handle: Any, stream_handle: Any = None) -> None:
        self.__mem_handle = mem_handle
        self.__stream_handle = stream_handle

    @property
    def ptr(self) -> int:
        return self.__mem_handle.ptr  # type: ignore[no-any-return]

    def __del__(self) -> None:
        # The memory goes first, then the stream it may need.
        del self.__mem_handle
        del self.__stream_handle
