"""Host decodes whose output is bounded by what the chain can take, not by what the data says.

A compressed chunk tells its codec how large it decodes: a size in its header (zstd, LZ4, Blosc),
or nothing, the stream decoding until its end (deflate, a zstd frame without a content size).
numcodecs believes it: a 4 KiB chunk whose header claims 256 MiB, or 0.5 MiB of deflated zeros,
makes it allocate hundreds of MiB before any size check runs (issue 19, item 3). The chain fixes
every step's output instead: the last step makes the chunk's decoded bytes, and each earlier
step makes the next step's input, whose size the next step fixes (:func:`output_bounds`). Here:

* :func:`output_bounds`: the most bytes each step of a chain may decode to;
* :func:`decoder_for`: for gzip, zlib and zstd (numcodecs' own codecs), a decode that stops one
  byte past its bound and accepts exactly the inputs numcodecs accepts, else None.

The CPU decoder (:func:`gds_zarr.decode._cpu._decode_one`) checks a declared size against the
bound before a codec allocates it, and decodes the streams without one through these.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numcodecs
import numpy as np

from gds_zarr.decode import _zstd_native
from gds_zarr.decode._base import BytesStep

__all__ = ["BoundedDecode", "decoder_for", "input_bound", "output_bounds"]

#: ``decode(buf, at_most, out) -> bytes-like or None``: ``buf`` decoded, or None if it decodes
#: to more than ``at_most`` bytes (decoding stops there). ``out`` (None, or ``at_most`` bytes):
#: decode into it, returning the part written. Codec errors raise as numcodecs' would.
BoundedDecode = Callable[[Any, int, np.ndarray | None], Any]

#: A compressor's input when another step follows it: a valid frame is barely larger than what
#: it decodes to (Blosc of 1-byte blocks, the worst an encoder can be made to write, is 9x), so
#: 16x its output plus 64 KiB of headers refuses no chain an encoder writes, and still bounds a
#: header's claim by the chunk's size rather than by what it says.
GENEROUS_FACTOR = 16
GENEROUS_SLACK = 64 << 10

# v2 filters whose decode maps each item to one item: (encoded dtype, decoded dtype) attributes.
_ITEM_FILTERS = {"delta": ("astype", "dtype"), "fixedscaleoffset": ("astype", "dtype"),
                 "quantize": ("astype", "dtype"), "astype": ("encode_dtype", "decode_dtype")}
# filters whose decode returns as many bytes as it is given
_SAME_SIZE = frozenset({"shuffle", "bitround"})


def _codec_id(codec: Any) -> str:
    return str(getattr(codec, "codec_id", type(codec).__name__)).lower()


def input_bound(step: BytesStep, out_nbytes: int) -> int:
    """The most bytes ``step`` may be given to decode to at most ``out_nbytes``.

    Exact where the step fixes it (crc32c, fletcher32, the v2 filters of
    :mod:`gds_zarr.decode.chain`), else :data:`GENEROUS_FACTOR` times ``out_nbytes`` plus
    :data:`GENEROUS_SLACK`.
    """
    if step.kind in ("crc32c", "fletcher32"):
        return out_nbytes + 4
    cid = _codec_id(step.codec)
    if cid in _SAME_SIZE:
        return out_nbytes
    names = _ITEM_FILTERS.get(cid)
    if names is not None:
        try:
            encoded, decoded = (int(np.dtype(getattr(step.codec, n)).itemsize) for n in names)
        except (AttributeError, TypeError):  # not the numcodecs filter its id names
            pass
        else:
            if decoded > 0:
                return -(-out_nbytes // decoded) * encoded
    return out_nbytes * GENEROUS_FACTOR + GENEROUS_SLACK


def output_bounds(steps: Sequence[BytesStep], nbytes: int) -> list[int]:
    """The most bytes each of ``steps`` (decode order) may decode to, for chunks of ``nbytes``.

    Parameters
    ----------
    steps
        Bytes -> bytes steps in decode order.
    nbytes
        Decoded size of every chunk: the last step's output.

    Returns
    -------
    list of int
        One bound per step; the last is ``nbytes``.
    """
    bounds = [nbytes] * len(steps)
    for k in range(len(steps) - 2, -1, -1):
        bounds[k] = input_bound(steps[k + 1], bounds[k + 1])
    return bounds


def _gunzip(buf: Any, at_most: int, out: np.ndarray | None) -> Any:
    """numcodecs' ``GZip.decode``: :class:`gzip.GzipFile` (members, zero padding, CRC and
    length checks), read to at most ``at_most + 1`` bytes."""
    with gzip.GzipFile(fileobj=io.BytesIO(buf), mode="rb") as f:
        if out is not None:
            got = f.readinto(out)
            return None if f.read(1) else out[:got]  # read(1) reaches the end: all checked
        data = f.read(at_most + 1)
    return None if len(data) > at_most else data


def _inflate(buf: Any, at_most: int, out: np.ndarray | None) -> Any:
    """numcodecs' ``Zlib.decode``: :func:`zlib.decompress` (one stream, bytes after its end
    ignored), stopped at ``at_most + 1`` bytes."""
    d = zlib.decompressobj()
    data = d.decompress(buf, at_most + 1)
    if len(data) > at_most:
        return None
    if not d.eof:  # the error zlib.decompress raises
        raise zlib.error("Error -5 while decompressing data: incomplete or truncated stream")
    if out is None:
        return data
    out[: len(data)] = np.frombuffer(data, np.uint8)
    return out[: len(data)]


def _unzstd(buf: Any, at_most: int, out: np.ndarray | None) -> Any:
    """A zstd chunk without a content size: libzstd into ``at_most`` bytes, as numcodecs does
    given an ``out`` (its streaming decode without one grows its output without bound)."""
    src = np.ascontiguousarray(np.asarray(buf).reshape(-1).view(np.uint8))
    if not src.nbytes:  # libzstd decodes no frames to nothing; numcodecs refuses
        raise RuntimeError("Zstd decompression error: invalid input data")
    dst = out if out is not None else np.empty(at_most, np.uint8)
    try:
        got = _zstd_native.decompress_into(dst.ctypes.data, dst.nbytes, src.ctypes.data,
                                           src.nbytes)
    except _zstd_native.ZstdError as e:
        if str(e) == "Destination buffer is too small":  # libzstd's dstSize_tooSmall
            return None
        raise RuntimeError(f"Zstd decompression error: {e}") from None
    return dst[:got]


def decoder_for(step: BytesStep) -> BoundedDecode | None:
    """A bounded decode for ``step``'s streams without a declared size, or None.

    gzip and zlib (numcodecs' ``GZip`` and ``Zlib``) and zstd (numcodecs' ``Zstd``, where
    libzstd loads); other codecs decode through numcodecs, unbounded.
    """
    codec = step.codec
    if step.kind == "gzip" and isinstance(codec, numcodecs.GZip):
        return _gunzip
    if step.kind == "zlib" and isinstance(codec, numcodecs.Zlib):
        return _inflate
    if step.kind == "zstd" and isinstance(codec, numcodecs.Zstd) and _zstd_native.available():
        return _unzstd
    return None
