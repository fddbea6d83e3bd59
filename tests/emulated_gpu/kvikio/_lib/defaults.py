"""``kvikio._lib.defaults``: kvikio's process-wide settings (C++ ``kvikio::defaults``).

Read from the environment on first use, in libkvikio 26.10's order and with its parsing
(``cpp/src/defaults.cpp``, ``cpp/include/kvikio/defaults.hpp``): ``KVIKIO_NTHREADS`` (alias
``KVIKIO_NUM_THREADS``), ``KVIKIO_COMPAT_MODE``, ``KVIKIO_TASK_SIZE``, ``KVIKIO_GDS_THRESHOLD``,
``KVIKIO_BOUNCE_BUFFER_SIZE``, ``KVIKIO_HTTP_MAX_ATTEMPTS``, ``KVIKIO_HTTP_TIMEOUT``,
``KVIKIO_HTTP_STATUS_CODES``, ``KVIKIO_AUTO_DIRECT_IO_READ``,
``KVIKIO_AUTO_DIRECT_IO_READ_OVERREAD``, ``KVIKIO_AUTO_DIRECT_IO_WRITE``,
``KVIKIO_THREAD_POOL_PER_BLOCK_DEVICE``, ``KVIKIO_REMOTE_IO_BACKEND``,
``KVIKIO_REMOTE_IO_NUM_REACTORS``, ``KVIKIO_REMOTE_IO_REACTOR_DISPATCH``,
``KVIKIO_REMOTE_IO_MAX_CONCURRENT_REQUESTS``. A bad value makes every getter and setter raise
(ValueError, as the C++ ``std::invalid_argument``) until it is fixed, as the real one's static
initialiser does. ``AUTO`` compat mode means compat on the emulated device unless it has GDS
(``EMULATED_GPU_GDS=1``): there is no cuFile driver otherwise.
"""

from __future__ import annotations

import enum
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from ._common import as_c_int, check_annotated, gds_available, kvikio_fail

__all__ = [
    "CompatMode", "RemoteIOBackend", "RemoteReactorDispatch", "auto_direct_io_read",
    "auto_direct_io_write", "bounce_buffer_size", "compat_mode", "gds_threshold",
    "http_max_attempts", "http_status_codes", "http_timeout", "is_compat_mode_preferred",
    "remote_io_backend", "remote_io_max_concurrent_requests", "remote_io_num_reactors",
    "remote_io_reactor_dispatch", "set_auto_direct_io_read", "set_auto_direct_io_write",
    "set_bounce_buffer_size", "set_compat_mode", "set_gds_threshold", "set_http_max_attempts",
    "set_http_status_codes", "set_http_timeout", "set_remote_io_backend",
    "set_remote_io_max_concurrent_requests", "set_remote_io_num_reactors",
    "set_remote_io_reactor_dispatch", "set_task_size", "set_thread_pool_nthreads", "task_size",
    "thread_pool_nthreads",
]


class CompatMode(enum.IntEnum):
    OFF = 0
    ON = 1
    AUTO = 2


class RemoteIOBackend(enum.IntEnum):
    EASY_THREADPOOL = 0
    MULTI_POLL = 1


class RemoteReactorDispatch(enum.IntEnum):
    PER_CHUNK = 0
    PER_PREAD = 1


# ---------------------------------------------------------------- environment parsing

_INT_PREFIX = re.compile(r"\s*([+-]?\d+)")
_STATUS_CODES = re.compile(r"^\s*\d{3}\s*(\s*,\s*\d{3}\s*)*$")


def _normalize(value: str) -> str:
    """detail::normalize_env_value: lower-cased, its first whitespace-separated token."""
    parts = value.lower().split()
    return parts[0] if parts else ""


def _env_int(name: str, default: int, ctype: str = "long") -> int:
    """``getenv_or<T>``: ``std::stringstream >> T`` (a leading integer; trailing junk ignored)."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    m = _INT_PREFIX.match(raw)
    bits = 31 if ctype == "int" else 63
    if m is None or not -(1 << bits) <= int(m.group(1)) < (1 << bits):
        raise kvikio_fail("include/kvikio/defaults.hpp", 42, f"unknown config value {name}={raw}",
                          ValueError)
    return int(m.group(1))


def _env_bool(name: str, default: bool) -> bool:
    """``getenv_or<bool>``: ``std::stoi`` first, then true/on/yes, false/off/no."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    m = _INT_PREFIX.match(raw)
    if m is not None:
        v = int(m.group(1))
        if not -(1 << 31) <= v < (1 << 31):
            raise IndexError("stoi")  # std::out_of_range, uncaught there
        return bool(v)
    norm = _normalize(raw)
    if norm in ("true", "on", "yes"):
        return True
    if norm in ("false", "off", "no"):
        return False
    raise kvikio_fail("src/defaults.cpp", 42, f"unknown config value {name}={raw}", ValueError)


def _env_compat(name: str, default: CompatMode) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return int(default)
    norm = _normalize(raw)
    if norm in ("on", "true", "yes", "1"):
        return int(CompatMode.ON)
    if norm in ("off", "false", "no", "0"):
        return int(CompatMode.OFF)
    if norm == "auto":
        return int(CompatMode.AUTO)
    raise kvikio_fail("src/compat_mode.cpp", 28, f"Unknown compatibility mode: {norm}",
                      ValueError)


def _env_choice(name: str, default: int, choices: dict[str, int], line: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    norm = _normalize(raw)
    if norm in choices:
        return choices[norm]
    raise kvikio_fail("src/defaults.cpp", line, f"unknown config value {name}={raw}", ValueError)


def _env_status_codes(name: str, default: list[int]) -> list[int]:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return list(default)
    if not _STATUS_CODES.match(raw):
        raise kvikio_fail("src/http_status_codes.cpp", 24,
                          f"{name}: invalid format, expected comma-separated integers.",
                          ValueError)
    return [int(x) for x in re.findall(r"\d+", raw)]


def _env_nthreads() -> int:
    """``get_num_threads_from_env``: KVIKIO_NTHREADS or its alias KVIKIO_NUM_THREADS."""
    found: tuple[str, str] | None = None
    for name in ("KVIKIO_NTHREADS", "KVIKIO_NUM_THREADS"):
        raw = os.environ.get(name)
        if raw is None:
            continue
        if found is not None and found[1] != raw:
            raise kvikio_fail("include/kvikio/defaults.hpp", 105,
                              f"Environment variable {name} ({raw}) has already been set by its "
                              f"alias {found[0]} ({found[1]}) with a different value.", ValueError)
        found = (name, raw)
    if found is None:
        return 1
    n = _env_int(found[0], 1, "int")
    if n <= 0:
        raise kvikio_fail("src/defaults.cpp", 99, f"{found[0]} has to be a positive integer",
                          ValueError)
    return n


def _positive(name: str, value: int, line: int, *, zero_ok: bool = False) -> int:
    if value < 0 or (value == 0 and not zero_ok):
        raise kvikio_fail("src/defaults.cpp", line, f"{name} has to be a positive integer",
                          ValueError)
    return value


@dataclass
class _Defaults:
    """The values of ``kvikio::defaults`` (enums kept raw, as the C++ stores them)."""

    thread_pool_nthreads: int = 1
    compat_mode: int = int(CompatMode.AUTO)
    task_size: int = 4 << 20
    gds_threshold: int = 16 << 10
    bounce_buffer_size: int = 16 << 20
    http_max_attempts: int = 3
    http_timeout: int = 60
    http_status_codes: list[int] = field(default_factory=lambda: [429, 500, 502, 503, 504])
    auto_direct_io_read: bool = False
    auto_direct_io_read_overread: bool = False
    auto_direct_io_write: bool = True
    thread_pool_per_block_device: bool = False
    remote_io_backend: int = int(RemoteIOBackend.EASY_THREADPOOL)
    remote_io_num_reactors: int = 1
    remote_io_reactor_dispatch: int = int(RemoteReactorDispatch.PER_CHUNK)
    remote_io_max_concurrent_requests: int = 256

    @classmethod
    def from_env(cls) -> _Defaults:
        """The constructor of ``kvikio::defaults``, reading the environment in its order."""
        d = cls()
        d.thread_pool_nthreads = _env_nthreads()  # the thread pool member is built first
        d.compat_mode = _env_compat("KVIKIO_COMPAT_MODE", CompatMode.AUTO)
        d.task_size = _positive("KVIKIO_TASK_SIZE", _env_int("KVIKIO_TASK_SIZE", 4 << 20), 115)
        d.gds_threshold = _positive("KVIKIO_GDS_THRESHOLD",
                                    _env_int("KVIKIO_GDS_THRESHOLD", 16 << 10), 121, zero_ok=True)
        d.bounce_buffer_size = _positive(
            "KVIKIO_BOUNCE_BUFFER_SIZE", _env_int("KVIKIO_BOUNCE_BUFFER_SIZE", 16 << 20), 128)
        d.http_max_attempts = _positive(
            "KVIKIO_HTTP_MAX_ATTEMPTS", _env_int("KVIKIO_HTTP_MAX_ATTEMPTS", 3), 135)
        d.http_timeout = _positive("KVIKIO_HTTP_TIMEOUT", _env_int("KVIKIO_HTTP_TIMEOUT", 60), 143)
        d.http_status_codes = _env_status_codes("KVIKIO_HTTP_STATUS_CODES",
                                                [429, 500, 502, 503, 504])
        d.auto_direct_io_read = _env_bool("KVIKIO_AUTO_DIRECT_IO_READ", False)
        d.auto_direct_io_read_overread = _env_bool("KVIKIO_AUTO_DIRECT_IO_READ_OVERREAD", False)
        d.auto_direct_io_write = _env_bool("KVIKIO_AUTO_DIRECT_IO_WRITE", True)
        d.thread_pool_per_block_device = _env_bool("KVIKIO_THREAD_POOL_PER_BLOCK_DEVICE", False)
        d.remote_io_backend = _env_choice(
            "KVIKIO_REMOTE_IO_BACKEND", int(RemoteIOBackend.EASY_THREADPOOL),
            {"easy_threadpool": 0, "multi_poll": 1}, 76)
        d.remote_io_num_reactors = _positive(
            "KVIKIO_REMOTE_IO_NUM_REACTORS", _env_int("KVIKIO_REMOTE_IO_NUM_REACTORS", 1), 172)
        d.remote_io_reactor_dispatch = _env_choice(
            "KVIKIO_REMOTE_IO_REACTOR_DISPATCH", int(RemoteReactorDispatch.PER_CHUNK),
            {"per_chunk": 0, "per_pread": 1}, 89)
        n = _env_int("KVIKIO_REMOTE_IO_MAX_CONCURRENT_REQUESTS", 256)
        if n < 0:
            raise kvikio_fail("src/defaults.cpp", 182,
                              "KVIKIO_REMOTE_IO_MAX_CONCURRENT_REQUESTS has to be a non-negative "
                              "integer (0 = unlimited)", ValueError)
        d.remote_io_max_concurrent_requests = n
        return d


_lock = threading.Lock()
_instance: _Defaults | None = None


def _state() -> _Defaults:
    """``defaults::instance()``: built on first use; a failed build is retried next time."""
    global _instance
    with _lock:
        if _instance is None:
            _instance = _Defaults.from_env()
        return _instance


def reset() -> None:
    """Tests of the emulator: forget every setting; the environment is read again on next use."""
    global _instance
    with _lock:
        _instance = None


def is_compat_mode_preferred_for(mode: int) -> bool:
    """``defaults::is_compat_mode_preferred(CompatMode)``: ON, or AUTO without cuFile."""
    return mode == CompatMode.ON or (mode == CompatMode.AUTO and not gds_available())


# ---------------------------------------------------------------- getters and setters


def is_compat_mode_preferred() -> bool:
    return is_compat_mode_preferred_for(_state().compat_mode)


def compat_mode() -> CompatMode:
    return CompatMode(_state().compat_mode)


def set_compat_mode(compat_mode: CompatMode) -> None:
    v = as_c_int(compat_mode, "uint8_t")
    _state().compat_mode = v


def thread_pool_nthreads() -> int:
    return _state().thread_pool_nthreads


def set_thread_pool_nthreads(nthreads: int) -> None:
    check_annotated(nthreads, "nthreads")
    n = as_c_int(nthreads, "unsigned int")
    s = _state()
    if n == 0:
        raise kvikio_fail("src/defaults.cpp", 225, "number of threads must be a positive integer",
                          ValueError)
    s.thread_pool_nthreads = n


def task_size() -> int:
    return _state().task_size


def set_task_size(nbytes: int) -> None:
    check_annotated(nbytes, "nbytes")
    n = as_c_int(nbytes)
    s = _state()
    if n == 0:
        raise kvikio_fail("src/defaults.cpp", 239, "task size must be a positive integer",
                          ValueError)
    s.task_size = n


def gds_threshold() -> int:
    return _state().gds_threshold


def set_gds_threshold(nbytes: int) -> None:
    check_annotated(nbytes, "nbytes")
    n = as_c_int(nbytes)
    _state().gds_threshold = n


def bounce_buffer_size() -> int:
    return _state().bounce_buffer_size


def set_bounce_buffer_size(nbytes: int) -> None:
    check_annotated(nbytes, "nbytes")
    n = as_c_int(nbytes)
    s = _state()
    if n == 0:
        raise kvikio_fail("src/defaults.cpp", 251,
                          "size of the bounce buffer must be a positive integer", ValueError)
    s.bounce_buffer_size = n


def http_max_attempts() -> int:
    return _state().http_max_attempts


def set_http_max_attempts(attempts: int) -> None:
    check_annotated(attempts, "attempts")
    n = as_c_int(attempts)
    s = _state()
    if n == 0:
        raise kvikio_fail("src/defaults.cpp", 260, "attempts must be a positive integer",
                          ValueError)
    s.http_max_attempts = n


def http_timeout() -> int:
    return _state().http_timeout


def set_http_timeout(timeout: int) -> None:
    check_annotated(timeout, "timeout")
    n = as_c_int(timeout, "long")
    s = _state()
    if n <= 0:
        raise kvikio_fail("src/defaults.cpp", 274, "timeout_seconds must be a positive integer",
                          ValueError)
    s.http_timeout = n


def http_status_codes() -> list[int]:
    return list(_state().http_status_codes)


def set_http_status_codes(status_codes: list[int]) -> None:
    if not isinstance(status_codes, list):
        raise TypeError(f"Argument 'status_codes' has incorrect type (expected list, got "
                        f"{type(status_codes).__name__})")
    codes = [as_c_int(c, "int") for c in status_codes]
    _state().http_status_codes = codes


def auto_direct_io_read() -> bool:
    return _state().auto_direct_io_read


def set_auto_direct_io_read(flag: bool) -> None:
    _state().auto_direct_io_read = bool(flag)


def auto_direct_io_write() -> bool:
    return _state().auto_direct_io_write


def set_auto_direct_io_write(flag: bool) -> None:
    _state().auto_direct_io_write = bool(flag)


def auto_direct_io_read_overread() -> bool:
    return _state().auto_direct_io_read_overread


def remote_io_backend() -> RemoteIOBackend:
    return RemoteIOBackend(_state().remote_io_backend)


def set_remote_io_backend(remote_io_backend: RemoteIOBackend) -> None:
    v = as_c_int(remote_io_backend, "uint8_t")
    _state().remote_io_backend = v


def remote_io_num_reactors() -> int:
    return _state().remote_io_num_reactors


def set_remote_io_num_reactors(num_reactors: int) -> None:
    check_annotated(num_reactors, "num_reactors")
    n = as_c_int(num_reactors, "unsigned int")
    s = _state()
    if n == 0:
        raise kvikio_fail("src/defaults.cpp", 312,
                          "remote_io_num_reactors must be a positive integer", ValueError)
    s.remote_io_num_reactors = n


def remote_io_reactor_dispatch() -> RemoteReactorDispatch:
    return RemoteReactorDispatch(_state().remote_io_reactor_dispatch)


def set_remote_io_reactor_dispatch(dispatch: RemoteReactorDispatch) -> None:
    v = as_c_int(dispatch, "uint8_t")
    _state().remote_io_reactor_dispatch = v


def remote_io_max_concurrent_requests() -> int:
    return _state().remote_io_max_concurrent_requests


def set_remote_io_max_concurrent_requests(max_concurrent_requests: int) -> None:
    check_annotated(max_concurrent_requests, "max_concurrent_requests")
    n = as_c_int(max_concurrent_requests)
    _state().remote_io_max_concurrent_requests = n


def _raw(name: str) -> Any:
    """A value as stored (tests of the emulator)."""
    return getattr(_state(), name)
