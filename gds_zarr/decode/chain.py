"""Turn a zarr codec chain into bytes steps plus an array step, or say why it is unsupported.

A *supported* chain is one whose decode gds_zarr reproduces bit for bit:

* array -> array: any number of ``transpose`` codecs;
* array -> bytes: ``bytes`` (any endianness), zarr v2's ``V2Codec`` (numcodecs compressor and a
  whitelist of filters, ``C`` or ``F`` order), or ``sharding_indexed`` whose inner chain is itself
  supported and not sharded, with an index encoded by ``bytes`` (little endian) and optionally
  ``crc32c``;
* bytes -> bytes: ``zstd``, ``gzip``, ``blosc``, ``crc32c`` and numcodecs bytes codecs through
  ``zarr.codecs.numcodecs`` (HDF5's filters as VirtualiZarr writes them among them:
  ``numcodecs.shuffle``, ``numcodecs.zlib``, ``numcodecs.fletcher32``);
* data types: fixed-size booleans, integers, floats and complex numbers (either byte order).

Anything else returns :class:`Unsupported` and the pipeline hands the read to zarr.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numcodecs
import numpy as np

from gds_zarr.decode._base import BytesStep, StepKind
from gds_zarr.planning.shards import ShardLayout

__all__ = ["ArrayStep", "ChainPlan", "ShardLayout", "Unsupported", "plan_chain"]

# numcodecs ids whose decode gds_zarr's GPU backend can also do; others decode on the CPU only.
_KIND_BY_ID: dict[str, StepKind] = {
    "zstd": "zstd", "gzip": "gzip", "zlib": "zlib", "lz4": "lz4", "blosc": "blosc",
    "crc32c": "crc32c", "fletcher32": "fletcher32", "shuffle": "shuffle",
}
# v2 filters whose decode returns the array's own dtype and item count: their output bytes are
# the chunk bytes. Other filters (object codecs, packbits, categorize, ...) go to zarr.
_V2_FILTERS = frozenset({"delta", "shuffle", "astype", "fixedscaleoffset", "quantize",
                         "bitround"})
_NUMERIC_KINDS = frozenset("biufc")


@dataclass(frozen=True, slots=True)
class Unsupported:
    """A chain (or data type) this pipeline does not decode; ``reason`` says which part."""

    reason: str


@dataclass(frozen=True, slots=True)
class ArrayStep:
    """How the decoded bytes of one chunk become the chunk array.

    Attributes
    ----------
    stored_dtype
        dtype of the decoded bytes, byte order included (may differ from the array's dtype).
    stored_shape
        Shape of the chunk as laid out in the bytes (after the encode-side transposes).
    order
        Memory order of ``stored_shape`` in the bytes: ``"C"`` (v3), or the v2 array's order.
    axes
        Permutation that turns the stored layout back into the chunk's axes (``None``: identity).
    """

    stored_dtype: np.dtype[Any]
    stored_shape: tuple[int, ...]
    order: Literal["C", "F"]
    axes: tuple[int, ...] | None

    @property
    def decoded_nbytes(self) -> int:
        """Bytes one decoded chunk occupies."""
        return math.prod(self.stored_shape) * self.stored_dtype.itemsize

    @property
    def encoded_bound(self) -> int:
        """A bound on one encoded chunk's size (codecs add at most a little to incompressible
        data): the budget's estimate of a chunk, and the store's hint to read it in one pass."""
        return self.decoded_nbytes * 65 // 64 + 64

    def to_chunk(self, row: Any) -> Any:
        """View one decoded row (numpy or CuPy uint8) as the chunk array, without copying.

        A byte-swapped dtype is kept as a view: assigning into ``out`` converts the byte order.
        """
        arr = row.view(self.stored_dtype).reshape(self.stored_shape, order=self.order)
        return arr if self.axes is None else arr.transpose(self.axes)


@dataclass(frozen=True, slots=True)
class ChainPlan:
    """A supported chain: bytes steps in decode order, the array step, an optional shard layout.

    For a sharded array, ``steps`` and ``array`` describe the *inner* chunks.
    """

    steps: tuple[BytesStep, ...]
    array: ArrayStep
    shard: ShardLayout | None = None


def _supported_dtype(dtype: np.dtype[Any]) -> bool:
    return dtype.kind in _NUMERIC_KINDS and dtype.fields is None and dtype.subdtype is None


def _codec_id(codec: Any) -> str:
    return str(getattr(codec, "codec_id", type(codec).__name__)).lower()


def _numcodecs_step(codec: Any) -> BytesStep:
    cid = _codec_id(codec)
    return BytesStep(kind=_KIND_BY_ID.get(cid, "numcodecs"), codec=codec, name=cid)


def _bytes_bytes_step(codec: Any) -> BytesStep | Unsupported:
    from zarr.codecs import BloscCodec, Crc32cCodec, GzipCodec, ZstdCodec

    if isinstance(codec, ZstdCodec):
        return BytesStep("zstd", numcodecs.Zstd(level=codec.level), "zstd")
    if isinstance(codec, GzipCodec):
        return BytesStep("gzip", numcodecs.GZip(level=codec.level), "gzip")
    if isinstance(codec, BloscCodec):
        # Blosc frames are self-describing: decode needs none of the encode parameters.
        return BytesStep("blosc", numcodecs.Blosc(), "blosc")
    if isinstance(codec, Crc32cCodec):
        return BytesStep("crc32c", numcodecs.CRC32C(location="end"), "crc32c")
    try:
        from zarr.codecs.numcodecs._codecs import _NumcodecsBytesBytesCodec
    except ImportError:  # pragma: no cover - zarr without the numcodecs adapters
        _NumcodecsBytesBytesCodec = ()  # type: ignore[assignment,misc]
    if isinstance(codec, _NumcodecsBytesBytesCodec):
        inner = codec._codec  # the numcodecs object the adapter wraps
        return BytesStep(_KIND_BY_ID.get(_codec_id(inner), "numcodecs"), inner,
                         f"numcodecs.{_codec_id(inner)}")
    return Unsupported(f"bytes codec {type(codec).__name__} is not supported")


def _native(zdtype: Any) -> np.dtype[Any] | None:
    try:
        return np.dtype(zdtype.to_native_dtype())
    except Exception:  # noqa: BLE001 - a zarr dtype with no fixed numpy equivalent
        return None


def _plan_flat(codecs: Sequence[Any], shape: tuple[int, ...], zdtype: Any,
               order: str) -> ChainPlan | Unsupported:
    """Plan a chain that contains no sharding codec."""
    from zarr.codecs import BytesCodec, TransposeCodec
    from zarr.codecs._v2 import V2Codec

    dtype = _native(zdtype)
    if dtype is None or not _supported_dtype(dtype):
        return Unsupported(f"data type {zdtype} is not supported")
    perm = tuple(range(len(shape)))
    stored_shape = shape
    i = 0
    while i < len(codecs) and isinstance(codecs[i], TransposeCodec):
        order_t = tuple(int(a) for a in codecs[i].order)
        # Encoding transposes the (already transposed) array by order_t.
        perm = tuple(perm[a] for a in order_t)
        stored_shape = tuple(stored_shape[a] for a in order_t)
        i += 1
    if i == len(codecs):
        return Unsupported("no array -> bytes codec")
    ab = codecs[i]
    steps: list[BytesStep] = []
    if isinstance(ab, BytesCodec):
        endian = getattr(ab.endian, "value", ab.endian)
        stored = dtype if endian is None or dtype.itemsize == 1 else dtype.newbyteorder(
            "<" if endian == "little" else ">")
        mem_order: Literal["C", "F"] = "C"
    elif isinstance(ab, V2Codec):
        if ab.compressor is not None:
            steps.append(_numcodecs_step(ab.compressor))
        for f in reversed(ab.filters or ()):
            if _codec_id(f) not in _V2_FILTERS:
                return Unsupported(f"zarr v2 filter {_codec_id(f)!r} is not supported")
            kind: StepKind = "shuffle" if _codec_id(f) == "shuffle" else "numcodecs"
            steps.append(BytesStep(kind, f, f"numcodecs.{_codec_id(f)}"))
        stored = dtype
        mem_order = "F" if order == "F" else "C"
    else:
        return Unsupported(f"array -> bytes codec {type(ab).__name__} is not supported")
    # bytes -> bytes codecs decode in reverse encode order, before the array -> bytes step.
    for bb in reversed(codecs[i + 1:]):
        step = _bytes_bytes_step(bb)
        if isinstance(step, Unsupported):
            return step
        steps.append(step)
    inverse = tuple(int(a) for a in np.argsort(perm))
    axes = None if inverse == tuple(range(len(shape))) else inverse
    return ChainPlan(tuple(steps), ArrayStep(stored, stored_shape, mem_order, axes))


def _plan_sharded(sharding: Any, shard_shape: tuple[int, ...], zdtype: Any,
                  order: str) -> ChainPlan | Unsupported:
    from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec

    if any(isinstance(c, ShardingCodec) for c in sharding.codecs):
        return Unsupported("nested sharding is not supported")
    chunk_shape = tuple(int(c) for c in sharding.chunk_shape)
    if len(chunk_shape) != len(shard_shape) or any(
            s % c for s, c in zip(shard_shape, chunk_shape, strict=True)):
        return Unsupported("shard shape is not a multiple of the inner chunk shape")
    idx = tuple(sharding.index_codecs)
    if not idx or not isinstance(idx[0], BytesCodec) or getattr(
            idx[0].endian, "value", idx[0].endian) not in ("little", None):
        return Unsupported("shard index codecs other than bytes(little)[, crc32c]")
    if len(idx) > 2 or (len(idx) == 2 and not isinstance(idx[1], Crc32cCodec)):
        return Unsupported("shard index codecs other than bytes(little)[, crc32c]")
    inner = _plan_flat(tuple(sharding.codecs), chunk_shape, zdtype, order)
    if isinstance(inner, Unsupported):
        return inner
    location = getattr(sharding.index_location, "value", sharding.index_location)
    layout = ShardLayout(chunk_shape, tuple(s // c for s, c in zip(shard_shape, chunk_shape,
                                                                     strict=True)),
                         "start" if location == "start" else "end", len(idx) == 2)
    return ChainPlan(inner.steps, inner.array, layout)


def plan_chain(codecs: Sequence[Any], chunk_spec: Any) -> ChainPlan | Unsupported:
    """Plan the decode of ``codecs`` for chunks described by ``chunk_spec`` (a zarr ArraySpec).

    Parameters
    ----------
    codecs
        The pipeline's codecs in encode order (array -> array, array -> bytes, bytes -> bytes).
    chunk_spec
        The chunk's ``ArraySpec``: shape, zarr dtype, config order.

    Returns
    -------
    ChainPlan or Unsupported
    """
    from zarr.codecs import ShardingCodec

    codecs = tuple(codecs)
    shape = tuple(int(s) for s in chunk_spec.shape)
    order = getattr(chunk_spec, "order", "C")
    shards = [c for c in codecs if isinstance(c, ShardingCodec)]
    if shards:
        if len(codecs) != 1:
            return Unsupported("sharding combined with other outer codecs is not supported")
        return _plan_sharded(shards[0], shape, chunk_spec.dtype, order)
    return _plan_flat(codecs, shape, chunk_spec.dtype, order)
