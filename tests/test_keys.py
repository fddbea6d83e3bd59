"""Key validation: nothing may resolve outside the store root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gds_zarr.errors import InvalidKeyError
from gds_zarr.store._keys import KeyResolver, check_key, check_prefix

BAD_KEYS = ["../x", "a/../../x", "..", "/etc/passwd", "a\x00b", "a\\..\\x", "a//b", "./a", "a/./b",
            "", "a/"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidKeyError) as info:
        check_key(key)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("key", ["zarr.json", "c/0/0", "a/b/c.d", "..a", "a..", ".zattrs"])
def test_good_keys_pass(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(("prefix", "want"), [("", ""), ("a/", "a"), ("a/b", "a/b")])
def test_prefixes(prefix: str, want: str) -> None:
    assert check_prefix(prefix) == want


@pytest.mark.parametrize("prefix", ["../", "/a/", "a//"])
def test_bad_prefixes(prefix: str) -> None:
    with pytest.raises(InvalidKeyError):
        check_prefix(prefix)


def test_directory_symlink_out_of_root_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "c")
    os.symlink(root / "real", root / "inner")
    keys = KeyResolver(str(root))
    with pytest.raises(InvalidKeyError, match="outside the store root"):
        keys.path("c/0")
    with pytest.raises(InvalidKeyError, match="outside the store root"):
        keys.paths(["zarr.json", "c/0"])
    assert keys.path("inner/0") == f"{root}/inner/0"  # stays inside: allowed


def test_final_symlink_is_checked_on_resolve(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret").write_bytes(b"s")
    (root / "real").write_bytes(b"r")
    os.symlink(tmp_path / "secret", root / "leak")
    os.symlink(root / "real", root / "alias")
    keys = KeyResolver(str(root))
    with pytest.raises(InvalidKeyError, match="symlink resolves outside"):
        keys.resolve_link(keys.path("leak"))
    assert keys.resolve_link(keys.path("alias")) == os.path.realpath(root / "real")


def test_directory_checks_are_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = KeyResolver(str(tmp_path))
    calls = []
    real = os.path.realpath
    monkeypatch.setattr(os.path, "realpath", lambda p: calls.append(p) or real(p))
    keys.paths([f"c/{i // 64}/{i % 64}" for i in range(4096)])
    assert len(calls) <= 64 + 2  # one per distinct directory (plus the root)
