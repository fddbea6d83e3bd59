"""The caller's CUDA device and stream, carried into zarr's event-loop thread.

``zarr.Array`` methods run every read as a coroutine in zarr's own loop thread
(``zarr.core.sync.sync``). CuPy's current device and stream are thread-locals, so the loop
thread sees its own, not the caller's. A context variable does cross: ``sync`` submits the
coroutine with ``asyncio.run_coroutine_threadsafe``, whose ``loop.call_soon_threadsafe`` copies
the *submitting* thread's context, and the task (and every task and ``asyncio.to_thread`` worker
it starts) runs in a copy of it.

So :func:`carry_caller_target` (called by :func:`gds_zarr.enable` when it resolves to the GPU)
wraps the ``sync`` that zarr's synchronous Array methods call: the wrapper captures
:func:`~gds_zarr._device.current_cuda_target` in the caller's thread into :data:`CALLER`
around zarr's own ``sync``. zarr offers no hook of its own for this (checked: zarr 3.1 and
3.4). :class:`NDBuffer` allocates zarr's output there, and the pipeline runs the read there.
On the CPU nothing is wrapped: a read costs what it did.

On the GPU :func:`carry_caller_target` also replaces ``zarr.Array.get_coordinate_selection``
(``z.vindex[...]``, ``z[int_array]``): zarr restores the selection's shape with
``np.array(out).reshape(...)``, which CuPy refuses (implicit conversion to NumPy: zarr-python
issue #3640, open). The replacement reshapes the result on its own device.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

from zarr.core.buffer import gpu as _zarr_gpu
from zarr.registry import register_ndbuffer

from gds_zarr._device import on_cuda_target

__all__ = ["CALLER", "NDBUFFER_PATH", "SYNC_MODULES", "NDBuffer", "caller_target",
           "carried", "carry_caller_target", "restore_sync"]

#: The CudaTarget of the thread that asked for the read in progress, or None (not known).
CALLER: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "gds_zarr_caller_target", default=None)

#: Modules whose ``sync`` (bound by ``from zarr.core.sync import sync``) runs array reads:
#: every ``zarr.Array`` getter, and ``zarr.load``.
SYNC_MODULES = ("zarr.core.array", "zarr.api.synchronous")

#: Set on our wrapper: the zarr ``sync`` it wraps.
_ORIGINAL = "_gds_zarr_wrapped_sync"

#: The key :func:`carry_caller_target` keeps zarr's ``Array.get_coordinate_selection`` under.
_COORDINATES = "zarr.core.array.Array.get_coordinate_selection"

#: zarr's ``ndbuffer`` config value that selects :class:`NDBuffer`.
NDBUFFER_PATH = "gds_zarr.pipeline._caller.NDBuffer"


def caller_target() -> Any:
    """The caller's :class:`~gds_zarr._device.CudaTarget`, or None where it is not known."""
    return CALLER.get()


@contextlib.contextmanager
def carried(target: Any) -> Iterator[None]:
    """Run the enclosed code (and the coroutines it submits) as asked for from ``target``."""
    token = CALLER.set(target)
    try:
        yield
    finally:
        CALLER.reset(token)


def _capture() -> Any:
    from gds_zarr._device import current_cuda_target

    return current_cuda_target()


def _carrying(sync: Callable[..., Any]) -> Callable[..., Any]:
    """zarr's ``sync``, run with the calling thread's CUDA target in :data:`CALLER`."""

    @functools.wraps(sync)
    def sync_from_caller(coro: Any, *args: Any, **kwargs: Any) -> Any:
        with carried(_capture()):  # in the caller's thread: its device and stream
            return sync(coro, *args, **kwargs)

    setattr(sync_from_caller, _ORIGINAL, sync)
    return sync_from_caller


def carry_caller_target(on: bool) -> dict[str, Callable[..., Any]]:
    """Make zarr's synchronous reads carry the caller's CUDA target (``on``), or be zarr's own.

    Returns
    -------
    dict
        The ``sync`` functions replaced, by module: pass them to :func:`restore_sync`.
    """
    previous: dict[str, Callable[..., Any]] = {}
    for name in SYNC_MODULES:
        module = importlib.import_module(name)
        current = getattr(module, "sync", None)
        if current is None:  # zarr moved it: reads fall back to the output's device
            continue
        original = getattr(current, _ORIGINAL, current)
        previous[name] = current
        module.sync = _carrying(original) if on else original  # type: ignore[attr-defined]
    from zarr.core.array import Array

    current = Array.get_coordinate_selection
    original = getattr(current, _ORIGINAL, current)
    previous[_COORDINATES] = current
    Array.get_coordinate_selection = (  # type: ignore[method-assign]
        _coordinates_on_device(original) if on else original)
    return previous


def restore_sync(previous: dict[str, Callable[..., Any]]) -> None:
    """Put back what :func:`carry_caller_target` replaced."""
    for name, fn in previous.items():
        if name == _COORDINATES:
            from zarr.core.array import Array

            Array.get_coordinate_selection = fn  # type: ignore[method-assign]
            continue
        importlib.import_module(name).sync = fn  # type: ignore[attr-defined]


def _coordinates_on_device(original: Callable[..., Any]) -> Callable[..., Any]:
    """``Array.get_coordinate_selection`` whose device results keep their device.

    zarr's body, with the final ``np.array(out).reshape(shape)`` replaced by ``out.reshape``
    for arrays that are not numpy's (zarr-python #3640); host results take zarr's own path.
    """

    @functools.wraps(original)
    def get_coordinate_selection(self: Any, selection: Any, *, out: Any = None,
                                 fields: Any = None, prototype: Any = None) -> Any:
        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.indexing import CoordinateIndexer

        if prototype is None:
            prototype = default_buffer_prototype()
        if not issubclass(prototype.nd_buffer, _zarr_gpu.NDBuffer):
            return original(self, selection, out=out, fields=fields, prototype=prototype)
        grid = getattr(self, "_chunk_grid", None) or self.metadata.chunk_grid  # zarr >= 3.2
        indexer = CoordinateIndexer(selection, self.shape, grid)
        module = importlib.import_module("zarr.core.array")
        result = module.sync(self.async_array._get_selection(
            indexer=indexer, out=out, fields=fields, prototype=prototype))
        if hasattr(result, "shape"):
            result = result.reshape(indexer.sel_shape)  # a copy in zarr; a view is enough
        return result

    setattr(get_coordinate_selection, _ORIGINAL, original)
    return get_coordinate_selection


class NDBuffer(_zarr_gpu.NDBuffer):
    """zarr's GPU ``NDBuffer``, allocated on the caller's CUDA device and stream.

    zarr creates a read's output in its loop thread; this puts it where the caller is (and
    ties CuPy's pool block to the caller's stream, on which the read then writes it). Without
    a known caller it is zarr's own.
    """

    @classmethod
    def create(cls, *, shape: Iterable[int], dtype: Any, order: Literal["C", "F"] = "C",
               fill_value: Any | None = None) -> NDBuffer:
        # docstring inherited
        with on_cuda_target(caller_target()):
            return super().create(shape=shape, dtype=dtype, order=order, fill_value=fill_value)

    @classmethod
    def empty(cls, shape: tuple[int, ...], dtype: Any,
              order: Literal["C", "F"] = "C") -> NDBuffer:
        # docstring inherited
        with on_cuda_target(caller_target()):
            return super().empty(shape, dtype, order)


register_ndbuffer(NDBuffer, qualname=NDBUFFER_PATH)
