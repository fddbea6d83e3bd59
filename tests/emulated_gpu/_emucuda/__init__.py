"""The emulated CUDA device that the ``cupy``, ``kvikio`` and ``nvidia.nvcomp`` stand-ins share.

``memory``: allocations with guard pages; ``streams``: queued work, events, the current
device; ``kernels``: CUDA C++ compiled for the host; ``errors``: CUDA's errors. Settings come
from the environment: ``EMULATED_GPU_DEVICES`` (default 2), ``EMULATED_GPU_MEMORY`` (bytes per
device, default 16 GiB), ``EMULATED_GPU_SEED`` (the order of unordered work, default 0),
``EMULATED_GPU_CACHE`` (compiled kernels), ``EMULATED_GPU_GDS`` (kvikio reports GDS).
"""

from __future__ import annotations

__all__ = ["is_emulated"]


def is_emulated() -> bool:
    """True: this process runs on the emulated device."""
    return True
