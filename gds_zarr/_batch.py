"""The batch every read returns: bytes of many requests landed in ONE contiguous array.

It lives outside ``io/`` because every layer handles it: the I/O backends produce it, the decode
backends and the shard-index parser (``planning/``, which imports neither ``io/`` nor
``decode/``) consume it. Request ``i`` is ``data[offsets[i] : offsets[i] + sizes[i]]``; ranges of
one file that lie close together are read once, so several requests may share bytes of ``data``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = ["BatchRead"]


@dataclass(frozen=True, slots=True)
class BatchRead:
    """The result of one batched read.

    Attributes
    ----------
    data
        One contiguous 1-D uint8 array (``numpy.ndarray`` or ``cupy.ndarray``).
    offsets, sizes
        int64 arrays, one entry per request: where its bytes start in ``data`` and how many
        there are (after clamping to the file size, as zarr's LocalStore clamps).
    present
        bool array, one entry per request: False where the key does not exist (its size is 0).
    """

    data: Any
    offsets: np.ndarray
    sizes: np.ndarray
    present: np.ndarray
    device: Literal["cpu", "gpu"] = "cpu"
    nbytes_staged: int = field(default=0)

    def __len__(self) -> int:
        return len(self.offsets)

    def view(self, i: int) -> Any:
        """Request ``i``'s bytes as a view into :attr:`data` (not a copy)."""
        o = int(self.offsets[i])
        return self.data[o : o + int(self.sizes[i])]
