"""Resource limits: the file-handle cache bound, descriptors under ``ulimit -n``, cancellation.

The GPU backend's handle cache is tested with a plain-file opener (its LRU, reference counting
and bounds need no GPU); the CPU backend runs with a lowered ``RLIMIT_NOFILE`` in a subprocess;
cancellation (asyncio) and interruption (SIGINT -> KeyboardInterrupt) must leave no stuck
threads and no leaked descriptors.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from zarr.core.buffer import default_buffer_prototype

import gds_zarr
from gds_zarr.io._gpu import _HandleCache, handle_cache_limit
from gds_zarr.store import GDSStore

PROTO = default_buffer_prototype()


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _busy_in_gds_zarr() -> list[str]:
    """Threads (other than this one) with gds_zarr code on their stack: work still running."""
    here = threading.get_ident()
    names = {t.ident: t.name for t in threading.enumerate()}
    busy = []
    for ident, frame in sys._current_frames().items():
        f: Any = frame
        while ident != here and f is not None:
            if f"{os.sep}gds_zarr{os.sep}" in f.f_code.co_filename:
                busy.append(names.get(ident, str(ident)))
                break
            f = f.f_back
    return busy


async def _settle(measure: Callable[[], Any], done: Callable[[Any], bool],
                  timeout: float = 10.0) -> Any:
    """Poll ``measure()`` (without a thread of its own) until ``done`` or the timeout."""
    deadline = time.monotonic() + timeout
    value = measure()
    while not done(value) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        value = measure()
    return value


# ------------------------------------------------------------------------- handle cache


class _FileHandle:
    """A real open descriptor standing in for a CuFile (which needs a GPU)."""

    open_now = 0
    lock = threading.Lock()

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDONLY)
        self.closed = False
        with _FileHandle.lock:
            _FileHandle.open_now += 1

    def close(self) -> None:
        assert not self.closed, "closed twice"
        os.close(self.fd)
        self.closed = True
        with _FileHandle.lock:
            _FileHandle.open_now -= 1


@pytest.fixture
def files(tmp_path: Path) -> list[str]:
    paths = []
    for i in range(32):
        p = tmp_path / f"f{i}"
        p.write_bytes(bytes([i]) * 16)
        paths.append(str(p))
    return paths


def _ident(path: str) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def test_handle_cache_is_an_lru_bounded_by_the_setting(files: list[str]) -> None:
    cache = _HandleCache(_FileHandle)
    _FileHandle.open_now = 0
    with gds_zarr.settings.set(file_handle_cache_size=4):
        assert handle_cache_limit() == 4
        for p in files[:10]:
            entry, new = cache.acquire(p, _ident(p))
            assert new
            cache.release(entry)
            assert len(cache) <= 4 and _FileHandle.open_now <= 4
        # files[6:10] are cached; using files[6] makes files[7] the least recent.
        entry, new = cache.acquire(files[6], _ident(files[6]))
        assert not new
        cache.release(entry)
        cache.release(cache.acquire(files[20], _ident(files[20]))[0])
        assert not cache.acquire(files[6], _ident(files[6]))[1]   # kept
        assert cache.acquire(files[7], _ident(files[7]))[1]       # evicted, reopened
    cache.clear()
    assert len(cache) == 0 and _FileHandle.open_now == 2  # the two still held


def test_evicted_handle_is_closed_only_after_its_last_reader(files: list[str]) -> None:
    cache = _HandleCache(_FileHandle)
    with gds_zarr.settings.set(file_handle_cache_size=2):
        held, _ = cache.acquire(files[0], _ident(files[0]))
        again, new = cache.acquire(files[0], _ident(files[0]))
        assert not new and again is held and held.refs == 2
        for p in files[1:4]:
            cache.release(cache.acquire(p, _ident(p))[0])
        assert held.evicted and not held.handle.closed  # a pread may still use it
        cache.release(held)
        assert not held.handle.closed
        cache.release(again)
        assert held.handle.closed
    cache.clear()


def test_replaced_file_is_reopened_not_read_stale(files: list[str]) -> None:
    cache = _HandleCache(_FileHandle)
    old, _ = cache.acquire(files[0], _ident(files[0]))
    cache.release(old)
    tmp = files[0] + ".new"
    Path(tmp).write_bytes(b"replaced, longer than before")
    os.replace(tmp, files[0])
    new, opened = cache.acquire(files[0], _ident(files[0]))
    assert opened and new is not old and old.handle.closed
    assert os.pread(new.handle.fd, 8, 0) == b"replaced"
    cache.release(new)
    cache.clear()


def test_handle_cache_limit_follows_ulimit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        with gds_zarr.settings.set(file_handle_cache_size=1000):
            assert handle_cache_limit() == 16  # each CuFile holds two descriptors: <= 1/4
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_handle_cache_under_concurrent_readers(files: list[str]) -> None:
    cache = _HandleCache(_FileHandle)
    _FileHandle.open_now = 0
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(300):
                p = rng.choice(files)
                entry, _ = cache.acquire(p, _ident(p))
                assert not entry.handle.closed
                assert os.pread(entry.handle.fd, 1, 0) == bytes([files.index(p)])
                cache.release(entry)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    with gds_zarr.settings.set(file_handle_cache_size=5):
        threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len(cache) <= 5
        assert _FileHandle.open_now == len(cache)  # nothing leaked: cached or closed
    cache.clear()
    assert _FileHandle.open_now == 0


# ------------------------------------------------------------------------- ulimit -n, CPU

_LOW_ULIMIT_CHILD = textwrap.dedent("""
    import json, os, resource, sys, warnings
    import numpy as np, zarr, gds_zarr
    from zarr.core.buffer import default_buffer_prototype
    from gds_zarr.store import GDSStore
    warnings.simplefilter("ignore")
    root, limit = sys.argv[1], int(sys.argv[2])
    store = GDSStore(root)
    keys = [f"f/{i // 64}/{i % 64}" for i in range(4096)]
    gds_zarr.settings.set(io_threads=8)
    zarr.open_array(GDSStore(root + "/arr"), mode="r")[:1]  # import everything first
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(
        resource.RLIMIT_NOFILE)[1]))
    got = store.get_partial_values_sync(default_buffer_prototype(), [(k, None) for k in keys])
    ok = all(b is not None and b.to_bytes() == i.to_bytes(4, "little") * 4
             for i, b in enumerate(got))
    batch = store.read_batch(keys, device="cpu")
    gds_zarr.enable(device="cpu")
    arr = zarr.open_array(GDSStore(root + "/arr"), mode="r")[...]
    print(json.dumps({"ok": ok, "batch": int(batch.present.sum()),
                      "arr": bool((arr == np.arange(arr.size).reshape(arr.shape)).all()),
                      "fds": len(os.listdir("/proc/self/fd"))}))
""")


def test_cpu_backend_reads_4096_files_under_a_low_ulimit(tmp_path: Path) -> None:
    import zarr

    root = tmp_path / "s"
    for i in range(4096):
        d = root / "f" / str(i // 64)
        d.mkdir(parents=True, exist_ok=True)
        (d / str(i % 64)).write_bytes(i.to_bytes(4, "little") * 4)
    a = zarr.create_array(GDSStore(root / "arr"), shape=(64, 64), chunks=(1, 1), dtype="i4",
                          compressors=None)
    a[...] = np.arange(64 * 64).reshape(64, 64)  # 4096 chunk files
    proc = subprocess.run([sys.executable, "-c", _LOW_ULIMIT_CHILD, str(root), "48"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == {"ok": True, "batch": 4096, "arr": True, "fds": got["fds"]}
    assert got["fds"] < 48


# ------------------------------------------------------------------------- cancellation


@pytest.fixture
def many_files(tmp_path: Path) -> tuple[GDSStore, list[str]]:
    store = GDSStore(tmp_path / "s")
    payload = bytes(16 << 10)
    keys = [f"c/{i // 64}/{i % 64}" for i in range(4096)]
    for k in keys:
        p = store.root / k
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(payload)
    return store, keys


async def test_cancelled_read_leaves_no_threads_or_descriptors(
        many_files: tuple[GDSStore, list[str]]) -> None:
    store, keys = many_files
    pairs = [(k, None) for k in keys]
    with gds_zarr.settings.set(io_threads=4):
        await store.get_partial_values(PROTO, pairs)  # warm: pools and executor threads exist
        threads, fds = threading.active_count(), _fds()
        cancelled = 0
        for delay in (0.0, 0.005, 0.02):
            task = asyncio.create_task(store.get_partial_values(PROTO, pairs))
            await asyncio.sleep(delay)
            if task.cancel():
                cancelled += 1
            with pytest.raises(asyncio.CancelledError):
                await task
            # The worker thread finishes its batch, closes what it opened and goes idle.
            assert await _settle(_busy_in_gds_zarr, lambda b: not b) == []
            assert await _settle(_fds, lambda n: n <= fds) <= fds
        assert cancelled == 3
        # Idle executor workers may have been added (asyncio's default executor adds one for a
        # call submitted while a cancelled one still runs: how many depends on the timing), but
        # never one per cancelled read.
        assert threading.active_count() < threads + cancelled
        # And the store still works.
        got = await store.get_partial_values(PROTO, pairs[:3])
        assert all(b is not None and len(b) == 16 << 10 for b in got)


_SIGINT_CHILD = textwrap.dedent("""
    import json, os, sys, threading, time, warnings
    import zarr, gds_zarr
    from zarr.core.buffer import default_buffer_prototype
    from gds_zarr.store import GDSStore
    warnings.simplefilter("ignore")
    root, mode, ROUNDS = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = GDSStore(root)
    pairs = [(f"c/{i // 64}/{i % 64}", None) for i in range(4096)]
    gds_zarr.enable(device="cpu", io_threads=4)
    arr = zarr.open_array(GDSStore(root + "/arr"), mode="r")

    def read():
        if mode == "store":
            store.get_partial_values_sync(default_buffer_prototype(), pairs)
        else:
            arr[...]

    def busy():  # threads with gds_zarr code on their stack: work still running
        names = {t.ident: t.name for t in threading.enumerate()}
        out = []
        for ident, f in sys._current_frames().items():
            top = f
            while ident != threading.get_ident() and f is not None:
                if os.sep + "gds_zarr" + os.sep in f.f_code.co_filename:
                    # Where it is, for the failure message: its name, the gds_zarr frame and
                    # the innermost frame (what it waits on).
                    out.append(f"{names.get(ident)}: {os.path.basename(f.f_code.co_filename)}:"
                               f"{f.f_lineno} {f.f_code.co_name} <- "
                               f"{os.path.basename(top.f_code.co_filename)}:{top.f_lineno} "
                               f"{top.f_code.co_name}")
                    break
                f = f.f_back
        return out

    read()
    read()
    fds = lambda: len(os.listdir("/proc/self/fd"))
    base_threads, base_fds = {t.name for t in threading.enumerate()}, fds()
    interrupted, reads = 0, 0
    for _ in range(ROUNDS):  # the parent interrupts each round at a random moment
        print("ready", flush=True)
        try:
            while True:
                read()
                reads += 1
        except KeyboardInterrupt:
            interrupted += 1
    # The last interrupted read goes on in zarr's loop (zarr does not cancel it), stage by stage:
    # between two stages no thread may be in gds_zarr code for a moment, so "settled" means
    # quiet for a while, not once. Generous deadline: a loaded CI machine finishes late, not
    # never; a stuck thread still fails.
    deadline = time.monotonic() + 30
    quiet_since = None
    while time.monotonic() < deadline:
        if fds() > base_fds or busy():
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 0.5:
            break
        time.sleep(0.01)
    result = {"interrupted": interrupted, "reads": reads, "fds": [base_fds, fds()],
              "busy": len(busy()), "busy_at": busy(),
              "new_threads": sorted({t.name for t in threading.enumerate()} - base_threads)}
    read()  # still usable
    print(json.dumps(result), flush=True)
""")



@pytest.mark.parametrize("mode", ["store", "array"])
def test_keyboard_interrupt_in_the_sync_api(many_files: tuple[GDSStore, list[str]],
                                            mode: str) -> None:
    import zarr

    store, _ = many_files
    a = zarr.create_array(GDSStore(store.root / "arr"), shape=(256, 256), chunks=(16, 16),
                          dtype="f4", compressors=zarr.codecs.ZstdCodec(level=1))
    a[...] = 1.0
    rounds = 5
    child = subprocess.Popen([sys.executable, "-c", _SIGINT_CHILD, str(store.root), mode,
                              str(rounds)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rng = random.Random(0)
    try:
        assert child.stdout is not None and child.stderr is not None
        for _ in range(rounds):
            line = child.stdout.readline().strip()
            assert line == "ready", child.stderr.read()[-3000:]
            time.sleep(rng.uniform(0.05, 0.3))  # somewhere inside a read (~50-100 ms each)
            child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err[-3000:]
    got: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    assert got["interrupted"] == rounds
    base, now = got["fds"]
    assert now <= base, got
    assert got["busy"] == 0, json.dumps(got)  # a string: pytest would shorten a dict
    # Idle pool workers may be added (the default executor of zarr's event loop grows while
    # the interrupted read still runs in it): bounded pools, not stuck threads.
    assert all(n.startswith(("asyncio_", "ThreadPoolExecutor-", "gds_zarr-"))
               for n in got["new_threads"]), got


@pytest.mark.parametrize("size_hint", [None, 1 << 10])
def test_an_interrupt_in_a_main_thread_read_waits_for_it_and_leaks_nothing(
        tmp_path: Path, size_hint: int | None) -> None:
    """The main thread, where KeyboardInterrupt lands, only waits: the batch runs in a worker
    (an interrupt between an open and its close cannot leak the descriptor), stops at its next
    file and has closed everything when the interrupt is raised. The interrupt is raised by the
    read itself, at a known point, in the worker that reads the batch."""
    import _thread

    from gds_zarr.io._cpu import PosixIOBackend

    n = 300
    for i in range(n):
        (tmp_path / f"f{i}").write_bytes(b"x" * 100)
    (tmp_path / "f0").unlink()
    (tmp_path / "f0").symlink_to(tmp_path / "f1")  # resolve_link is called for it
    seen: list[str] = []

    def resolve_link(path: str) -> str:
        seen.append(threading.current_thread().name)
        _thread.interrupt_main()  # as a Ctrl-C would, while the batch is being read
        return os.path.realpath(path)

    paths = [str(tmp_path / f"f{i}") for i in range(n)]
    before = _fds()
    with pytest.raises(KeyboardInterrupt):
        PosixIOBackend().read_batch(paths, np.zeros(n, np.int64), np.full(n, -1, np.int64),
                                    resolve_link=resolve_link, size_hint=size_hint)
    assert seen and all(name != threading.main_thread().name for name in seen), seen
    assert _fds() <= before
    # Not interrupted: the same read completes, its values intact.
    got = PosixIOBackend().read_batch(paths, np.zeros(n, np.int64), np.full(n, -1, np.int64),
                                      resolve_link=os.path.realpath, size_hint=size_hint)
    assert got.sizes.tolist() == [100] * n and _fds() <= before


def test_a_main_thread_read_at_interpreter_exit(tmp_path: Path) -> None:
    """An atexit handler (or a __del__ at shutdown) reading from the main thread: no new
    thread can start then, so the batch is read in the main thread itself, as before the
    batch moved to a worker (else: RuntimeError 'cannot schedule new futures after
    interpreter shutdown')."""
    (tmp_path / "f").write_bytes(b"hello")
    script = textwrap.dedent(f"""
        import atexit
        import numpy as np
        from gds_zarr.io._cpu import PosixIOBackend

        def at_exit():
            got = PosixIOBackend().read_batch([{str(tmp_path / "f")!r}], np.zeros(1, np.int64),
                                              np.full(1, -1, np.int64))
            print("read", bytes(got.data[got.offsets[0]:got.offsets[0] + got.sizes[0]]))

        atexit.register(at_exit)
    """)
    got = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert got.returncode == 0 and got.stdout.strip() == "read b'hello'", got.stderr
