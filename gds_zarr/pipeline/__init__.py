"""The codec pipeline: import registers it with zarr as ``gds_zarr.GDSCodecPipeline``."""

from __future__ import annotations

from gds_zarr.pipeline._enable import enable
from gds_zarr.pipeline._pipeline import GDSCodecPipeline
from gds_zarr.pipeline._registry import PIPELINE_PATH, register
from gds_zarr.pipeline._stats import PipelineStats, stats

__all__ = ["PIPELINE_PATH", "GDSCodecPipeline", "PipelineStats", "enable", "register", "stats"]

register()
