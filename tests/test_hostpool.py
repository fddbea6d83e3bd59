"""The host staging pool: blocks reused once every view is gone, free blocks bounded by the
budget and unmapped when idle, a forked child's pool its own. A read's peak RSS with it is
tested in test_pipeline_budget.py."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

import gds_zarr
from gds_zarr import _hostpool
from gds_zarr._hostpool import HostPool

MIB = 1 << 20


def _address(a: np.ndarray) -> int:
    return int(a.ctypes.data)


def test_block_reused_once_every_view_is_gone() -> None:
    pool = HostPool()
    a = pool.empty(3 * MIB)
    first = _address(a)
    view = a[10:20]
    del a
    b = pool.empty(3 * MIB)  # the view still holds the first block
    assert _address(b) != first and pool.maps == 2
    del view
    c = pool.empty(3 * MIB + 12345)  # a nearby size fits the block's headroom
    assert _address(c) == first and pool.reuses == 1
    assert c.nbytes == 3 * MIB + 12345 and c.dtype == np.uint8 and c.flags.writeable
    del b, c
    assert pool.release() == 2 * 4 * MIB and pool.mapped == 0


def test_small_requests_bypass_the_pool() -> None:
    pool = HostPool()
    a = pool.empty(4096)
    assert a.nbytes == 4096 and pool.maps == 0 and a.flags.owndata


def test_too_small_free_blocks_are_unmapped_on_a_miss() -> None:
    pool = HostPool()
    a, b = pool.empty(2 * MIB), pool.empty(2 * MIB)
    del a, b
    assert pool.mapped == 2 * 3 * MIB  # 2 MiB + a quarter, rounded up to the granule
    c = pool.empty(8 * MIB)  # fits neither: both go, one larger block is mapped
    assert pool.mapped == 10 * MIB and pool.free_bytes == 0
    del c
    assert pool.free_bytes == 8 * MIB  # resident: the bytes handed out, not the headroom


def test_free_blocks_held_within_the_budget() -> None:
    pool = HostPool()
    with gds_zarr.settings.set(memory_budget="12MiB"):  # keeps 12 / 4 + 1 = 4 MiB
        arrays = [pool.empty(2 * MIB) for _ in range(4)]
        del arrays
    assert pool.free_bytes == 4 * MIB and pool.mapped == 2 * 3 * MIB  # the oldest two went
    pool.release()


def test_idle_blocks_unmapped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_hostpool, "IDLE_SECONDS", 0.05)
    pool = HostPool()
    a = pool.empty(2 * MIB)
    del a
    assert pool.mapped > 0
    deadline = time.monotonic() + 5
    while pool.mapped and time.monotonic() < deadline:
        time.sleep(0.02)
    assert pool.mapped == 0 and pool.free_bytes == 0


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
def test_forked_child_starts_empty() -> None:
    pool = HostPool()
    a = pool.empty(2 * MIB)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's block is not its pool's
        try:
            del a
            ok = pool.mapped == 0 and pool.free_bytes == 0
            b = pool.empty(2 * MIB)
            ok = ok and pool.mapped == 3 * MIB and b.nbytes == 2 * MIB
            os.write(w, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(w)
    got = os.read(r, 1)
    os.close(r)
    os.waitpid(pid, 0)
    assert got == b"1"
    del a
    assert pool.free_bytes == 2 * MIB
    pool.release()
