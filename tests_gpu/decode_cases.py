"""What the GPU decoder tests share: sample chunks, chains, a batch laid out as a coalesced read
leaves it, and a stand-in nvCOMP codec that fails on purpose.

Not a test module (no ``test_`` prefix). It imports CuPy: import it after the module's GPU skip.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cupy
import numpy as np

from gds_zarr._batch import BatchRead
from gds_zarr.decode._base import BytesStep


def raw(seed: int, nbytes: int) -> bytes:
    """``nbytes`` of smooth float32 data (compressible, different per seed)."""
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.normal(size=nbytes // 4)).astype("<f4").tobytes()


def step(kind: str, codec: Any) -> BytesStep:
    return BytesStep(kind, codec, kind)  # type: ignore[arg-type]


def encode(steps: list[BytesStep], data: bytes) -> bytes:
    """``data`` encoded by ``steps`` (given in decode order)."""
    for s in reversed(steps):
        data = bytes(s.codec.encode(data))
    return data


def batch(encoded: list[bytes], on_device: bool = True) -> BatchRead:
    """The chunks back to back with 3 bytes between them (unaligned offsets, as a coalesced
    read leaves them), in device memory unless ``on_device`` is False."""
    gap = b"\x55" * 3
    sizes = np.array([len(e) for e in encoded], np.int64)
    offsets = np.cumsum(sizes + 3) - sizes - 3
    host = np.frombuffer(gap.join(encoded) + gap, np.uint8)
    return BatchRead(data=cupy.asarray(host) if on_device else host, offsets=offsets,
                     sizes=sizes, present=np.ones(len(sizes), bool),
                     device="gpu" if on_device else "cpu")


def rows(raws: list[bytes]) -> np.ndarray:
    """The decoded rows ``raws`` should give: one uint8 row per chunk."""
    return np.stack([np.frombuffer(r, np.uint8) for r in raws])


class FailingCodec:
    """A stand-in nvCOMP codec: answers the alignment query (8) and the config calls; ``decode``
    (counted in ``decodes``) runs ``on_decode`` if given, then raises ``error``."""

    def __init__(self, error: BaseException | None = None,
                 on_decode: Callable[[], None] | None = None) -> None:
        self.error = error
        self.on_decode = on_decode
        self.decodes = 0

    def get_required_decompression_alignment(self) -> int:
        return 8

    def compression_config(self, sizes: list[int]) -> Any:
        return None

    def decompression_config(self, config: Any) -> Any:
        return None

    def decode(self, *args: Any, **kwargs: Any) -> Any:
        self.decodes += 1
        if self.on_decode is not None:
            self.on_decode()
        assert self.error is not None
        raise self.error
