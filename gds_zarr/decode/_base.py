"""The interface between the pipeline and its decode backends.

The pipeline turns a zarr codec chain into:

* a list of :class:`BytesStep` (bytes -> bytes codecs, in *decode* order: e.g. crc32c, then
  zstd), decoded by a :class:`BytesDecoder` for a whole batch at once, and
* an array step (dtype with byte order, chunk shape, memory order / transpose) that the pipeline
  applies itself with numpy or CuPy.

Every chunk of a batch decodes to the same number of bytes (``decoded_nbytes``: the chunk shape
times the item size), because zarr stores edge chunks at full chunk shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from gds_zarr._batch import BatchRead

__all__ = ["BytesDecoder", "BytesStep", "StepKind"]

StepKind = Literal["crc32c", "fletcher32", "zstd", "gzip", "zlib", "lz4", "blosc", "shuffle",
                   "numcodecs"]


@dataclass(frozen=True, slots=True)
class BytesStep:
    """One bytes -> bytes decode step.

    Attributes
    ----------
    kind
        What the GPU backend needs to know: ``"zstd"``, ``"gzip"``, ``"zlib"``, ``"lz4"``
        (numcodecs LZ4: 4-byte little-endian size prefix, then an LZ4 block), ``"blosc"``,
        ``"crc32c"`` (4-byte little-endian CRC-32C trailer, verified and stripped),
        ``"fletcher32"`` (HDF5's 4-byte little-endian Fletcher-32 trailer, numcodecs'
        ``Fletcher32``), ``"shuffle"`` (numcodecs' ``Shuffle``: HDF5's byte shuffle of the
        whole chunk by ``codec.elementsize``), or ``"numcodecs"`` for any other numcodecs codec
        (CPU only).
    codec
        A numcodecs codec object whose ``decode(buf, out=None)`` does this step on the host.
    name
        Name used in error messages and in ``info`` (e.g. ``"zstd"``, ``"numcodecs.lz4"``).
    """

    kind: StepKind
    codec: Any
    name: str


class BytesDecoder(Protocol):
    """Decodes a batch of encoded chunks through the same bytes -> bytes steps.

    ``decode_batch`` returns a 2-D uint8 array (numpy or CuPy, matching the backend's device)
    of shape ``(len(index), decoded_nbytes)``: row ``j`` holds chunk ``index[j]`` of ``src``.
    A chunk whose bytes fail a step raises :class:`gds_zarr.errors.ChunkDecodeError` naming
    ``keys[index[j]]``, the step's name and the reason; it never returns silent garbage.
    """

    device: Literal["cpu", "gpu"]

    def supports(self, steps: Sequence[BytesStep]) -> bool: ...

    def decode_batch(
        self,
        steps: Sequence[BytesStep],
        src: BatchRead,
        index: np.ndarray,
        decoded_nbytes: int,
        keys: Sequence[str],
    ) -> Any: ...
