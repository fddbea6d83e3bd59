"""``kvikio._lib.cufile_driver``: the cuFile driver of the emulated machine.

Without GDS (``EMULATED_GPU_GDS`` unset) the machine has libcufile (the wheel's, 1.14) but no
usable driver: as libkvikio's ``DriverProperties`` does there, the first property read fails
inside its lazy initialisation (``is_gds_available`` catches that and answers False) and later
reads return the zero-initialised properties; opening the driver fails with cuFile's "NVFS
driver initialization error". With GDS the driver opens and reports nvidia-fs 2.17 and the
defaults of ``/etc/cufile.json`` (sizes in KiB, as cuFile reports them).
"""

from __future__ import annotations

import threading

from ._common import as_c_int, gds_available, kvikio_fail

__all__ = ["DriverProperties", "driver_close", "driver_open", "libcufile_version"]

_NVFS_INIT_ERROR = "NVFS driver initialization error"
_LIBCUFILE_VERSION = 1140  # libcufile 1.14 (nvidia-cufile-cu12 1.14.1.1, kvikio-cu12 26.10's)

#: What cuFile reports with a working driver (cufile.json defaults).
_GDS_PROPS = {"major_version": 2, "minor_version": 17, "allow_compat_mode": True,
              "poll_mode": False, "poll_thresh_size": 4, "max_device_cache_size": 131072,
              "per_buffer_cache_size": 1024, "max_pinned_memory_size": 33554432}


class DriverProperties:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._initialized = False
        self._props: dict[str, int | bool] = {}

    def _reset(self) -> None:
        """Tests of the emulator: read the driver again (after the GDS switch changed)."""
        with self._lock:
            self._initialized = False

    def _lazy_init(self) -> None:
        with self._lock:
            if self._initialized:
                return
            self._initialized = True  # set before the call, as libkvikio does: a failure sticks
            self._props = {k: (False if isinstance(v, bool) else 0) for k, v in _GDS_PROPS.items()}
            if not gds_available():
                raise kvikio_fail("src/cufile/driver.cpp", 61, _NVFS_INIT_ERROR)
            self._props = dict(_GDS_PROPS)

    def _get(self, name: str) -> int | bool:
        self._lazy_init()
        return self._props[name]

    def _set(self, name: str, value: int | bool) -> None:
        self._lazy_init()
        if not gds_available():
            raise RuntimeError(f"cuFile error at: /__w/kvikio/kvikio/cpp/src/cufile/driver.cpp:"
                               f"93: {_NVFS_INIT_ERROR}")
        self._props[name] = value

    @property
    def is_gds_available(self) -> bool:
        try:
            return not (self._get("major_version") == 0 and self._get("minor_version") == 0)
        except RuntimeError:
            return False

    @property
    def major_version(self) -> int:
        return int(self._get("major_version"))

    @property
    def minor_version(self) -> int:
        return int(self._get("minor_version"))

    @property
    def allow_compat_mode(self) -> bool:
        return bool(self._get("allow_compat_mode"))

    @property
    def poll_mode(self) -> bool:
        return bool(self._get("poll_mode"))

    @poll_mode.setter
    def poll_mode(self, enable: bool) -> None:
        self._set("poll_mode", bool(enable))

    @property
    def poll_thresh_size(self) -> int:
        return int(self._get("poll_thresh_size"))

    @poll_thresh_size.setter
    def poll_thresh_size(self, size_in_kb: int) -> None:
        self._set("poll_thresh_size", as_c_int(size_in_kb))

    @property
    def max_device_cache_size(self) -> int:
        return int(self._get("max_device_cache_size"))

    @max_device_cache_size.setter
    def max_device_cache_size(self, size_in_kb: int) -> None:
        self._set("max_device_cache_size", as_c_int(size_in_kb))

    @property
    def per_buffer_cache_size(self) -> int:
        return int(self._get("per_buffer_cache_size"))

    @property
    def max_pinned_memory_size(self) -> int:
        return int(self._get("max_pinned_memory_size"))

    @max_pinned_memory_size.setter
    def max_pinned_memory_size(self, size_in_kb: int) -> None:
        self._set("max_pinned_memory_size", as_c_int(size_in_kb))


def libcufile_version() -> int:
    return _LIBCUFILE_VERSION


def driver_open() -> None:
    if not gds_available():
        raise kvikio_fail("src/shim/cufile.cpp", 73,
                          f"Unable to open GDS file driver: {_NVFS_INIT_ERROR}")


def driver_close() -> None:
    if not gds_available():
        raise kvikio_fail("src/shim/cufile.cpp", 84,
                          f"Unable to close GDS file driver: {_NVFS_INIT_ERROR}")
