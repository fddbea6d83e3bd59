"""``kvikio._lib.future``: the C++ ``std::future<size_t>`` behind ``kvikio.IOFuture``.

The emulated I/O runs when the future is waited on (:meth:`IOFuture.get`), not before: bytes
reach the destination no earlier than real kvikio's thread pool could deliver them, so code
that uses a buffer before waiting on its read sees stale bytes, as it may on a GPU. ``done()``
answers False the first time it is polled and completes the I/O on a later poll, so that
polling loops end. As ``std::future``: a second ``get()`` raises (the shared state is gone),
and ``done()`` after ``get()`` raises kvikio's ``is_future_done`` error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ._common import kvikio_fail

__all__ = ["IOFuture", "IOFutureStream"]


class IOFuture:
    """C++ future for CuFile reads and writes"""

    __slots__ = ("_consumed", "_error", "_fn", "_lock", "_polled", "_value")

    def __init__(self, fn: Callable[[], int] | None = None, value: int = 0,
                 error: BaseException | None = None) -> None:
        self._fn, self._value, self._error = fn, value, error
        self._lock = threading.Lock()
        self._polled = False
        self._consumed = False

    def _complete(self) -> None:
        fn, self._fn = self._fn, None
        if fn is not None:
            try:
                self._value = int(fn())
            except BaseException as e:  # noqa: BLE001 - kept for get(), as std::future keeps it
                self._error = e

    def get(self) -> int:
        with self._lock:
            if self._consumed:
                # std::future::get on a future whose state get() already took.
                raise RuntimeError("std::future_error: No associated state")
            self._complete()
            self._consumed = True
            if self._error is not None:
                err, self._error = self._error, None
                raise err
            return self._value

    def done(self) -> bool:
        with self._lock:
            if self._consumed:
                raise kvikio_fail("include/kvikio/utils.hpp", 173,
                                  "The future object does not refer to a valid shared state.",
                                  ValueError)
            if self._fn is None:
                return True
            if not self._polled:
                self._polled = True
                return False
            self._complete()
            return True


class IOFutureStream:
    """Wrap a C++ StreamFuture in a Python object"""

    __slots__ = ("_check",)

    def __init__(self, check: Callable[[], int]) -> None:
        self._check = check

    def check_bytes_done(self) -> int:
        return int(self._check())
