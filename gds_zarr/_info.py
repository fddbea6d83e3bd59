"""``gds_zarr.info()``: what gds_zarr will use on this machine, and why.

The report behind ``python -m gds_zarr info [--json]``. Every probe is guarded: a library that
is missing, a driver that is absent or fails, or a setting with a bad environment value is
*reported*, never raised. GPU libraries are imported here only when :func:`info` runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar

from gds_zarr import settings
from gds_zarr._device import explain_device, gpu_status, libcuda_error

__all__ = ["CodecSupport", "DeviceInfo", "GPUInfo", "Info", "KvikioInfo", "LibraryInfo", "info"]

T = TypeVar("T")

#: Distributions worth naming in a report (whichever are installed).
_DISTRIBUTIONS = (
    "cupy-cuda12x", "cupy-cuda13x", "cupy", "kvikio-cu12", "kvikio-cu13", "libkvikio-cu12",
    "libkvikio-cu13", "nvidia-nvcomp-cu12", "nvidia-nvcomp-cu13", "nvidia-ml-py", "pynvml",
    "zarr", "numcodecs", "numpy", "zarrs",
)

#: The codecs ``info`` lists: the step kind the decoder sees, and how it is handed over. Which
#: decoder runs each is asked of decode/_gpu.py (``device_decoder``), not written here.
_CODECS: tuple[tuple[str, str, str], ...] = (
    ("zstd", "zstd", "one frame with content size, as zarr and numcodecs write it"),
    ("gzip", "gzip", "single-member gzip, as zarr's GzipCodec writes it"),
    ("zlib", "zlib", "numcodecs Zlib: 2-byte header and Adler-32 trailer stripped"),
    ("lz4", "lz4", "numcodecs LZ4: 4-byte size prefix stripped, then one LZ4 block"),
    ("blosc", "blosc", "frames planned on the host, the LZ4/Zstd streams inside in one nvCOMP "
                       "call per codec, one unshuffle kernel; BloscLZ or Zlib inside: the CPU"),
    ("fletcher32", "fletcher32", "HDF5's Fletcher-32 trailer (numcodecs.fletcher32), verified "
                                 "and stripped"),
    ("shuffle", "shuffle", "HDF5's byte shuffle (numcodecs.shuffle) after the decompression"),
    ("other numcodecs", "numcodecs", "numcodecs on the CPU, copied to the device"),
)


@dataclass(frozen=True, slots=True)
class LibraryInfo:
    """Whether a library imports, its version, and the error if it does not."""

    name: str
    importable: bool
    version: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class GPUInfo:
    """The NVIDIA driver and device 0, through pynvml (CuPy where pynvml cannot tell)."""

    driver_loaded: bool
    driver_error: str | None = None
    device_count: int = 0
    name: str | None = None
    memory_total_bytes: int | None = None
    memory_free_bytes: int | None = None
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    cuda_runtime_version: str | None = None
    nvml_error: str | None = None


@dataclass(frozen=True, slots=True)
class KvikioInfo:
    """kvikio: version, whether real GDS is active or compat (POSIX) mode, its thread settings."""

    importable: bool
    version: str | None = None
    error: str | None = None
    gds_available: bool | None = None
    compat_mode: str | None = None
    compat_mode_preferred: bool | None = None
    libcufile_version: str | None = None
    num_threads: int | None = None
    task_size: int | None = None
    gds_threshold: int | None = None
    bounce_buffer_size: int | None = None
    probe_errors: list[str] = field(default_factory=list)
    native_output: str = ""


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What ``"auto"`` (or the ``device`` setting) resolves to, and why."""

    requested: str | None
    device: str | None
    reason: str
    io_path: str
    error: str | None = None


@dataclass(frozen=True, slots=True)
class CodecSupport:
    """Where a compressor decodes with the device gds_zarr resolved to."""

    codec: str
    gpu_decoder: str | None
    decodes_on: Literal["gpu", "cpu"]
    note: str


@dataclass(frozen=True, slots=True)
class Info:
    """The whole report: see :func:`info`. :meth:`as_dict` is JSON-serializable."""

    gds_zarr_version: str
    python: str
    platform: str
    device: DeviceInfo
    gpu: GPUInfo
    cupy: LibraryInfo
    kvikio: KvikioInfo
    nvcomp: LibraryInfo
    pynvml: LibraryInfo
    libraries: dict[str, str | None]
    distributions: dict[str, str]
    settings: dict[str, Any]
    codecs: list[CodecSupport]

    def as_dict(self) -> dict[str, Any]:
        """The report as plain dicts, lists, strings, numbers, booleans and None."""
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON."""
        return json.dumps(self.as_dict(), indent=indent, sort_keys=False)

    def format_text(self) -> str:
        """The report for people: one line per fact, grouped."""
        return _format_text(self)

    def __str__(self) -> str:
        return self.format_text()


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _guard(fn: Callable[[], T], errors: list[str], label: str) -> T | None:
    """``fn()``, or None with ``"label: error"`` appended to ``errors``."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - a probe reports, never raises
        errors.append(f"{label}: {_err(e)}")
        return None


def _library(module: str, name: str, distribution: str | None = None) -> LibraryInfo:
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - ImportError, or a shared library failing to load
        return LibraryInfo(name, False, error=_err(e))
    version = getattr(mod, "__version__", None)
    if version is None and distribution is not None:
        # pynvml has no __version__; its distribution (nvidia-ml-py) has one.
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            version = importlib.metadata.version(distribution)
    return LibraryInfo(name, True, None if version is None else str(version))


def _fflush_c_stdout() -> None:
    # Native libraries write with C stdio; its buffer must be flushed before fd 1 is switched.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def _capture_native_stdout() -> Iterator[list[str]]:
    """Send what native code writes to file descriptor 1 into a list instead of stdout.

    libcufile prints ``dlopen error libcuda.so.1: ...`` to C stdout when no driver exists,
    which would corrupt ``info --json``. Output of other threads in the meantime is caught too;
    acceptable for a one-shot report.
    """
    captured: list[str] = []
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):  # no fd 1: nothing to protect
        yield captured
        return
    with tempfile.TemporaryFile() as tmp:
        _fflush_c_stdout()
        os.dup2(tmp.fileno(), 1)
        try:
            yield captured
        finally:
            _fflush_c_stdout()
            os.dup2(saved, 1)
            os.close(saved)
            tmp.seek(0)
            captured.append(tmp.read().decode("utf-8", "replace").strip())


def _nvml_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _cuda_version(v: int) -> str:
    # CUDA encodes versions as 1000 * major + 10 * minor (12090 -> "12.9").
    return f"{v // 1000}.{(v % 1000) // 10}"


def _gpu_info(cupy_ok: bool) -> GPUInfo:
    driver_error = libcuda_error()
    facts: dict[str, Any] = {}
    nvml_error: str | None = None
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            facts["device_count"] = int(pynvml.nvmlDeviceGetCount())
            facts["driver_version"] = _nvml_text(pynvml.nvmlSystemGetDriverVersion())
            facts["cuda_driver_version"] = _cuda_version(
                int(pynvml.nvmlSystemGetCudaDriverVersion()))
            if facts["device_count"] > 0:
                handle = pynvml.nvmlDeviceGetHandleByIndex(0)
                facts["name"] = _nvml_text(pynvml.nvmlDeviceGetName(handle))
                mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
                facts["memory_total_bytes"] = int(mem.total)
                facts["memory_free_bytes"] = int(mem.free)
        finally:
            pynvml.nvmlShutdown()
    except Exception as e:  # noqa: BLE001 - ImportError, NVMLError_LibraryNotFound, ...
        nvml_error = _err(e)
    if cupy_ok:
        errors: list[str] = []
        import cupy

        rt = _guard(cupy.cuda.runtime.runtimeGetVersion, errors, "runtimeGetVersion")
        if rt:
            facts["cuda_runtime_version"] = _cuda_version(int(rt))
        if "name" not in facts and gpu_status().usable:
            # pynvml missing or failing: CuPy can still name device 0.
            props = _guard(lambda: cupy.cuda.runtime.getDeviceProperties(0), errors, "props")
            if props:
                facts["name"] = _nvml_text(props["name"])
                facts["memory_total_bytes"] = int(props["totalGlobalMem"])
            facts.setdefault("device_count", gpu_status().device_count)
    return GPUInfo(driver_loaded=driver_error is None, driver_error=driver_error,
                   nvml_error=nvml_error, **facts)


def _kvikio_info() -> KvikioInfo:
    lib = _library("kvikio", "kvikio")
    if not lib.importable:
        return KvikioInfo(False, error=lib.error)
    errors: list[str] = []
    with _capture_native_stdout() as native:
        import kvikio.cufile_driver
        import kvikio.defaults

        d = kvikio.defaults

        def default(name: str, *aliases: str) -> Any:
            for key in (name, *aliases):
                try:
                    return d.get(key)
                except KeyError:  # renamed between kvikio releases
                    continue
            raise KeyError(name)

        compat = _guard(lambda: default("compat_mode"), errors, "compat_mode")
        gds_available = _guard(lambda: bool(kvikio.cufile_driver.get("is_gds_available")),
                               errors, "is_gds_available")
        preferred = _guard(lambda: bool(d.is_compat_mode_preferred()), errors,
                           "is_compat_mode_preferred")
        cufile = _guard(lambda: ".".join(map(str, kvikio.cufile_driver.libcufile_version())),
                        errors, "libcufile_version")

        def size(key: str, *aliases: str) -> int | None:
            return _guard(lambda: int(default(key, *aliases)), errors, key)

        threads, task = size("thread_pool_nthreads", "num_threads"), size("task_size")
        threshold, bounce = size("gds_threshold"), size("bounce_buffer_size")
    return KvikioInfo(
        True, lib.version, gds_available=gds_available,
        compat_mode=None if compat is None else str(getattr(compat, "name", compat)),
        compat_mode_preferred=preferred, libcufile_version=cufile,
        num_threads=threads, task_size=task, gds_threshold=threshold, bounce_buffer_size=bounce,
        probe_errors=errors, native_output="".join(native))


def _io_path(device: str | None, kv: KvikioInfo | None) -> str:
    """How reads will reach the device, as kvikio will do them.

    ``kvikio.defaults.is_compat_mode_preferred()`` is kvikio's own answer (compat mode ON, or
    AUTO without a usable cuFile driver); GDS being *available* is not enough. Only when that
    probe failed is the answer pieced together from ``compat_mode`` and ``is_gds_available``.
    """
    if device != "gpu":
        return "cpu: os.preadv into host memory from a thread pool"
    if kv is None or not kv.importable:
        return "gpu: kvikio is not importable"
    preferred = kv.compat_mode_preferred
    if preferred is None:
        preferred = not (kv.gds_available and kv.compat_mode not in ("ON", None))
    if not preferred:
        return ("gpu: GPU Direct Storage through cuFile (kvikio prefers it; reads under "
                "gds_threshold, and files where O_DIRECT or registration fails, still go "
                "through POSIX)")
    if kv.compat_mode == "ON":
        why = "compat_mode is ON"
    elif kv.gds_available is False:
        why = "the cuFile driver reports GDS unavailable"
    else:
        why = "kvikio.defaults.is_compat_mode_preferred() is True"
    return f"gpu: kvikio compat mode (POSIX reads through a pinned host bounce buffer): {why}"


def _settings() -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in settings.SETTINGS:
        try:
            values[name] = settings.get(name)
        except Exception as e:  # noqa: BLE001 - a bad GDS_ZARR_* value: report, go on
            values[name] = f"<error: {e}>"
    return values


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for module in ("zarr", "numcodecs", "numpy"):
        try:
            found[module] = str(importlib.import_module(module).__version__)
        except Exception:  # noqa: BLE001 - reported as None
            found[module] = None
    try:  # gds_zarr's optional C kernels (setup.py): their vector path, or why not
        from gds_zarr.decode import _blosc_native

        level = _blosc_native.simd_level()
        found["C kernels"] = level or "not built: Blosc by c-blosc per chunk on the CPU"
    except Exception as e:  # noqa: BLE001 - reported, never raised
        found["C kernels"] = f"not loaded: {_err(e)}"
    return found


def _distributions() -> dict[str, str]:
    found: dict[str, str] = {}
    for dist in _DISTRIBUTIONS:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[dist] = importlib.metadata.version(dist)
    return found


def info(refresh: bool = False) -> Info:
    """Report what gds_zarr will use here: device and why, GPU, libraries, settings, codecs.

    Parameters
    ----------
    refresh
        Forget the cached GPU check (:func:`gds_zarr._device.gpu_status`) and probe again.

    Returns
    -------
    Info
        ``info().as_dict()`` is JSON-serializable; ``print(info())`` is readable.

    Notes
    -----
    Never raises for a missing library, an absent or failing driver, or a bad setting: each
    is reported where it belongs (``error`` fields, ``device.reason``).
    """
    from gds_zarr import __version__

    if refresh:
        gpu_status.cache_clear()
    cupy = _library("cupy", "CuPy")
    kv = _kvikio_info()
    try:
        choice = explain_device()
        device = DeviceInfo(choice.requested, choice.device, choice.reason,
                            _io_path(choice.device, kv), choice.error)
    except Exception as e:  # noqa: BLE001 - e.g. GDS_ZARR_DEVICE=tpu
        device = DeviceInfo(None, None, f"cannot resolve the device: {_err(e)}",
                            _io_path(None, kv), _err(e))
    nvcomp = _library("nvidia.nvcomp", "nvCOMP")
    on_gpu = device.device == "gpu"
    from gds_zarr.decode._gpu import device_decoder

    codecs = []
    for name, kind, note in _CODECS:
        dec = device_decoder([kind])
        codecs.append(CodecSupport(name, dec, "gpu" if on_gpu and dec is not None else "cpu",
                                   note))
    return Info(
        gds_zarr_version=__version__,
        python=f"{platform.python_version()} ({sys.executable})",
        platform=platform.platform(),
        device=device,
        gpu=_gpu_info(cupy.importable),
        cupy=cupy,
        kvikio=kv,
        nvcomp=nvcomp,
        pynvml=_library("pynvml", "pynvml (nvidia-ml-py)", "nvidia-ml-py"),
        libraries=_versions(),
        distributions=_distributions(),
        settings=_settings(),
        codecs=codecs,
    )


def _lib_line(lib: LibraryInfo) -> str:
    if not lib.importable:
        return f"not importable ({lib.error})"
    return lib.version or "?"


def _bytes(n: int | None) -> str:
    return "?" if n is None else f"{n / (1 << 30):.1f} GiB"


def _codec_how(c: CodecSupport) -> str:
    if c.decodes_on == "gpu":
        return f"via {c.gpu_decoder} ({c.note})"
    if c.gpu_decoder is not None:
        return f"(on a GPU: {c.gpu_decoder})"
    return f"({c.note})"


def _remote_io(device: str) -> str:
    """How s3://, gs://, az://, http(s):// stores are read (owned by gds_zarr/io/_remote_gpu.py)."""
    try:
        from gds_zarr.io._remote_gpu import remote_io_line
    except ImportError as e:  # pragma: no cover - a trimmed install
        return f"unavailable ({e})"
    return remote_io_line(device)


def _format_text(r: Info) -> str:
    g, kv, d = r.gpu, r.kvikio, r.device
    if g.name is not None:
        gpu_line = (f"{g.name}, {_bytes(g.memory_total_bytes)} ({_bytes(g.memory_free_bytes)} "
                    f"free), {g.device_count} device(s)")
    elif not g.driver_loaded:
        gpu_line = f"none: no NVIDIA driver ({g.driver_error})"
    else:
        gpu_line = f"none found ({g.nvml_error or 'no device'})"
    if kv.importable:
        gds = {True: "available", False: "not available", None: "unknown"}[kv.gds_available]
        pref = {True: "compat", False: "GDS", None: "unknown"}[kv.compat_mode_preferred]
        kv_line = (f"{kv.version}; GDS {gds}, compat_mode={kv.compat_mode} (reads: {pref}), "
                   f"libcufile {kv.libcufile_version}")
        kv_threads = (f"kvikio threads={kv.num_threads}, task_size={kv.task_size}, "
                      f"gds_threshold={kv.gds_threshold}")
    else:
        kv_line, kv_threads = f"not importable ({kv.error})", "kvikio not importable"
    lines = [
        f"gds_zarr {r.gds_zarr_version}",
        f"  device:       {d.requested} -> {d.device}",
        f"  why:          {d.reason}",
        f"  io path:      {d.io_path}",
        f"  remote io:    {_remote_io(d.device)}",
        "",
        "GPU",
        f"  gpu:          {gpu_line}",
        (f"  driver:       {g.driver_version or '-'} (CUDA {g.cuda_driver_version or '-'}), "
         f"CUDA runtime {g.cuda_runtime_version or '-'}"),
        f"  cupy:         {_lib_line(r.cupy)}",
        f"  kvikio:       {kv_line}",
        f"  nvcomp:       {_lib_line(r.nvcomp)}",
        f"  pynvml:       {_lib_line(r.pynvml)}",
        "",
        "Libraries",
        f"  python:       {r.python}",
        *(f"  {k + ':':<13} {v}" for k, v in r.libraries.items()),
        "",
        "Threads",
        (f"  io_threads={r.settings.get('io_threads')}, "
         f"decode_threads={r.settings.get('decode_threads')}, "
         f"kvikio_threads={r.settings.get('kvikio_threads')} (0 = sized from the workload)"),
        f"  {kv_threads}",
        "",
        "Settings",
        *(f"  {k + ':':<23} {v}" for k, v in r.settings.items()),
        "",
        "Codecs (decodes on)",
        *(f"  {c.codec + ':':<16} {c.decodes_on:<4} {_codec_how(c)}" for c in r.codecs),
    ]
    return "\n".join(lines)
