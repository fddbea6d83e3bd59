"""WindowLoader: the windows and their order (random, given, shuffled, epochs, ranks), several
arrays, backpressure in bytes, errors reaching the consumer, DLPack, and clean shutdown."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from pipeline_cases import make, sample_data

import gds_zarr
from gds_zarr import WindowLoader
from gds_zarr.pipeline import stats
from gds_zarr.store import GDSStore


@pytest.fixture
def arrays(tmp_path: Path) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    x = sample_data((6, 40, 36), "float32")
    y = sample_data((6, 40, 36, 2), "int16", seed=1)
    make(str(tmp_path / "x.zarr"), x, chunks=(1, 8, 8), shards=(2, 16, 16))
    make(str(tmp_path / "y.zarr"), y, chunks=(2, 10, 9, 2))
    zx = zarr.open_array(GDSStore(tmp_path / "x.zarr", read_only=True), mode="r")
    zy = zarr.open_array(GDSStore(tmp_path / "y.zarr", read_only=True), mode="r")
    return zx, zy, x, y


def _window(data: np.ndarray, corner: Any, window: tuple[int, ...]) -> np.ndarray:
    return data[tuple(slice(c, c + w) for c, w in zip(corner, window, strict=True))]


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name == "gds_zarr-loader"}


def test_random_windows_match_the_data(arrays: Any) -> None:
    zx, _, x, _ = arrays
    loader = WindowLoader(zx, window=(1, 8, 12), batch_size=5, seed=3, device="cpu")
    assert loader.n_windows == 6 * 5 * 3 and len(loader) == 18
    corners = loader.corners()
    batches = list(loader)
    assert [b.shape for b in batches] == [(5, 1, 8, 12)] * 18
    got = np.concatenate(batches)
    np.testing.assert_array_equal(got, np.stack([_window(x, c, (1, 8, 12)) for c in corners]))
    # The same seed and epoch: the same windows; another epoch: others.
    np.testing.assert_array_equal(np.concatenate(list(loader)), got)
    loader.set_epoch(1)
    assert not np.array_equal(loader.corners(), corners)
    assert not _threads()


def test_given_starts_in_order_or_shuffled(arrays: Any) -> None:
    zx, _, x, _ = arrays
    starts = np.array([[0, 0, 0], [5, 32, 28], [2, 3, 4], [1, 10, 11], [4, 7, 1]])
    fixed = WindowLoader(zx, window=(1, 8, 8), starts=starts, batch_size=2, device="cpu")
    got = list(fixed)
    assert [b.shape[0] for b in got] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate(got),
                                  np.stack([_window(x, c, (1, 8, 8)) for c in starts]))
    dropped = WindowLoader(zx, window=(1, 8, 8), starts=starts, batch_size=2, drop_last=True,
                           device="cpu")
    assert len(dropped) == 2 and len(list(dropped)) == 2
    shuffled = WindowLoader(zx, window=(1, 8, 8), starts=starts, shuffle=True, seed=1,
                            device="cpu")
    order = shuffled.corners()
    assert sorted(map(tuple, order.tolist())) == sorted(map(tuple, starts.tolist()))
    shuffled.set_epoch(2)
    assert not np.array_equal(shuffled.corners(), order)


def test_ranks_get_disjoint_shares(arrays: Any) -> None:
    zx, _, _, _ = arrays
    starts = np.array([[t, y, 0] for t in range(6) for y in range(0, 30, 3)])  # 60 corners
    shares = [WindowLoader(zx, window=(1, 4, 4), starts=starts, shuffle=True, seed=9,
                           rank=r, world_size=7, device="cpu").corners() for r in range(7)]
    assert {len(s) for s in shares} == {8}  # 60 // 7 each; 4 skipped this epoch
    seen = [tuple(c) for s in shares for c in s.tolist()]
    assert len(set(seen)) == 56  # disjoint
    assert set(seen) <= set(map(tuple, starts.tolist()))


def test_several_arrays_share_windows(arrays: Any) -> None:
    zx, zy, x, y = arrays
    loader = WindowLoader([zx, zy], window=(2, 9, 9), batch_size=4, n_windows=10, seed=0,
                          device="cpu")
    corners = loader.corners()
    out = list(loader)
    assert len(out) == 3 and all(isinstance(b, tuple) and len(b) == 2 for b in out)
    assert out[0][0].shape == (4, 2, 9, 9) and out[0][1].shape == (4, 2, 9, 9, 2)
    np.testing.assert_array_equal(np.concatenate([b[0] for b in out]),
                                  np.stack([_window(x, c, (2, 9, 9)) for c in corners]))
    np.testing.assert_array_equal(np.concatenate([b[1] for b in out]),
                                  np.stack([_window(y, c, (2, 9, 9)) for c in corners]))


def test_bad_arguments(arrays: Any) -> None:
    zx, _, _, _ = arrays
    with pytest.raises(ValueError, match="does not fit"):
        WindowLoader(zx, window=(1, 41, 8))
    with pytest.raises(ValueError, match=r"starts\[1\]"):
        WindowLoader(zx, window=(1, 8, 8), starts=[[0, 0, 0], [0, 33, 0]])
    with pytest.raises(ValueError, match="integer array"):
        WindowLoader(zx, window=(1, 8, 8), starts=[[0.5, 0, 0]])
    with pytest.raises(ValueError, match="rank"):
        WindowLoader(zx, window=(1, 8, 8), rank=2, world_size=2)
    with pytest.raises(ValueError, match="share"):
        WindowLoader([zx, _Shape((6, 41))], window=(1, 8))


class _Shape:
    """An array-like with only a shape and dtype (the check fails before any read)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape, self.dtype, self.ndim = shape, np.dtype("f4"), len(shape)


def test_backpressure_bounds_bytes_ahead(arrays: Any) -> None:
    zx, _, _, _ = arrays
    one = 4 * 1 * 8 * 8 * 4  # bytes of one batch
    loader = WindowLoader(zx, window=(1, 8, 8), batch_size=4, n_windows=40, seed=0,
                          prefetch=3 * one, device="cpu")
    stats.reset()
    it = iter(loader)
    deadline = time.monotonic() + 10
    while stats.read_many_calls < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # a reader that ignored the bound would have read more by now
    assert stats.read_many_calls == 3 and it.bytes_ahead == 3 * one
    next(it)
    deadline = time.monotonic() + 10
    while stats.read_many_calls < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert stats.read_many_calls == 4 and it.bytes_ahead <= 3 * one
    assert len(list(it)) == 9
    # A batch larger than the bound still goes: one at a time.
    small = WindowLoader(zx, window=(1, 8, 8), batch_size=4, n_windows=8, prefetch=1,
                         device="cpu")
    assert len(list(small)) == 2


def test_reader_error_reaches_consumer(tmp_path: Path) -> None:
    data = sample_data((4, 32, 32), "float32")
    path = tmp_path / "a.zarr"
    make(str(path), data, chunks=(1, 8, 8))
    z = zarr.open_array(GDSStore(path, read_only=True), mode="r")
    starts = np.array([[0, 0, 0]] * 3 + [[3, 24, 24]])
    (path / "c" / "3" / "3" / "3").write_bytes(b"not zstd at all")
    loader = WindowLoader(z, window=(1, 8, 8), starts=starts, batch_size=1, device="cpu")
    it = iter(loader)
    for _ in range(3):
        next(it)
    with pytest.raises(gds_zarr.errors.ChunkDecodeError, match="c/3/3/3"):
        next(it)
    with pytest.raises(StopIteration):
        next(it)
    assert not _threads()


def test_dlpack_shares_memory(arrays: Any) -> None:
    zx, _, _, _ = arrays
    batch = next(iter(WindowLoader(zx, window=(1, 8, 8), batch_size=2, device="cpu")))
    view = np.from_dlpack(batch)
    assert np.shares_memory(view, batch)
    torch = pytest.importorskip("torch")
    t = torch.from_dlpack(batch)
    assert t.data_ptr() == batch.ctypes.data


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_close_and_gc_stop_the_thread(arrays: Any) -> None:
    zx, _, _, _ = arrays
    fds = _fds()
    loader = WindowLoader(zx, window=(1, 8, 8), batch_size=2, n_windows=40, prefetch=64,
                          device="cpu")
    it = iter(loader)
    next(it)
    assert _threads()
    loader.close()
    assert not _threads()
    with pytest.raises(StopIteration):  # a closed iteration ends (it does not wait forever)
        next(it)
    with pytest.raises(StopIteration):
        next(iter(WindowLoader(zx, window=(1, 8, 8), starts=np.zeros((0, 3), int))))
    # Dropped mid-epoch without close: garbage collection stops it.
    it = iter(loader)
    next(it)
    del it
    gc.collect()
    assert not _threads()
    # Consumer interrupted (what Ctrl-C does to the loop body): the with block cleans up.
    with pytest.raises(KeyboardInterrupt), loader:
        for _ in loader:
            raise KeyboardInterrupt
    assert not _threads()
    assert _fds() == fds


def test_ctrl_c_in_a_real_process(arrays: Any, tmp_path: Path) -> None:
    zx, _, _, _ = arrays
    script = textwrap.dedent(f"""
        import threading, time, sys
        import numpy as np, zarr, gds_zarr
        z = zarr.open_array(gds_zarr.GDSStore({str(zx.store.root)!r}), mode="r")
        loader = gds_zarr.WindowLoader(z, window=(1, 8, 8), batch_size=2, n_windows=10**6,
                                       prefetch=256, device="cpu")
        try:
            for i, x in enumerate(loader):
                if i == 2:
                    print("ready", flush=True)
                time.sleep(0.01)
        except KeyboardInterrupt:
            loader.close()
            names = [t.name for t in threading.enumerate()]
            print("threads", sum(n == "gds_zarr-loader" for n in names), flush=True)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=30)
    assert p.returncode == 0 and out.strip() == "threads 0"
