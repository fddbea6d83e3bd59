"""Which device gds_zarr uses, and why.

Importing this module never imports CuPy, kvikio or nvCOMP; :func:`gpu_status` tries them lazily
and caches the answer.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

from gds_zarr import settings
from gds_zarr.errors import DeviceUnavailableError

__all__ = ["GPUStatus", "gpu_status", "resolve_device"]

Device = Literal["cpu", "gpu"]


@dataclass(frozen=True, slots=True)
class GPUStatus:
    """Whether the GPU path can run here; ``reason`` says what is missing when it cannot."""

    usable: bool
    reason: str


@functools.cache
def gpu_status() -> GPUStatus:
    """Check, once per process, that CuPy sees a GPU and kvikio and nvCOMP import."""
    try:
        import cupy
    except Exception as e:  # ImportError, or a CUDA library failing to load
        return GPUStatus(False, f"CuPy is not importable ({type(e).__name__}: {e}); "
                                "install gds-zarr[cu12] or gds-zarr[cu13]")
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return GPUStatus(False, f"CuPy is installed but no CUDA device is usable ({e})")
    if n < 1:
        return GPUStatus(False, "CuPy is installed but reports no CUDA device")
    for module, what in (("kvikio", "kvikio"), ("nvidia.nvcomp", "nvCOMP (nvidia-nvcomp)")):
        try:
            __import__(module)
        except Exception as e:
            return GPUStatus(False, f"{what} is not importable ({type(e).__name__}: {e}); "
                                    "install gds-zarr[cu12] or gds-zarr[cu13]")
    return GPUStatus(True, f"{n} CUDA device(s) usable through CuPy, kvikio and nvCOMP")


def resolve_device(requested: str | None = None) -> Device:
    """Turn ``"auto"``/``"gpu"``/``"cpu"`` (default: the ``device`` setting) into a device.

    Raises
    ------
    DeviceUnavailableError
        If ``"gpu"`` is asked for and the GPU path cannot run; the message says what is missing.
    """
    choice = settings.get("device") if requested is None else settings.SETTINGS["device"].parse(
        requested
    )
    if choice == "cpu":
        return "cpu"
    status = gpu_status()
    if status.usable:
        return "gpu"
    if choice == "gpu":
        raise DeviceUnavailableError(f"device 'gpu' was requested but is not usable: "
                                     f"{status.reason}")
    return "cpu"
