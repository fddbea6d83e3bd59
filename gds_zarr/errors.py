"""Exceptions raised by gds_zarr.

Every exception derives from :class:`GDSZarrError` and also from the built-in that zarr users
already catch for that kind of failure (``ValueError`` for bad input, ``OSError`` for I/O,
``RuntimeError`` for an unusable device), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "CUDAContextError",
    "ChunkDecodeError",
    "ChunkReadError",
    "DeviceUnavailableError",
    "GDSZarrError",
    "GPUDecodeError",
    "InvalidKeyError",
    "ReadOnlyError",
    "ShardChangedError",
    "ShardIndexError",
]


class GDSZarrError(Exception):
    """Base class of every error gds_zarr raises on purpose."""


class InvalidKeyError(GDSZarrError, ValueError):
    """A store key that is malformed or would resolve outside the store's root."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"invalid store key {key!r}: {reason}")


class ReadOnlyError(GDSZarrError, ValueError):
    """A write, delete or clear on a store opened read-only.

    The message starts like zarr's own (``store was opened in read-only mode``), so code and
    tests that match zarr's wording keep working.
    """

    def __init__(self, operation: str = "writing") -> None:
        super().__init__(f"store was opened in read-only mode and does not support {operation}")


class DeviceUnavailableError(GDSZarrError, RuntimeError):
    """The GPU was asked for explicitly but is not usable; the message says what is missing."""


#: Zarr metadata keys (v3 and v2): a read error names them as metadata, not chunks.
_METADATA_KEYS = frozenset({"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"})


class ChunkReadError(GDSZarrError, OSError):
    """A chunk (or metadata) file exists but could not be read (permissions, I/O error, not a
    regular file, a connection that failed)."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        what = "metadata" if key.rsplit("/", 1)[-1] in _METADATA_KEYS else "chunk"
        super().__init__(f"could not read {what} {key!r}: {reason}")


class ShardChangedError(ChunkReadError):
    """A shard that another writer replaced or rewrote during every one of several reads, so no
    read saw a single version of it (not corruption: read it again once the writes stop).

    Attributes
    ----------
    key : str
        The shard's store key.
    attempts : int
        How many reads were tried.
    """

    def __init__(self, key: str, attempts: int) -> None:
        self.attempts = attempts
        super().__init__(key, f"the shard changed during the read (replaced or rewritten by "
                              f"another writer) on each of {attempts} attempts, so no attempt "
                              f"saw one version of it; the file is not known to be corrupt")


class ChunkDecodeError(GDSZarrError, ValueError):
    """Encoded chunk bytes that a codec rejected or that failed a check.

    Attributes
    ----------
    key : str
        The store key of the chunk (for an inner chunk of a shard: ``"<shard key>[<index>]"``).
    codec : str
        The codec that failed (e.g. ``"zstd"``, ``"crc32c"``, ``"bytes"``).
    reason : str
        What was expected and what was found.
    """

    def __init__(self, key: str, codec: str, reason: str) -> None:
        self.key = key
        self.codec = codec
        self.reason = reason
        super().__init__(f"cannot decode chunk {key!r} with {codec}: {reason}")


class ShardIndexError(ChunkDecodeError):
    """A shard index that is corrupt: entries past the end of the shard, overlapping or absurd."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(key, "sharding_indexed", reason)


class GPUDecodeError(GDSZarrError, RuntimeError):
    """nvCOMP failed on a batch in a way that is not a refusal of valid input (an API error, a
    broken installation): not hidden behind a CPU fallback.

    Attributes
    ----------
    key : str
        The first key of the batch.
    """

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"GPU decode failed on the batch starting at chunk {key!r}: {reason}")


class CUDAContextError(GDSZarrError, RuntimeError):
    """A sticky CUDA error (e.g. ``cudaErrorIllegalAddress``): the CUDA context of the process is
    no longer usable, so nothing more can run on that device, the CPU fallback's copies included.
    Restart the process; reading with ``device="cpu"`` avoids the device altogether.

    Attributes
    ----------
    key : str
        The first key of the batch that was being decoded when the error surfaced.
    """

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"the CUDA context is no longer usable: {reason} (while decoding the "
                         f"batch starting at chunk {key!r}); restart the process")
