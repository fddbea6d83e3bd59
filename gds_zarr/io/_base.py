"""The interface every I/O backend implements, and the batch it returns.

A batch read lands every requested byte range in ONE contiguous uint8 array (numpy on the CPU,
CuPy on the GPU); request ``i`` is ``data[offsets[i] : offsets[i] + sizes[i]]``. Ranges of one
file that lie close together are read once (see :mod:`gds_zarr.planning.ranges`), so several
requests may share bytes of ``data``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from gds_zarr._batch import BatchRead
from gds_zarr._counters import Counters

__all__ = ["BatchRead", "IOBackend", "IOStats"]


@dataclass
class IOStats(Counters):
    """Counters an I/O backend keeps, so tests can count reads instead of timing them (thread
    safe: backends count with :meth:`add`)."""

    files_opened: int = 0
    reads: int = 0          # read system calls / kvikio preads issued (after coalescing)
    bytes_read: int = 0
    requests: int = 0       # ranges asked for (before coalescing)
    uncached: int = 0       # probe reads (RWF_NOWAIT) whose file was not in the page cache


class IOBackend(Protocol):
    """Reads byte ranges of local files into host (CPU backend) or device (GPU backend) memory.

    ``paths`` are absolute, already validated paths, one per request (repeats allowed: ranges
    of one file are grouped and coalesced). ``starts``/``stops`` are int64 arrays, one entry per
    request, encoding zarr's byte requests:

    ==========================  =====================  ==================
    request                     start                  stop
    ==========================  =====================  ==================
    whole value (None)          0                      -1 (end of file)
    RangeByteRequest(a, b)      a                      b (exclusive)
    OffsetByteRequest(a)        a                      -1
    SuffixByteRequest(n), n>0   -n                     -1
    SuffixByteRequest(0)        0                      0
    ==========================  =====================  ==================

    The backend clamps ranges to the file size as zarr's LocalStore does. A path that does not
    exist gives ``present=False``; one that exists but cannot be read raises
    :class:`gds_zarr.errors.ChunkReadError`.
    """

    device: Literal["cpu", "gpu"]
    stats: IOStats

    def read_batch(
        self,
        paths: Sequence[str],
        starts: np.ndarray,
        stops: np.ndarray,
    ) -> BatchRead: ...

    def write_file(self, path: str, data: Any) -> None:
        """Write ``data`` (host or device bytes) to ``path`` atomically."""
        ...

    def close(self) -> None: ...
