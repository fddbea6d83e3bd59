"""``cupy.cuda.Stream``, ``ExternalStream`` and ``Event`` of the emulated device."""

from __future__ import annotations

import threading
import weakref
from typing import Any

from _emucuda import streams as _streams

__all__ = ["Event", "ExternalStream", "Stream", "get_current_stream", "get_elapsed_time"]


#: The Stream object of each created stream, so get_current_stream returns it.
_objects: dict[tuple[int, int], weakref.ref[Any]] = {}


class _BaseStream:
    ptr: int
    device_id: int

    def __init__(self) -> None:
        self._prev: threading.local = threading.local()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.ptr:#x} (device {self.device_id})>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _BaseStream) and (other.ptr, other.device_id) == (
            self.ptr, self.device_id)

    def __hash__(self) -> int:
        return hash((self.ptr, self.device_id))

    def __enter__(self) -> _BaseStream:
        stack = self._prev.__dict__.setdefault("stack", [])
        stack.append(_streams.current_stream(self.device_id))
        _streams.set_current_stream(self.ptr, self.device_id)
        return self

    def __exit__(self, *exc: object) -> None:
        _streams.set_current_stream(self._prev.stack.pop(), self.device_id)

    def use(self) -> _BaseStream:
        _streams.set_current_stream(self.ptr, self.device_id)
        return self

    def synchronize(self) -> None:
        _streams.synchronize(self.ptr, self.device_id)

    @property
    def done(self) -> bool:
        # The device got there by now: run what is queued (a polling loop must end).
        _streams.synchronize(self.ptr, self.device_id)
        return True

    def record(self, event: Event | None = None) -> Event:
        if event is None:
            event = Event()
        _streams.record(event._event, self.ptr, self.device_id)
        return event

    def wait_event(self, event: Event) -> None:
        _streams.wait_event(self.ptr, self.device_id, event._event)

    def launch_host_func(self, callback: Any, arg: Any) -> None:
        _streams.enqueue(self.ptr, self.device_id, lambda: callback(arg), "cudaLaunchHostFunc")

    def add_callback(self, callback: Any, arg: Any) -> None:
        _streams.enqueue(self.ptr, self.device_id, lambda: callback(self, None, arg),
                         "cudaStreamAddCallback")


class Stream(_BaseStream):
    """A CUDA stream on the current device (``null=True``: the legacy default stream;
    ``ptds=True``: the per-thread default stream)."""

    def __init__(self, null: bool = False, non_blocking: bool = False, ptds: bool = False,
                 priority: int | None = None) -> None:
        super().__init__()
        self.device_id = _streams.current_device()
        self._owner = False
        if null:
            self.ptr = _streams.LEGACY
        elif ptds:
            self.ptr = _streams.PER_THREAD
        else:
            self.ptr = _streams.new_stream(self.device_id, non_blocking=non_blocking)
            self._owner = True
            _objects[(self.device_id, self.ptr)] = weakref.ref(self)
        self._non_blocking = non_blocking

    def __del__(self) -> None:
        if getattr(self, "_owner", False):
            _streams.destroy_stream(self.ptr, self.device_id)


class ExternalStream(_BaseStream):
    """A stream created elsewhere, by its handle."""

    def __init__(self, ptr: int, device_id: int = -1) -> None:
        super().__init__()
        self.ptr = int(ptr)
        found = _streams.stream_device(self.ptr)
        self.device_id = (int(device_id) if device_id >= 0 else
                          found if found is not None else _streams.current_device())


class _NullStreams:
    """``Stream.null`` / ``Stream.ptds``: the default streams of the current device."""

    def __init__(self, handle: int) -> None:
        self._handle = handle

    def __get__(self, obj: object, owner: type) -> Stream:
        s = Stream.__new__(Stream)
        _BaseStream.__init__(s)
        s.device_id = _streams.current_device()
        s.ptr = self._handle
        s._non_blocking = False
        s._owner = False
        return s


Stream.null = _NullStreams(_streams.LEGACY)  # type: ignore[attr-defined]
Stream.ptds = _NullStreams(_streams.PER_THREAD)  # type: ignore[attr-defined]


class Event:
    """A CUDA event."""

    def __init__(self, block: bool = False, disable_timing: bool = False,
                 interprocess: bool = False) -> None:
        self._event = _streams.Event()
        self.ptr = id(self._event)

    def record(self, stream: Any = None) -> None:
        s = get_current_stream() if stream is None else stream
        _streams.record(self._event, s.ptr, s.device_id)

    def synchronize(self) -> None:
        _streams.synchronize_event(self._event)

    @property
    def done(self) -> bool:
        self.synchronize()
        return True


def get_elapsed_time(start_event: Event, end_event: Event) -> float:
    start_event.synchronize()
    end_event.synchronize()
    return 0.0


def get_current_stream(device_id: int = -1) -> Stream:
    """The calling thread's current stream on ``device_id`` (default: the current device): the
    ``Stream`` object made current, as in CuPy."""
    d = _streams.current_device() if device_id < 0 else device_id
    ptr = _streams.current_stream(d)
    ref = _objects.get((d, ptr))
    owner = ref() if ref is not None else None
    if owner is not None:
        return owner
    s = Stream.__new__(Stream)
    _BaseStream.__init__(s)
    s.device_id = d
    s.ptr = ptr
    s._non_blocking = False
    s._owner = False
    return s
