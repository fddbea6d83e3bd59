"""Counters the pipeline keeps, so tests can check what happened instead of timing it."""

from __future__ import annotations

from dataclasses import dataclass

from gds_zarr._counters import Counters

__all__ = ["PipelineStats", "stats"]


@dataclass
class PipelineStats(Counters):
    """Process-wide pipeline counters (thread safe).

    Attributes
    ----------
    fast_reads
        ``read`` calls served by gds_zarr's batched path.
    delegated_reads
        ``read`` calls handed to zarr's ``BatchedCodecPipeline`` (unsupported chain, data type,
        store or selection); ``last_delegation`` says why the last one was.
    batches
        Streaming batches (one store read + one decode each) of the fast path.
    store_reads
        Batched store reads issued (shard indexes included).
    chunks_decoded
        Chunks (inner chunks for sharded arrays) decoded by the fast path.
    decoded_in_place
        Of those, chunks the GPU decoder wrote straight into the output (no scatter).
    staging_bytes, peak_staging_bytes
        Encoded plus decoded bytes held right now, and the most held at once since the last
        :meth:`reset`.
    fast_read_seconds
        Wall time spent inside the fast path's ``read`` calls (what zarr does before calling
        the pipeline, building one request per chunk, is not in it).
    read_seconds
        Wall time of the batched store reads (shard indexes included). Reads that run ahead
        while a batch decodes overlap ``decode_seconds``.
    decode_seconds
        Wall time of decoding and scattering batches.
    read_many_calls, read_many_seconds
        :func:`gds_zarr.read_many` calls (the loader's batches included) and their wall time.
    read_many_via_zarr
        Selections of those calls that zarr's own ``getitem`` read (unsupported chains,
        irregular grids, selections the planner leaves to zarr).
    version_rereads
        Reads repeated because a shard changed while it was read (see
        :mod:`gds_zarr.pipeline._versions`).
    """

    fast_reads: int = 0
    delegated_reads: int = 0
    last_delegation: str = ""
    batches: int = 0
    store_reads: int = 0
    chunks_decoded: int = 0
    decoded_in_place: int = 0
    staging_bytes: int = 0
    peak_staging_bytes: int = 0
    fast_read_seconds: float = 0.0
    read_seconds: float = 0.0
    decode_seconds: float = 0.0
    read_many_calls: int = 0
    read_many_seconds: float = 0.0
    read_many_via_zarr: int = 0
    version_rereads: int = 0

    def delegated(self, reason: str) -> None:
        """Count one delegated read and remember why."""
        with self._lock:
            self.delegated_reads += 1
            self.last_delegation = reason

    def stage(self, nbytes: int) -> None:
        """``nbytes`` more staging memory is held (negative: released)."""
        with self._lock:
            self.staging_bytes += nbytes
            self.peak_staging_bytes = max(self.peak_staging_bytes, self.staging_bytes)


stats = PipelineStats()
