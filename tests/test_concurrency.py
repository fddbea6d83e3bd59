"""Many readers and writers on one array, with real threads, real processes and real kills.

Every write is a whole chunk filled with one constant, so a reader can tell a torn chunk (two
constants, or bytes of a half-written file) from a whole one: every chunk a reader sees must be
uniform and hold a value some writer wrote whole (or the fill value before the first write). A
chunk written by one writer only must never go back to an older value in any reader (no
completed write lost), and after all writers finish it holds that writer's last value.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import zarr

import gds_zarr
from gds_zarr.io._cpu import is_temp_name
from gds_zarr.store import GDSStore

CHUNK = 4096          # float64 items per chunk: 32 KiB
NCHUNKS = 4
FILL = -1.0
SHARED, OWN_A, OWN_B = 0, 2, 3  # chunk 0: two writers; chunks 2, 3: one writer each; 1: none
WRITES = 30


def _value(writer: int, i: int) -> float:
    return float(writer * 1_000_000 + i)


def _create(root: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.create_array(GDSStore(root), shape=(NCHUNKS * CHUNK,), chunks=(CHUNK,),
                          dtype="float64", compressors=zarr.codecs.ZstdCodec(level=1),
                          fill_value=FILL)


def _open(root: str | Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return zarr.open_array(GDSStore(root), mode="r+")


def _write_chunks(root: str, writer: int, chunk: int, n: int) -> None:
    a = _open(root)
    block = np.empty(CHUNK, dtype="float64")
    for i in range(n):
        block.fill(_value(writer, i))
        a[chunk * CHUNK : (chunk + 1) * CHUNK] = block


def _allowed(writers_of: dict[int, list[int]], n: int) -> dict[int, set[float]]:
    return {c: {FILL} | {_value(w, i) for w in ws for i in range(n)}
            for c, ws in writers_of.items()}


WRITERS_OF = {SHARED: [0, 1], 1: [], OWN_A: [2], OWN_B: [3]}
CHUNK_OF_WRITER = {0: SHARED, 1: SHARED, 2: OWN_A, 3: OWN_B}


def _read_until(root: str, stop: Any, n: int) -> tuple[int, list[str]]:
    """Read the whole array until ``stop`` is set: ``(reads, problems)``.

    The caller enables the gds pipeline (globally in a child process, or around the threads).
    """
    allowed = _allowed(WRITERS_OF, n)
    last = {c: FILL for c in WRITERS_OF}
    reads, problems = 0, []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = zarr.open_array(GDSStore(root, read_only=True), mode="r")
    while True:
        done = stop.is_set()  # one more full read after the writers finished
        try:
            got = a[...].reshape(NCHUNKS, CHUNK)
        except Exception as e:  # noqa: BLE001 - any exception is a problem to report
            problems.append(f"read raised {type(e).__name__}: {e}")
            break
        reads += 1
        for c in WRITERS_OF:
            row = got[c]
            if not (row == row[0]).all():
                problems.append(f"chunk {c} torn: values {np.unique(row)[:4]}")
            elif float(row[0]) not in allowed[c]:
                problems.append(f"chunk {c} holds {row[0]}, which no writer wrote")
            elif len(WRITERS_OF[c]) == 1 and row[0] < last[c]:
                problems.append(f"chunk {c} went back from {last[c]} to {row[0]}")
            last[c] = float(row[0])
        if done or problems:
            break
    return reads, problems


def _check_final(root: Path, n: int) -> None:
    got = _open(root)[...].reshape(NCHUNKS, CHUNK)
    assert (got[1] == FILL).all()
    assert (got[OWN_A] == _value(2, n - 1)).all()
    assert (got[OWN_B] == _value(3, n - 1)).all()
    assert got[SHARED][0] in (_value(0, n - 1), _value(1, n - 1))
    assert (got[SHARED] == got[SHARED][0]).all()
    keys = sorted(k for k in os.listdir(root / "c"))
    assert keys == ["0", "2", "3"], keys  # no temp file left by a finished write


# ------------------------------------------------------------------------------ threads


def test_threads_never_see_a_torn_chunk_and_lose_no_write(tmp_path: Path) -> None:
    root = tmp_path / "a.zarr"
    _create(root)
    stop = threading.Event()
    results: list[tuple[int, list[str]]] = []
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            results.append(_read_until(str(root), stop, WRITES))
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    def writer(w: int) -> None:
        try:
            _write_chunks(str(root), w, CHUNK_OF_WRITER[w], WRITES)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    readers = [threading.Thread(target=reader) for _ in range(3)]
    writers = [threading.Thread(target=writer, args=(w,)) for w in CHUNK_OF_WRITER]
    with gds_zarr.enable(device="cpu"):
        try:
            for t in readers + writers:
                t.start()
            for t in writers:
                t.join(60)
        finally:
            stop.set()
            for t in readers:
                t.join(60)
    assert not errors, errors
    assert len(results) == 3
    for reads, problems in results:
        assert not problems, problems
        assert reads >= 2
    _check_final(root, WRITES)


# ------------------------------------------------------------------------------ processes


def _proc_reader(root: str, stop: Any, n: int, out: Any) -> None:
    gds_zarr.enable(device="cpu")
    out.put(_read_until(root, stop, n))


def _proc_writer(root: str, writer: int, n: int) -> None:
    _write_chunks(root, writer, CHUNK_OF_WRITER[writer], n)


def test_processes_never_see_a_torn_chunk_and_lose_no_write(tmp_path: Path) -> None:
    root = tmp_path / "a.zarr"
    _create(root)
    ctx = mp.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    readers = [ctx.Process(target=_proc_reader, args=(str(root), stop, WRITES, out))
               for _ in range(2)]
    writers = [ctx.Process(target=_proc_writer, args=(str(root), w, WRITES))
               for w in CHUNK_OF_WRITER]
    procs = readers + writers
    try:
        for p in procs:
            p.start()
        for p in writers:
            p.join(120)
            assert p.exitcode == 0
        stop.set()
        results = [out.get(timeout=120) for _ in readers]
        for p in readers:
            p.join(60)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    for reads, problems in results:
        assert not problems, problems
        assert reads >= 1
    _check_final(root, WRITES)


# ------------------------------------------------------------------------------ killed writer

BIG = 1 << 19  # float64 items: a 4 MiB chunk, written in slow 64 KiB pieces below

_KILLED_WRITER = textwrap.dedent("""
    import os, sys, time, warnings
    import numpy as np, zarr
    from gds_zarr.store import GDSStore
    warnings.simplefilter("ignore")
    a = zarr.open_array(GDSStore(sys.argv[1]), mode="r+")
    a[:] = np.full(a.shape, 1.0)
    real_write = os.write
    def slow_write(fd, data):  # a slow disk: short writes of 64 KiB, 2 ms apart
        time.sleep(0.002)
        return real_write(fd, memoryview(data)[: 64 << 10])
    os.write = slow_write
    print("ready", flush=True)
    a[:] = np.full(a.shape, 2.0)
    print("finished", flush=True)
""")


def test_writer_killed_mid_write_leaves_the_previous_chunk(tmp_path: Path) -> None:
    root = tmp_path / "a.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.create_array(GDSStore(root), shape=(BIG,), chunks=(BIG,), dtype="float64",
                          compressors=None, fill_value=FILL)
    child = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(root)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 30
        temp: list[str] = []
        while not temp and time.monotonic() < deadline:
            temp = [n for n in os.listdir(root / "c") if is_temp_name(n)]
            time.sleep(0.001)
        assert temp, "the slow write never showed its temporary file"
        time.sleep(0.02)  # well inside the ~130 ms the write takes
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    # The temporary file is still on disk (killed writers clean up nothing) ...
    assert any(is_temp_name(n) for n in os.listdir(root / "c"))
    # ... but no listing shows it, and the chunk is the previous value, whole.
    store = GDSStore(root)

    async def listings() -> tuple[list[str], list[str]]:
        return ([k async for k in store.list()], [k async for k in store.list_dir("c")])

    keys, names = asyncio.run(listings())
    assert sorted(keys) == ["c/0", "zarr.json"] and names == ["0"]
    with gds_zarr.enable(device="cpu"):
        got = zarr.open_array(GDSStore(root, read_only=True), mode="r")[...]
    assert (got == 1.0).all()
    # A later writer replaces the chunk normally, the stale temp file notwithstanding.
    _open(root)[:] = np.full(BIG, 3.0)
    assert (_open(root)[...] == 3.0).all()

