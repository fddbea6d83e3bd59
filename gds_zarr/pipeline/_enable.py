"""enable(): point zarr at gds_zarr's pipeline (and GPU buffers), globally or in a ``with``."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Literal

from gds_zarr import settings
from gds_zarr._device import resolve_device
from gds_zarr.pipeline._caller import NDBUFFER_PATH, carry_caller_target, restore_sync

__all__ = ["Enabled", "enable"]

_ZARR_KEYS = ("codec_pipeline.path", "buffer", "ndbuffer")


class Enabled:
    """Returned by :func:`enable`: already applied; as a context manager it restores on exit.

    Attributes
    ----------
    device
        The device the read path resolved to (``"cpu"`` or ``"gpu"``).
    """

    def __init__(self, device: Literal["cpu", "gpu"], previous_zarr: dict[str, Any],
                 settings_ctx: Any, previous_sync: dict[str, Any]) -> None:
        self.device = device
        self._previous_zarr = previous_zarr
        self._settings_ctx = settings_ctx
        self._previous_sync = previous_sync

    def __enter__(self) -> Enabled:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.restore()

    def restore(self) -> None:
        """Put back the zarr config, zarr's ``sync`` and the gds_zarr settings from before
        :func:`enable`."""
        import zarr

        zarr.config.set(self._previous_zarr)
        restore_sync(self._previous_sync)
        self._settings_ctx.__exit__(None, None, None)

    def __repr__(self) -> str:
        return f"gds_zarr.enable(device={self.device!r})"


def enable(device: str | None = None, **values: Any) -> Enabled:
    """Make zarr read through :class:`~gds_zarr.GDSCodecPipeline`.

    Sets zarr's ``codec_pipeline.path`` to ``gds_zarr.GDSCodecPipeline``; when the device
    resolves to the GPU, also sets zarr's ``buffer``/``ndbuffer`` to GPU buffers (CuPy arrays
    out, allocated on the calling thread's current CuPy device) and makes zarr's synchronous
    reads run on the calling thread's current CuPy device and stream (see
    :mod:`gds_zarr.pipeline._caller`); otherwise zarr's CPU buffers. ``values`` are gds_zarr
    settings (see :mod:`gds_zarr.settings`), applied with the device.

    Parameters
    ----------
    device
        ``"auto"`` (GPU if usable), ``"gpu"`` (error if not usable) or ``"cpu"``; None (the
        default): the ``device`` setting, i.e. ``GDS_ZARR_DEVICE`` or ``"auto"``.
    **values
        Settings such as ``memory_budget="256MiB"`` or ``decode_threads=4``.

    Returns
    -------
    Enabled
        Already in effect; ``with gds_zarr.enable(...):`` restores the previous zarr config and
        settings on exit.

    Raises
    ------
    gds_zarr.errors.DeviceUnavailableError
        If ``device="gpu"`` and the GPU path cannot run.
    KeyError, ValueError, TypeError
        For an unknown setting or a bad value, given here or in a ``GDS_ZARR_*`` environment
        variable (the message names the variable and what it accepts); nothing is changed then.
    """
    import zarr

    import gds_zarr.pipeline  # noqa: F401  - registers the pipeline

    # Every setting the environment gives is checked now, not at the first read that uses it.
    settings.as_dict()
    if device is not None:
        values = {"device": device, **values}
    resolved = resolve_device(device)  # None: the setting, and errors name its variable
    ctx = settings.set(**values)
    previous = {key: zarr.config.get(key) for key in _ZARR_KEYS}
    if resolved == "gpu":
        buffers = {"buffer": "zarr.buffer.gpu.Buffer", "ndbuffer": NDBUFFER_PATH}
    else:
        buffers = {"buffer": "zarr.buffer.cpu.Buffer", "ndbuffer": "zarr.buffer.cpu.NDBuffer"}
    zarr.config.set({"codec_pipeline.path": "gds_zarr.GDSCodecPipeline", **buffers})
    # On the CPU zarr's own sync: no per-read cost.
    previous_sync = carry_caller_target(resolved == "gpu")
    return Enabled(resolved, previous, ctx, previous_sync)
