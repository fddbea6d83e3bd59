"""Hand-made Blosc 1 frames no encoder writes but c-blosc decodes (shared by tests and tests_gpu).

c-blosc's encoder never writes a block under 128 bytes (``MIN_BUFFERSIZE``) unless the whole
buffer is one block, but its decoder accepts any ``0 < blocksize <= nbytes``: a frame of
1-byte blocks, each stored raw, is valid and holds a block per byte of data.
"""

from __future__ import annotations

import struct

import numpy as np

__all__ = ["raw_frame"]

_LZ4 = 1 << 5            # compressor code 1 in the flags' top bits
_DONT_SPLIT = 0x10


def raw_frame(raw: np.ndarray, blocksize: int, typesize: int = 1, split: bool = False) -> bytes:
    """A Blosc 1 frame (LZ4, no shuffle) of the uint8 ``raw`` with every stream stored raw.

    Parameters
    ----------
    raw
        The decoded bytes (1-D uint8).
    blocksize
        Bytes per block (any value from 1 to ``raw.nbytes``); the last block is short when it
        does not divide ``raw.nbytes``.
    typesize
        The header's typesize.
    split
        Split full blocks into ``typesize`` streams (c-blosc does so only when
        ``blocksize // typesize >= 128`` and ``typesize <= 16``; the caller picks such sizes).

    Returns
    -------
    bytes
        The frame: 16-byte header, one int32 start per block, then each stream as an int32 size
        equal to its decoded size (stored raw) and its bytes.
    """
    n = raw.nbytes
    nblocks = -(-n // blocksize)
    bsize = np.full(nblocks, blocksize, np.int64)
    bsize[-1] = n - blocksize * (nblocks - 1)
    nsplits = np.where(split & (bsize == blocksize), typesize, 1)
    ssize = np.repeat(bsize // nsplits, nsplits)
    head = 16 + 4 * nblocks
    spos = head + np.cumsum(ssize + 4) - (ssize + 4)  # each stream's size field
    cbytes = head + int((ssize + 4).sum())
    out = np.empty(cbytes, np.uint8)
    flags = _LZ4 | (0 if split else _DONT_SPLIT)
    out[:16] = np.frombuffer(struct.pack("<BBBBiii", 2, 1, flags, typesize, n, blocksize,
                                         cbytes), np.uint8)
    out[16:head] = spos[np.cumsum(nsplits) - nsplits].astype("<i4").view(np.uint8)
    out[spos[:, None] + np.arange(4)] = ssize.astype("<i4").view(np.uint8).reshape(-1, 4)
    stream = np.repeat(np.arange(len(ssize)), ssize)
    within = np.arange(n) - np.repeat(np.cumsum(ssize) - ssize, ssize)
    out[spos[stream] + 4 + within] = raw
    return out.tobytes()
