"""``cuda.core`` of the emulated device: ``Device``, what dask-cuda and plain scripts call.

Built from cuda-core 1.x's source (cuda_core/cuda/core/_device.pyx) and stubs: device objects
are per-thread singletons, creating one initializes CUDA (``cuInit``) but no context, and
``set_current()`` makes the device's primary context current. Devices are CUDA ordinals, with
``CUDA_VISIBLE_DEVICES`` applied (_emucuda/devices.py). Only ``Device`` is emulated; streams,
memory resources, programs and the rest of cuda.core are not (an attribute the stand-in lacks
raises ``AttributeError``).
"""

from cuda.core._device import *  # noqa: F403
from cuda.core._device import __all__ as _device_all
from cuda.core._version import __version__ as __version__

__emulated__ = True
__all__ = [*_device_all]
