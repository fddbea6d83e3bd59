"""GDSCodecPipeline: zarr's codec pipeline with a batched read path.

Everything except ``read`` (encode, decode, write, validation, sizes) is delegated to an inner
zarr ``BatchedCodecPipeline`` built from the same codecs, so writes stay exactly zarr's. ``read``
takes the fast path (:mod:`gds_zarr.pipeline._read`) when the codec chain, data type, store and
selections are supported, and otherwise hands the whole read to the inner pipeline: never a
different answer from zarr's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from zarr.abc.codec import CodecPipeline
from zarr.core.codec_pipeline import BatchedCodecPipeline

from gds_zarr.decode.chain import Unsupported, plan_chain
from gds_zarr.pipeline._read import Unhandled, fast_read
from gds_zarr.pipeline._stats import stats

if TYPE_CHECKING:
    from typing import Self

__all__ = ["GDSCodecPipeline"]

log = logging.getLogger("gds_zarr.pipeline")

try:  # zarr >= 3.2 returns one GetResult per chunk from read
    from zarr.abc.codec import GetResult as _GetResult
except ImportError:  # zarr 3.1: read returns None
    _GetResult = None

_PRESENT: Any = None if _GetResult is None else _GetResult(status="present")
_MISSING: Any = None if _GetResult is None else _GetResult(status="missing")


@dataclass(frozen=True)
class GDSCodecPipeline(CodecPipeline):
    """A zarr ``CodecPipeline`` that reads a whole selection in batches.

    Parameters
    ----------
    inner
        zarr's ``BatchedCodecPipeline`` for the same codecs; it does every write and every read
        the fast path does not support.
    """

    inner: BatchedCodecPipeline
    # Plans per (chunk shape, dtype, order): planning a chain costs more than a small read.
    _plans: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_codecs(cls, codecs: Iterable[Any], *, batch_size: int | None = None) -> Self:
        # docstring inherited
        return cls(BatchedCodecPipeline.from_codecs(codecs, batch_size=batch_size))

    def evolve_from_array_spec(self, array_spec: Any) -> Self:
        # docstring inherited
        return type(self)(self.inner.evolve_from_array_spec(array_spec))

    # -- everything but read: zarr's own ---------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        return iter(self.inner)

    @property
    def supports_partial_decode(self) -> bool:
        # docstring inherited
        return self.inner.supports_partial_decode

    @property
    def supports_partial_encode(self) -> bool:
        # docstring inherited
        return self.inner.supports_partial_encode

    def validate(self, *, shape: tuple[int, ...], dtype: Any, chunk_grid: Any) -> None:
        # docstring inherited
        self.inner.validate(shape=shape, dtype=dtype, chunk_grid=chunk_grid)

    def compute_encoded_size(self, byte_length: int, array_spec: Any) -> int:
        # docstring inherited
        return self.inner.compute_encoded_size(byte_length, array_spec)

    async def decode(self, chunk_bytes_and_specs: Iterable[tuple[Any, Any]]) -> Iterable[Any]:
        # docstring inherited
        return await self.inner.decode(chunk_bytes_and_specs)

    async def encode(self, chunk_arrays_and_specs: Iterable[tuple[Any, Any]]) -> Iterable[Any]:
        # docstring inherited
        return await self.inner.encode(chunk_arrays_and_specs)

    async def write(self, batch_info: Iterable[tuple[Any, Any, Any, Any, bool]], value: Any,
                    drop_axes: tuple[int, ...] = ()) -> None:
        # docstring inherited
        await self.inner.write(batch_info, value, drop_axes)

    # -- read ------------------------------------------------------------------------------
    async def read(self, batch_info: Iterable[tuple[Any, Any, Any, Any, bool]], out: Any,
                   drop_axes: tuple[int, ...] = ()) -> Any:
        """Read, decode and scatter every chunk of ``batch_info`` into ``out``.

        Returns
        -------
        None on zarr 3.1; one ``GetResult`` per chunk on zarr >= 3.2.

        Raises
        ------
        gds_zarr.errors.ChunkDecodeError, gds_zarr.errors.ShardIndexError
            For corrupt chunks or shard indexes (named by key).
        """
        batch = list(batch_info)
        if not batch:
            return None if _GetResult is None else ()
        plan = self._plan(batch[0][1])
        if isinstance(plan, Unsupported):
            reason = plan.reason
        else:
            device = "gpu" if _is_device_buffer(out) else "cpu"
            try:
                present = await fast_read(plan, batch, out, drop_axes, device)
            except Unhandled as e:
                reason = str(e)
            else:
                if _GetResult is None:
                    return None
                return tuple(_PRESENT if p else _MISSING for p in present)
        stats.delegated(reason)
        log.debug("read delegated to zarr's BatchedCodecPipeline: %s", reason)
        return await self.inner.read(batch, out, drop_axes)


    def _plan(self, spec: Any) -> Any:
        """``plan_chain`` for ``spec``, cached per chunk shape, data type and order."""
        try:
            key = (tuple(spec.shape), spec.dtype, getattr(spec, "order", "C"))
            plan = self._plans.get(key)
        except TypeError:  # an unhashable data type: plan every time
            return plan_chain(tuple(self.inner), spec)
        if plan is None:
            plan = self._plans[key] = plan_chain(tuple(self.inner), spec)
        return plan


def _is_device_buffer(out: Any) -> bool:
    import numpy as np

    return not isinstance(out.as_ndarray_like(), np.ndarray)
