"""The machine a run measured: CPU model and cores, GPU name, and GPU transfer baselines."""

from __future__ import annotations

import os
import platform
import re
import statistics
import time
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["cpu_model", "gpu_name", "load_average", "machine_slug", "measure_h2d",
           "measure_kvikio_read", "versions"]

_DISTS = ("gds-zarr", "zarr", "numcodecs", "numpy", "zarrs", "tensorstore", "cupy-cuda12x",
          "cupy-cuda13x", "kvikio-cu12", "kvikio-cu13", "nvidia-nvcomp-cu12",
          "nvidia-nvcomp-cu13", "czarr", "matplotlib", "psutil")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def load_average() -> str:
    """The 1, 5 and 15 minute load averages as ``"1.26 / 1.35 / 1.69"`` (``"n/a"`` if unknown).

    Recorded at the start and end of a run: on a shared machine they say how much of the
    CPU other work took while the timings were taken.
    """
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except (AttributeError, OSError):  # pragma: no cover - non-Unix
        return "n/a"


def gpu_name() -> str | None:
    """Name of CUDA device 0, or None without a usable GPU (CuPy imported only here)."""
    try:
        import cupy

        name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001 - no GPU, no CuPy, or no driver: no GPU name
        return None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def machine_slug(gpu: str | None) -> str:
    """``amd-epyc-2c`` or ``amd-epyc-16c_nvidia-h100-80gb-hbm3``: for result file names."""
    s = f"{_slug(cpu_model())[:40]}-{cores()}c"
    return f"{s}_{_slug(gpu)[:40]}" if gpu else s


def versions() -> dict[str, str]:
    """Installed versions of the libraries that matter to the comparison."""
    out = {"python": platform.python_version()}
    for dist in _DISTS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def measure_h2d(nbytes: int = 256 << 20, repeat: int = 5) -> float:
    """Pinned host-to-device copy bandwidth in GB/s (median of ``repeat`` copies)."""
    import cupy
    import cupyx

    host = cupyx.empty_pinned((nbytes,), dtype="uint8")
    host[:] = 1
    dev = cupy.empty((nbytes,), dtype="uint8")
    times = []
    for _ in range(repeat + 1):  # the first copy warms the driver up
        cupy.cuda.runtime.deviceSynchronize()
        t0 = time.perf_counter()
        dev.set(host)
        cupy.cuda.runtime.deviceSynchronize()
        times.append(time.perf_counter() - t0)
    return nbytes / statistics.median(times[1:]) / 1e9


def measure_kvikio_read(path: Path, repeat: int = 3) -> dict[str, Any] | None:
    """kvikio ``CuFile.pread`` of one whole file into device memory: GB/s and the mode.

    This is the raw-read ceiling for large chunks (GPU Direct Storage where active, kvikio's
    POSIX compat mode otherwise; which one is reported). None where kvikio is not usable.
    """
    try:
        import cupy
        import kvikio
        import kvikio.defaults
    except Exception:  # noqa: BLE001 - the GPU libraries fail to load: nothing to measure
        return None
    nbytes = path.stat().st_size
    buf = cupy.empty((nbytes,), dtype="uint8")
    times = []
    with kvikio.defaults.set({"num_threads": max(8, cores())}):
        with kvikio.CuFile(path, "r") as f:
            for _ in range(repeat + 1):
                t0 = time.perf_counter()
                f.pread(buf).get()
                cupy.cuda.runtime.deviceSynchronize()
                times.append(time.perf_counter() - t0)
    compat = bool(kvikio.defaults.is_compat_mode_preferred())
    return {"gbps": nbytes / statistics.median(times[1:]) / 1e9, "bytes": nbytes,
            "mode": "compat (POSIX)" if compat else "GDS", "file": str(path)}
