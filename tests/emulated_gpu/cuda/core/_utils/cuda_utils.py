"""``cuda.core._utils.cuda_utils`` of the emulated device: the error and the named tuple
``cuda.core`` returns (cuda-core 1.x, cuda_core/cuda/core/_utils/cuda_utils.pyx)."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["CUDAError", "ComputeCapability"]


class CUDAError(Exception):
    """A CUDA driver error; the message is ``"<CUresult name>: <explanation>"``."""


class ComputeCapability(NamedTuple):
    """A named tuple of (major, minor) CUDA compute capability version numbers."""

    major: int
    minor: int


#: The driver errors the emulated ``cuda.core`` raises, with cuda-core's explanations
#: (DRIVER_CU_RESULT_EXPLANATIONS, from the CUDA driver API documentation).
_EXPLANATIONS = {
    "CUDA_ERROR_NO_DEVICE": "This indicates that no CUDA-capable devices were detected by the "
                            "installed CUDA driver.",
    "CUDA_ERROR_INVALID_DEVICE": "This indicates that the device ordinal supplied by the user "
                                 "does not correspond to a valid CUDA device or that the action "
                                 "requested is invalid for the specified device.",
}


def _driver_error(name: str, detail: str = "") -> CUDAError:
    text = f"{name}: {_EXPLANATIONS[name]}"
    return CUDAError(text + (f" [emulated device: {detail}]" if detail else ""))
