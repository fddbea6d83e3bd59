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


# -- device 1, a non-default stream: every kind of read equals the CPU path bit for bit ------

TWO_DEVICES = pytest.mark.skipif(gpu_status().device_count < 2, reason="needs two GPUs")

_MASK = np.zeros((128, 128), bool)
_MASK[::7, 3::11] = True

GETTERS: dict[str, Any] = {
    "getitem": lambda z: z[1:60, 2],
    "basic": lambda z: z.get_basic_selection((slice(0, 90, 3), slice(7, 100))),
    "orthogonal": lambda z: z.get_orthogonal_selection(([0, 5, 127], slice(None))),
    "oindex": lambda z: z.oindex[[1, 66], 30:40],
    "vindex": lambda z: z.vindex[[0, 127, 64], [1, 2, 100]],
    "coordinate": lambda z: z.get_coordinate_selection(([0, 7], [1, 2])),
    "mask": lambda z: z.get_mask_selection(_MASK),
    "block": lambda z: z.get_block_selection((1, 0)),
    "blocks": lambda z: z.blocks[0, 1:3],
    "load": lambda z: zarr.load(z.store),
}


def _cpu(path: str, read: Any) -> np.ndarray:
    """What the CPU path gives for ``read``."""
    with gds_zarr.enable(device="cpu"):
        return np.asarray(read(_open(path)))


def _equal(got: Any, want: np.ndarray, device: int) -> None:
    assert isinstance(got, cupy.ndarray) and got.device.id == device
    host = cupy.asnumpy(got)
    assert host.dtype == want.dtype and host.shape == want.shape
    assert host.tobytes() == want.tobytes()


#: Rows 64+ never written: whole shards missing, read as the fill value.
_PARTIAL = {"compressors": zc.ZstdCodec(level=3), "shards": (64, 64), "write": np.s_[:64],
            "fill_value": np.nan}


@TWO_DEVICES
@pytest.mark.parametrize("name", [*LAYOUTS, "zstd_sharded_partial"])
def test_every_read_on_device_1_and_a_stream_equals_the_cpu(
        tmp_path: Path, name: str, targets: list[tuple[int, int]]) -> None:
    """Regression (sharded): the fill of a missing shard and the temporary of a fancy output
    selection (vindex, coordinates, mask) were made on the device current in zarr's loop
    thread, 0, and the read failed: "Array device must be same as the current device"."""
    path = str(tmp_path / "a.zarr")
    make(path, sample_data((128, 128), "float32"), chunks=(32, 32),
         **LAYOUTS.get(name, _PARTIAL))
    with gds_zarr.enable(device="gpu"):
        z = _open(path)
        with cupy.cuda.Device(1):
            stream = cupy.cuda.Stream(non_blocking=True)
            with stream:
                got = {how: read(z) for how, read in GETTERS.items()}
    for how, read in GETTERS.items():
        _equal(got[how], _cpu(path, read), device=1)
    assert targets and set(targets) == {(1, stream.ptr)}, targets


@TWO_DEVICES
def test_read_many_on_device_1_and_a_stream_equals_the_cpu(
        tmp_path: Path, targets: list[tuple[int, int]]) -> None:
    path, _ = _array(tmp_path, "zstd_sharded")
    z = _open(path)
    windows = [(slice(y, y + 20), slice(x, x + 30)) for y, x in ((0, 0), (50, 17), (108, 98))]
    mixed = [(5, slice(None)), (slice(3, 90, 4), 7), (slice(None), slice(100, None))]
    with cupy.cuda.Device(1):
        stream = cupy.cuda.Stream(non_blocking=True)
        with stream:
            stacked = gds_zarr.read_many(z, windows, device="gpu")
            parts = gds_zarr.read_many(z, mixed, device="gpu")
    _equal(stacked, gds_zarr.read_many(z, windows, device="cpu"), device=1)
    for g, w in zip(parts, gds_zarr.read_many(z, mixed, device="cpu"), strict=True):
        _equal(g, w, device=1)
    assert targets and set(targets) == {(1, stream.ptr)}, targets


@TWO_DEVICES
def test_an_output_on_another_device_is_written_on_its_own(
        tmp_path: Path, targets: list[tuple[int, int]]) -> None:
    """``out=`` on device 0 from a caller on device 1: the caller's stream cannot run there,
    so the read runs on device 0 (its stream in zarr's thread), and fills ``out``."""
    from zarr.core.buffer import gpu

    path, _ = _array(tmp_path, "zstd")
    sel = (slice(8, 100), slice(3, 120))
    out = cupy.full((92, 117), -1, "float32")
    with gds_zarr.enable(device="gpu"):
        z = _open(path)
        with cupy.cuda.Device(1), cupy.cuda.Stream(non_blocking=True):
            z.get_basic_selection(sel, out=gpu.NDBuffer.from_ndarray_like(out))
    _equal(out, _cpu(path, lambda a: a[sel]), device=0)
    assert targets and {d for d, _ in targets} == {0}, targets


@TWO_DEVICES
async def test_an_async_read_runs_on_its_outputs_device_and_the_threads_stream(
        tmp_path: Path, targets: list[tuple[int, int]]) -> None:
    """``AsyncArray.getitem`` passes no sync wrapper, so no caller is carried: the output is
    zarr's (the current device) and the read runs there, on this thread's stream."""
    path, _ = _array(tmp_path, "zstd_sharded")
    with gds_zarr.enable(device="gpu"):
        z = _open(path)
        with cupy.cuda.Device(1):
            stream = cupy.cuda.Stream(non_blocking=True)
            with stream:
                got = await z._async_array.getitem((slice(3, 77), slice(None)))
    _equal(got, _cpu(path, lambda a: a[3:77]), device=1)
    assert targets and set(targets) == {(1, stream.ptr)}, targets


@TWO_DEVICES
def test_the_per_thread_default_stream_waits_for_its_device(
        tmp_path: Path, targets: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch) -> None:
    """On CuPy's per-thread default stream (one handle for every thread's own) the read ends
    with a synchronize of the caller's device, not of a stream."""
    synced: list[int] = []
    real = cupy.cuda.Device.synchronize

    def synchronize(self: Any) -> None:
        synced.append(int(self.id))
        real(self)

    monkeypatch.setattr(cupy.cuda.Device, "synchronize", synchronize)
    path, _ = _array(tmp_path, "zstd_sharded")
    with gds_zarr.enable(device="gpu"):
        z = _open(path)
        with cupy.cuda.Device(1), cupy.cuda.Stream.ptds:
            got = z[...]
    _equal(got, _cpu(path, lambda a: a[...]), device=1)
    assert targets and set(targets) == {(1, 2)}, targets  # 2: cudaStreamPerThread
    assert 1 in synced


def test_a_host_prototype_keeps_zarrs_coordinate_path(tmp_path: Path) -> None:
    """Under ``enable(device="gpu")`` a coordinate read asked for in host buffers is zarr's
    own: a numpy result, equal to the CPU path's."""
    from zarr.core.buffer import cpu

    path, _ = _array(tmp_path, "zstd")
    coords = ([0, 127, 5, 64], [1, 2, 100, 64])
    with gds_zarr.enable(device="gpu"):
        got = _open(path).get_coordinate_selection(coords, prototype=cpu.buffer_prototype)
    assert isinstance(got, np.ndarray)
    want = _cpu(path, lambda a: a.vindex[coords])
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


@TWO_DEVICES
def test_a_zarr_without_one_sync_name_still_carries_the_others(
        tmp_path: Path, targets: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch) -> None:
    """A zarr that moved ``zarr.api.synchronous.sync``: enable wraps the names it finds, puts
    nothing where there was none, and array reads still run on the caller's device."""
    import zarr.api.synchronous
    import zarr.core.array
    from zarr.core.sync import sync as zarr_sync

    path, data = _array(tmp_path, "zstd")
    with gds_zarr.enable(device="gpu"):
        z = _open(path)  # zarr.open_array runs through the name removed below
    monkeypatch.delattr(zarr.api.synchronous, "sync")
    with gds_zarr.enable(device="gpu"):
        assert not hasattr(zarr.api.synchronous, "sync")
        assert zarr.core.array.sync is not zarr_sync  # wrapped
        with cupy.cuda.Device(1):
            stream = cupy.cuda.Stream(non_blocking=True)
            with stream:
                got = z[...]
    assert zarr.core.array.sync is zarr_sync and not hasattr(zarr.api.synchronous, "sync")
    _equal(got, data, device=1)
    assert targets and set(targets) == {(1, stream.ptr)}, targets


def test_each_read_is_one_gpu_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every decode call of a read (several batches here) sees that read's GpuRead, whose
    target and read id it is passed; the next read is another GpuRead."""
    from gds_zarr import settings
    from gds_zarr.pipeline import _gpuread as gpuread

    seen: list[tuple[Any, Any, Any]] = []
    real = NvcompDecoder.decode_batch

    def decode_batch(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append((gpuread.current(), kwargs["target"], kwargs["read_id"]))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(NvcompDecoder, "decode_batch", decode_batch)
    path, data = _array(tmp_path, "zstd")
    with gds_zarr.enable(device="gpu"), settings.set(memory_budget=4 * 32 * 32 * 4):
        z = _open(path)
        first = z[...]
        n = len(seen)
        second = z[...]
    assert n > 1 and len(seen) > n
    assert all(r is not None and r.target is t and r.read_id is i for r, t, i in seen)
    assert len({id(r) for r, _, _ in seen[:n]}) == 1
    assert len({id(r) for r, _, _ in seen}) == 2
    _equal(first, data, device=0)
    _equal(second, data, device=0)
