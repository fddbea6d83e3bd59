"""gds_zarr/_device.py where a (emulated) GPU is present: what ``gpu_status`` says when CuPy
sees devices but kvikio or nvCOMP is missing, or CuPy sees none, and the wait before kvikio
writes into memory a per-thread default stream recycled.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gds_zarr._device import gpu_status

if not gpu_status().usable:
    pytest.skip(f"no usable GPU: {gpu_status().reason}", allow_module_level=True)

import cupy as cp

from gds_zarr import _device, settings
from gds_zarr._device import explain_device, resolve_device
from gds_zarr.errors import DeviceUnavailableError
from gds_zarr.io import _gpu
from gds_zarr.io._gpu import KvikioIOBackend
from gds_zarr.store import GDSStore


@pytest.fixture
def fresh_status() -> Iterator[None]:
    """gpu_status() computed anew in the test, and again after it (the real answer)."""
    gpu_status.cache_clear()
    yield
    gpu_status.cache_clear()


@pytest.mark.parametrize(("module", "missing", "what"), [
    ("kvikio", ("kvikio",), "kvikio is not importable"),
    ("nvidia.nvcomp", ("nvcomp",), "nvCOMP (nvidia-nvcomp) is not importable"),
])
def test_devices_without_kvikio_or_nvcomp_are_not_usable(
        tmp_path: Path, module: str, missing: tuple[str, ...], what: str) -> None:
    """CuPy sees the devices, a library is missing: 'gpu' is refused saying which, 'auto'
    reads on the CPU."""
    (tmp_path / "k").write_bytes(b"value")
    store = GDSStore(tmp_path)
    with pytest.MonkeyPatch.context() as m:
        m.setitem(sys.modules, module, None)
        gpu_status.cache_clear()
        try:
            status = gpu_status()
            auto, asked = explain_device("auto"), explain_device("gpu")
            with pytest.raises(DeviceUnavailableError, match=what.replace("(", r"\(")
                               .replace(")", r"\)")):
                store.read_batch(["k"], device="gpu")
            host = store.read_batch(["k"], device="auto")
        finally:
            gpu_status.cache_clear()
    assert (status.usable, status.missing) == (False, missing)
    assert status.device_count == cp.cuda.runtime.getDeviceCount()
    assert what in status.reason and 'pip install -e ".[cu12]"' in status.reason
    assert (auto.device, auto.reason) == ("cpu", f"auto fell back to the CPU: {status.reason}")
    assert (asked.device, asked.error) == ("cpu", f"device 'gpu' was requested by the caller "
                                                  f"but is not usable: {status.reason}")
    assert isinstance(host.data, np.ndarray) and host.view(0).tobytes() == b"value"
    assert gpu_status().usable  # the real answer again


def test_cupy_missing_is_said_first(fresh_status: None,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)
    status = gpu_status()
    assert (status.usable, status.missing) == (False, ("cupy",))
    assert status.reason.startswith("CuPy is not importable (ModuleNotFoundError")
    with pytest.raises(DeviceUnavailableError, match="CuPy is not importable"):
        resolve_device("gpu")


@pytest.mark.parametrize("driver", [True, False])
def test_no_device_says_whether_the_driver_is_there(
        fresh_status: None, monkeypatch: pytest.MonkeyPatch, driver: bool) -> None:
    """CuPy raises cudaErrorNoDevice when the driver finds no GPU (CUDA_VISIBLE_DEVICES="",
    EMULATED_GPU_DEVICES=0); the reason then tells a missing driver from a missing device."""
    devices = pytest.importorskip("_emucuda.devices", reason="the emulated device's count")
    monkeypatch.setattr(devices, "_VISIBLE", ())  # as CUDA_VISIBLE_DEVICES="" leaves it
    with pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="cudaErrorNoDevice"):
        cp.cuda.runtime.getDeviceCount()
    # The emulator has no libcuda: name a library that loads for "the driver is there".
    monkeypatch.setattr(_device, "_LIBCUDA", "libc.so.6" if driver else "libcuda-none.so.1")
    status = gpu_status()
    assert not status.usable and status.device_count == 0
    if driver:
        assert status.missing == ("device",)
        assert status.reason.startswith("the NVIDIA driver is present but CuPy finds no usable "
                                        "CUDA device (CUDARuntimeError: cudaErrorNoDevice")
    else:
        assert status.missing == ("driver",)
        assert status.reason.startswith("no NVIDIA driver (libcuda-none.so.1: cannot open")


@pytest.mark.parametrize("stream", ["per-thread default", "non-blocking"])
def test_kvikio_writes_after_the_work_queued_on_a_recycled_block(
        tmp_path: Path, stream: str) -> None:
    """CuPy's pool hands a block freed with a kernel still queued on it to the next
    allocation on the stream; kvikio then writes into it outside stream order. gds_zarr waits
    for that stream first (the whole device on the per-thread default stream), or the kernel
    would overwrite the bytes read."""
    nbytes = 16 * 4096
    data = np.random.default_rng(2).bytes(nbytes)
    (tmp_path / "c").write_bytes(data)
    s = cp.cuda.Stream.ptds if stream == "per-thread default" else cp.cuda.Stream(
        non_blocking=True)
    with settings.set(gpu_bounced_reads="kvikio"), s:
        x = cp.empty(nbytes + 4096, cp.uint8)  # the size the read allocates
        ptr = x.data.ptr
        x.fill(0xAB)  # queued, not run
        del x
        batch = KvikioIOBackend().read_batch([str(tmp_path / "c")], np.array([0]),
                                             np.array([-1]))
        assert ptr <= batch.data.data.ptr < ptr + nbytes + 4096  # the recycled block
        cp.cuda.Device().synchronize()  # whatever was still queued has run now
        got = cp.asnumpy(batch.view(0)).tobytes()
    _gpu.clear_handle_cache()
    assert got == data
