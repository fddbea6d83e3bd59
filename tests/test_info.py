"""gds_zarr.info(): a JSON-serializable report that tells the truth and never raises."""

from __future__ import annotations

import ctypes
import json
import os
import sys

import pytest
import zarr
from gpu_env import importable

from gds_zarr import settings
from gds_zarr._device import libcuda_error
from gds_zarr._info import Info, KvikioInfo, _capture_native_stdout, _io_path, info

pytestmark = pytest.mark.usefixtures("fresh_gpu_status")


def test_report_is_json_serializable() -> None:
    report = info()
    assert isinstance(report, Info)
    data = json.loads(report.to_json())
    assert data == json.loads(json.dumps(report.as_dict()))
    assert set(data) >= {"device", "gpu", "cupy", "kvikio", "nvcomp", "pynvml", "libraries",
                         "settings", "codecs", "gds_zarr_version", "python"}
    assert data["libraries"]["zarr"] == zarr.__version__
    assert data["python"].startswith(".".join(map(str, sys.version_info[:2])))


def test_without_gpu_libraries(no_gpu_libs: None) -> None:
    report = info()
    assert not report.cupy.importable and "import of cupy halted" in (report.cupy.error or "")
    assert not report.kvikio.importable and report.kvikio.gds_available is None
    assert not report.nvcomp.importable
    assert not report.pynvml.importable
    assert report.gpu.nvml_error is not None and report.gpu.name is None
    assert (report.device.requested, report.device.device) == ("auto", "cpu")
    assert report.device.reason.startswith("auto fell back to the CPU: CuPy is not importable")
    assert report.device.io_path.startswith("cpu:")
    assert {c.decodes_on for c in report.codecs} == {"cpu"}


def test_codec_table() -> None:
    by_name = {c.codec: c for c in info().codecs}
    assert by_name["zstd"].gpu_decoder == "nvCOMP Zstd"
    assert by_name["zlib"].gpu_decoder == "nvCOMP Deflate"
    assert by_name["lz4"].gpu_decoder == "nvCOMP LZ4"
    assert by_name["gzip"].gpu_decoder == "nvCOMP Gzip"
    assert by_name["blosc"].gpu_decoder == "nvCOMP LZ4/Zstd + unshuffle kernel"
    assert by_name["other numcodecs"].gpu_decoder is None


def test_settings_are_reported() -> None:
    with settings.set(io_threads=7, memory_budget="2MiB"):
        report = info()
    assert report.settings == {**settings.as_dict(), "io_threads": 7, "memory_budget": 2 << 20}
    assert "io_threads=7" in report.format_text()


def test_bad_environment_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GDS_ZARR_DEVICE", "tpu")
    monkeypatch.setenv("GDS_ZARR_IO_THREADS", "many")
    report = info()
    assert report.device.device is None
    assert "GDS_ZARR_DEVICE" in (report.device.error or "")
    assert str(report.settings["device"]).startswith("<error:")
    assert str(report.settings["io_threads"]).startswith("<error:")
    json.dumps(report.as_dict())


def test_cpu_setting_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GDS_ZARR_DEVICE", "cpu")
    report = info()
    assert (report.device.requested, report.device.device) == ("cpu", "cpu")
    assert "GDS_ZARR_DEVICE" in report.device.reason


def test_text_report(no_gpu_libs: None) -> None:
    text = str(info())
    assert "device:       auto -> cpu" in text
    assert "auto fell back to the CPU" in text
    assert f"zarr:         {zarr.__version__}" in text
    assert "zstd:" in text and "blosc:" in text


def test_native_stdout_is_captured(capfd: pytest.CaptureFixture[str]) -> None:
    libc = ctypes.CDLL(None)
    with _capture_native_stdout() as native:
        os.write(1, b"from fd 1\n")
        libc.printf(b"from C printf\n")  # buffered by C stdio until flushed
    print("after", flush=True)
    out = capfd.readouterr().out
    assert "from fd 1" in native[0] and "from C printf" in native[0]
    assert "from fd 1" not in out and "from C printf" not in out
    assert "after" in out


@pytest.mark.skipif(not (importable("cupy") and importable("kvikio")),
                    reason="GPU libraries not installed (see ci/gpu_libs_without_driver.sh)")
def test_with_gpu_libraries_installed() -> None:
    report = info()
    assert report.cupy.importable and report.kvikio.importable and report.nvcomp.importable
    assert report.gpu.cuda_runtime_version is not None
    assert report.kvikio.compat_mode is not None and report.kvikio.num_threads is not None
    if libcuda_error() is not None:  # libraries, no driver: the CI leg for this
        assert report.device.device == "cpu"
        assert report.device.reason.startswith("auto fell back to the CPU: no NVIDIA driver")
        assert report.kvikio.gds_available is False
        assert report.kvikio.compat_mode_preferred is True  # what kvikio will really do
        assert report.gpu.nvml_error is not None
    else:
        assert report.gpu.driver_version is not None


@pytest.mark.parametrize(("gds", "mode", "preferred", "expected"), [
    # kvikio's own answer decides: GDS available is not enough when it prefers compat mode.
    (True, "AUTO", True, "compat mode"),
    (True, "AUTO", False, "GPU Direct Storage"),
    (True, "ON", True, "compat mode (POSIX reads through a pinned host bounce buffer): "
                       "compat_mode is ON"),
    (False, "AUTO", True, "the cuFile driver reports GDS unavailable"),
    (True, "OFF", False, "GPU Direct Storage"),
    # Its probe failed: pieced together from compat_mode and is_gds_available.
    (True, "AUTO", None, "GPU Direct Storage"),
    (True, "ON", None, "compat mode"),
    (False, "AUTO", None, "compat mode"),
    (None, None, None, "compat mode"),
])
def test_io_path_follows_what_kvikio_will_do(gds: bool | None, mode: str | None,
                                             preferred: bool | None, expected: str) -> None:
    kv = KvikioInfo(True, "26.10.00", gds_available=gds, compat_mode=mode,
                    compat_mode_preferred=preferred)
    path = _io_path("gpu", kv)
    assert path.startswith("gpu: ") and expected in path
    assert _io_path("cpu", kv).startswith("cpu:")
    assert _io_path("gpu", KvikioInfo(False, error="ImportError")) == \
        "gpu: kvikio is not importable"
