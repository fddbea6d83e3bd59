"""The caller's CUDA target, carried into zarr's event-loop thread (pipeline/_caller.py).

On the CPU the target is a sentinel: ``_capture`` (CuPy's current device and stream on a GPU)
is replaced by a function of the calling thread, and a spy on the pipeline's fast path records
what a real zarr read sees in zarr's loop thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zarr
import zarr.api.synchronous
import zarr.core.array
from zarr.core.sync import sync as zarr_sync
from zarr.storage import MemoryStore

from gds_zarr.pipeline import _caller, _enable, _gpuread, _pipeline, enable, stats
from gds_zarr.pipeline._caller import (
    NDBUFFER_PATH,
    NDBuffer,
    caller_target,
    carried,
    carry_caller_target,
    restore_sync,
)


def _original_syncs() -> dict[str, Any]:
    import importlib

    return {m: importlib.import_module(m).sync for m in _caller.SYNC_MODULES}


def test_zarr_sync_hands_the_callers_context_to_the_coroutine() -> None:
    """The fact the mechanism rests on, for the installed zarr (3.1 and 3.4 in CI)."""
    var: contextvars.ContextVar[str | None] = contextvars.ContextVar("probe", default=None)

    async def probe() -> tuple[Any, ...]:
        async def in_task() -> str | None:
            return var.get()

        # The coroutine, a task it starts and a worker thread it hands work to.
        return (var.get(), *await asyncio.gather(in_task(), asyncio.to_thread(var.get)))

    token = var.set("caller")
    try:
        assert zarr_sync(probe()) == ("caller", "caller", "caller")
    finally:
        var.reset(token)
    assert zarr_sync(probe()) == (None, None, None)


def test_array_reads_call_the_wrapped_sync_names() -> None:
    """Every name wrapped exists and is zarr's sync (a zarr that moves it fails here)."""
    for module, fn in _original_syncs().items():
        assert fn is zarr_sync, module


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    """What the pipeline's fast path sees: (caller_target() on entry, after a loop turn)."""
    seen: list[tuple[Any, Any]] = []
    real = _pipeline.fast_read

    async def fast_read(*args: Any, **kwargs: Any) -> Any:
        first = caller_target()
        await asyncio.sleep(0.002)  # let concurrent reads of other threads interleave
        seen.append((first, caller_target()))
        return await real(*args, **kwargs)

    monkeypatch.setattr(_pipeline, "fast_read", fast_read)
    return seen


@pytest.fixture
def carrying(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """zarr's sync wrapped as on a GPU, capturing the calling thread's name as its target."""
    monkeypatch.setattr(_caller, "_capture", lambda: f"target of {threading.current_thread().name}")
    with enable(device="cpu"):
        previous = carry_caller_target(True)
        try:
            yield
        finally:
            restore_sync(previous)


def _array(shape: tuple[int, ...] = (8, 8)) -> zarr.Array:
    store = MemoryStore()
    z = zarr.create_array(store, shape=shape, chunks=(4, 4), dtype="i4")
    z[...] = np.arange(np.prod(shape), dtype="i4").reshape(shape)
    return zarr.open_array(store, mode="r")


GETTERS = {
    "getitem": lambda z: z[1:6, 2],
    "basic": lambda z: z.get_basic_selection((slice(0, 5), 1)),
    "orthogonal": lambda z: z.get_orthogonal_selection(([0, 5], slice(None))),
    "oindex": lambda z: z.oindex[[1, 6], :],
    "vindex": lambda z: z.vindex[[0, 7], [1, 2]],
    "coordinate": lambda z: z.get_coordinate_selection(([0, 7], [1, 2])),
    "mask": lambda z: z.get_mask_selection(np.eye(8, dtype=bool)),
    "block": lambda z: z.get_block_selection((1, 0)),
    "blocks": lambda z: z.blocks[0, 1],
    "load": lambda z: zarr.load(z.store),
}


@pytest.mark.parametrize("how", sorted(GETTERS))
def test_every_array_read_sees_the_callers_target(carrying: None, spy: list[Any],
                                                  how: str) -> None:
    z = _array()
    stats.reset()
    GETTERS[how](z)
    me = f"target of {threading.current_thread().name}"
    assert spy and all(s == (me, me) for s in spy), spy
    assert stats.fast_reads >= 1
    assert caller_target() is None  # the caller's own context is left as it was


def test_without_the_gpu_nothing_is_carried(spy: list[Any]) -> None:
    with enable(device="cpu"):
        assert _original_syncs() == dict.fromkeys(_caller.SYNC_MODULES, zarr_sync)
        _array()[...]
    assert spy and all(s == (None, None) for s in spy)


def test_concurrent_threads_each_see_their_own(carrying: None, spy: list[Any]) -> None:
    arrays = {f"reader-{i}": _array() for i in range(3)}
    spy.clear()
    barrier = threading.Barrier(len(arrays))
    errors: list[BaseException] = []

    def reader(z: zarr.Array) -> None:
        try:
            barrier.wait(timeout=30)
            for _ in range(15):
                z[...]
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(z,), name=name)
               for name, z in arrays.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(spy) == 45
    for first, later in spy:
        assert first == later and first in {f"target of {n}" for n in arrays}, (first, later)
    counts = {name: sum(s[0] == f"target of {name}" for s in spy) for name in arrays}
    assert counts == dict.fromkeys(arrays, 15)


def test_enable_on_the_gpu_wraps_sync_and_restores_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_enable, "resolve_device", lambda device: device)  # "gpu" usable
    original = _original_syncs()
    with enable(device="gpu") as on:
        assert on.device == "gpu"
        assert zarr.config.get("ndbuffer") == NDBUFFER_PATH
        wrapped = _original_syncs()
        assert all(wrapped[m] is not original[m] for m in original)
        assert all(fn._gds_zarr_wrapped_sync is zarr_sync for fn in wrapped.values())
        with enable(device="cpu"):  # nested: zarr's own sync again ...
            assert _original_syncs() == original
        assert _original_syncs() == wrapped  # ... and the GPU's back on its exit
        again = enable(device="gpu")  # enabling twice wraps zarr's sync once
        assert zarr.core.array.sync._gds_zarr_wrapped_sync is zarr_sync
        again.restore()
        assert _original_syncs() == wrapped
    assert _original_syncs() == original
    assert zarr.core.array.sync is zarr_sync and zarr.api.synchronous.sync is zarr_sync


def test_wrapped_sync_keeps_zarrs_contract(carrying: None) -> None:
    async def boom() -> None:
        raise KeyError("inner")

    async def value() -> int:
        return 7

    assert zarr.core.array.sync(value()) == 7
    with pytest.raises(KeyError, match="inner"):
        zarr.core.array.sync(boom())
    assert caller_target() is None


def test_ndbuffer_allocates_on_the_callers_target(monkeypatch: pytest.MonkeyPatch) -> None:
    """zarr allocates a read's output in its loop thread: under the caller's target."""
    from zarr.core.buffer import gpu

    entered: list[Any] = []

    class Recorder:
        def __init__(self, target: Any) -> None:
            entered.append(target)

        def __enter__(self) -> None:
            return None

        def __exit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr(_caller, "on_cuda_target", Recorder)
    monkeypatch.setattr(gpu, "cp", np)  # numpy stands in for CuPy: arrays on the host
    with zarr.config.set({"ndbuffer": NDBUFFER_PATH}):
        assert zarr.registry.get_ndbuffer_class() is NDBuffer
    with pytest.warns(UserWarning, match="cuda_array_interface"), carried("sentinel"):
        a = NDBuffer.create(shape=(2, 3), dtype="i4", fill_value=5)
        b = NDBuffer.empty((4,), "f8")
    assert entered == ["sentinel", "sentinel"]
    np.testing.assert_array_equal(a.as_ndarray_like(), np.full((2, 3), 5, "i4"))
    assert b.as_ndarray_like().shape == (4,)


class _Dev:
    def __init__(self, id: int) -> None:
        self.id = id


class _Out:
    def __init__(self, device: int) -> None:
        self.device = _Dev(device)


def test_read_target_prefers_the_caller_on_the_outputs_device(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from gds_zarr._device import CudaTarget

    monkeypatch.setattr(_gpuread, "target_of", lambda out: ("out's own", out.device.id))
    caller = CudaTarget(1, "caller stream")
    assert _gpuread.read_target(_Out(1)) == ("out's own", 1)  # no caller known
    with carried(caller):
        assert _gpuread.read_target(_Out(1)) is caller
        # An ``out=`` on another device: the caller's stream cannot run there.
        assert _gpuread.read_target(_Out(0)) == ("out's own", 0)
