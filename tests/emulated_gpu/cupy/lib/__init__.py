"""``cupy.lib`` of the emulated device."""

from cupy.lib import stride_tricks

__all__ = ["stride_tricks"]
