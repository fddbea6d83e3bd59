"""KvikioIOBackend (gds_zarr/io/_gpu.py): GDS reads, the CuFile handle cache, errors naming
the key, and writes through ``CuFile.pwrite``, each checked against the CPU backend.

Tests that look at how kvikio moved the bytes read the emulated kvikio's records
(``kvikio._emulated``) and skip on a real GPU; the others run on both.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gds_zarr._device import gpu_status

if not gpu_status().usable:
    pytest.skip(f"no usable GPU: {gpu_status().reason}", allow_module_level=True)

import cupy as cp
from zarr.core.buffer import gpu

from gds_zarr import settings
from gds_zarr.errors import ChunkReadError
from gds_zarr.io import _gpu
from gds_zarr.io._cpu import PosixIOBackend
from gds_zarr.io._gpu import KvikioIOBackend
from gds_zarr.store import GDSStore

PAGE = 4096
RNG = np.random.default_rng(18)


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The emulated kvikio as a fresh process has it (compat mode, no records), no cached
    handles; skips on a real GPU, whose kvikio keeps no records."""
    emulated = pytest.importorskip("kvikio._emulated", reason="needs the emulated kvikio")
    for name in list(os.environ):
        if name.startswith("KVIKIO_") or name == emulated.GDS_ENV:
            monkeypatch.delenv(name)
    emulated.reset_defaults()
    emulated.set_gds(None)
    emulated.clear_records()
    _gpu.clear_handle_cache()
    yield emulated
    _gpu.clear_handle_cache()
    emulated.reset_defaults()
    emulated.set_gds(None)


@pytest.fixture(autouse=True)
def no_cached_handles() -> Iterator[None]:
    # Handles opened by other tests (another GDS mode) must not answer these reads.
    _gpu.clear_handle_cache()
    yield
    _gpu.clear_handle_cache()


def _write(path: Path, nbytes: int) -> bytes:
    data = RNG.integers(0, 256, nbytes, np.uint8).tobytes()
    path.write_bytes(data)
    return data


def _same_as_cpu(paths: list[str], starts: list[int], stops: list[int]) -> Any:
    """The GPU batch, checked request by request against the CPU backend's."""
    s, e = np.array(starts, np.int64), np.array(stops, np.int64)
    host = PosixIOBackend().read_batch(paths, s, e)
    dev = KvikioIOBackend().read_batch(paths, s, e)
    assert isinstance(dev.data, cp.ndarray)
    assert dev.present.tolist() == host.present.tolist()
    assert dev.sizes.tolist() == host.sizes.tolist()
    for i in range(len(paths)):
        assert cp.asnumpy(dev.view(i)).tobytes() == host.view(i).tobytes(), i
    return dev


def _fds_under(root: Path) -> list[str]:
    """This process's open descriptors on files under ``root`` (as /proc shows them)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(root)):
                out.append(target)
    return out


# ---------------------------------------------------------------- GDS: DMA or the host


def _gds_threshold() -> int:
    import kvikio.defaults

    return int(kvikio.defaults.get("gds_threshold"))


def test_gds_reads_dma_whole_pages_and_keeps_small_reads_on_the_host(
        emu: Any, tmp_path: Path) -> None:
    """Under GDS a read of at least kvikio's gds_threshold goes to cuFile at a page of the file
    and of the device buffer (DMA, never cuFile's unaligned bounce path but for the file's last
    partial page); smaller reads are read on the host, never by kvikio."""
    emu.set_gds(True)
    big, small = tmp_path / "big", tmp_path / "small"
    _write(big, 3 * PAGE * 100 + 123)
    _write(small, 3000)
    assert _gpu._dma_min() == _gds_threshold()
    dev = _same_as_cpu([str(big), str(small), str(big)],
                       [5000, 10, 1_200_000], [400_000, 2000, -1])
    recs = [r for r in emu.records() if r.call == "kvikio.CuFile.pread"]
    assert recs and {r.target for r in recs} == {str(big)}  # the small file: on the host
    dma = [r for r in recs if r.route == "dma"]
    assert dma and all(r.file_offset % PAGE == 0 and r.ptr % PAGE == 0 for r in dma)
    # Only the file's last partial page (its end is not a page) took cuFile's bounce path.
    assert [(r.route, r.file_offset + r.size) for r in recs if r.route != "dma"] == [
        ("dma_unaligned", big.stat().st_size)]
    assert dev.data.data.ptr % PAGE == 0


def test_compat_mode_reads_everything_on_the_host(emu: Any, tmp_path: Path) -> None:
    """Without GDS (compat mode) kvikio would bounce every read through host memory anyway:
    gds_zarr reads them all on the host into pinned memory and copies once."""
    big = tmp_path / "big"
    _write(big, 1 << 20)
    assert _gpu._dma_min() is None
    _same_as_cpu([str(big)] * 2, [0, 700_000], [500_000, -1])
    assert emu.records() == [] and _gpu.cached_handles() == 0


def test_a_malformed_kvikio_environment_is_kvikio_s_error(
        emu: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """KVIKIO_COMPAT_MODE that kvikio cannot parse: its own error, not a read planned for a
    mode nobody knows."""
    (tmp_path / "f").write_bytes(b"x" * 100)
    monkeypatch.setenv("KVIKIO_COMPAT_MODE", "sometimes")
    emu.reset_defaults()
    assert _gpu._dma_min() == 0  # unknown: every read would go to kvikio at its pages
    with pytest.raises(ValueError, match="Unknown compatibility mode: sometimes"):
        KvikioIOBackend().read_batch([str(tmp_path / "f")], np.array([0]), np.array([-1]))


# ---------------------------------------------------------------- the CuFile handle cache


def test_cached_handles_serve_the_next_batch(emu: Any, tmp_path: Path) -> None:
    """A file read again (unchanged) goes through its cached CuFile: nothing is opened."""
    paths = [str(tmp_path / f"f{i}") for i in range(3)]
    for p in paths:
        _write(Path(p), 20_000)
    backend = KvikioIOBackend()
    assert repr(backend) == "KvikioIOBackend()"
    with settings.set(gpu_bounced_reads="kvikio"):
        for _ in range(2):
            got = backend.read_batch(paths, np.zeros(3, np.int64), np.full(3, -1, np.int64))
            assert [cp.asnumpy(got.view(i)).tobytes() for i in range(3)] == [
                Path(p).read_bytes() for p in paths]
    assert backend.stats.files_opened == 3  # the second batch opened nothing
    assert _gpu.cached_handles() == 3
    assert {r.target for r in emu.records()} == set(paths)  # read by kvikio both times
    assert len(emu.records()) == 6


def test_evicted_handles_are_closed(emu: Any, tmp_path: Path) -> None:
    """More files than the cache holds: handles beyond the bound are closed (two descriptors
    each at most stay open per cached handle), and every file is still read right."""
    paths = [str(tmp_path / f"f{i}") for i in range(10)]
    for p in paths:
        _write(Path(p), 5000)
    with settings.set(gpu_bounced_reads="kvikio", file_handle_cache_size=4):
        _same_as_cpu(paths, [0] * 10, [-1] * 10)
        assert _gpu.cached_handles() == 4
        assert len(_fds_under(tmp_path)) <= 2 * 4
        assert len({r.target for r in emu.records()}) == 10


def test_a_replaced_file_is_reopened_not_read_stale(emu: Any, tmp_path: Path) -> None:
    path = tmp_path / "c"
    _write(path, 30_000)
    backend = KvikioIOBackend()
    whole = (np.array([0]), np.array([-1]))
    with settings.set(gpu_bounced_reads="kvikio"):
        backend.read_batch([str(path)], *whole)
        new = _write(tmp_path / "c.new", 40_000)
        os.replace(tmp_path / "c.new", path)  # an atomic write by another process
        got = backend.read_batch([str(path)], *whole)
    assert cp.asnumpy(got.view(0)).tobytes() == new
    assert backend.stats.files_opened == 2 and _gpu.cached_handles() == 1
    # The old file's handle was closed: nothing open on the deleted inode.
    assert not [t for t in _fds_under(tmp_path) if t.endswith("(deleted)")]


def test_a_handle_evicted_under_a_read_is_closed_after_it(
        emu: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another batch evicts a handle while a read through it is in flight: the handle stays
    open until that read is waited on (the emulated kvikio fails a read whose CuFile was
    closed), then it is closed."""
    import kvikio

    paths = [tmp_path / f"f{i}" for i in range(4)]
    data = [_write(p, 20_000) for p in paths]
    started, go = threading.Event(), threading.Event()
    opened: dict[str, Any] = {}

    class GatedFuture:
        def __init__(self, fut: Any) -> None:
            self.fut = fut

        def get(self) -> int:
            started.set()
            assert go.wait(30)
            return int(self.fut.get())

    class Handle:  # kvikio.CuFile whose reads of f0 wait for the test's go-ahead
        def __init__(self, path: str) -> None:
            self.f, self.path = kvikio.CuFile(path, "r"), path
            opened[path] = self.f

        def pread(self, buf: Any, size: int, off: int) -> Any:
            fut = self.f.pread(buf, size, off)
            return GatedFuture(fut) if self.path == str(paths[0]) else fut

        def close(self) -> None:
            self.f.close()

    monkeypatch.setattr(_gpu, "_CACHE", _gpu._HandleCache(Handle))
    result: list[Any] = []

    def first() -> None:
        try:
            b = KvikioIOBackend().read_batch([str(paths[0])], np.array([0]), np.array([-1]))
            result.append(cp.asnumpy(b.view(0)).tobytes())
        except BaseException as e:  # noqa: BLE001 - checked below
            result.append(e)

    with settings.set(gpu_bounced_reads="kvikio", file_handle_cache_size=2):
        t = threading.Thread(target=first)
        t.start()
        assert started.wait(30)
        rest = [str(p) for p in paths[1:]]
        KvikioIOBackend().read_batch(rest, np.zeros(3, np.int64), np.full(3, -1, np.int64))
        assert not opened[str(paths[0])].closed  # evicted, but a read still uses it
        go.set()
        t.join(30)
    assert result == [data[0]]
    assert opened[str(paths[0])].closed  # closed by its last reader


# ---------------------------------------------------------------- errors name the key


@contextlib.contextmanager
def _unprivileged() -> Iterator[None]:
    """Root reads any file whatever its mode: run the block as 'nobody' (root kept as the
    saved id, to come back), so that modes mean something."""
    if os.geteuid() != 0:
        yield
        return
    os.setresgid(65534, 65534, 0)
    os.setresuid(65534, 65534, 0)
    try:
        yield
    finally:
        os.setresuid(0, 0, 0)
        os.setresgid(0, 0, 0)


@pytest.mark.parametrize("where", ["file", "directory"])
def test_an_unreadable_file_is_an_error_naming_its_key(where: str) -> None:
    """Mode 0 on the file, or on a directory on its way: both backends raise naming the key."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        (root / "c").mkdir(parents=True)
        (root / "c" / "0").write_bytes(b"x" * 100)
        for d in (Path(tmp), root, root / "c"):
            d.chmod(0o755)
        locked = root / "c" / "0" if where == "file" else root / "c"
        store = GDSStore(root)
        errors = {}
        locked.chmod(0)
        try:
            with _unprivileged():
                for device in ("cpu", "gpu"):
                    with pytest.raises(ChunkReadError) as info:
                        store.read_batch(["c/0"], device=device)
                    errors[device] = info.value
        finally:
            locked.chmod(0o755)
    assert {e.key for e in errors.values()} == {"c/0"}
    assert errors["gpu"].reason == errors["cpu"].reason == "Permission denied (errno 13)"


def _special(root: Path, kind: str) -> str:
    (root / "dir").mkdir()
    if kind == "directory":
        return "dir"
    if kind == "fifo":
        os.mkfifo(root / "fifo")
        return "fifo"
    if kind == "link to a directory":
        (root / "link").symlink_to(root / "dir")
        return "link"
    (root / "loop").symlink_to(root / "loop2")  # a symlink loop: ELOOP
    (root / "loop2").symlink_to(root / "loop")
    return "loop"


@pytest.mark.parametrize("kind", ["directory", "fifo", "link to a directory", "symlink loop"])
def test_not_a_file_is_an_error_naming_its_key(tmp_path: Path, kind: str) -> None:
    """The GPU backend refuses what the CPU one refuses, with the same key (the link's, not
    its target's) and reason."""
    key = _special(tmp_path, kind)
    store = GDSStore(tmp_path)
    errors = []
    for device in ("cpu", "gpu"):
        with pytest.raises(ChunkReadError) as info:
            store.read_batch([key], device=device)
        errors.append(info.value)
    assert [e.key for e in errors] == [key, key]
    assert errors[0].reason == errors[1].reason


def test_a_path_error_without_a_store_names_the_path(tmp_path: Path) -> None:
    """The backend alone (no store to check links): a link is followed with realpath, and
    the error names the path asked for, not where it leads."""
    (tmp_path / "dir").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "dir")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for name, reason in (("link", "found a directory"), ("loop", r"\(errno 40\)")):
        with pytest.raises(ChunkReadError, match=reason) as info:
            KvikioIOBackend().read_batch([str(tmp_path / name)], np.array([0]),
                                         np.array([-1]))
        assert info.value.key == str(tmp_path / name)


def test_a_missing_file_is_absent_and_a_linked_one_is_read(tmp_path: Path) -> None:
    data = _write(tmp_path / "target", 10_000)
    (tmp_path / "link").symlink_to(tmp_path / "target")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    store = GDSStore(tmp_path)
    got = store.read_batch(["link", "missing", "dangling", "link"], np.array([0, 0, 0, 100]),
                           np.array([-1, -1, -1, 200]), device="gpu")
    assert got.present.tolist() == [True, False, False, True]
    assert cp.asnumpy(got.view(0)).tobytes() == data
    assert cp.asnumpy(got.view(3)).tobytes() == data[100:200]


def test_kvikio_failing_to_open_a_file_names_its_key(emu: Any, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """KVIKIO_COMPAT_MODE=OFF on a machine without GDS: cuFile cannot register the file."""
    _write(tmp_path / "c", 100_000)
    monkeypatch.setenv("KVIKIO_COMPAT_MODE", "OFF")
    emu.reset_defaults()
    with pytest.raises(ChunkReadError, match=r"kvikio could not open it: .*NVFS") as info:
        GDSStore(tmp_path).read_batch(["c"], device="gpu")
    assert info.value.key == "c"


@pytest.mark.parametrize("gds", [False, True])
def test_a_file_that_shrank_under_a_kvikio_read_names_its_key(
        emu: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gds: bool) -> None:
    """Truncated between its stat and its read: a POSIX read (compat mode) fails at the
    future, cuFile (GDS) returns a short count; both are a ChunkReadError naming the key."""
    emu.set_gds(gds)
    path = tmp_path / "c"
    _write(path, 200_000)
    real = KvikioIOBackend._stat

    def then_truncate(self: Any, p: str, resolve: Any) -> Any:
        got = real(self, p, resolve)
        os.truncate(p, 50_000)  # another process rewrites it
        return got

    monkeypatch.setattr(KvikioIOBackend, "_stat", then_truncate)
    match = "read 50000 bytes, expected 200000" if gds else "kvikio read failed: .*EOF"
    with settings.set(gpu_bounced_reads="kvikio"), pytest.raises(ChunkReadError,
                                                                 match=match) as info:
        GDSStore(tmp_path).read_batch(["c"], device="gpu")
    assert info.value.key == "c"


def test_a_linked_file_that_shrank_under_a_host_read_names_the_link(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path / "target", 20_000)
    (tmp_path / "link").symlink_to(tmp_path / "target")
    real = KvikioIOBackend._stat

    def then_truncate(self: Any, p: str, resolve: Any) -> Any:
        got = real(self, p, resolve)
        os.truncate(got[0], 5000)
        return got

    monkeypatch.setattr(KvikioIOBackend, "_stat", then_truncate)
    with pytest.raises(ChunkReadError) as info:
        GDSStore(tmp_path).read_batch(["link"], device="gpu")
    assert info.value.key == "link"


# ---------------------------------------------------------------- writes through CuFile.pwrite


def test_a_device_write_waits_for_the_kernels_filling_it(emu: Any, tmp_path: Path) -> None:
    """kvikio reads the device buffer from its own threads, outside stream order: the write
    must wait for the work still queued on the caller's stream, and go through pwrite."""
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        arr = cp.arange(50_000, dtype=cp.int32) * 3  # queued, not run
        KvikioIOBackend().write_file(str(tmp_path / "d" / "c"), arr)
    assert (tmp_path / "d" / "c").read_bytes() == (np.arange(50_000, dtype=np.int32)
                                                   * 3).tobytes()
    assert [r.call for r in emu.records()] == ["kvikio.CuFile.pwrite"] * len(emu.records())
    assert os.listdir(tmp_path / "d") == ["c"]  # no temporary file left


def test_writes_are_atomic_and_exclusive_ones_never_replace(tmp_path: Path) -> None:
    store = GDSStore(tmp_path)
    store.set_sync("k", gpu.Buffer.from_array_like(cp.arange(10, dtype=cp.uint8)))
    first = (tmp_path / "k").read_bytes()
    store._set_if_not_exists("k", gpu.Buffer.from_array_like(cp.zeros(10, dtype=cp.uint8)))
    assert (tmp_path / "k").read_bytes() == first == bytes(range(10))
    with pytest.raises(FileExistsError):
        KvikioIOBackend().write_file(str(tmp_path / "k"), cp.zeros(3, cp.uint8), exclusive=True)
    store.set_sync("empty", gpu.Buffer.from_array_like(cp.zeros(0, dtype=cp.uint8)))
    assert (tmp_path / "empty").read_bytes() == b""
    KvikioIOBackend().write_file(str(tmp_path / "host"), np.arange(4, dtype=np.uint8))
    assert (tmp_path / "host").read_bytes() == bytes(range(4))
    assert sorted(os.listdir(tmp_path)) == ["empty", "host", "k"]  # no temporary files


def test_a_failed_write_leaves_nothing_behind() -> None:
    """The temporary file cannot even be created (a directory 'nobody' cannot write): the
    error is raised and nothing is left, as on the CPU."""
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "k"
        arr = cp.arange(100, dtype=cp.uint8)
        Path(tmp).chmod(0o555)
        try:
            with _unprivileged():
                with pytest.raises(PermissionError):
                    PosixIOBackend().write_file(str(target), cp.asnumpy(arr))
                with pytest.raises((OSError, RuntimeError), match="Permission denied"):
                    KvikioIOBackend().write_file(str(target), arr)
        finally:
            Path(tmp).chmod(0o755)
        assert os.listdir(tmp) == []
