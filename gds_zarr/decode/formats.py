"""Cheap checks of encoded chunks before (and after) a batched decode: device-independent numpy.

nvCOMP decodes whole batches and documents undefined behaviour for invalid Zstd, Gzip and Deflate
input, with no per-chunk status through Python. So before a GPU decode the decoder checks, for a
whole batch at once, what a few bytes per chunk can tell:

* **zstd**: frame magic, frame header descriptor (reserved bit, dictionary id), window size, the
  declared content size against the expected decoded size, and a walk over the block headers
  proving that the frame ends exactly where the chunk ends (catches truncation and trailing
  bytes);
* **gzip**: magic ``1f 8b``, method 8, the optional header fields; an ``ISIZE`` trailer other
  than the expected decoded size (mod 2**32) or reserved flag bits send the chunk to the CPU;
* **blosc**: the 16-byte header's compressed size against the chunk's length (c-blosc trusts
  its header) and its decoded size against the expected one;
* **zlib** (numcodecs ``Zlib``): the two-byte header (method 8, window, ``FCHECK``, no preset
  dictionary); the raw DEFLATE payload lies between it and the 4-byte Adler-32 trailer;
* **lz4** (numcodecs ``LZ4``): the 4-byte little-endian size prefix against the expected size and
  the payload against LZ4's worst-case bound;
* **crc32c**: the 4-byte little-endian CRC-32C trailer (verified on the host here with
  ``google_crc32c``, the library zarr itself uses; on the device by the kernel in
  :mod:`gds_zarr.decode._gpu`).

Every check reads bytes through a :data:`ByteReader` (``reader(positions, width) -> (n, width)
uint8 numpy array``) so that the same code serves a host buffer (:func:`numpy_reader`) and a
device buffer (the GPU decoder gathers the requested bytes on the device and copies only those to
the host). Checks are batched: one gather and a few array operations per batch, not a Python loop
per chunk.

A check distinguishes bytes that are **invalid** (a :class:`~gds_zarr.errors.ChunkDecodeError`
naming the key, what was expected and what was found) from bytes that are valid but that the GPU
path does not handle (e.g. a zstd frame without a content size, a skippable frame): those are
flagged ``cpu_only`` so the caller decodes them with numcodecs, which has the last word.

The checksum helpers at the end (CRC-32, CRC-32C, Adler-32) describe, in numpy, the segmented
computation the GPU kernels do (one thread per segment, combined per chunk), so that the index
math and the GF(2) combination are tested on any machine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from gds_zarr.errors import ChunkDecodeError

__all__ = [
    "ADLER_MOD",
    "CRC32C_POLY",
    "CRC32_POLY",
    "ByteReader",
    "Payload",
    "adler32_segments_reference",
    "check_crc32c_host",
    "check_crc32c_trailer",
    "check_gzip",
    "check_lz4",
    "check_zlib",
    "check_zstd",
    "crc_segments_reference",
    "crc_shift",
    "crc_table",
    "numpy_reader",
    "raise_checksum_mismatch",
    "segment_table",
]

ByteReader = Callable[[np.ndarray, int], np.ndarray]
"""``reader(positions, width)``: the ``width`` bytes at each absolute position, as an
``(len(positions), width)`` uint8 numpy array. Bytes past the end of the buffer read as 0; callers
mask by each chunk's stop themselves."""

ZSTD_MAGIC = 0xFD2FB528
ZSTD_SKIPPABLE_MASK = 0xFFFFFFF0
ZSTD_SKIPPABLE_MAGIC = 0x184D2A50
ZSTD_MAX_HEADER = 18            # magic 4 + descriptor 1 + window 1 + dictionary 4 + content size 8
ZSTD_BLOCK_MAX = 128 << 10      # Block_Maximum_Size: min(window size, 128 KiB)
ZSTD_WINDOWLOG_MAX = 31         # ZSTD_WINDOWLOG_MAX on 64-bit platforms
# Past this many block-header rounds the walk stops and leaves the rest to the CPU: a real frame
# of a 128 MiB chunk has ~1024 blocks of 128 KiB, and every round is one (device) gather.
ZSTD_MAX_WALK_ROUNDS = 1024

GZIP_FTEXT, GZIP_FHCRC, GZIP_FEXTRA, GZIP_FNAME, GZIP_FCOMMENT = 1, 2, 4, 8, 16
GZIP_MAX_FIELD = 4096           # longest FNAME/FCOMMENT scanned on the fast path (rest: CPU)
GZIP_SCAN_ROWS = 64             # chunks whose FNAME/FCOMMENT one gather scans (~4 MiB at once)

CRC32C_POLY = 0x82F63B78        # Castagnoli, reflected (crc32c codec)
CRC32_POLY = 0xEDB88320         # IEEE 802.3, reflected (gzip trailer)
ADLER_MOD = 65521


@dataclass(frozen=True, slots=True)
class Payload:
    """Where each chunk's payload for the next decode step lies, and what the check found.

    Attributes
    ----------
    starts, stops
        int64 absolute offsets of the payload to hand to the decoder (for gzip: the whole member,
        nvCOMP's "Gzip" reads the header itself; for zlib: the raw DEFLATE stream).
    cpu_only
        bool: valid input that the GPU decoder should leave to the CPU decoder.
    trailer
        uint32 per chunk where the format has a checksum trailer (crc32c: CRC-32C; gzip: CRC-32
        of the decoded bytes; zlib: Adler-32 of the decoded bytes), else None.
    deflate_starts
        For gzip: int64 offset where the raw DEFLATE stream starts (after the header), else None.
    """

    starts: np.ndarray
    stops: np.ndarray
    cpu_only: np.ndarray
    trailer: np.ndarray | None = None
    deflate_starts: np.ndarray | None = None


def numpy_reader(data: np.ndarray) -> ByteReader:
    """A :data:`ByteReader` over a 1-D uint8 host array."""
    flat = np.asarray(data).reshape(-1).view(np.uint8)
    last = flat.size - 1

    def read(positions: np.ndarray, width: int) -> np.ndarray:
        if flat.size == 0:
            return np.zeros((len(positions), width), np.uint8)
        idx = np.asarray(positions, np.int64)[:, None] + np.arange(width, dtype=np.int64)
        out = flat[np.clip(idx, 0, last)]
        out[(idx < 0) | (idx > last)] = 0
        return out

    return read


def _as_i64(a: np.ndarray | Sequence[int]) -> np.ndarray:
    return np.asarray(a, dtype=np.int64).reshape(-1)


def _le(cols: np.ndarray) -> np.ndarray:
    """Little-endian unsigned value of each row of a 2-D uint8 array (up to 8 bytes)."""
    out = np.zeros(cols.shape[0], np.uint64)
    for i in range(cols.shape[1]):  # <= 8 columns: a loop over bytes, not over chunks
        out |= cols[:, i].astype(np.uint64) << np.uint64(8 * i)
    return out


def _fail(bad: np.ndarray, keys: Sequence[str], codec: str, reason: Callable[[int], str]) -> None:
    """Raise for the first row where ``bad`` is set (one error names one key)."""
    rows = np.flatnonzero(bad)
    if rows.size:
        j = int(rows[0])
        raise ChunkDecodeError(keys[j], codec, reason(j))


def _check_lengths(starts: np.ndarray, stops: np.ndarray, minimum: int, keys: Sequence[str],
                   codec: str, what: str) -> np.ndarray:
    size = stops - starts
    _fail(size == 0, keys, codec, lambda j: "the chunk is empty (0 bytes)")
    _fail(size < minimum, keys, codec,
          lambda j: f"truncated: {int(size[j])} bytes, shorter than the {minimum}-byte {what}")
    return size


# --------------------------------------------------------------------------------------- zstd

def check_zstd(reader: ByteReader, starts: np.ndarray, stops: np.ndarray, expected: int,
               keys: Sequence[str], *, walk_blocks: bool = True) -> Payload:
    """Check the Zstandard frame of every chunk; return payloads and CPU-only flags.

    Invalid (raises): wrong magic, reserved descriptor bit set, window larger than 2**31,
    a dictionary id (the dictionary is not known), a declared content size other than
    ``expected``, a reserved block type, a block larger than 128 KiB, a frame that runs past the
    end of the chunk (truncation) or ends before it (trailing bytes).
    CPU-only (valid, left to numcodecs): skippable frames, a frame without a content size, a
    frame whose block walk needs more than :data:`ZSTD_MAX_WALK_ROUNDS` rounds.

    Parameters
    ----------
    reader
        Reads bytes of the buffer holding the chunks.
    starts, stops
        int64 absolute offsets of each encoded chunk.
    expected
        Decoded size of every chunk in bytes.
    keys
        Store key of each chunk, for error messages.
    walk_blocks
        Walk the block headers (one gather per round) to prove the frame fills the chunk.

    Returns
    -------
    Payload
        ``starts``/``stops`` unchanged (nvCOMP takes the whole frame) and ``cpu_only``.

    Raises
    ------
    ChunkDecodeError
        Naming the first chunk that is not a valid frame of ``expected`` bytes.
    """
    starts, stops = _as_i64(starts), _as_i64(stops)
    size = _check_lengths(starts, stops, 4, keys, "zstd", "zstd magic number")
    head = reader(starts, ZSTD_MAX_HEADER)
    magic = _le(head[:, 0:4]).astype(np.uint32)
    skippable = (magic & np.uint32(ZSTD_SKIPPABLE_MASK)) == ZSTD_SKIPPABLE_MAGIC
    _fail((magic != ZSTD_MAGIC) & ~skippable, keys, "zstd",
          lambda j: f"not a zstd frame: magic 0x{int(magic[j]):08X}, expected 0x{ZSTD_MAGIC:08X}")
    cpu_only = skippable.copy()

    fhd = head[:, 4].astype(np.int64)
    fcs_flag, single, reserved = fhd >> 6, (fhd >> 5) & 1, (fhd >> 3) & 1
    checksum, did_flag = (fhd >> 2) & 1, fhd & 3
    did_size = np.array([0, 1, 2, 4], np.int64)[did_flag]
    fcs_size = np.where(fcs_flag == 0, single, np.array([0, 2, 4, 8], np.int64)[fcs_flag])
    wd_size = 1 - single
    header = 5 + wd_size + did_size + fcs_size
    frame = ~skippable
    _fail(frame & (size < 5), keys, "zstd",
          lambda j: f"truncated: {int(size[j])} bytes, shorter than a zstd frame header")
    _fail(frame & (reserved == 1), keys, "zstd",
          lambda j: f"reserved bit set in frame header descriptor 0x{int(fhd[j]):02X}")
    _fail(frame & (size < header + 3), keys, "zstd",
          lambda j: f"truncated: {int(size[j])} bytes, the frame header and first block header "
                    f"need {int(header[j]) + 3}")
    wd = head[:, 5].astype(np.int64)
    window_log = 10 + (wd >> 3)
    _fail(frame & (wd_size == 1) & (window_log > ZSTD_WINDOWLOG_MAX), keys, "zstd",
          lambda j: f"window size 2**{int(window_log[j])} exceeds 2**{ZSTD_WINDOWLOG_MAX}")

    rows = np.arange(len(starts))
    cols = 5 + wd_size  # first byte of the dictionary id, then the content size
    did = np.zeros(len(starts), np.uint64)
    fcs = np.zeros(len(starts), np.uint64)
    for nbytes in (1, 2, 4, 8):  # fixed field widths: vectorized per width, not per chunk
        sel_d = did_size == nbytes
        if sel_d.any():
            idx = cols[sel_d][:, None] + np.arange(nbytes)
            did[sel_d] = _le(head[rows[sel_d][:, None], idx])
        sel_f = fcs_size == nbytes
        if sel_f.any():
            idx = (cols + did_size)[sel_f][:, None] + np.arange(nbytes)
            fcs[sel_f] = _le(head[rows[sel_f][:, None], idx])
    fcs = np.where(fcs_size == 2, fcs + np.uint64(256), fcs)
    _fail(frame & (did != 0), keys, "zstd",
          lambda j: f"frame needs dictionary {int(did[j])}, which is not available")
    has_fcs = frame & (fcs_size > 0)
    _fail(has_fcs & (fcs != np.uint64(expected)), keys, "zstd",
          lambda j: f"frame declares a content size of {int(fcs[j])} bytes, "
                    f"expected {expected}")
    cpu_only |= frame & ~has_fcs

    todo = frame & has_fcs
    if walk_blocks and todo.any():
        cpu_only |= _walk_zstd_blocks(reader, starts, stops, header, checksum, todo, keys)
    return Payload(starts, stops, cpu_only)


def _walk_zstd_blocks(reader: ByteReader, starts: np.ndarray, stops: np.ndarray,
                      header: np.ndarray, checksum: np.ndarray, todo: np.ndarray,
                      keys: Sequence[str]) -> np.ndarray:
    """Follow block headers of every chunk in ``todo`` at once; return rows left undecided."""
    rows = np.flatnonzero(todo)
    pos = starts[rows] + header[rows]
    for _ in range(ZSTD_MAX_WALK_ROUNDS):
        if rows.size == 0:
            return np.zeros(len(starts), bool)
        stop = stops[rows]
        r_keys = [keys[int(r)] for r in rows]
        _fail(pos + 3 > stop, r_keys, "zstd",
              lambda j: f"truncated: a block header at byte {int(pos[j] - starts[rows[j]])} runs "
                        f"past the end of the {int(stop[j] - starts[rows[j]])}-byte chunk")
        v = _le(reader(pos, 3)).astype(np.int64)
        last, btype, bsize = v & 1, (v >> 1) & 3, v >> 3
        _fail(btype == 3, r_keys, "zstd", lambda j: "reserved block type 3")
        _fail(bsize > ZSTD_BLOCK_MAX, r_keys, "zstd",
              lambda j: f"block of {int(bsize[j])} bytes exceeds the {ZSTD_BLOCK_MAX}-byte limit")
        pos = pos + 3 + np.where(btype == 1, 1, bsize)
        end = pos + 4 * checksum[rows]
        done = last == 1
        _fail(done & (end > stop) | ~done & (pos > stop), r_keys, "zstd",
              lambda j: f"truncated: the frame needs {int(end[j] - starts[rows[j]])}+ bytes, "
                        f"the chunk has {int(stop[j] - starts[rows[j]])}")
        _fail(done & (end < stop), r_keys, "zstd",
              lambda j: f"{int(stop[j] - end[j])} bytes after the end of the zstd frame "
                        "(trailing garbage or a second frame)")
        rows, pos = rows[~done], pos[~done]
    left = np.zeros(len(starts), bool)
    left[rows] = True  # too many blocks to walk cheaply: the CPU decoder decides
    return left


# --------------------------------------------------------------------------------------- gzip

def check_gzip(reader: ByteReader, starts: np.ndarray, stops: np.ndarray, expected: int,
               keys: Sequence[str]) -> Payload:
    """Check the gzip member header and ``ISIZE`` trailer of every chunk.

    A gzip stream of several members (``cat a.gz b.gz``) cannot be told from one member without
    inflating; its ``ISIZE`` is the last member's size, so it goes to the CPU unless that equals
    the whole expected size, and then nvCOMP (one member only) decodes fewer bytes than
    expected, which the decoded-size check after the decode reports.

    Returns
    -------
    Payload
        The whole member (nvCOMP's "Gzip" parses the header), ``deflate_starts`` after the header,
        ``trailer`` = the stored CRC-32 of the decoded bytes, and ``cpu_only`` for headers with
        fields longer than :data:`GZIP_MAX_FIELD`, for an ``ISIZE`` other than ``expected`` and
        for reserved flag bits: the CPU decoder decides those, so both paths answer alike.

    Raises
    ------
    ChunkDecodeError
        Wrong magic or method, truncated header.
    """
    starts, stops = _as_i64(starts), _as_i64(stops)
    size = _check_lengths(starts, stops, 18, keys, "gzip", "gzip header and trailer")
    head = reader(starts, 12)
    _fail((head[:, 0] != 0x1F) | (head[:, 1] != 0x8B), keys, "gzip",
          lambda j: f"not a gzip member: magic {bytes(head[j, :2]).hex()}, expected 1f8b")
    _fail(head[:, 2] != 8, keys, "gzip",
          lambda j: f"compression method {int(head[j, 2])}, expected 8 (deflate)")
    flg = head[:, 3].astype(np.int64)
    tail = reader(stops - 8, 8)
    crc = _le(tail[:, 0:4]).astype(np.uint32)
    isize = _le(tail[:, 4:8]).astype(np.uint32)
    # An ISIZE other than the expected size is a truncated or corrupt member, or a valid stream
    # nvCOMP cannot decode (several members, or padding after the member, which Python's gzip
    # accepts): the CPU decoder decides, so the GPU never answers differently from the CPU.
    cpu_only = isize != np.uint32(expected & 0xFFFFFFFF)
    # Reserved flag bits: RFC 1952 says refuse, Python's gzip (the CPU decoder) ignores them.
    cpu_only |= (flg & 0xE0) != 0

    pos = starts + 10
    extra = (flg & GZIP_FEXTRA) != 0
    if extra.any():
        xlen = _le(reader(pos, 2)).astype(np.int64)
        pos = np.where(extra, pos + 2 + xlen, pos)
    for bit in (GZIP_FNAME, GZIP_FCOMMENT):  # zero-terminated strings: scan a bounded window
        has = np.flatnonzero((flg & bit) != 0)
        # a few rows per gather: a window costs ~17 bytes per byte scanned (indices, masks),
        # and every chunk of a batch may set the flag (68 KiB each, 133 MiB for 2000 chunks)
        for lo in range(0, has.size, GZIP_SCAN_ROWS):
            rows = has[lo:lo + GZIP_SCAN_ROWS]
            nul = reader(pos[rows], GZIP_MAX_FIELD) == 0
            found = nul.any(axis=1)
            cpu_only[rows[~found]] = True
            pos[rows] = np.where(found, pos[rows] + np.argmax(nul, axis=1) + 1, pos[rows])
    pos = np.where((flg & GZIP_FHCRC) != 0, pos + 2, pos)
    _fail(~cpu_only & (pos + 8 >= stops), keys, "gzip",
          lambda j: f"truncated: the header ends at byte {int(pos[j] - starts[j])} and leaves "
                    f"no room for data and the 8-byte trailer in {int(size[j])} bytes")
    return Payload(starts, stops, cpu_only, trailer=crc, deflate_starts=pos)


# --------------------------------------------------------------------------------------- zlib

def check_zlib(reader: ByteReader, starts: np.ndarray, stops: np.ndarray, expected: int,
               keys: Sequence[str]) -> Payload:
    """Check the zlib (RFC 1950) header of every chunk; the payload is the raw DEFLATE stream.

    Returns
    -------
    Payload
        ``starts + 2`` to ``stops - 4`` (decode it as raw DEFLATE) and ``trailer`` = the stored
        Adler-32 of the decoded bytes (big-endian in the stream), to check after the decode.

    Raises
    ------
    ChunkDecodeError
        Method other than 8, window over 32 KiB, FCHECK mismatch, preset dictionary, truncation.
    """
    del expected  # zlib declares no size; the decoded size and Adler-32 are checked after
    starts, stops = _as_i64(starts), _as_i64(stops)
    _check_lengths(starts, stops, 7, keys, "zlib", "zlib header, data and Adler-32")
    head = reader(starts, 2).astype(np.int64)
    cmf, flg = head[:, 0], head[:, 1]
    _fail((cmf & 0x0F) != 8, keys, "zlib",
          lambda j: f"compression method {int(cmf[j] & 0x0F)}, expected 8 (deflate)")
    _fail((cmf >> 4) > 7, keys, "zlib",
          lambda j: f"window 2**{int(cmf[j] >> 4) + 8} exceeds 32 KiB")
    _fail((cmf * 256 + flg) % 31 != 0, keys, "zlib",
          lambda j: f"header check failed: 0x{int(cmf[j]):02X}{int(flg[j]):02X} is not a "
                    "multiple of 31")
    _fail((flg & 0x20) != 0, keys, "zlib", lambda j: "needs a preset dictionary")
    tail = reader(stops - 4, 4).astype(np.uint32)
    adler = (tail[:, 0] << 24) | (tail[:, 1] << 16) | (tail[:, 2] << 8) | tail[:, 3]
    return Payload(starts + 2, stops - 4, np.zeros(len(starts), bool), trailer=adler)


# ---------------------------------------------------------------------------------------- lz4

def check_lz4(reader: ByteReader, starts: np.ndarray, stops: np.ndarray, expected: int,
              keys: Sequence[str]) -> Payload:
    """Check numcodecs LZ4's 4-byte little-endian size prefix and the block's size bound.

    Returns
    -------
    Payload
        ``starts + 4`` to ``stops``: the raw LZ4 block.

    Raises
    ------
    ChunkDecodeError
        Prefix != ``expected``, or a block longer than LZ4's worst case for ``expected`` bytes.
    """
    starts, stops = _as_i64(starts), _as_i64(stops)
    size = _check_lengths(starts, stops, 5, keys, "lz4", "size prefix and block")
    prefix = _le(reader(starts, 4)).astype(np.int64)
    prefix = np.where(prefix >= 1 << 31, prefix - (1 << 32), prefix)  # numcodecs writes int32
    _fail(prefix != expected, keys, "lz4",
          lambda j: f"size prefix says {int(prefix[j])} bytes, expected {expected}")
    bound = expected + expected // 255 + 16  # LZ4_COMPRESSBOUND
    _fail(size - 4 > bound, keys, "lz4",
          lambda j: f"{int(size[j]) - 4}-byte block exceeds LZ4's bound of {bound} bytes for "
                    f"{expected} decoded bytes")
    return Payload(starts + 4, stops, np.zeros(len(starts), bool))


# -------------------------------------------------------------------------------------- blosc
BLOSC_HEADER = 16  # version, versionlz, flags, typesize, nbytes, blocksize, cbytes (c-blosc 1)


def check_blosc(reader: ByteReader, starts: np.ndarray, stops: np.ndarray,
                expected: int | None, keys: Sequence[str], *,
                at_most: int | None = None) -> Payload:
    """Check a Blosc frame's 16-byte header against the chunk's length and decoded size.

    c-blosc takes every size from the header behind the pointer and never sees the buffer's
    length: a zero-length or truncated chunk that sits in front of another chunk in one batch
    buffer would decode its neighbour. The header's ``cbytes`` must not exceed the chunk's
    length (trailing bytes are ignored, as c-blosc and zarr ignore them), and ``nbytes`` must be
    the expected decoded size (None: not checked, e.g. Blosc before a filter) and at most
    ``at_most`` (None: not checked; c-blosc allocates ``nbytes`` before it decodes).

    Raises
    ------
    ChunkDecodeError
        Shorter than the header, ``cbytes`` > the chunk's length, ``nbytes`` != ``expected``,
        or ``nbytes`` > ``at_most``.
    """
    starts, stops = _as_i64(starts), _as_i64(stops)
    size = _check_lengths(starts, stops, BLOSC_HEADER, keys, "blosc", "header")
    head = reader(starts, BLOSC_HEADER)
    nbytes = _le(head[:, 4:8]).astype(np.int64)
    cbytes = _le(head[:, 12:16]).astype(np.int64)
    _fail((cbytes > size) | (cbytes < BLOSC_HEADER), keys, "blosc",
          lambda j: f"truncated: the header says {int(cbytes[j])} compressed bytes, the chunk "
                    f"holds {int(size[j])}")
    if expected is not None:
        _fail(nbytes != expected, keys, "blosc",
              lambda j: f"the header declares {int(nbytes[j])} decoded bytes, expected "
                        f"{expected}")
    if at_most is not None:
        _fail(nbytes > at_most, keys, "blosc",
              lambda j: f"the header declares {int(nbytes[j])} decoded bytes, more than the "
                        f"{at_most} the chain's next steps can take")
    return Payload(starts, stops, np.zeros(len(starts), bool))


# ------------------------------------------------------------------------------------- crc32c

def check_crc32c_trailer(reader: ByteReader, starts: np.ndarray, stops: np.ndarray,
                         keys: Sequence[str]) -> Payload:
    """Read the 4-byte little-endian CRC-32C trailer of every chunk (verify it separately).

    Returns
    -------
    Payload
        ``starts`` to ``stops - 4`` and ``trailer`` = the stored CRC-32C.

    Raises
    ------
    ChunkDecodeError
        A chunk shorter than the 4-byte trailer.
    """
    starts, stops = _as_i64(starts), _as_i64(stops)
    _check_lengths(starts, stops, 4, keys, "crc32c", "checksum")
    stored = _le(reader(stops - 4, 4)).astype(np.uint32)
    return Payload(starts, stops - 4, np.zeros(len(starts), bool), trailer=stored)


def check_crc32c_host(data: np.ndarray, starts: np.ndarray, stops: np.ndarray,
                      keys: Sequence[str]) -> Payload:
    """Verify the CRC-32C trailer of every chunk of a host buffer with ``google_crc32c``.

    ``google_crc32c`` (a zarr dependency, SSE4.2/ARMv8 accelerated) is what zarr's own
    ``Crc32cCodec`` uses in every supported version.

    Raises
    ------
    ChunkDecodeError
        A truncated chunk or a checksum mismatch, naming the key.
    """
    import google_crc32c

    flat = np.asarray(data).reshape(-1).view(np.uint8)
    payload = check_crc32c_trailer(numpy_reader(flat), starts, stops, keys)
    computed = np.fromiter(
        (google_crc32c.value(flat[a:b]) for a, b in zip(payload.starts.tolist(),
                                                        payload.stops.tolist(), strict=True)),
        dtype=np.uint32, count=len(payload.starts))
    assert payload.trailer is not None
    raise_checksum_mismatch(computed, payload.trailer, keys, "crc32c")
    return payload


def raise_checksum_mismatch(computed: np.ndarray, stored: np.ndarray, keys: Sequence[str],
                            codec: str, what: str = "checksum") -> None:
    """Raise :class:`ChunkDecodeError` for the first chunk whose checksum does not match.

    Raises
    ------
    ChunkDecodeError
        ``"stored {what} 0x..., computed 0x..."`` naming the key.
    """
    computed = np.asarray(computed, np.uint32)
    stored = np.asarray(stored, np.uint32)
    _fail(computed != stored, keys, codec,
          lambda j: f"stored {what} 0x{int(stored[j]):08X}, computed 0x{int(computed[j]):08X}")


# -------------------------------------------------------- segmented checksums (GPU kernel model)

def segment_table(starts: np.ndarray, stops: np.ndarray, seg_bytes: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split every chunk into segments of at most ``seg_bytes`` (one GPU thread each).

    Returns
    -------
    seg_chunk : int64
        Chunk (row) of each segment.
    seg_start, seg_len : int64
        Absolute start and length of each segment.
    seg_after : int64
        Bytes of the chunk after the segment's end (what its CRC is shifted by), for Adler-32
        the weight offset.
    """
    starts, stops = _as_i64(starts), _as_i64(stops)
    n = stops - starts
    nseg = (n + seg_bytes - 1) // seg_bytes
    seg_chunk = np.repeat(np.arange(len(starts), dtype=np.int64), nseg)
    first = np.cumsum(nseg) - nseg
    k = np.arange(int(nseg.sum()), dtype=np.int64) - first[seg_chunk]
    local = k * seg_bytes
    seg_len = np.minimum(seg_bytes, n[seg_chunk] - local)
    return seg_chunk, starts[seg_chunk] + local, seg_len, n[seg_chunk] - local - seg_len


def crc_table(poly: int) -> np.ndarray:
    """The 256-entry byte table of a reflected CRC-32 with polynomial ``poly``."""
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> np.uint32(1)) ^ np.uint32(poly), t >> np.uint32(1))
    return t.astype(np.uint32)


def _mulmod(a: int, b: int, poly: int) -> int:
    """a * b modulo the CRC polynomial, reflected bit order (zlib's ``multmodp``).

    The same bounded 32-step loop as the kernel's ``gdsz_mulmod`` (zlib stops early once the
    remaining bits of ``a`` are zero; the result is the same).
    """
    m, p = 1 << 31, 0
    for _ in range(32):
        if a & m:
            p ^= b
        m >>= 1
        b = (b >> 1) ^ poly if b & 1 else b >> 1
    return p


def crc_shift_table(poly: int) -> np.ndarray:
    """``x**(8 * 2**k) mod P`` for k = 0..63: the factors that shift a CRC past 2**k bytes."""
    out, x = [], 1 << 30  # x**1 in reflected order
    for _ in range(3):    # x**8: one byte
        x = _mulmod(x, x, poly)
    for _ in range(64):
        out.append(x)
        x = _mulmod(x, x, poly)
    return np.array(out, np.uint32)


def crc_shift(crc: int, nbytes: int, poly: int, table: np.ndarray | None = None) -> int:
    """The CRC register ``crc`` advanced past ``nbytes`` zero-free bytes (``crc32_combine``).

    ``crc(A + B) == crc_shift(crc(A), len(B)) ^ crc(B)`` for the standard CRC (init and final
    xor 0xFFFFFFFF), so a chunk's CRC is the xor of every segment's CRC shifted by the bytes after
    it: what the kernel computes, one segment per thread.
    """
    table = crc_shift_table(poly) if table is None else table
    k = 0
    while nbytes:
        if nbytes & 1:
            crc = _mulmod(int(table[k]), crc, poly)
        nbytes >>= 1
        k += 1
    return crc


def _crc_bytes(buf: np.ndarray, table: np.ndarray) -> int:
    c = 0xFFFFFFFF
    for byte in buf.tolist():
        c = int(table[(c ^ byte) & 0xFF]) ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def crc_segments_reference(data: np.ndarray, starts: np.ndarray, stops: np.ndarray,
                           poly: int, seg_bytes: int) -> np.ndarray:
    """The GPU CRC kernel's computation in Python: per segment CRC, shifted, xor-ed per chunk.

    Slow (a Python loop per byte): for tests only.
    """
    table, shifts = crc_table(poly), crc_shift_table(poly)
    flat = np.asarray(data).reshape(-1).view(np.uint8)
    out = np.zeros(len(_as_i64(starts)), np.uint32)
    for c, s, n, after in zip(*(a.tolist() for a in segment_table(starts, stops, seg_bytes)),
                              strict=True):
        out[c] ^= np.uint32(crc_shift(_crc_bytes(flat[s:s + n], table), after, poly, shifts))
    return out


def adler32_segments_reference(data: np.ndarray, starts: np.ndarray, stops: np.ndarray,
                               seg_bytes: int) -> np.ndarray:
    """The GPU Adler-32 kernel's computation in numpy.

    For a chunk of ``L`` bytes ``d_0 .. d_{L-1}``: ``A = 1 + sum d_i`` and
    ``B = L + sum (L - i) d_i`` (mod 65521); both sums split over segments, so each thread adds
    its segment's ``sum d_i`` and ``sum ((L - i) mod 65521) d_i`` into per-chunk totals.
    """
    starts, stops = _as_i64(starts), _as_i64(stops)
    flat = np.asarray(data).reshape(-1).view(np.uint8)
    n = stops - starts
    s_tot = np.zeros(len(starts), np.uint64)
    t_tot = np.zeros(len(starts), np.uint64)
    for c, s, ln, after in zip(*(a.tolist() for a in segment_table(starts, stops, seg_bytes)),
                               strict=True):
        d = flat[s:s + ln].astype(np.uint64)
        # i is the byte's index in the chunk: L - i runs from (after + ln) down to (after + 1)
        w = (np.arange(after + ln, after, -1, dtype=np.uint64)) % np.uint64(ADLER_MOD)
        s_tot[c] += np.uint64(int(d.sum()) % ADLER_MOD)
        t_tot[c] += np.uint64(int((w * d).sum()) % ADLER_MOD)
    a = (1 + s_tot) % np.uint64(ADLER_MOD)
    b = (n.astype(np.uint64) + t_tot) % np.uint64(ADLER_MOD)
    return ((b << np.uint64(16)) | a).astype(np.uint32)
