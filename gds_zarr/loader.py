"""WindowLoader: batches of windows of zarr arrays for training, read ahead in the background.

Each batch is one :func:`gds_zarr.read_many` call per array (every chunk the batch touches read
and decoded once). A background thread reads the next batches while the consumer works, bounded
by ``prefetch`` bytes: the queue with byte-based backpressure of zarr-python issue #1806::

    import zarr, gds_zarr

    z = zarr.open_array(gds_zarr.GDSStore("era5.zarr"), mode="r")     # (time, lat, lon)
    loader = gds_zarr.WindowLoader(z, window=(1, 64, 64), batch_size=32, seed=0,
                                   rank=rank, world_size=world_size, prefetch="512MiB")
    for epoch in range(10):
        loader.set_epoch(epoch)
        for x in loader:                 # (32, 1, 64, 64): CuPy on a GPU, NumPy on the CPU
            x = torch.from_dlpack(x)     # no copy

Every batch is a new array that the loader never touches again, so a consumer may keep it (or
a DLPack view of it) as long as it likes. No framework is a dependency.
"""

from __future__ import annotations

import asyncio
import math
import queue
import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from gds_zarr._device import Device, resolve_device
from gds_zarr.settings import parse_bytes

__all__ = ["WindowLoader"]

_DONE = object()


class WindowLoader:
    """Batches of equal windows of one array, or the same windows of several arrays.

    Parameters
    ----------
    arrays
        A ``zarr.Array``, or a sequence of them (e.g. inputs and targets) whose first
        ``len(window)`` axes have the same length: every batch then holds the same windows of
        each, as a tuple in the same order. Axes past ``len(window)`` are read whole.
    window
        Window shape over the leading axes, e.g. ``(1, 64, 64)``.
    batch_size
        Windows per batch.
    starts
        Given window corners: an integer array of shape ``(n, len(window))``, used in that
        order unless ``shuffle``. Without it, each epoch draws ``n_windows`` random corners
        from ``seed`` and the epoch number.
    n_windows
        Random windows per epoch (without ``starts``); default: as many as fit in the array
        side by side without overlap.
    shuffle
        Shuffle the given ``starts`` anew each epoch (from ``seed`` and the epoch number).
    seed
        Seed of the random corners and of the shuffle; every rank must use the same one.
    rank, world_size
        Data-parallel share: rank ``r`` reads windows ``r, r + world_size, ...`` of the epoch's
        order, so the ranks' shares are disjoint and, put together, the whole epoch. The last
        ``n % world_size`` windows of an epoch are skipped so that every rank gets as many.
    drop_last
        Skip a last batch smaller than ``batch_size``.
    prefetch
        Bytes of batches read ahead and not yet taken by the consumer (an int or a string such
        as ``"512MiB"``). At least one batch is read ahead, whatever its size.
    device
        ``"cpu"``, ``"gpu"`` or ``"auto"``; None: the ``device`` setting.

    Raises
    ------
    ValueError
        Window larger than the arrays, arrays whose leading axes differ, corners out of range,
        a bad rank or batch size.
    """

    def __init__(self, arrays: Any, window: Sequence[int], *, batch_size: int = 32,
                 starts: Any = None, n_windows: int | None = None, shuffle: bool = False,
                 seed: int = 0, rank: int = 0, world_size: int = 1, drop_last: bool = False,
                 prefetch: int | str = "256MiB", device: str | None = None) -> None:
        self._single = not isinstance(arrays, list | tuple)
        self._arrays = [arrays] if self._single else list(arrays)
        if not self._arrays:
            raise ValueError("WindowLoader needs at least one array")
        self.window = tuple(int(w) for w in window)
        k = len(self.window)
        lead = tuple(int(s) for s in self._arrays[0].shape[:k])
        if len(lead) != k:
            raise ValueError(f"window {self.window} has more axes than the array "
                             f"({self._arrays[0].ndim})")
        for a in self._arrays[1:]:
            if tuple(int(s) for s in a.shape[:k]) != lead:
                raise ValueError(f"arrays must share their first {k} axes: {lead} vs "
                                 f"{tuple(a.shape[:k])}")
        if any(w < 1 or w > s for w, s in zip(self.window, lead, strict=True)):
            raise ValueError(f"window {self.window} does not fit in the arrays' leading "
                             f"axes {lead}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, "
                             f"world_size={world_size}")
        self._lead = lead
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.drop_last = bool(drop_last)
        self.prefetch = parse_bytes(prefetch)
        self.device = resolve_device(device)
        self.epoch = 0
        self._starts = None if starts is None else self._check_starts(starts)
        if self._starts is not None:
            self.n_windows = len(self._starts)
        else:
            fit = math.prod(s // w for s, w in zip(lead, self.window, strict=True))
            self.n_windows = int(n_windows) if n_windows is not None else max(1, fit)
        # Bytes of one window of every array: what backpressure counts.
        self._window_nbytes = sum(
            math.prod(self.window) * math.prod(int(s) for s in a.shape[k:])
            * np.dtype(a.dtype).itemsize for a in self._arrays)
        self._iterators: weakref.WeakSet[_Batches] = weakref.WeakSet()

    def _check_starts(self, starts: Any) -> np.ndarray:
        s = np.asarray(starts)
        if s.ndim != 2 or s.shape[1] != len(self.window) or s.dtype.kind not in "iu":
            raise ValueError(f"starts must be an integer array of shape (n, {len(self.window)})"
                             f", got {s.dtype} {s.shape}")
        s = s.astype(np.int64)
        hi = np.asarray(self._lead) - np.asarray(self.window)
        bad = (s < 0) | (s > hi)
        if bad.any():
            i = int(np.flatnonzero(bad.any(axis=1))[0])
            raise ValueError(f"starts[{i}] = {s[i].tolist()}: a window {self.window} there "
                             f"does not fit in {self._lead}")
        return s

    # -- the epoch's windows -------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s windows and order from the next iteration on (as PyTorch's
        ``DistributedSampler.set_epoch``); without it every iteration repeats epoch 0."""
        self.epoch = int(epoch)

    def corners(self, epoch: int | None = None) -> np.ndarray:
        """This rank's window corners for ``epoch`` (default: the current one), in read order.

        Returns
        -------
        numpy.ndarray
            int64 ``(n, len(window))``.
        """
        e = self.epoch if epoch is None else int(epoch)
        rng = np.random.default_rng([self.seed, e])
        if self._starts is None:
            hi = np.asarray(self._lead) - np.asarray(self.window) + 1
            order = rng.integers(0, hi, size=(self.n_windows, len(self.window)), dtype=np.int64)
        elif self.shuffle:
            order = self._starts[rng.permutation(len(self._starts))]
        else:
            order = self._starts
        usable = len(order) - len(order) % self.world_size
        return order[self.rank:usable:self.world_size]

    def __len__(self) -> int:
        """Batches this rank reads per epoch."""
        n = self.n_windows // self.world_size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def selections(self, corners: np.ndarray) -> list[tuple[slice, ...]]:
        """The basic selections (over the leading axes) of windows at ``corners``."""
        w = self.window
        return [tuple(slice(c, c + d) for c, d in zip(row, w, strict=True))
                for row in corners.tolist()]

    # -- iteration -------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        corners = self.corners()
        n = len(corners)
        stop = n - n % self.batch_size if self.drop_last else n
        groups = [corners[i:i + self.batch_size] for i in range(0, stop, self.batch_size)]
        it = _Batches(self, groups)
        self._iterators.add(it)
        return it

    def close(self) -> None:
        """Stop every iteration in progress: background threads end and buffered batches are
        dropped. Iterating again afterwards starts afresh."""
        for it in list(self._iterators):
            it.close()

    def __enter__(self) -> WindowLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"WindowLoader(window={self.window}, batch_size={self.batch_size}, "
                f"n_windows={self.n_windows}, rank={self.rank}/{self.world_size}, "
                f"device={self.device!r})")


class _State:
    """What the reader thread shares with the consumer; holds no reference to either object,
    so a dropped iterator is collected and its finalizer stops the thread."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.cond = threading.Condition()
        self.ahead = 0          # bytes read and not yet taken (or being read)
        self.stopped = False
        self.items: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def reserve(self, nbytes: int) -> bool:
        """Wait until ``nbytes`` more fit (always true when nothing is ahead); False if
        stopped."""
        with self.cond:
            while not self.stopped and self.ahead and self.ahead + nbytes > self.limit:
                self.cond.wait()
            if self.stopped:
                return False
            self.ahead += nbytes
            return True

    def release(self, nbytes: int) -> None:
        with self.cond:
            self.ahead -= nbytes
            self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()


def _read_all(arrays: list[Any], groups: list[list[Any]], nbytes: list[int], device: Device,
              state: _State, use_own_loop: bool, cuda_device: int | None) -> None:
    """The reader thread: each batch's windows of every array, in order, into the queue.

    On the GPU it works on the consumer's device, on a stream of its own (so its kernels
    overlap the consumer's); every batch is complete on the device before it is queued.
    Whatever happens, the consumer gets an item that ends its wait: a failure before the first
    batch (no stream on a dead CUDA context) is handed over as a batch's would be.
    """
    try:
        if cuda_device is None:
            _read_batches(arrays, groups, nbytes, device, state, use_own_loop)
            return
        import cupy

        with cupy.cuda.Device(cuda_device), cupy.cuda.Stream(non_blocking=True):
            _read_batches(arrays, groups, nbytes, device, state, use_own_loop)
    except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises
        state.items.put((e, 0))
    finally:
        state.items.put((_DONE, 0))


def _read_batches(arrays: list[Any], groups: list[list[Any]], nbytes: list[int], device: Device,
                  state: _State, use_own_loop: bool) -> None:
    from zarr.core.sync import sync

    from gds_zarr.pipeline._many import read_windows

    target = None
    if device == "gpu":  # zarr's loop thread may run the reads: they run on this thread's target
        from gds_zarr._device import current_cuda_target

        target = current_cuda_target()

    async def one(sels: list[Any]) -> Any:
        if len(arrays) == 1:
            return await read_windows(arrays[0], sels, device, target)
        return tuple(await asyncio.gather(*(read_windows(a, sels, device, target)
                                            for a in arrays)))

    loop = asyncio.new_event_loop() if use_own_loop else None
    try:
        for sels, size in zip(groups, nbytes, strict=True):
            if not state.reserve(size):
                return
            try:
                batch = (loop.run_until_complete(one(sels)) if loop is not None
                         else sync(one(sels)))
            except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises
                state.items.put((e, size))
                return
            state.items.put((batch, size))
    finally:
        if loop is not None:
            loop.close()


class _Batches(Iterator[Any]):
    """One pass over an epoch's batches, read ahead by a background thread."""

    def __init__(self, loader: WindowLoader, groups: list[np.ndarray]) -> None:
        from gds_zarr.pipeline._storeio import is_gds_store

        self._state = _State(loader.prefetch)
        self._left = len(groups)
        sels = [loader.selections(g) for g in groups]
        sizes = [len(g) * loader._window_nbytes for g in groups]
        # GDSStore reads need no particular event loop: the thread runs its own (no hop to
        # zarr's loop thread per batch). Other stores may be bound to zarr's loop.
        own = all(is_gds_store(a.store) for a in loader._arrays)
        cuda_device = None
        if loader.device == "gpu":
            from gds_zarr._device import current_cuda_target

            cuda_device = current_cuda_target().device  # the consumer's device
        self._thread = threading.Thread(
            target=_read_all, name="gds_zarr-loader", daemon=True,
            args=(loader._arrays, sels, sizes, loader.device, self._state, own, cuda_device))
        self._single = loader._single
        self._finalizer = weakref.finalize(self, _shutdown, self._state, self._thread)
        self._thread.start()

    @property
    def bytes_ahead(self) -> int:
        """Bytes of batches read (or being read) and not yet taken."""
        return self._state.ahead

    def __next__(self) -> Any:
        if self._left == 0:
            self.close()
            raise StopIteration
        item, size = self._state.items.get()
        self._state.release(size)
        if item is _DONE:
            self._left = 0
            self.close()
            raise StopIteration
        if isinstance(item, BaseException):
            self._left = 0
            self.close()
            raise item
        self._left -= 1
        return item

    def close(self) -> None:
        """Stop the reader thread and drop the batches it read ahead; ``next`` then raises
        ``StopIteration``."""
        self._left = 0
        self._finalizer()


def _shutdown(state: _State, thread: threading.Thread) -> None:
    state.stop()
    if thread is not threading.current_thread():
        thread.join()  # at most one batch read still in flight
    while True:  # drop buffered batches: their memory goes with them
        try:
            state.items.get_nowait()
        except queue.Empty:
            break
