"""Host implementations of the RAW bitstreams the emulated ``Codec`` reads and writes.

Each format is the one nvCOMP 6 documents for ``BitstreamKind.RAW`` and CPU libraries write:

- ``Zstd``: one Zstandard frame (numcodecs.zstd, i.e. libzstd);
- ``LZ4``: one LZ4 *block*, no frame and no size prefix (numcodecs.lz4 adds a 4-byte prefix,
  which is added or stripped here);
- ``Deflate``: raw DEFLATE (RFC 1951, ``zlib`` with ``wbits=-15``);
- ``Gzip``: one gzip member (RFC 1952); nvCOMP's gzip.h: "Does not support multi-member gzip
  files", so bytes after the first member are ignored;
- ``Snappy``: a raw Snappy block (varint length, then literals and copies), decoded here.

:func:`decode` raises :class:`CorruptChunk` where nvCOMP's kernel would set a failure status
for the chunk (undecodable input, or more output than the slot holds); the caller decides what
the Python API then shows. Nothing here touches device memory.
"""

from __future__ import annotations

import re
import struct
import zlib

__all__ = [
    "COMPRESSION_ALIGNMENT", "DECOMPRESSION_ALIGNMENT", "EMULATED", "MAX_CHUNK",
    "CorruptChunk", "decode", "decoded_size", "encode", "max_compressed_size",
]

#: Algorithms whose bytes the emulator can decode and encode.
EMULATED = ("Zstd", "LZ4", "Deflate", "Gzip", "Snappy")

#: ``nvcomp<Alg>RequiredDecompressionAlignment`` in libnvcomp 6.0.0.12's headers
#: (include/nvcomp/<alg>.h): the most restrictive of input, output and scratch.
DECOMPRESSION_ALIGNMENT = {"Zstd": 8, "LZ4": 4, "Deflate": 4, "Gzip": 8, "Snappy": 1,
                           "GDeflate": 4, "Bitcomp": 8, "Cascaded": 8, "ANS": 16}
#: ``nvcomp<Alg>RequiredCompressionAlignment`` in the same headers.
COMPRESSION_ALIGNMENT = {"Zstd": 4, "LZ4": 4, "Deflate": 8, "Gzip": 8, "Snappy": 1,
                         "GDeflate": 8, "Bitcomp": 8, "Cascaded": 8, "ANS": 16}
#: ``nvcomp<Alg>DecompressionMaxAllowedChunkSize`` (Gzip: the naive decoder, nvCOMP's default).
MAX_CHUNK = {"Zstd": (1 << 31) - 1, "LZ4": (1 << 32) - 1, "Deflate": (1 << 32) - 1,
             "Gzip": (1 << 32) - 1, "Snappy": (1 << 31) - 1}

_ZSTD_MAGIC = 0xFD2FB528
_INT32_MAX = (1 << 31) - 1


class CorruptChunk(Exception):
    """The chunk does not decode (nvCOMP: a non-success status for it)."""


# ---------------------------------------------------------------- Zstd


def _zstd_content_size(data: bytes) -> int | None:
    """Frame_Content_Size of the first frame (RFC 8878 3.1.1.1), None when absent."""
    if len(data) < 5:
        raise CorruptChunk("zstd: shorter than a frame header")
    magic = struct.unpack_from("<I", data)[0]
    if magic & 0xFFFFFFF0 == 0x184D2A50:
        raise CorruptChunk("zstd: skippable frame")
    if magic != _ZSTD_MAGIC:
        raise CorruptChunk(f"zstd: bad magic 0x{magic:08x}")
    fhd = data[4]
    fcs_flag, single, dict_flag = fhd >> 6, (fhd >> 5) & 1, fhd & 3
    pos = 5 + (0 if single else 1) + (0, 1, 2, 4)[dict_flag]
    width = (1 if single else 0, 2, 4, 8)[fcs_flag]
    if width == 0:
        return None
    if len(data) < pos + width:
        raise CorruptChunk("zstd: truncated frame header")
    value = int.from_bytes(data[pos:pos + width], "little")
    return value + 256 if width == 2 else value


def _zstd_decode(data: bytes, capacity: int) -> bytes:
    from numcodecs import zstd

    size = _zstd_content_size(data)
    if size is not None and size > capacity:
        raise CorruptChunk(f"zstd: frame declares {size} bytes, slot holds {capacity}")
    try:
        out = zstd.decompress(data)
    except RuntimeError as e:
        raise CorruptChunk(f"zstd: {e}") from None
    if len(out) > capacity:
        raise CorruptChunk(f"zstd: {len(out)} bytes decoded, slot holds {capacity}")
    return bytes(out)


# ---------------------------------------------------------------- LZ4 (raw block)


def _lz4_block_size(data: bytes) -> int:
    """Decoded size of an LZ4 block, by walking its sequences (no output written)."""
    i, n, out = 0, len(data), 0
    while True:
        if i >= n:
            raise CorruptChunk("lz4: block ends inside a sequence")
        token = data[i]
        i += 1
        lit = token >> 4
        if lit == 15:
            while True:
                if i >= n:
                    raise CorruptChunk("lz4: block ends inside a literal length")
                b = data[i]
                i += 1
                lit += b
                if b != 255:
                    break
        i += lit
        out += lit
        if i == n:
            return out  # the last sequence has literals only
        if i + 2 > n:
            raise CorruptChunk("lz4: literals run past the end of the block")
        offset = data[i] | (data[i + 1] << 8)
        i += 2
        if offset == 0 or offset > out:
            raise CorruptChunk(f"lz4: match offset {offset} with {out} bytes decoded")
        ml = token & 15
        if ml == 15:
            while True:
                if i >= n:
                    raise CorruptChunk("lz4: block ends inside a match length")
                b = data[i]
                i += 1
                ml += b
                if b != 255:
                    break
        out += ml + 4


_LZ4_SHORT = re.compile(r"expected to decompress (\d+), got (\d+)")


def _lz4_decode(data: bytes, capacity: int) -> bytes:
    from numcodecs import lz4

    if capacity > _INT32_MAX:  # numcodecs' size prefix is an int32
        size = _lz4_block_size(data)
        if size > capacity:
            raise CorruptChunk(f"lz4: {size} bytes decoded, slot holds {capacity}")
        capacity = size
    # numcodecs wants the exact size: try the slot's capacity, then what the block gave.
    try:
        return bytes(lz4.decompress(struct.pack("<i", capacity) + data))
    except RuntimeError as e:
        m = _LZ4_SHORT.search(str(e))
        if m is None:
            raise CorruptChunk(f"lz4: {e}") from None
        size = int(m.group(2))
    try:
        return bytes(lz4.decompress(struct.pack("<i", size) + data))
    except RuntimeError as e:
        raise CorruptChunk(f"lz4: {e}") from None


# ---------------------------------------------------------------- Deflate / Gzip


def _inflate(data: bytes, capacity: int | None, what: str) -> bytes:
    """Raw DEFLATE of ``data``; at most ``capacity`` bytes (None: any)."""
    d = zlib.decompressobj(-15)
    try:
        out = d.decompress(data) if capacity is None else d.decompress(data, capacity + 1)
    except zlib.error as e:
        raise CorruptChunk(f"{what}: {e}") from None
    if capacity is not None and len(out) > capacity:
        raise CorruptChunk(f"{what}: more than {capacity} bytes decoded")
    if not d.eof:
        raise CorruptChunk(f"{what}: the stream ends before its final block")
    return out


def _gzip_payload(data: bytes) -> bytes:
    """The DEFLATE data of the first gzip member (its header parsed as RFC 1952 says)."""
    if len(data) < 10 or data[0] != 0x1F or data[1] != 0x8B or data[2] != 8:
        raise CorruptChunk("gzip: bad member header")
    flg = data[3]
    if flg & 0xE0:
        raise CorruptChunk("gzip: reserved flag bits set")
    pos = 10
    if flg & 4:  # FEXTRA
        if pos + 2 > len(data):
            raise CorruptChunk("gzip: truncated FEXTRA")
        pos += 2 + (data[pos] | data[pos + 1] << 8)
    for bit in (8, 16):  # FNAME, FCOMMENT: zero-terminated
        if flg & bit:
            end = data.find(b"\0", pos)
            if end < 0:
                raise CorruptChunk("gzip: unterminated header string")
            pos = end + 1
    if flg & 2:  # FHCRC
        pos += 2
    if pos > len(data):
        raise CorruptChunk("gzip: truncated header")
    return data[pos:]


# ---------------------------------------------------------------- Snappy (raw)


def _varint(data: bytes) -> tuple[int, int]:
    value, shift = 0, 0
    for i in range(min(5, len(data))):
        b = data[i]
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i + 1
        shift += 7
    raise CorruptChunk("snappy: bad length preamble")


def _snappy_decode(data: bytes, capacity: int) -> bytes:
    n, i = _varint(data)
    if n > capacity:
        raise CorruptChunk(f"snappy: block declares {n} bytes, slot holds {capacity}")
    out = bytearray(n)
    o, end = 0, len(data)
    while i < end:
        tag = data[i]
        i += 1
        kind = tag & 3
        if kind == 0:  # literal
            ln = tag >> 2
            if ln >= 60:
                extra = ln - 59
                if i + extra > end:
                    raise CorruptChunk("snappy: truncated literal length")
                ln = int.from_bytes(data[i:i + extra], "little")
                i += extra
            ln += 1
            if i + ln > end or o + ln > n:
                raise CorruptChunk("snappy: literal out of bounds")
            out[o:o + ln] = data[i:i + ln]
            i += ln
            o += ln
            continue
        if kind == 1:
            if i + 1 > end:
                raise CorruptChunk("snappy: truncated copy")
            ln, off = ((tag >> 2) & 7) + 4, ((tag >> 5) << 8) | data[i]
            i += 1
        else:
            w = 2 if kind == 2 else 4
            if i + w > end:
                raise CorruptChunk("snappy: truncated copy")
            ln, off = (tag >> 2) + 1, int.from_bytes(data[i:i + w], "little")
            i += w
        if off == 0 or off > o or o + ln > n:
            raise CorruptChunk(f"snappy: copy (offset {off}, length {ln}) out of bounds")
        if off >= ln:
            out[o:o + ln] = out[o - off:o - off + ln]
        else:
            for k in range(ln):  # overlaps its own output: byte by byte
                out[o + k] = out[o - off + k]
        o += ln
    if o != n:
        raise CorruptChunk(f"snappy: {o} bytes decoded, block declares {n}")
    return bytes(out)


def _snappy_encode(data: bytes) -> bytes:
    """A valid Snappy block made of literals only (what any Snappy decoder reads)."""
    n = len(data)
    head = bytearray()
    v = n
    while True:
        b = v & 0x7F
        v >>= 7
        head.append(b | (0x80 if v else 0))
        if not v:
            break
    parts = [bytes(head)]
    for s in range(0, n, 65536):
        piece = data[s:s + 65536]
        parts.append(bytes([61 << 2]) + struct.pack("<H", len(piece) - 1) + piece)
    return b"".join(parts)


# ---------------------------------------------------------------- the interface


def decode(algorithm: str, data: bytes, capacity: int) -> bytes:
    """Decode one RAW chunk into at most ``capacity`` bytes.

    Raises
    ------
    CorruptChunk
        The chunk does not decode, or decodes to more than ``capacity`` bytes.
    """
    if algorithm == "Zstd":
        return _zstd_decode(data, capacity)
    if algorithm == "LZ4":
        return _lz4_decode(data, capacity)
    if algorithm == "Deflate":
        return _inflate(data, capacity, "deflate")
    if algorithm == "Gzip":
        return _inflate(_gzip_payload(data), capacity, "gzip")
    if algorithm == "Snappy":
        return _snappy_decode(data, capacity)
    raise AssertionError(algorithm)


def decoded_size(algorithm: str, data: bytes) -> int:
    """What nvCOMP's size query reports for a RAW chunk (``get_uncomp_buffer_size``).

    Zstd and Snappy read a size field; LZ4, Deflate and Gzip walk the stream.

    Raises
    ------
    CorruptChunk
        The size cannot be known (unparsable, or a Zstd frame without a content size).
    """
    if algorithm == "Zstd":
        size = _zstd_content_size(data)
        if size is None:
            raise CorruptChunk("zstd: the frame has no content size")
        return size
    if algorithm == "LZ4":
        return _lz4_block_size(data)
    if algorithm == "Deflate":
        return len(_inflate(data, None, "deflate"))
    if algorithm == "Gzip":
        return len(_inflate(_gzip_payload(data), None, "gzip"))
    if algorithm == "Snappy":
        return _varint(data)[0]
    raise AssertionError(algorithm)


#: zlib levels for nvCOMP's Deflate/Gzip ``algorithm_type`` 0..5 (throughput to ratio).
_ZLIB_LEVEL = {0: 1, 1: 1, 2: 3, 3: 3, 4: 6, 5: 9}


def encode(algorithm: str, data: bytes, algorithm_type: int = 1) -> bytes:
    """One RAW chunk of ``data`` (bytes any decoder of the format reads)."""
    if algorithm == "Zstd":
        from numcodecs import zstd

        return bytes(zstd.compress(data, 1))
    if algorithm == "LZ4":
        from numcodecs import lz4

        return bytes(lz4.compress(data))[4:]  # drop numcodecs' size prefix: a raw block
    if algorithm in ("Deflate", "Gzip"):
        level = _ZLIB_LEVEL.get(int(algorithm_type), 1)
        c = zlib.compressobj(level, zlib.DEFLATED, -15 if algorithm == "Deflate" else 31)
        return c.compress(data) + c.flush()
    if algorithm == "Snappy":
        return _snappy_encode(data)
    raise AssertionError(algorithm)


def max_compressed_size(algorithm: str, n: int) -> int:
    """An upper bound on :func:`encode`'s output for ``n`` bytes (libzstd's, liblz4's,
    zlib's and Snappy's published bounds, rounded up generously)."""
    if algorithm == "Zstd":
        return n + (n >> 8) + ((((128 << 10) - n) >> 11) if n < (128 << 10) else 0) + 64
    if algorithm == "LZ4":
        return n + n // 255 + 16
    if algorithm in ("Deflate", "Gzip"):
        return n + (n >> 3) + (n >> 6) + 64 + (18 if algorithm == "Gzip" else 0)
    if algorithm == "Snappy":
        return 32 + n + n // 6
    raise AssertionError(algorithm)
