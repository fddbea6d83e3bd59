"""WindowLoader on the GPU (twin of tests/test_loader.py): batches equal to the CPU loader's bit
for bit, on the consumer's device, whatever the store; errors reach the consumer; close and
backpressure as on the CPU.

Skips cleanly where the GPU path cannot run (no driver, no device, no kvikio or nvCOMP).
"""

from __future__ import annotations

import threading
import time
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
from pipeline_cases import DEFAULT, make, sample_data
from zarr.storage import LocalStore, MemoryStore

from gds_zarr import WindowLoader
from gds_zarr.decode._gpu import NvcompDecoder
from gds_zarr.errors import ShardIndexError
from gds_zarr.store import GDSStore

TWO_DEVICES = pytest.mark.skipif(gpu_status().device_count < 2, reason="needs two GPUs")


@pytest.fixture(scope="module")
def arrays(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """A sharded float32 array and a 4-D int16 array with the same three leading axes."""
    root = tmp_path_factory.mktemp("loader")
    x = sample_data((6, 40, 36), "float32")
    y = sample_data((6, 40, 36, 2), "int16", seed=1)
    make(str(root / "x.zarr"), x, chunks=(1, 8, 8), shards=(2, 16, 16),
         compressors=zc.ZstdCodec())
    make(str(root / "y.zarr"), y, chunks=(2, 10, 9, 2), compressors=zc.GzipCodec())
    return (zarr.open_array(GDSStore(root / "x.zarr", read_only=True), mode="r"),
            zarr.open_array(GDSStore(root / "y.zarr", read_only=True), mode="r"))


def _loader_threads() -> int:
    return sum(t.name == "gds_zarr-loader" for t in threading.enumerate())


def _host(batch: Any, device: int = 0) -> Any:
    """A batch (or tuple of them) on the host, checking each is CuPy on ``device``."""
    if isinstance(batch, tuple):
        return tuple(_host(b, device) for b in batch)
    assert isinstance(batch, cupy.ndarray) and batch.device.id == device
    return cupy.asnumpy(batch)


def _same(gpu: list[Any], cpu: list[Any]) -> None:
    """Every batch of the GPU loader equals the CPU loader's, bit for bit."""
    assert len(gpu) == len(cpu)
    for g, c in zip(gpu, cpu, strict=True):
        for gg, cc in zip(g if isinstance(g, tuple) else (g,), c if isinstance(c, tuple)
                          else (c,), strict=True):
            assert gg.dtype == cc.dtype and gg.shape == cc.shape
            assert gg.tobytes() == cc.tobytes()


def test_random_windows_and_epochs_equal_the_cpu_loader(arrays: tuple[Any, Any]) -> None:
    zx, _ = arrays
    kw: dict[str, Any] = {"window": (1, 8, 12), "batch_size": 7, "n_windows": 30, "seed": 3}
    gpu, cpu = WindowLoader(zx, device="gpu", **kw), WindowLoader(zx, device="cpu", **kw)
    assert "device='gpu'" in repr(gpu)
    first = [_host(b) for b in gpu]
    _same(first, list(cpu))
    assert [b.shape for b in first] == [(7, 1, 8, 12)] * 4 + [(2, 1, 8, 12)]
    # Another epoch: other windows, still the CPU loader's.
    gpu.set_epoch(1)
    cpu.set_epoch(1)
    second = [_host(b) for b in gpu]
    _same(second, list(cpu))
    assert not np.array_equal(np.concatenate(second), np.concatenate(first))
    assert _loader_threads() == 0


def test_several_arrays_shuffled_ranked_equal_the_cpu_loader(arrays: tuple[Any, Any]) -> None:
    """Two arrays, given corners shuffled, rank 1 of 2, drop_last: the CPU loader's tuples."""
    zx, zy = arrays
    starts = np.array([[t, y, x] for t in range(0, 5, 2) for y in (0, 13, 31)
                       for x in (0, 7, 27)])
    kw: dict[str, Any] = {"window": (2, 9, 9), "batch_size": 4, "starts": starts,
                          "shuffle": True, "seed": 5, "rank": 1, "world_size": 2,
                          "drop_last": True}
    gpu = [_host(b) for b in WindowLoader([zx, zy], device="gpu", **kw)]
    cpu = list(WindowLoader([zx, zy], device="cpu", **kw))
    assert len(gpu) == 27 // 2 // 4 and all(len(b) == 2 for b in gpu)
    assert gpu[0][1].shape == (4, 2, 9, 9, 2)
    _same(gpu, cpu)


def _other_stores(tmp_path: Path) -> dict[str, tuple[Any, np.ndarray]]:
    data = sample_data((4, 24, 24), "float32")
    path = tmp_path / "a.zarr"
    make(str(path), data, chunks=(1, 8, 8), shards=(2, 16, 16))
    mem = MemoryStore()
    with zarr.config.set({"codec_pipeline.path": DEFAULT}):
        zm = zarr.create_array(mem, shape=data.shape, dtype=data.dtype, chunks=(2, 8, 8))
        zm[...] = data
    return {"local": (zarr.open_array(LocalStore(path, read_only=True), mode="r"), data),
            "memory": (zarr.open_array(mem, mode="r"), data),
            "gds": (zarr.open_array(GDSStore(path, read_only=True), mode="r"), data)}


@TWO_DEVICES
def test_batches_land_on_the_consumers_device_whatever_the_store(tmp_path: Path) -> None:
    """Regression: stores other than GDSStore are read in zarr's loop thread, whose current
    device is 0; the loader's batches landed there for a consumer on device 1."""
    for name, (z, _) in _other_stores(tmp_path).items():
        kw: dict[str, Any] = {"window": (1, 8, 8), "batch_size": 3, "n_windows": 7, "seed": 1}
        with cupy.cuda.Device(1):
            gpu = [_host(b, device=1) for b in WindowLoader(z, device="gpu", **kw)]
        _same(gpu, list(WindowLoader(z, device="cpu", **kw)))
        assert len(gpu) == 3, name


def test_the_reader_works_on_a_stream_of_its_own(arrays: tuple[Any, Any],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Every decode runs on the consumer's device, on one non-default stream that is not the
    consumer's; the batches are complete when the consumer gets them (values checked)."""
    zx, _ = arrays
    seen: set[tuple[int, int]] = set()
    real = NvcompDecoder.decode_batch

    def decode_batch(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.add((kwargs["target"].device, kwargs["target"].stream_ptr))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(NvcompDecoder, "decode_batch", decode_batch)
    kw: dict[str, Any] = {"window": (2, 16, 16), "batch_size": 5, "n_windows": 10, "seed": 2}
    consumer = cupy.cuda.Stream(non_blocking=True)
    with consumer:
        gpu = [_host(b) for b in WindowLoader(zx, device="gpu", **kw)]
    _same(gpu, list(WindowLoader(zx, device="cpu", **kw)))
    assert len(seen) == 1
    ((device, stream),) = seen
    assert device == 0 and stream not in (0, 1, 2, consumer.ptr)


def test_a_reader_error_reaches_the_consumer(tmp_path: Path) -> None:
    """A shard index entry past the end of its file: the batch that needs it raises
    ShardIndexError naming the shard; the batches before it arrive; the thread ends."""
    data = sample_data((4, 16, 16), "int32")
    path = tmp_path / "a.zarr"
    codec = zc.ShardingCodec(chunk_shape=(1, 8, 8), codecs=(zc.BytesCodec(),),
                             index_codecs=(zc.BytesCodec(),), index_location="start")
    make(str(path), data, chunks=(1, 16, 16), serializer=codec, compressors=None)
    shard = path / "c" / "3" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    raw[16:24] = (10_000).to_bytes(8, "little")  # inner chunk 1's offset: far past the end
    shard.write_bytes(bytes(raw))
    z = zarr.open_array(GDSStore(path, read_only=True), mode="r")
    starts = np.array([[0, 0, 0], [1, 8, 8], [3, 0, 8]])
    it = iter(WindowLoader(z, window=(1, 8, 8), starts=starts, batch_size=1, device="gpu"))
    for corner in starts[:2]:
        t, y, x = corner.tolist()
        np.testing.assert_array_equal(_host(next(it))[0], data[t:t + 1, y:y + 8, x:x + 8])
    with pytest.raises(ShardIndexError, match="c/3/0/0"):
        next(it)
    with pytest.raises(StopIteration):
        next(it)
    assert _loader_threads() == 0


def test_close_and_backpressure(arrays: tuple[Any, Any]) -> None:
    zx, _ = arrays
    one = 2 * 1 * 8 * 8 * 4  # bytes of one batch
    loader = WindowLoader(zx, window=(1, 8, 8), batch_size=2, n_windows=40, prefetch=2 * one,
                          seed=4, device="gpu")
    it = iter(loader)
    first = _host(next(it))
    # The reader fills the bound, then waits: no more is read while the consumer does not take.
    deadline = time.monotonic() + 10
    while it.bytes_ahead < 2 * one and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.1)  # a reader that ignored the bound would have read more by now
    assert _loader_threads() == 1 and it.bytes_ahead == 2 * one
    loader.close()
    assert _loader_threads() == 0
    with pytest.raises(StopIteration):  # a closed iteration ends, it does not wait
        next(it)
    # Iterating again starts afresh: the same first batch. The with block stops the thread.
    with loader:
        for batch in loader:
            assert _host(batch).tobytes() == first.tobytes()
            break
    assert _loader_threads() == 0


class _Shape:
    """An array-like with only a shape and dtype (the check fails before any read)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape, self.dtype, self.ndim = shape, np.dtype("f4"), len(shape)


def test_bad_arguments_raise_before_any_read(arrays: tuple[Any, Any]) -> None:
    zx, _ = arrays
    cases: list[tuple[dict[str, Any], str]] = [
        ({"arrays": [], "window": (1,)}, "at least one array"),
        ({"window": (1, 8, 8, 1, 1)}, "more axes"),
        ({"arrays": [zx, _Shape((6, 41))], "window": (1, 8)}, "share"),
        ({"window": (1, 41, 8)}, "does not fit"),
        ({"window": (1, 8, 8), "batch_size": 0}, "batch_size"),
        ({"window": (1, 8, 8), "rank": 2, "world_size": 2}, "rank"),
        ({"window": (1, 8, 8), "starts": [[0.5, 0, 0]]}, "integer array"),
        ({"window": (1, 8, 8), "starts": [[0, 0, 0], [0, 33, 0]]}, r"starts\[1\]"),
    ]
    for kw, match in cases:
        kw = {"arrays": zx, **kw}
        with pytest.raises(ValueError, match=match):
            WindowLoader(kw.pop("arrays"), device="gpu", **kw)
    assert _loader_threads() == 0


@pytest.mark.fresh_process  # kills the CUDA context of its process on purpose
def test_a_dead_context_reaches_the_consumer(arrays: tuple[Any, Any]) -> None:
    """Regression: the reader thread could not create its stream on a dead context and died
    without a word; the consumer waited forever. Now the CUDA error reaches it."""
    zx, _ = arrays
    fault = cupy.RawKernel(
        'extern "C" __global__ void gdsz_fault(int* p) { *(volatile int*)p = 1; }', "gdsz_fault")
    fault((1,), (1,), (np.uint64(8),))  # a write to address 8: cudaErrorIllegalAddress
    with pytest.raises(cupy.cuda.runtime.CUDARuntimeError):
        cupy.cuda.get_current_stream().synchronize()
    got: list[Any] = []

    def consume() -> None:
        try:
            got.append(next(iter(WindowLoader(zx, window=(1, 8, 8), n_windows=2,
                                              device="gpu"))))
        except BaseException as e:  # noqa: BLE001 - what the consumer saw is the result
            got.append(e)

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    t.join(timeout=30)
    assert not t.is_alive(), "the consumer still waits for a batch"
    assert len(got) == 1 and isinstance(got[0], cupy.cuda.runtime.CUDARuntimeError), got
