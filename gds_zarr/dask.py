"""Dask helpers: make gds_zarr's read path apply inside ``distributed`` workers.

Why this is needed: :func:`gds_zarr.enable` changes zarr's config and gds_zarr's settings in the
process that calls it. With the threaded scheduler that is enough. Workers of a
``distributed`` cluster are other processes: a zarr array pickled into them carries its store
(``GDSStore`` pickles by root and read-only flag) and its codec pipeline object, but not the
client's ``gds_zarr.settings`` nor zarr's config, so arrays the workers open themselves, and
every setting (``device``, thread counts, memory budget), would silently fall back to the
defaults. :class:`GDSZarrPlugin` runs ``gds_zarr.enable(device, **settings)`` in every worker,
including workers that join later::

    from distributed import Client
    import gds_zarr.dask

    client = Client(cluster)
    gds_zarr.dask.enable_on_workers(client, device="gpu", memory_budget="2GiB")
    z = zarr.open_array(gds_zarr.GDSStore("data.zarr"), mode="r")
    total = dask.array.from_zarr(z).sum().compute()

With ``dask_cuda.LocalCUDACluster`` (one worker per GPU, each with its own
``CUDA_VISIBLE_DEVICES``), each worker's "GPU" is its own device, so each reads its chunks onto
its own GPU.

Importing this module needs ``distributed`` (``pip install "dask[distributed]"``).
"""

from __future__ import annotations

from typing import Any

try:
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError as e:  # pragma: no cover - exercised only without distributed
    raise ImportError(
        "gds_zarr.dask needs dask.distributed: pip install 'dask[distributed]'"
    ) from e

__all__ = ["GDSZarrPlugin", "enable_on_workers", "worker_report"]


class GDSZarrPlugin(WorkerPlugin):
    """A ``distributed`` worker plugin that calls :func:`gds_zarr.enable` in each worker.

    Parameters
    ----------
    device : {"auto", "gpu", "cpu"}
        Passed to :func:`gds_zarr.enable` in each worker.
    **settings
        gds_zarr settings (see :mod:`gds_zarr.settings`) applied in each worker.
    """

    name = "gds-zarr"

    def __init__(self, device: str = "auto", **settings: Any) -> None:
        from gds_zarr import settings as _settings

        # Fail here, in the client, on a bad device or setting, not later in every worker.
        _settings.SETTINGS["device"].parse(device)
        for key, value in settings.items():
            if key not in _settings.SETTINGS:
                raise KeyError(f"unknown gds_zarr setting {key!r}; known settings: "
                               f"{', '.join(_settings.SETTINGS)}")
            _settings.SETTINGS[key].parse(value)
        self.device = device
        self.settings = dict(settings)
        self._enabled: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"device": self.device, "settings": self.settings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.device = state["device"]
        self.settings = state["settings"]
        self._enabled = None

    def setup(self, worker: Any) -> None:
        """Enable gds_zarr in the worker's process (runs when the worker starts or joins)."""
        from gds_zarr.pipeline import enable

        self._enabled = enable(self.device, **self.settings)

    def teardown(self, worker: Any) -> None:
        """Restore the worker's zarr config and settings."""
        if self._enabled is not None:
            self._enabled.restore()
            self._enabled = None


def enable_on_workers(client: Any, device: str = "auto", **settings: Any) -> GDSZarrPlugin:
    """Register a :class:`GDSZarrPlugin` with ``client``'s cluster.

    Parameters
    ----------
    client : distributed.Client
        The client of the cluster.
    device : {"auto", "gpu", "cpu"}
        The device each worker reads to.
    **settings
        gds_zarr settings to apply in each worker.

    Returns
    -------
    GDSZarrPlugin
        The registered plugin (registering another one by the same name replaces it).

    Raises
    ------
    KeyError, ValueError, TypeError
        For an unknown setting or a bad value (checked before anything is sent).
    """
    plugin = GDSZarrPlugin(device, **settings)
    client.register_plugin(plugin)
    return plugin


def worker_report() -> dict[str, Any]:
    """What a worker process will read with: zarr's codec pipeline, gds_zarr's settings.

    Run it with ``client.run(gds_zarr.dask.worker_report)`` to check a cluster.

    Returns
    -------
    dict
        ``codec_pipeline`` (zarr's ``codec_pipeline.path``), ``buffer`` (zarr's ``buffer``),
        ``settings`` (every gds_zarr setting) and ``pid``.
    """
    import os

    import zarr

    from gds_zarr import settings

    return {
        "codec_pipeline": zarr.config.get("codec_pipeline.path"),
        "buffer": zarr.config.get("buffer"),
        "settings": settings.as_dict(),
        "pid": os.getpid(),
    }
