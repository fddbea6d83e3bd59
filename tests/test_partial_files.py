"""Nothing is left behind after ``kill -9`` (issue 19, item 5): a writer killed before its
rename leaves a ``.partial`` file; the next write into that directory removes it, and
``GDSStore.remove_partial_files`` walks the whole store. A file a live writer may still own
stays."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from gds_zarr.io._cpu import STALE_TEMP_AGE, is_temp_name, temp_path_for
from gds_zarr.store import GDSStore

KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from gds_zarr.io._cpu import temp_path_for
    tmp = temp_path_for(sys.argv[1])
    with open(tmp, "wb") as f:   # what a write looks like before its rename
        f.write(b"x" * 100_000)
        f.flush()
        print(tmp, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
""")


def _killed_write(target: Path) -> Path:
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == -signal.SIGKILL, done
    left = Path(done.stdout.strip())
    assert left.exists() and is_temp_name(left.name)
    return left


def _partials(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if is_temp_name(p.name))


def test_next_write_in_the_directory_removes_what_a_killed_writer_left(tmp_path: Path) -> None:
    root = tmp_path / "a.zarr"
    z = zarr.create_array(GDSStore(root), shape=(8, 8), chunks=(4, 4), dtype="i4")
    z[...] = 1
    left = _killed_write(root / "c" / "0" / "0")
    # A live writer's file (this process) and one from another host, fresh: both stay.
    mine = Path(temp_path_for(str(root / "c" / "0" / "1")))
    mine.write_bytes(b"live")
    foreign = root / "c" / "0" / f".1.{'0' * 8}{'1' * 8}{'2' * 16}.partial"
    foreign.write_bytes(b"other host")
    assert is_temp_name(foreign.name)
    assert "c/0/0" in [k for k in _keys(root)] and not any("partial" in k for k in _keys(root))

    z = zarr.open_array(GDSStore(root), mode="r+")
    z[0:4, 0:4] = 2  # writes c/0/0: sweeps c/0/
    assert not left.exists()
    assert mine.exists() and foreign.exists()
    np.testing.assert_array_equal(z[0:4, 0:4], 2)


def test_remove_partial_files_walks_the_store(tmp_path: Path) -> None:
    root = tmp_path / "a.zarr"
    z = zarr.create_array(GDSStore(root), shape=(8, 8), chunks=(4, 4), dtype="i4")
    z[...] = 1
    left = [_killed_write(root / "c" / "1" / "1"), _killed_write(root / "zarr.json")]
    old_foreign = root / "c" / "1" / f".0.{'0' * 8}{'1' * 8}{'3' * 16}.partial"
    old_foreign.write_bytes(b"")
    past = time.time() - STALE_TEMP_AGE - 60
    os.utime(old_foreign, (past, past))
    store = GDSStore(root)
    assert store.remove_partial_files() == 3
    assert _partials(root) == [] and not any(p.exists() for p in left)
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], 1)


def _keys(root: Path) -> list[str]:
    import asyncio

    async def listing() -> list[str]:
        return [k async for k in GDSStore(root, read_only=True).list()]

    return asyncio.run(listing())


def test_an_object_store_has_no_partial_files() -> None:
    """Objects are written whole: nothing to remove, and no local walk (there is no root)."""
    options = {"endpoint": "http://127.0.0.1:9", "access_key_id": "k",
               "secret_access_key": "s", "region": "us-east-1"}
    assert GDSStore("s3://bucket/a.zarr", storage_options=options).remove_partial_files() == 0
    with pytest.raises(ValueError, match="read-only mode"):
        GDSStore("s3://bucket/a.zarr", read_only=True,
                 storage_options=options).remove_partial_files()
