"""Registering the pipeline with zarr under its public name."""

from __future__ import annotations

import zarr.registry

from gds_zarr.pipeline._pipeline import GDSCodecPipeline

__all__ = ["PIPELINE_PATH", "register"]

PIPELINE_PATH = "gds_zarr.GDSCodecPipeline"
"""The value of zarr's ``codec_pipeline.path`` that selects this pipeline."""


def register() -> None:
    """Register :class:`GDSCodecPipeline` under its module path and :data:`PIPELINE_PATH`.

    ``zarr.registry.register_pipeline`` keys a class by ``module.qualname``
    (``gds_zarr.pipeline._pipeline.GDSCodecPipeline``), and zarr loads the ``zarr.codec_pipeline``
    entry point under that key too, so the short public name is added to the same registry
    (``_pipeline_registry`` in zarr >= 3.2, ``__pipeline_registry`` in 3.1).
    """
    zarr.registry.register_pipeline(GDSCodecPipeline)
    registry = getattr(zarr.registry, "_pipeline_registry", None)
    if registry is None:
        registry = vars(zarr.registry).get("__pipeline_registry")
    if registry is not None:
        registry.register(GDSCodecPipeline, qualname=PIPELINE_PATH)
