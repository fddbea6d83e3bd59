"""enable(): zarr config and settings, globally and as a context manager."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from zarr.storage import MemoryStore

import gds_zarr
from gds_zarr.errors import DeviceUnavailableError
from gds_zarr.pipeline import PIPELINE_PATH, GDSCodecPipeline, enable, stats


def test_context_manager_restores_config_and_settings() -> None:
    before = zarr.config.get("codec_pipeline.path")
    budget = gds_zarr.settings.get("memory_budget")
    with enable(device="cpu", memory_budget="3MiB") as on:
        assert on.device == "cpu"
        assert zarr.config.get("codec_pipeline.path") == PIPELINE_PATH
        assert zarr.config.get("ndbuffer") == "zarr.buffer.cpu.NDBuffer"
        assert gds_zarr.settings.get("memory_budget") == 3 << 20
        assert gds_zarr.settings.get("device") == "cpu"
        store = MemoryStore()
        z = zarr.create_array(store, shape=(10,), chunks=(3,), dtype="i4")
        z[...] = np.arange(10)
        assert isinstance(z.async_array.codec_pipeline, GDSCodecPipeline)
        stats.reset()
        np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], np.arange(10))
        assert stats.fast_reads == 1
    assert zarr.config.get("codec_pipeline.path") == before
    assert gds_zarr.settings.get("memory_budget") == budget


def test_global_enable_and_restore() -> None:
    before = zarr.config.get("codec_pipeline.path")
    on = enable("cpu")
    try:
        assert zarr.config.get("codec_pipeline.path") == PIPELINE_PATH
    finally:
        on.restore()
    assert zarr.config.get("codec_pipeline.path") == before


def test_bad_arguments_change_nothing() -> None:
    before = zarr.config.get("codec_pipeline.path")
    with pytest.raises(KeyError):
        enable("cpu", no_such_setting=1)
    with pytest.raises(ValueError):
        enable("tpu")
    assert zarr.config.get("codec_pipeline.path") == before


def test_gpu_unavailable_raises() -> None:
    if gds_zarr.resolve_device("auto") == "gpu":
        pytest.skip("a GPU is usable here")
    with pytest.raises(DeviceUnavailableError):
        enable("gpu")


def test_enable_takes_the_device_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                      fresh_gpu_status: None) -> None:
    """Issue 20, item 1: ``enable()`` without a device is ``GDS_ZARR_DEVICE``'s."""
    from gds_zarr import settings
    from gds_zarr._device import gpu_status
    from gds_zarr.errors import DeviceUnavailableError

    monkeypatch.setenv("GDS_ZARR_DEVICE", "cpu")
    with gds_zarr.enable() as on:
        assert on.device == "cpu" and settings.get("device") == "cpu"
    if gpu_status().usable:
        return
    monkeypatch.setenv("GDS_ZARR_DEVICE", "gpu")  # no GPU here: an error, not the CPU
    with pytest.raises(DeviceUnavailableError, match="GDS_ZARR_DEVICE"):
        gds_zarr.enable()


@pytest.mark.parametrize(("var", "value", "accepts"), [
    ("GDS_ZARR_DEVICE", "banana", "'auto', 'gpu' or 'cpu'"),
    ("GDS_ZARR_MEMORY_BUDGET", "lots", "byte size"),
])
def test_a_bad_environment_value_raises_at_enable(monkeypatch: pytest.MonkeyPatch, var: str,
                                                  value: str, accepts: str) -> None:
    import zarr

    before = zarr.config.get("codec_pipeline.path")
    monkeypatch.setenv(var, value)
    with pytest.raises(ValueError, match=f"{var}={value!r}.*{accepts}"):
        gds_zarr.enable()
    assert zarr.config.get("codec_pipeline.path") == before  # nothing changed
