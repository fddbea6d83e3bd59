"""Streams, events and the thread's current device of the emulated CUDA device.

Device work (kernels, copies, nvCOMP calls, CuPy operations) is *queued*, never run at once.
It runs at a synchronization point: a stream, event or device synchronize, a blocking copy to
the host. Per stream, work runs in the order it was queued; an event recorded on one stream and
waited on by another orders the two. Work on streams not so ordered runs in a random
interleaving (seeded: env ``EMULATED_GPU_SEED``, default 0), and pending work of other streams
may or may not run before a synchronization returns, so a missing synchronization shows up as
a wrong value instead of hiding.

The legacy default stream (handle 0) is ordered with every blocking stream of its device, as
CUDA documents; non-blocking streams are not. Handle 2 is ``cudaStreamPerThread``: a different
stream in each thread.

An out-of-bounds access (:class:`~errors.Fault`) found while running work is reported as CUDA
reports an illegal address: ``CUDARuntimeError`` status 700 at the synchronization point, and
the device's context is dead from then on: every later call on it raises the same error.
"""

from __future__ import annotations

import itertools
import os
import random
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import devices as _devices
from .errors import Fault, runtime_error

__all__ = [
    "LEGACY", "PER_THREAD", "Event", "check_alive", "current_device", "current_stream",
    "device_count", "enqueue", "new_stream", "record", "set_current_device",
    "set_current_stream", "synchronize", "synchronize_device", "wait_event",
]

LEGACY = 0
PER_THREAD = 2
_rng = random.Random(int(os.environ.get("EMULATED_GPU_SEED", "0")))
_handles = itertools.count(0x7E57_0000_1000, 0x1000)

_lock = threading.RLock()
_dead: dict[int, str] = {}


def device_count() -> int:
    """The CUDA devices this process sees (``CUDA_VISIBLE_DEVICES`` applied: devices.py)."""
    return _devices.count()


@dataclass(eq=False)
class Work:
    fn: Callable[[], None]
    what: str
    stream: _Stream
    deps: list[Work] = field(default_factory=list)
    keep: tuple[Any, ...] = ()  # objects the work uses (kept alive until it has run)
    done: bool = False


@dataclass(eq=False)
class _Stream:
    handle: int
    device: int
    blocking: bool
    queue: deque[Work] = field(default_factory=deque)
    last: Work | None = None  # last work queued (done or not)


_streams: dict[tuple[int, int, int], _Stream] = {}  # (device, handle, thread or 0) -> stream


def _state(handle: int, device: int) -> _Stream:
    key = (device, handle, threading.get_ident() if handle == PER_THREAD else 0)
    s = _streams.get(key)
    if s is None:
        if handle not in (LEGACY, PER_THREAD):
            raise runtime_error(400, f"stream handle 0x{handle:x} on device {device}")
        s = _streams[key] = _Stream(handle, device, blocking=True)
    return s


def new_stream(device: int, *, non_blocking: bool) -> int:
    """A new stream on ``device``; its handle (an int, as ``cudaStream_t``)."""
    check_alive(device)
    _devices.note_context(device)
    with _lock:
        h = next(_handles)
        _streams[(device, h, 0)] = _Stream(h, device, blocking=not non_blocking)
    return h


def destroy_stream(handle: int, device: int) -> None:
    """Forget a stream; its queued work still runs (CUDA completes it too)."""
    with _lock:
        s = _streams.get((device, handle, 0))
        if s is not None and not s.queue:
            del _streams[(device, handle, 0)]


def stream_device(handle: int) -> int | None:
    """The device of a created stream (None for the default streams)."""
    with _lock:
        for (d, h, _), _s in _streams.items():
            if h == handle and h not in (LEGACY, PER_THREAD):
                return d
    return None


# ---------------------------------------------------------------- the thread's current device


class _Local(threading.local):
    def __init__(self) -> None:
        self.device = 0
        self.streams: dict[int, int] = {}  # device -> current stream handle


_local = _Local()
_DEFAULT = PER_THREAD if os.environ.get("CUPY_CUDA_PER_THREAD_DEFAULT_STREAM") == "1" else LEGACY


def current_device() -> int:
    return _local.device


def set_current_device(device: int) -> None:
    from .memory import check_device

    check_device(device, _devices.count())
    _local.device = int(device)
    _devices.note_context(int(device))  # cudaSetDevice initializes the primary context


def current_stream(device: int | None = None) -> int:
    """Handle of the calling thread's current stream on ``device`` (default: current)."""
    d = _local.device if device is None else device
    return _local.streams.get(d, _DEFAULT)


def pool_stream(device: int) -> int:
    """The arena CuPy's device pool files an allocation of this thread under: its current
    stream, but the per-thread default stream is one arena per thread (CuPy's
    ``_get_stream_identifier``, cupy#5069), not one for every thread's handle 2."""
    handle = current_stream(device)
    return -threading.get_ident() if handle == PER_THREAD else handle


def set_current_stream(handle: int, device: int | None = None) -> None:
    d = _local.device if device is None else device
    _local.streams[d] = int(handle)


# ---------------------------------------------------------------- liveness


def check_alive(device: int) -> None:
    """Raise the sticky error of ``device`` if its context is dead."""
    reason = _dead.get(device)
    if reason is not None:
        raise runtime_error(700, f"the context of device {device} died earlier: {reason}")


def is_dead(device: int) -> bool:
    return device in _dead


def revive_all() -> None:
    """Tests of the emulator only: forget dead contexts and pending work."""
    with _lock:
        _dead.clear()
        for s in _streams.values():
            for w in s.queue:
                for k in w.keep:
                    if hasattr(k, "pending"):
                        k.pending -= 1
            s.queue.clear()
            s.last = None


# ---------------------------------------------------------------- queueing


def enqueue(handle: int, device: int, fn: Callable[[], None], what: str,
            keep: Iterable[Any] = ()) -> Work:
    """Queue ``fn`` (device work named ``what``) on stream ``handle`` of ``device``.

    ``keep``: objects ``fn`` uses, held until it has run (CUDA keeps memory in use by queued
    work valid; here, the buffers of a queued operation stay mapped).
    """
    check_alive(device)
    _devices.note_context(device)
    with _lock:
        s = _state(handle, device)
        w = Work(fn, what, s, keep=tuple(keep))
        for k in w.keep:
            if hasattr(k, "pending"):
                k.pending += 1
        if s.blocking:
            # The legacy stream waits for every blocking stream of its device, and they for it.
            for (d, h, _t), o in _streams.items():
                if d != device or o is s or not o.blocking or not o.queue:
                    continue
                if h == LEGACY or s.handle == LEGACY:
                    w.deps.append(o.queue[-1])
        s.queue.append(w)
        s.last = w
        return w


class Event:
    """A CUDA event: :func:`record` captures a stream's work so far."""

    def __init__(self) -> None:
        self.work: Work | None = None
        self.recorded = False
        self.device: int | None = None


def record(event: Event, handle: int, device: int) -> None:
    check_alive(device)
    with _lock:
        s = _state(handle, device)
        event.work = s.last if s.last is not None and not s.last.done else None
        event.recorded = True
        event.device = device


def wait_event(handle: int, device: int, event: Event) -> None:
    """Later work on the stream waits for the work ``event`` captured."""
    if event.work is None:
        return
    w = enqueue(handle, device, lambda: None, "cudaStreamWaitEvent")
    w.deps.append(event.work)


def event_done(event: Event) -> bool:
    return event.work is None or event.work.done


# ---------------------------------------------------------------- running


def _closure(targets: Iterable[Work]) -> set[Work]:
    """The targets with all work they depend on (stream order and events), not yet done."""
    need: set[Work] = set()
    todo = [t for t in targets if not t.done]
    while todo:
        w = todo.pop()
        if w in need or w.done:
            continue
        need.add(w)
        todo.extend(d for d in w.deps if not d.done)
        q = w.stream.queue
        for earlier in q:
            if earlier is w:
                break
            if not earlier.done and earlier not in need:
                todo.append(earlier)
    return need


def _run(targets: Iterable[Work], device: int) -> None:
    """Run ``targets`` and what they depend on; other ready work may run too, at random."""
    with _lock:
        check_alive(device)
        need = _closure(targets)
        # Other streams' work may or may not have run by now: decide per stream, at random.
        bystanders = {id(s) for s in _streams.values()
                      if s.device == device and _rng.random() < 0.5}
        while need:
            ready = []
            for s in list(_streams.values()):
                if not s.queue:
                    continue
                head = s.queue[0]
                if any(not d.done for d in head.deps):
                    continue
                if head in need or (id(s) in bystanders and s.device == device):
                    ready.append(head)
            if not ready:  # cannot happen: the closure is ordered
                raise RuntimeError(f"emulated device: deadlock with {len(need)} items pending")
            w = _rng.choice(ready)
            _execute(w)
            need.discard(w)


def _execute(w: Work) -> None:
    s = w.stream
    assert s.queue[0] is w
    s.queue.popleft()
    try:
        w.fn()
    except Fault as e:
        w.done = True
        _dead[s.device] = f"{w.what}: {e}"
        for o in _streams.values():  # the context is gone, and its queued work with it
            if o.device == s.device:
                for x in o.queue:
                    x.done = True
                    for k in x.keep:
                        if hasattr(k, "pending"):
                            k.pending -= 1
                    x.keep = ()
                o.queue.clear()
        raise runtime_error(700, f"{w.what}: {e}") from None
    finally:
        w.done = True
        for k in w.keep:
            if hasattr(k, "pending"):
                k.pending -= 1
        w.keep = ()


def synchronize(handle: int, device: int) -> None:
    """Run everything queued on the stream so far (``cudaStreamSynchronize``)."""
    with _lock:
        s = _state(handle, device)
        _run(list(s.queue), device)


def synchronize_device(device: int) -> None:
    """Run everything queued on the device (``cudaDeviceSynchronize``)."""
    with _lock:
        pending = [w for s in _streams.values() if s.device == device for w in s.queue]
        _run(pending, device)


def synchronize_event(event: Event) -> None:
    if event.work is not None and not event.work.done:
        _run([event.work], event.device if event.device is not None else 0)


def pending(device: int | None = None) -> int:
    """Work items queued and not run (on ``device``, or on all)."""
    with _lock:
        return sum(len(s.queue) for s in _streams.values()
                   if device is None or s.device == device)


def run_now(handle: int, device: int, fn: Callable[[], Any], what: str) -> Any:
    """Queue ``fn`` on the stream and synchronize it; return what ``fn`` returned (blocking
    copies to the host, values the host reads)."""
    box: list[Any] = []
    enqueue(handle, device, lambda: box.append(fn()), what)
    synchronize(handle, device)
    return box[0] if box else None
