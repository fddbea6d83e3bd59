"""zarr reads run on the caller's CuPy device and stream (twin of tests/test_caller_target.py).

``z[...]`` runs in zarr's event-loop thread; ``gds_zarr.enable(device="gpu")`` carries the
calling thread's device and stream there. Checked: the result's device, the target every
decode call ran on (a spy on ``NvcompDecoder.decode_batch``), the values (against the host).

Skips cleanly where the GPU path cannot run (no driver, no device, no kvikio or nvCOMP).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gds_zarr._device import gpu_status

if not gpu_status().usable:
    pytest.skip(f"no usable GPU: {gpu_status().reason}", allow_module_level=True)

import cupy
import zarr
import zarr.codecs as zc
from pipeline_cases import make, sample_data

import gds_zarr
from gds_zarr.decode._gpu import NvcompDecoder
from gds_zarr.pipeline import stats
from gds_zarr.store import GDSStore

LAYOUTS: dict[str, dict[str, Any]] = {
    "zstd": {"compressors": zc.ZstdCodec(level=3)},
    "zstd_sharded": {"compressors": zc.ZstdCodec(level=3), "shards": (64, 64)},
}


@pytest.fixture
def targets(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """(device, stream handle) of every decode call's ``target``."""
    seen: list[tuple[int, int]] = []
    real = NvcompDecoder.decode_batch

    def decode_batch(self: Any, *args: Any, **kwargs: Any) -> Any:
        t = kwargs.get("target")
        seen.append((-1, -1) if t is None else (t.device, t.stream_ptr))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(NvcompDecoder, "decode_batch", decode_batch)
    return seen


def _array(tmp_path: Path, name: str) -> tuple[str, np.ndarray]:
    data = sample_data((128, 128), "float32")
    path = str(tmp_path / f"{name}.zarr")
    make(path, data, chunks=(32, 32), **LAYOUTS[name])
    return path, data


def _open(path: str) -> zarr.Array:
    """Open under ``gds_zarr.enable``: zarr fixes an array's pipeline when it opens it."""
    return zarr.open_array(GDSStore(path, read_only=True), mode="r")


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_read_runs_on_the_callers_stream(tmp_path: Path, name: str,
                                         targets: list[tuple[int, int]]) -> None:
    path, data = _array(tmp_path, name)
    with gds_zarr.enable(device="gpu"):
        z = _open(path)
        stream = cupy.cuda.Stream(non_blocking=True)
        stats.reset()
        with stream:
            got = z[8:100, 3:120]
            # No synchronize: the read finished its work on this stream before returning.
            host = cupy.asnumpy(got, stream=stream)
    assert isinstance(got, cupy.ndarray)
    assert stats.fast_reads >= 1 and stats.delegated_reads == 0, stats.last_delegation
    assert targets and set(targets) == {(cupy.cuda.Device().id, stream.ptr)}, targets
    np.testing.assert_array_equal(host, data[8:100, 3:120])


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_read_lands_on_the_callers_device(tmp_path: Path, name: str,
                                          targets: list[tuple[int, int]]) -> None:
    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two GPUs")
    path, data = _array(tmp_path, name)
    with gds_zarr.enable(device="gpu"):
        z = _open(path)
        with cupy.cuda.Device(1):
            stream = cupy.cuda.Stream(non_blocking=True)
            with stream:
                got = z[...]
                one = z[5, 7]  # a 0-d result
    assert got.device.id == 1
    assert {d for d, _ in targets} == {1} and {s for _, s in targets} == {stream.ptr}
    np.testing.assert_array_equal(cupy.asnumpy(got), data)
    np.testing.assert_array_equal(cupy.asnumpy(cupy.asarray(one)) if isinstance(
        one, cupy.ndarray) else np.asarray(one), data[5, 7])


def test_threads_keep_their_own_devices(tmp_path: Path) -> None:
    """Two threads on two devices read at once: each result lands on its thread's device."""
    import threading

    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two GPUs")
    results: dict[int, Any] = {}
    path, data = _array(tmp_path, "zstd_sharded")
    with gds_zarr.enable(device="gpu"):
        z = _open(path)

        def reader(device: int) -> None:
            with cupy.cuda.Device(device):
                results[device] = [z[...] for _ in range(10)]

        threads = [threading.Thread(target=reader, args=(d,)) for d in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    for device, arrays in results.items():
        for a in arrays:
            assert a.device.id == device
            np.testing.assert_array_equal(cupy.asnumpy(a), data)
    assert sorted(results) == [0, 1]
