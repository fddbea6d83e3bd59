"""Device detection: gpu_status / explain_device / resolve_device, with and without GPU libraries.

"Without" is simulated the way kvikio's own tests do it: ``sys.modules[name] = None`` makes
``import name`` raise ImportError. "Installed" runs for real where CuPy is installed (the
ci/gpu_libs_without_driver.sh leg); a stand-in CuPy module drives the decision logic through
states this machine cannot reach (a driver with 0 or 1 devices).
"""

from __future__ import annotations

import subprocess
import sys
import types

import pytest
from gpu_env import importable

import gds_zarr
from gds_zarr import _device, settings
from gds_zarr._device import explain_device, gpu_status, libcuda_error, resolve_device
from gds_zarr.errors import DeviceUnavailableError

pytestmark = pytest.mark.usefixtures("fresh_gpu_status")


def _fake_cupy(monkeypatch: pytest.MonkeyPatch, count: int | Exception) -> None:
    """A stand-in CuPy whose runtime reports ``count`` devices, or raises ``count``."""

    def get_device_count() -> int:
        if isinstance(count, Exception):
            raise count
        return count

    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(  # type: ignore[attr-defined]
        runtime=types.SimpleNamespace(getDeviceCount=get_device_count))
    monkeypatch.setitem(sys.modules, "cupy", cupy)


def test_import_never_loads_gpu_libraries() -> None:
    # zarr itself imports CuPy when it is installed (zarr.core.buffer.gpu): count only what
    # importing gds_zarr adds on top of ``import zarr``.
    code = (
        "import sys, zarr\n"
        "before = set(sys.modules)\n"
        "import gds_zarr, gds_zarr._device, gds_zarr._info, gds_zarr.cli, "
        "gds_zarr.cli._demo, gds_zarr.__main__\n"
        "gpu = ('cupy', 'kvikio', 'nvidia.nvcomp', 'pynvml')\n"
        "bad = [m for m in gpu if m in sys.modules and m not in before]\n"
        "print(bad)\n"
        "raise SystemExit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=False, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_without_cupy(no_gpu_libs: None) -> None:
    status = gpu_status()
    assert not status.usable
    assert status.missing == ("cupy",)
    assert "CuPy is not importable" in status.reason
    assert 'pip install -e ".[cu12]"' in status.reason
    assert status.device_count == 0


def test_status_is_cached(no_gpu_libs: None) -> None:
    assert gpu_status() is gpu_status()


def test_auto_falls_back_to_cpu_with_reason(no_gpu_libs: None) -> None:
    choice = explain_device("auto")
    assert (choice.requested, choice.device, choice.error) == ("auto", "cpu", None)
    assert choice.reason.startswith("auto fell back to the CPU: CuPy is not importable")
    assert resolve_device("auto") == "cpu"
    assert resolve_device() == "cpu"  # the default setting is auto


def test_gpu_request_without_cupy_is_a_clear_error(no_gpu_libs: None) -> None:
    with pytest.raises(DeviceUnavailableError, match=r"'gpu' was requested.*CuPy is not "
                                                     r"importable.*pip install -e \"\.\[cu12\]\""):
        resolve_device("gpu")
    assert issubclass(DeviceUnavailableError, RuntimeError)


def test_cpu_request_never_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> None:
        raise AssertionError("gpu_status must not run for device='cpu'")

    monkeypatch.setattr(_device, "gpu_status", boom)
    assert resolve_device("cpu") == "cpu"
    assert "'cpu' was requested" in explain_device("cpu").reason


def test_env_override(no_gpu_libs: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GDS_ZARR_DEVICE", "gpu")
    with pytest.raises(DeviceUnavailableError, match="GDS_ZARR_DEVICE"):
        resolve_device()
    monkeypatch.setenv("GDS_ZARR_DEVICE", "CPU")
    assert resolve_device() == "cpu"
    monkeypatch.setenv("GDS_ZARR_DEVICE", "tpu")
    with pytest.raises(ValueError, match="GDS_ZARR_DEVICE"):
        resolve_device()


def test_settings_override_beats_env(no_gpu_libs: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GDS_ZARR_DEVICE", "gpu")
    with settings.set(device="cpu"):
        assert resolve_device() == "cpu"
    with pytest.raises(DeviceUnavailableError):
        resolve_device()


def test_bad_request_is_value_error() -> None:
    with pytest.raises(ValueError, match="'auto', 'gpu' or 'cpu'"):
        resolve_device("cuda")


def test_cupy_without_driver_names_the_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    # What CuPy 14 raises with no driver: cudaErrorInsufficientDriver (a misleading message).
    _fake_cupy(monkeypatch, RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is "
                                         "insufficient for CUDA runtime version"))
    status = gpu_status()
    assert not status.usable
    if libcuda_error() is None:  # a machine with a driver: then the device is what is missing
        assert status.missing == ("device",)
        assert "cudaErrorInsufficientDriver" in status.reason
    else:
        assert status.missing == ("driver",)
        assert status.reason.startswith("no NVIDIA driver (libcuda.so.1")


def test_driver_with_no_device(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cupy(monkeypatch, 0)
    status = gpu_status()
    assert (status.usable, status.missing) == (False, ("device",))


def test_device_without_kvikio_and_nvcomp(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cupy(monkeypatch, 2)
    monkeypatch.setitem(sys.modules, "kvikio", None)
    monkeypatch.setitem(sys.modules, "nvidia.nvcomp", None)
    status = gpu_status()
    assert (status.usable, status.missing, status.device_count) == (False, ("kvikio", "nvcomp"), 2)
    assert "kvikio is not importable" in status.reason
    assert "nvCOMP" in status.reason
    with pytest.raises(DeviceUnavailableError, match="kvikio"):
        resolve_device("gpu")


def test_usable_gpu_is_picked_by_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cupy(monkeypatch, 1)
    for name in ("kvikio", "nvidia.nvcomp"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    assert gpu_status().usable
    assert resolve_device("auto") == "gpu"
    assert resolve_device("gpu") == "gpu"
    assert explain_device("auto").reason.startswith("auto: the GPU is usable (1 CUDA device")


@pytest.mark.skipif(not importable("cupy"),
                    reason="CuPy not installed (see ci/gpu_libs_without_driver.sh)")
def test_real_cupy_installed() -> None:
    status = gpu_status()
    if libcuda_error() is not None:  # GPU libraries, no driver: the CI leg for this
        assert status.missing == ("driver",)
        assert resolve_device("auto") == "cpu"
        with pytest.raises(DeviceUnavailableError, match="no NVIDIA driver"):
            resolve_device("gpu")
    else:
        assert resolve_device("auto") == ("gpu" if status.usable else "cpu")


def test_resolve_device_is_public() -> None:
    assert gds_zarr.resolve_device is resolve_device


def test_on_cuda_target_none_is_a_no_op_without_cupy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)  # any import of CuPy would raise
    with _device.on_cuda_target(None):
        pass


def test_on_cuda_target_enters_device_then_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in CuPy records what is made current, in which order, and undone in reverse.
    events: list[str] = []

    class Ctx:
        def __init__(self, name: str) -> None:
            self.name = name

        def __enter__(self) -> None:
            events.append(f"enter {self.name}")

        def __exit__(self, *exc: object) -> None:
            events.append(f"exit {self.name}")

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(Device=lambda i: Ctx(f"device {i}"))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cupy", fake)
    stream = Ctx("stream 0x1234")
    with _device.on_cuda_target(_device.CudaTarget(1, stream)):
        events.append("work")
    assert events == ["enter device 1", "enter stream 0x1234", "work", "exit stream 0x1234",
                      "exit device 1"]


@pytest.mark.parametrize(("ptr", "device_wide"), [(0, False), (1, False), (2, True),
                                                  (0x7F00_1234, False)])
def test_pool_reuse_wait_covers_per_thread_default_streams(ptr: int, device_wide: bool) -> None:
    # cudaStreamPerThread (2) is one pool key for every thread's own stream: only a device
    # synchronization waits for other threads' kernels on blocks that key hands back.
    assert _device.needs_device_sync(ptr) is device_wide
