"""Which device gds_zarr uses, and why.

Importing this module never imports CuPy, kvikio or nvCOMP: :func:`gpu_status` tries them
lazily, once per process, and caches the answer (``gpu_status.cache_clear()`` forgets it).

Without an NVIDIA driver every GPU library still *imports* (CuPy 14, kvikio 26.10 and nvCOMP 6
were checked); only the first call that needs ``libcuda.so.1`` fails, and CuPy then says
``cudaErrorInsufficientDriver`` even though no driver exists at all. The checks below load
``libcuda.so.1`` themselves so that the reason names what is really missing.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from gds_zarr import settings
from gds_zarr.errors import DeviceUnavailableError

__all__ = [
    "CudaTarget",
    "DeviceChoice",
    "GPUStatus",
    "current_cuda_target",
    "explain_device",
    "gpu_status",
    "needs_device_sync",
    "on_cuda_target",
    "resolve_device",
    "wait_before_external_write",
]

Device = Literal["cpu", "gpu"]

#: The GPU libraries, as (module, name in messages).
GPU_MODULES: tuple[tuple[str, str], ...] = (
    ("cupy", "CuPy"),
    ("kvikio", "kvikio"),
    ("nvidia.nvcomp", "nvCOMP (nvidia-nvcomp)"),
)

#: gds_zarr is installed from a clone (it is not on PyPI): the extras from there.
_INSTALL_HINT = ('install the GPU libraries from a clone of gds_zarr: pip install -e ".[cu12]" '
                 '(or ".[cu13]"), or use its container (docker/README.md)')
_LIBCUDA = "libcuda.so.1"


@dataclass(frozen=True, slots=True)
class GPUStatus:
    """Whether the GPU path can run here.

    Attributes
    ----------
    usable
        True when CuPy sees at least one CUDA device and kvikio and nvCOMP import.
    reason
        One line: what is usable, or what is missing.
    missing
        What is missing, as short names from ``"cupy"``, ``"driver"``, ``"device"``,
        ``"kvikio"``, ``"nvcomp"``; empty when usable.
    device_count
        CUDA devices CuPy sees (0 when it cannot tell).
    """

    usable: bool
    reason: str
    missing: tuple[str, ...] = ()
    device_count: int = 0


@dataclass(frozen=True, slots=True)
class DeviceChoice:
    """The device a request resolves to, and a one-line reason.

    Attributes
    ----------
    requested
        ``"auto"``, ``"gpu"`` or ``"cpu"``, as asked (or as the ``device`` setting says).
    device
        ``"gpu"`` or ``"cpu"``; for an unusable ``"gpu"`` request this is ``"cpu"`` and
        :attr:`error` is set.
    reason
        Why this device.
    error
        For ``"gpu"`` requested but unusable: the message :func:`resolve_device` raises with.
    """

    requested: str
    device: Device
    reason: str
    error: str | None = None


def libcuda_error() -> str | None:
    """Try to load the CUDA driver library; None if it loads, else why not.

    Returns
    -------
    str or None
        The loader's message (e.g. ``"libcuda.so.1: cannot open shared object file: No such
        file or directory"``), or None when the driver library is present.
    """
    try:
        ctypes.CDLL(_LIBCUDA)
    except OSError as e:
        return str(e)
    return None


def _import_error(module: str) -> str | None:
    """Import ``module``; None on success, else ``"ExceptionType: message"``."""
    try:
        importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - ImportError, or a shared library failing to load
        return f"{type(e).__name__}: {e}"
    return None


def _cupy_device_count() -> tuple[int, str | None]:
    """CUDA devices CuPy sees, or (0, why not). CuPy must import already."""
    import cupy

    try:
        return int(cupy.cuda.runtime.getDeviceCount()), None
    except Exception as e:  # noqa: BLE001 - CUDARuntimeError, or whatever a broken driver does
        return 0, f"{type(e).__name__}: {e}"


@functools.cache
def gpu_status() -> GPUStatus:
    """Check, once per process, that CuPy sees a GPU and kvikio and nvCOMP import.

    Returns
    -------
    GPUStatus
        Never raises: every failure is turned into a reason.
    """
    err = _import_error("cupy")
    if err is not None:
        return GPUStatus(False, f"CuPy is not importable ({err}); {_INSTALL_HINT}", ("cupy",))
    count, err = _cupy_device_count()
    if err is not None:
        driver_err = libcuda_error()
        if driver_err is not None:
            # CuPy's own message here ("CUDA driver version is insufficient") misleads.
            return GPUStatus(False, f"no NVIDIA driver ({driver_err})", ("driver",))
        return GPUStatus(False, f"the NVIDIA driver is present but CuPy finds no usable CUDA "
                                f"device ({err})", ("device",))
    if count < 1:
        return GPUStatus(False, "the NVIDIA driver is present but reports no CUDA device",
                         ("device",))
    missing: list[str] = []
    reasons: list[str] = []
    for module, what in GPU_MODULES[1:]:
        err = _import_error(module)
        if err is not None:
            missing.append(module.rsplit(".", 1)[-1])
            reasons.append(f"{what} is not importable ({err})")
    if missing:
        return GPUStatus(False, "; ".join(reasons) + f"; {_INSTALL_HINT}", tuple(missing), count)
    return GPUStatus(True, f"{count} CUDA device(s) usable through CuPy, kvikio and nvCOMP",
                     (), count)


def explain_device(requested: str | None = None) -> DeviceChoice:
    """Resolve ``"auto"``/``"gpu"``/``"cpu"`` without raising, and say why.

    Parameters
    ----------
    requested
        The device asked for; None means the ``device`` setting (env ``GDS_ZARR_DEVICE``).

    Returns
    -------
    DeviceChoice
        For an unusable ``"gpu"`` request, ``device`` is ``"cpu"`` and ``error`` is set.

    Raises
    ------
    ValueError
        If ``requested`` (or the setting) is not one of ``"auto"``, ``"gpu"``, ``"cpu"``.
    """
    if requested is None:
        env = settings.SETTINGS["device"].env
        choice, source = settings.get("device"), f"the device setting ({env})"
    else:
        choice, source = settings.SETTINGS["device"].parse(requested), "the caller"
    if choice == "cpu":
        return DeviceChoice("cpu", "cpu", f"'cpu' was requested by {source}")
    status = gpu_status()
    if status.usable:
        how = "'gpu' was requested" if choice == "gpu" else "auto: the GPU is usable"
        return DeviceChoice(choice, "gpu", f"{how} ({status.reason})")
    if choice == "gpu":
        msg = f"device 'gpu' was requested by {source} but is not usable: {status.reason}"
        return DeviceChoice("gpu", "cpu", msg, error=msg)
    return DeviceChoice("auto", "cpu", f"auto fell back to the CPU: {status.reason}")


def resolve_device(requested: str | None = None) -> Device:
    """Turn ``"auto"``/``"gpu"``/``"cpu"`` (default: the ``device`` setting) into a device.

    Parameters
    ----------
    requested
        The device asked for; None means the ``device`` setting (env ``GDS_ZARR_DEVICE``).

    Returns
    -------
    {"cpu", "gpu"}

    Raises
    ------
    DeviceUnavailableError
        If ``"gpu"`` is asked for and the GPU path cannot run; the message says what is missing.
    ValueError
        If the request is not one of ``"auto"``, ``"gpu"``, ``"cpu"``.
    """
    choice = explain_device(requested)
    if choice.error is not None:
        raise DeviceUnavailableError(choice.error)
    return choice.device


# ---------------------------------------------------------------- device and stream of the caller

#: ``cudaStreamPerThread`` as a handle: one value for every thread's own default stream.
STREAM_PER_THREAD = 2


@dataclass(frozen=True, slots=True)
class CudaTarget:
    """The CUDA device and CuPy stream a read runs on: those of the thread that asked for it.

    Capture it with :func:`current_cuda_target` in that thread; enter it with
    :func:`on_cuda_target` in the worker threads that read, decode and scatter for it.

    Attributes
    ----------
    device
        CUDA device id.
    stream
        A ``cupy.cuda.Stream`` (or ``ExternalStream``). CuPy's per-thread default stream is a
        different stream in every thread; a target holding it means "the worker's own".
    """

    device: int
    stream: Any

    @property
    def stream_ptr(self) -> int:
        return int(self.stream.ptr)


def current_cuda_target() -> CudaTarget:
    """The current CuPy device and stream of the calling thread (imports CuPy)."""
    import cupy

    return CudaTarget(int(cupy.cuda.Device().id), cupy.cuda.get_current_stream())


@contextlib.contextmanager
def on_cuda_target(target: CudaTarget | None) -> Iterator[None]:
    """Make ``target``'s device and stream current in this thread for the block (None: no-op,
    and CuPy is not imported)."""
    if target is None:
        yield
        return
    import cupy

    with cupy.cuda.Device(target.device), target.stream:
        yield


def needs_device_sync(stream_ptr: int) -> bool:
    """Whether waiting for pool-recycled memory needs the whole device, not just the stream.

    CuPy's pool hands a freed block out again only to allocations on the stream it was freed
    on, so waiting for that stream is enough, except for the per-thread default stream: every
    thread's has the same handle (2), so a block freed by kernels of another thread's
    per-thread stream can come back here, and only a device synchronization covers those.
    """
    return int(stream_ptr) == STREAM_PER_THREAD


def wait_before_external_write() -> None:
    """Before kvikio (its own threads, or cuFile DMA) writes into CuPy memory allocated on this
    thread's current stream: wait for the stream-ordered work that may still use that memory."""
    import cupy

    stream = cupy.cuda.get_current_stream()
    if needs_device_sync(stream.ptr):
        cupy.cuda.Device().synchronize()
    else:
        stream.synchronize()
