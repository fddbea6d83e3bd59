"""Blosc 1 frames of a whole batch, parsed at once into arrays of blocks and compressed streams.

A Blosc 1 frame (c-blosc's ``README_CHUNK_FORMAT.rst``, ``blosc/blosc.c``) is a 16-byte
little-endian header (version, versionlz, flags, typesize, nbytes, blocksize, cbytes), then one
int32 start per block, then the blocks. A block is one compressed stream, or ``typesize`` split
streams (one per byte of the item); each stream is an int32 compressed size and its bytes, stored
raw when that size equals its decoded size. The flags say byte shuffle (0x1), memcpyed (0x2: the
data follows the header uncompressed), bit shuffle (0x4), no split (0x10) and the compressor
(``flags >> 5``). The last block is short when ``blocksize`` does not divide ``nbytes``.

:func:`plan_blosc` reads every header, block start and stream size of a batch with a few
vectorized gathers (one per split round, at most 16), checks each field against the chunk's
length and the expected decoded size exactly as c-blosc's ``blosc_run_decompression_with_context``
and ``blosc_d`` do, and returns flat arrays a CPU loop or one nvCOMP call per codec can consume.
Nothing here reads past a chunk: every position is checked against the header's ``cbytes``,
itself checked against the chunk's length first.

:func:`plan_parts` bounds what a plan holds by ``memory_budget``, not by the headers: c-blosc's
encoder never writes blocks under 128 bytes, but its decoder accepts any block size, and a
plan holds a few hundred bytes per block (1-byte blocks: 250 bytes per byte of data). A batch
is planned in consecutive parts of at most ``memory_budget // PLAN_SHARE`` bytes, and a chunk
whose plan alone would exceed that is left to c-blosc, which decodes it block by block in place.

:func:`unshuffle_blocks` is the numpy twin of the unshuffle (byte shuffle and bit shuffle,
including the bytes c-blosc leaves unshuffled at the end of a block), used by the CPU decoder and
as the reference of the GPU kernel.

Device-free: numpy only (planning imports neither ``gds_zarr.io`` nor ``gds_zarr.decode``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields

import numpy as np

from gds_zarr import settings
from gds_zarr.errors import ChunkDecodeError
from gds_zarr.planning.chunks import split_by_budget

__all__ = [
    "BLOSC_HEADER",
    "CODEC_NAMES",
    "PLAN_BLOCK_BYTES",
    "PLAN_SHARE",
    "PLAN_STREAM_BYTES",
    "SHUFFLE_BIT",
    "SHUFFLE_BYTE",
    "SHUFFLE_NONE",
    "BloscPlan",
    "plan_blosc",
    "plan_limit",
    "plan_parts",
    "unshuffle_blocks",
    "unshuffle_span",
]

BLOSC_HEADER = 16
BLOSC_VERSION_FORMAT = 2
_VERSIONLZ = 1               # every compressor's format version in c-blosc 1
_DOSHUFFLE, _MEMCPYED, _DOBITSHUFFLE, _FUTURE, _DONT_SPLIT = 0x1, 0x2, 0x4, 0x8, 0x10
_MAX_SPLITS = 16             # c-blosc's MAX_SPLITS
_MIN_BUFFERSIZE = 128        # c-blosc's MIN_BUFFERSIZE (a split stream holds at least this)
_INT_MAX = 2**31 - 1
BLOSC_MAX_BLOCKSIZE = (_INT_MAX - 255 * 4) // 3
#: Host bytes a plan holds at its peak per block and per stream, its decoder's tables
#: included. Measured with tracemalloc (numpy 2, Python 3.12): one stream per block, 242 bytes
#: (CPU, both twins) and 331 (GPU, emulated device); 16 streams per block, 1132 (CPU, C row
#: decoder), 2384 (CPU, plan in Python) and 1657 (GPU). The device holds fewer (its per-block
#: and per-stream tables: ~50 bytes). A valid frame may hold a block per byte of data, so
#: these, not the encoded bytes, bound what a plan allocates.
PLAN_BLOCK_BYTES = 256
PLAN_STREAM_BYTES = 160
#: The plan of one batch holds at most ``memory_budget // PLAN_SHARE`` bytes (:func:`plan_limit`).
PLAN_SHARE = 4

#: Compressor codes of the flags byte (``flags >> 5``) and their names.
CODEC_NAMES = {0: "blosclz", 1: "lz4", 2: "snappy", 3: "zlib", 4: "zstd"}
_KNOWN_CODECS = (0, 1, 3, 4)  # numcodecs' c-blosc is built without Snappy
_KNOWN = np.isin(np.arange(8), _KNOWN_CODECS)  # by code (flags >> 5 is 0..7)

#: Shuffle of a block as the decoder must undo it (after c-blosc's own conditions).
SHUFFLE_NONE, SHUFFLE_BYTE, SHUFFLE_BIT = 0, 1, 2

ByteReader = Callable[[np.ndarray, int], np.ndarray]
"""``reader(positions, width)``: the ``width`` bytes at each absolute position as an
``(len(positions), width)`` uint8 array (the same contract as ``decode.formats.ByteReader``)."""


@dataclass(frozen=True, slots=True)
class BloscPlan:
    """Every block and compressed stream of a batch of Blosc frames, as flat arrays.

    Row ``j`` is the ``j``-th chunk passed to :func:`plan_blosc`. Streams and blocks are sorted
    by row; row ``j`` owns streams ``stream_bounds[j]:stream_bounds[j + 1]`` and blocks
    ``block_bounds[j]:block_bounds[j + 1]``. Rows with ``fallback`` set own none: they are valid
    as far as the plan can tell but left to c-blosc/numcodecs (see :func:`plan_blosc`).

    Attributes
    ----------
    codec : int8, per row
        Compressor code (``flags >> 5``, see :data:`CODEC_NAMES`); -1 for a memcpyed frame.
    typesize : int64, per row
        The header's typesize.
    memcpyed : bool, per row
        The frame holds the data uncompressed after the header.
    fallback : bool, per row
        Not planned: decode this row with c-blosc or numcodecs.
    stream_bounds, block_bounds : int64, ``rows + 1``
        CSR bounds of each row's streams and blocks.
    stream_src : int64, per stream
        Absolute offset of the stream's compressed bytes (after its int32 size).
    stream_size : int64, per stream
        Compressed bytes of the stream.
    stream_dst : int64, per stream
        Offset of its decoded bytes in the row, in the block's *shuffled* layout (split ``s`` of
        a block at ``block_dst + s * stream_dsize``).
    stream_dsize : int64, per stream
        Decoded bytes of the stream (``blocksize / nsplits``).
    stream_raw : bool, per stream
        Stored uncompressed: copy ``stream_size`` bytes (c-blosc: compressed size == decoded).
    stream_codec : int8, per stream
        The row's compressor code (-1 for raw streams, which need no decoder).
    stream_row : int64, per stream
        The row the stream belongs to.
    block_row, block_dst, block_size : int64, per block
        Row, offset in the row, and decoded size of every block.
    block_shuffle : int8, per block
        :data:`SHUFFLE_NONE`, :data:`SHUFFLE_BYTE` or :data:`SHUFFLE_BIT`, as c-blosc applies it.
    block_typesize : int64, per block
        The row's typesize.
    """

    codec: np.ndarray
    typesize: np.ndarray
    memcpyed: np.ndarray
    fallback: np.ndarray
    stream_bounds: np.ndarray
    block_bounds: np.ndarray
    stream_src: np.ndarray
    stream_size: np.ndarray
    stream_dst: np.ndarray
    stream_dsize: np.ndarray
    stream_raw: np.ndarray
    stream_codec: np.ndarray
    stream_row: np.ndarray
    block_row: np.ndarray
    block_dst: np.ndarray
    block_size: np.ndarray
    block_shuffle: np.ndarray
    block_typesize: np.ndarray

    @property
    def shuffled_rows(self) -> np.ndarray:
        """bool per row: some block of the row needs an unshuffle."""
        rows = np.zeros(len(self.codec), bool)
        rows[self.block_row[self.block_shuffle != SHUFFLE_NONE]] = True
        return rows


def _le32(cols: np.ndarray) -> np.ndarray:
    """Signed little-endian int32 of each row of an ``(n, 4)`` uint8 array, as int64
    (c-blosc reads every header field with ``sw32_`` into an ``int32_t``)."""
    return np.ascontiguousarray(cols, np.uint8).view("<i4").reshape(-1).astype(np.int64)


def _fail(bad: np.ndarray, keys: Sequence[str], reason: Callable[[int], str]) -> None:
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise ChunkDecodeError(keys[j], "blosc", reason(j))


def plan_blosc(reader: ByteReader, starts: np.ndarray, stops: np.ndarray, expected: int,
               keys: Sequence[str], *, limit: int | None = None) -> BloscPlan:
    """Parse and check the Blosc 1 frames of a batch; return their blocks and streams.

    The checks are c-blosc's own (a frame this refuses, c-blosc refuses too): the chunk holds
    the header and ``cbytes`` (trailing bytes are ignored, as c-blosc ignores them); ``nbytes``
    is ``expected``; version 2; no flag from the future (0x08); ``0 < blocksize <= nbytes``;
    ``typesize > 0``; a memcpyed frame is exactly ``nbytes + 16`` bytes; a known compressor of
    format version 1; a block-start table that fits; every split's size field and bytes inside
    ``cbytes``. What only decoding can tell (a stream that does not decode to exactly its size)
    is the decoder's to check.

    Rows are left to c-blosc (``fallback``) where the plan could not reproduce c-blosc
    exactly: a split block whose size is not a multiple of its split count (c-blosc would
    leave bytes of the block unwritten); and, given ``limit``, where the row's own plan would
    hold more than ``limit`` bytes (at :data:`PLAN_BLOCK_BYTES` per block and
    :data:`PLAN_STREAM_BYTES` per stream): such a row's header is checked, its blocks are not
    read.

    Parameters
    ----------
    reader
        Reads bytes of the buffer holding the chunks (host, or gathered from a device).
    starts, stops
        int64 absolute offsets of each encoded chunk.
    expected
        Decoded size of every chunk in bytes (> 0).
    keys
        Store key of each chunk, for error messages.
    limit
        Bytes one row's plan may hold; None: no limit.

    Returns
    -------
    BloscPlan

    Raises
    ------
    ChunkDecodeError
        Naming the first chunk (of the first failed check) that is not a valid frame.
    """
    head = _headers(reader, starts, stops, expected, keys)
    skip = np.zeros(len(head.starts), bool) if limit is None else _plan_nbytes(head) > limit
    return _plan(reader, head, keys, skip)


def plan_parts(reader: ByteReader, starts: np.ndarray, stops: np.ndarray, expected: int,
               keys: Sequence[str], limit: int | None) -> Iterator[tuple[int, int, BloscPlan]]:
    """:func:`plan_blosc` over consecutive parts of a batch, each plan within ``limit`` bytes.

    Every header of the batch is read and checked at the first ``next()``, before any part is
    planned; a row whose own plan would exceed ``limit`` is a ``fallback`` row of its part (its
    header checked, its blocks not read), and the other rows are split into consecutive parts
    whose plans hold at most ``limit`` bytes (at :data:`PLAN_BLOCK_BYTES` per block and
    :data:`PLAN_STREAM_BYTES` per stream, bounds taken from the headers). A part's block and
    stream checks run when it is planned, so a bad stream in a later part raises after earlier
    parts were handed out. Drop each plan before asking for the next: two would then be alive
    at once.

    Parameters
    ----------
    reader, starts, stops, expected, keys
        As :func:`plan_blosc`.
    limit
        Bytes the plan of one part may hold; None: the whole batch in one part.

    Yields
    ------
    lo, hi : int
        The part's rows ``lo:hi`` of the batch.
    plan : BloscPlan
        Their plan (its row ``j`` is the batch's row ``lo + j``).

    Raises
    ------
    ChunkDecodeError
        As :func:`plan_blosc`: every header check before the first part, block and stream
        checks part by part.
    """
    head = _headers(reader, starts, stops, expected, keys)
    n = len(head.starts)
    if limit is None:
        yield 0, n, _plan(reader, head, keys, np.zeros(n, bool))
        return
    cost = _plan_nbytes(head)
    skip = cost > limit
    cost[skip] = PLAN_BLOCK_BYTES  # a fallback row holds only its per-row state
    for part in split_by_budget(cost, limit):
        lo, hi = int(part[0]), int(part[-1]) + 1
        sub = head if (lo, hi) == (0, n) else head.rows(lo, hi)
        yield lo, hi, _plan(reader, sub, keys[lo:hi], skip[lo:hi])


def plan_limit() -> int | None:
    """Bytes the Blosc plan of one batch may hold: ``memory_budget`` // :data:`PLAN_SHARE`
    (None when the budget is not positive: unlimited)."""
    budget = int(settings.get("memory_budget"))
    return budget // PLAN_SHARE if budget > 0 else None


def _plan_nbytes(head: _Headers) -> np.ndarray:
    """Upper bound of the host bytes the plan of each row holds at its peak (int64 per row).

    From the header alone: the row's blocks (one for a memcpyed frame) times
    :data:`PLAN_BLOCK_BYTES`, plus at most ``typesize`` streams per block where blocks split
    (else one) times :data:`PLAN_STREAM_BYTES`.
    """
    comp = ~head.memcpyed
    nblk = np.where(comp, head.nblocks, 1)
    ts = head.typesize
    splits = (comp & ((head.flags & _DONT_SPLIT) == 0) & (ts <= _MAX_SPLITS)
              & (np.maximum(head.blocksize, 1) // ts >= _MIN_BUFFERSIZE))
    nstreams = nblk * np.where(splits, ts, 1)
    cost: np.ndarray = nblk * PLAN_BLOCK_BYTES + nstreams * PLAN_STREAM_BYTES
    return cost


@dataclass(frozen=True, slots=True)
class _Headers:
    """The checked header fields of a batch's frames, per row (what :func:`_headers` read)."""

    starts: np.ndarray
    flags: np.ndarray
    typesize: np.ndarray
    nbytes: np.ndarray
    blocksize: np.ndarray
    cbytes: np.ndarray
    memcpyed: np.ndarray
    codec: np.ndarray
    nblocks: np.ndarray

    def rows(self, lo: int, hi: int) -> _Headers:
        """Rows ``lo:hi``."""
        return _Headers(*(getattr(self, f.name)[lo:hi] for f in fields(self)))


def _headers(reader: ByteReader, starts: np.ndarray, stops: np.ndarray, expected: int,
             keys: Sequence[str]) -> _Headers:
    """Read every 16-byte header of the batch and run the checks that need only the header."""
    starts = np.asarray(starts, np.int64).reshape(-1)
    stops = np.asarray(stops, np.int64).reshape(-1)
    n = len(starts)
    size = stops - starts
    _fail(size == 0, keys, lambda j: "the chunk is empty (0 bytes)")
    _fail(size < BLOSC_HEADER, keys,
          lambda j: f"truncated: {int(size[j])} bytes, shorter than the 16-byte header")
    head = reader(starts, BLOSC_HEADER) if n else np.zeros((0, BLOSC_HEADER), np.uint8)
    version, versionlz = head[:, 0].astype(np.int64), head[:, 1].astype(np.int64)
    flags, typesize = head[:, 2].astype(np.int64), head[:, 3].astype(np.int64)
    nbytes, blocksize, cbytes = _le32(head[:, 4:16]).reshape(-1, 3).T
    _fail((cbytes > size) | (cbytes < BLOSC_HEADER), keys,
          lambda j: f"truncated: the header says {int(cbytes[j])} compressed bytes, the chunk "
                    f"holds {int(size[j])}")
    _fail(nbytes != expected, keys,
          lambda j: f"the header declares {int(nbytes[j])} decoded bytes, expected {expected}")
    _fail(version != BLOSC_VERSION_FORMAT, keys,
          lambda j: f"format version {int(version[j])}, expected {BLOSC_VERSION_FORMAT}")
    _fail((flags & _FUTURE) != 0, keys,
          lambda j: f"flags 0x{int(flags[j]):02X} set the reserved bit 0x08")
    _fail((blocksize <= 0) | (blocksize > nbytes) | (blocksize > BLOSC_MAX_BLOCKSIZE), keys,
          lambda j: f"block size {int(blocksize[j])} outside 1..{int(nbytes[j])}")
    _fail(typesize == 0, keys, lambda j: "typesize 0")
    memcpyed = (flags & _MEMCPYED) != 0
    _fail(memcpyed & (cbytes != nbytes + BLOSC_HEADER), keys,
          lambda j: f"a memcpyed frame of {int(nbytes[j])} bytes must be "
                    f"{int(nbytes[j]) + BLOSC_HEADER} bytes long, the header says "
                    f"{int(cbytes[j])}")
    codec = flags >> 5
    _fail(~memcpyed & ~_KNOWN[codec], keys,
          lambda j: f"compressor {CODEC_NAMES.get(int(codec[j]), int(codec[j]))!r} is not "
                    "available in c-blosc")
    _fail(~memcpyed & (versionlz != _VERSIONLZ), keys,
          lambda j: f"{CODEC_NAMES[int(codec[j])]} format version {int(versionlz[j])}, "
                    f"expected {_VERSIONLZ}")
    nblocks = -(-nbytes // np.maximum(blocksize, 1))
    _fail(~memcpyed & (nblocks > (cbytes - BLOSC_HEADER) // 4), keys,
          lambda j: f"{int(nblocks[j])} block starts do not fit in {int(cbytes[j])} bytes")
    return _Headers(starts, flags, typesize, nbytes, blocksize, cbytes, memcpyed, codec, nblocks)


def _plan(reader: ByteReader, head: _Headers, keys: Sequence[str],
          skip: np.ndarray) -> BloscPlan:
    """Every block and stream of the rows of ``head`` but those ``skip`` marks (fallback rows
    whose blocks are not read), with the block and stream checks."""
    starts, flags, typesize, nbytes = head.starts, head.flags, head.typesize, head.nbytes
    blocksize, cbytes, memcpyed, codec = head.blocksize, head.cbytes, head.memcpyed, head.codec
    n = len(starts)
    safe_bs = np.maximum(blocksize, 1)

    # Blocks of compressed rows. A memcpyed row is one raw stream and one unshuffled block;
    # a skipped row has none.
    comp = ~memcpyed
    nblk = np.where(skip, 0, np.where(comp, head.nblocks, 1))
    block_row = np.repeat(np.arange(n, dtype=np.int64), nblk)
    first = np.cumsum(nblk) - nblk
    k = np.arange(len(block_row), dtype=np.int64) - first[block_row]
    bs = np.where(comp, blocksize, nbytes)[block_row]
    block_dst = k * bs
    last = k == nblk[block_row] - 1
    leftover = (nbytes % safe_bs)[block_row]
    short = comp[block_row] & last & (leftover > 0)
    bsize = np.where(short, leftover, bs)
    ts = typesize[block_row]
    bflags = flags[block_row]
    bcomp = comp[block_row]
    split = (bcomp & ((bflags & _DONT_SPLIT) == 0) & (ts <= _MAX_SPLITS)
             & (bsize // ts >= _MIN_BUFFERSIZE) & ~short)
    nsplits = np.where(split, ts, 1)
    dsize = bsize // nsplits
    odd = np.zeros(n, bool)
    odd[block_row[split & (bsize % nsplits != 0)]] = True

    doshuffle = bcomp & ((bflags & _DOSHUFFLE) != 0) & (ts > 1)
    dobit = bcomp & ~doshuffle & ((bflags & _DOBITSHUFFLE) != 0) & (bsize >= ts)
    dobit &= (bsize // ts) % 8 == 0  # else c-blosc's bitunshuffle copies the block as is
    shuffle = np.where(doshuffle, SHUFFLE_BYTE, np.where(dobit, SHUFFLE_BIT, SHUFFLE_NONE))

    # Streams, in order of block then split: block b owns streams s_first[b] + 0..nsplits[b]-1.
    # Walk the splits of every compressed block together, one gather per round. A memcpyed
    # row is one raw stream.
    nstreams = int(nsplits.sum())
    s_first = np.cumsum(nsplits) - nsplits
    sb = np.repeat(np.arange(len(block_row), dtype=np.int64), nsplits)
    split_of = np.arange(nstreams, dtype=np.int64) - s_first[sb]
    stream_src = np.empty(nstreams, np.int64)
    stream_size = np.empty(nstreams, np.int64)
    cb = cbytes[block_row]
    base = starts[block_row]
    blk_keys = _KeysOf(keys, block_row)
    active = np.flatnonzero(bcomp)
    mem_blocks = np.flatnonzero(~bcomp)
    stream_src[s_first[mem_blocks]] = base[mem_blocks] + BLOSC_HEADER
    stream_size[s_first[mem_blocks]] = bsize[mem_blocks]
    if active.size:
        off = _le32(reader(base[active] + BLOSC_HEADER + 4 * k[active], 4))
        base_a, cb_a, first_a, nsp_a = base[active], cb[active], s_first[active], nsplits[active]
    for s in range(int(nsplits.max(initial=1))):
        if active.size == 0:
            break
        if s:
            more = nsp_a > s
            if not more.all():
                active, off, base_a, cb_a, first_a, nsp_a = (
                    a[more] for a in (active, off, base_a, cb_a, first_a, nsp_a))
                if active.size == 0:
                    break
        o, c = off, cb_a
        _fail((o < 0) | (o > c - 4), blk_keys.sub(active),
              lambda j, o=o, c=c: f"a stream size field at byte {int(o[j])} lies outside "
                                  f"the {int(c[j])} compressed bytes")
        csize = _le32(reader(base_a + o, 4))
        o = o + 4
        _fail((csize < 0) | (csize > c - o), blk_keys.sub(active),
              lambda j, o=o, c=c, z=csize: f"a {int(z[j])}-byte stream at byte {int(o[j])} "
                                           f"runs past the {int(c[j])} compressed bytes")
        stream_src[first_a + s] = base_a + o
        stream_size[first_a + s] = csize
        off = o + csize
    stream_dsize = dsize[sb]
    stream_dst = block_dst[sb] + split_of * stream_dsize
    stream_raw = stream_size == stream_dsize
    row_codec = np.where(memcpyed, -1, codec).astype(np.int8)
    stream_row = block_row[sb]
    stream_codec = np.where(stream_raw, -1, row_codec[stream_row]).astype(np.int8)

    streams = (stream_src, stream_size, stream_dst, stream_dsize, stream_raw, stream_codec,
               stream_row)
    blocks = (block_row, block_dst, bsize, shuffle.astype(np.int8), ts)
    if odd.any():  # fallback rows own no streams and no blocks (skipped rows never had any)
        keep_s, keep_b = ~odd[stream_row], ~odd[block_row]
        streams = tuple(a[keep_s] for a in streams)
        blocks = tuple(a[keep_b] for a in blocks)
    return BloscPlan(
        codec=row_codec, typesize=typesize, memcpyed=memcpyed, fallback=skip | odd,
        stream_bounds=_bounds(streams[-1], n), block_bounds=_bounds(blocks[0], n),
        stream_src=streams[0], stream_size=streams[1], stream_dst=streams[2],
        stream_dsize=streams[3], stream_raw=streams[4], stream_codec=streams[5],
        stream_row=streams[6], block_row=blocks[0], block_dst=blocks[1], block_size=blocks[2],
        block_shuffle=blocks[3], block_typesize=blocks[4])


class _KeysOf:
    """Keys of rows picked by index arrays, looked up only when an error is raised."""

    def __init__(self, keys: Sequence[str], rows: np.ndarray,
                 idx: np.ndarray | None = None) -> None:
        self._keys, self._rows, self._idx = keys, rows, idx

    def sub(self, idx: np.ndarray) -> _KeysOf:
        return _KeysOf(self._keys, self._rows, idx)

    def __getitem__(self, j: int) -> str:
        row = self._rows[j if self._idx is None else self._idx[j]]
        return self._keys[int(row)]


def _bounds(rows: np.ndarray, n: int) -> np.ndarray:
    """CSR bounds (``n + 1``) of a sorted array of row numbers."""
    return np.searchsorted(rows, np.arange(n + 1, dtype=np.int64)).astype(np.int64)


def unshuffle_span(src: np.ndarray, dst: np.ndarray, block: int, shuffle: int,
                   typesize: int) -> None:
    """Undo the shuffle of consecutive blocks of ``block`` bytes: ``src`` into ``dst``.

    ``src`` and ``dst`` are 1-D uint8 arrays of ``nblocks * block`` bytes (a chunk's full
    blocks end to end, or its short last block), not overlapping.

    Byte shuffle of a block of ``b`` bytes and typesize ``t`` (``m = b // t`` items): byte ``j``
    of item ``i`` lies at ``j * m + i``. Bit shuffle (c-blosc applies it only when
    ``m % 8 == 0``): bit ``k`` of byte ``j`` of item ``i`` is bit ``(j * 8 + k) * m + i`` of the
    block, least significant bit first. Either way the last ``b % t`` bytes of a block are
    stored as they are.
    """
    t = typesize
    m = block // t
    whole = m * t
    if shuffle == SHUFFLE_NONE or whole == 0:
        dst[...] = src
        return
    s2 = src.reshape(-1, block)
    d2 = dst.reshape(-1, block)
    if whole != block:
        d2[:, whole:] = s2[:, whole:]
    if shuffle == SHUFFLE_BYTE:
        d3 = d2[:, :whole].reshape(-1, m, t)
        s3 = s2[:, :whole].reshape(-1, t, m)
        if t <= _MAX_SPLITS:
            # one strided copy per byte plane: ~5x faster in numpy than one transposed copy
            # (measured: 81 against 390 us for a 256 KiB block of float32)
            for j in range(t):
                d3[:, :, j] = s3[:, j, :]
        else:
            d3[...] = s3.transpose(0, 2, 1)
        return
    # Bit planes to bytes: for each byte j of the items and each group g of 8 items, the 8
    # bytes (plane k = 0..7, byte g) form an 8x8 bit matrix whose transpose is byte j of items
    # 8g..8g+7. Gather those 8 bytes into a uint64 (row k = byte k), transpose all matrices
    # at once with three masked shifts, then interleave the byte planes as for byte shuffle.
    # (unpackbits/packbits took 60x longer than c-blosc; this is within ~3x.)
    nb, g = s2.shape[0], m // 8
    planes = s2[:, :whole].reshape(nb, t, 8, g)
    rows = np.empty((nb, t, g, 8), np.uint8)
    for k in range(8):
        rows[:, :, :, k] = planes[:, :, k, :]
    x = rows.view("<u8")
    tmp = np.empty_like(x)
    for shift, mask in ((7, 0x00AA00AA00AA00AA), (14, 0x0000CCCC0000CCCC),
                        (28, 0x00000000F0F0F0F0)):
        # t = (x ^ (x >> s)) & mask; x ^= t ^ (t << s)   (Hacker's Delight, transpose8)
        np.right_shift(x, np.uint64(shift), out=tmp)
        np.bitwise_xor(tmp, x, out=tmp)
        np.bitwise_and(tmp, np.uint64(mask), out=tmp)
        np.bitwise_xor(x, tmp, out=x)
        np.left_shift(tmp, np.uint64(shift), out=tmp)
        np.bitwise_xor(x, tmp, out=x)
    planes_out = rows.reshape(nb, t, m)  # [block, j, i]: byte j of item i
    d3 = d2[:, :whole].reshape(nb, m, t)
    if t <= _MAX_SPLITS:
        for j in range(t):
            d3[:, :, j] = planes_out[:, j, :]
    else:
        d3[...] = planes_out.transpose(0, 2, 1)


def unshuffle_blocks(src: np.ndarray, dst: np.ndarray, block_dst: np.ndarray,
                     block_size: np.ndarray, block_shuffle: np.ndarray,
                     block_typesize: np.ndarray) -> None:
    """Undo c-blosc's shuffle of every block of a plan: ``src`` (shuffled layout) into ``dst``.

    The reference the GPU kernel is tested against (one :func:`unshuffle_span` per block).

    Parameters
    ----------
    src, dst
        1-D uint8 arrays of the same length (rows end to end); not overlapping.
    block_dst, block_size, block_shuffle, block_typesize
        Per block, as in :class:`BloscPlan`, ``block_dst`` relative to ``src``/``dst``.
    """
    for o, b, sh, t in zip(block_dst.tolist(), block_size.tolist(), block_shuffle.tolist(),
                           block_typesize.tolist(), strict=True):
        unshuffle_span(src[o:o + b], dst[o:o + b], b, sh, t)
