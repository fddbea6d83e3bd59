"""gds_zarr.errors: each error is catchable as the built-in zarr users already catch."""

from __future__ import annotations

import pytest

from gds_zarr import errors


@pytest.mark.parametrize(
    ("exc", "builtin"),
    [
        (errors.InvalidKeyError("../x", "escapes the root"), ValueError),
        (errors.ReadOnlyError(), ValueError),
        (errors.DeviceUnavailableError("no GPU"), RuntimeError),
        (errors.ChunkReadError("c/0/0", "is a directory"), OSError),
        (errors.ChunkDecodeError("c/0/0", "zstd", "bad magic"), ValueError),
        (errors.ShardIndexError("c/0", "offset past the end"), errors.ChunkDecodeError),
    ],
)
def test_hierarchy(exc: Exception, builtin: type[Exception]) -> None:
    assert isinstance(exc, errors.GDSZarrError)
    assert isinstance(exc, builtin)


def test_messages_name_key_codec_and_reason() -> None:
    e = errors.ChunkDecodeError("a/c/1/2", "zstd", "frame declares 10 bytes, expected 16384")
    assert (e.key, e.codec) == ("a/c/1/2", "zstd")
    assert "'a/c/1/2'" in str(e) and "zstd" in str(e) and "expected 16384" in str(e)
    assert "read-only mode" in str(errors.ReadOnlyError())


def test_all_is_sorted_and_complete() -> None:
    assert errors.__all__ == sorted(errors.__all__)
    public = {n for n, v in vars(errors).items() if isinstance(v, type) and
              issubclass(v, Exception) and v.__module__ == errors.__name__}
    assert public == set(errors.__all__)
