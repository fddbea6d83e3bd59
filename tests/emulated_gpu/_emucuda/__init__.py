"""The emulated CUDA device that the ``cupy``, ``kvikio``, ``nvidia.nvcomp``, ``pynvml``,
``cuda.core`` and ``numba.cuda`` stand-ins share.

``memory``: allocations with guard pages; ``streams``: queued work, events, the current
device; ``kernels``: CUDA C++ compiled for the host; ``errors``: CUDA's errors; ``devices``: the
machine's GPUs, ``CUDA_VISIBLE_DEVICES``, which processes hold contexts; ``nvml``: the NVML C
library. Settings come from the environment: ``EMULATED_GPU_DEVICES`` (default 2),
``EMULATED_GPU_MEMORY`` (bytes per device, default 16 GiB), ``EMULATED_GPU_SEED`` (the order of
unordered work, default 0), ``EMULATED_GPU_CACHE`` (compiled kernels), ``EMULATED_GPU_GDS``
(kvikio reports GDS), ``EMULATED_GPU_STATE`` (the context registry NVML reads).
"""

from __future__ import annotations

__all__ = ["is_emulated"]


def is_emulated() -> bool:
    """True: this process runs on the emulated device."""
    return True
