"""DLPack capsules (the legacy ``"dltensor"`` ABI, DLPack 0.8), made and read with ctypes.

``Array.__dlpack__`` hands out a real ``DLManagedTensor`` so any consumer (NumPy for host
arrays, the CuPy stand-in for device ones) can import it; ``from_dlpack`` reads one.
"""

from __future__ import annotations

import ctypes
import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["KDL_CPU", "KDL_CUDA", "KDL_CUDA_HOST", "Imported", "export", "read"]

KDL_CPU, KDL_CUDA, KDL_CUDA_HOST = 1, 2, 3
_NAME = b"dltensor"
_USED = b"used_dltensor"


class _Device(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _Device), ("ndim", ctypes.c_int32),
                ("dtype", _DType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


_Deleter = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class _Managed(ctypes.Structure):
    _fields_ = [("dl_tensor", _Tensor), ("manager_ctx", ctypes.c_void_p), ("deleter", _Deleter)]


_api = ctypes.pythonapi
_api.PyCapsule_New.restype = ctypes.py_object
_api.PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
_api.PyCapsule_IsValid.restype = ctypes.c_int
_api.PyCapsule_IsValid.argtypes = [ctypes.py_object, ctypes.c_char_p]
_api.PyCapsule_GetPointer.restype = ctypes.c_void_p
_api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
_api.PyCapsule_SetName.restype = ctypes.c_int
_api.PyCapsule_SetName.argtypes = [ctypes.py_object, ctypes.c_char_p]
# The capsule destructor gets a capsule whose reference count is already 0: it must not make a
# Python reference to it, so it calls the C API through raw-pointer prototypes.
_raw_is_valid = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p)(
    ("PyCapsule_IsValid", _api))
_raw_get_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", _api))

# Exported tensors stay alive (with the object they view) until their deleter runs.
_live: dict[int, tuple[Any, ...]] = {}
_lock = threading.Lock()

_CODES = {"i": 0, "u": 1, "f": 2, "c": 5, "b": 6}
_KINDS = {v: k for k, v in _CODES.items()}


@_Deleter
def _delete(addr: int | None) -> None:
    with _lock:
        _live.pop(int(addr or 0), None)


_CapsuleDestructor = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


@_CapsuleDestructor
def _capsule_gone(cap: int | None) -> None:
    # An unconsumed capsule owns its tensor: free it (a consumer renames it and frees it later).
    if _raw_is_valid(cap, _NAME):
        _delete(_raw_get_pointer(cap, _NAME))


def export(ptr: int, shape: tuple[int, ...], dtype: np.dtype, device_type: int, device_id: int,
           owner: Any) -> Any:
    """A ``"dltensor"`` capsule viewing ``ptr`` (C-contiguous), keeping ``owner`` alive."""
    n = len(shape)
    shape_arr = (ctypes.c_int64 * max(n, 1))(*shape)
    m = _Managed()
    m.dl_tensor.data = ptr or None
    m.dl_tensor.device = _Device(device_type, device_id)
    m.dl_tensor.ndim = n
    m.dl_tensor.dtype = _DType(_CODES[dtype.kind], dtype.itemsize * 8, 1)
    m.dl_tensor.shape = shape_arr
    m.dl_tensor.strides = None  # compact row-major
    m.dl_tensor.byte_offset = 0
    m.deleter = _delete
    addr = ctypes.addressof(m)
    with _lock:
        _live[addr] = (m, shape_arr, owner)
    return _api.PyCapsule_New(addr, _NAME, ctypes.cast(_capsule_gone, ctypes.c_void_p))


class Imported:
    """What a consumed capsule describes; calls the producer's deleter when collected."""

    def __init__(self, ptr: int, shape: tuple[int, ...], strides: tuple[int, ...] | None,
                 dtype: np.dtype, device_type: int, device_id: int,
                 release: Callable[[], None]) -> None:
        self.ptr, self.shape, self.strides, self.dtype = ptr, shape, strides, dtype
        self.device_type, self.device_id = device_type, device_id
        self._finalizer = weakref.finalize(self, release)


def read(capsule: Any) -> Imported:
    """Consume a ``"dltensor"`` capsule (renamed ``"used_dltensor"``, as DLPack requires).

    Raises
    ------
    ValueError
        Not an unconsumed DLPack capsule, or a data type nvCOMP cannot hold.
    """
    if type(capsule).__name__ != "PyCapsule" or not _api.PyCapsule_IsValid(capsule, _NAME):
        raise ValueError("Could not get DLTensor capsules. It can be consumed only once, so you "
                         "might have already constructed a tensor from it once.")
    addr = _api.PyCapsule_GetPointer(capsule, _NAME)
    m = _Managed.from_address(addr)
    t = m.dl_tensor
    if t.dtype.lanes != 1:
        raise ValueError("Unsupported lanes in DLTensor dtype.")
    kind = _KINDS.get(t.dtype.code)
    if kind is None:
        raise ValueError("Data type code not supported")
    dtype = np.dtype(f"{kind}{t.dtype.bits // 8}") if kind != "b" else np.dtype(bool)
    shape = tuple(int(t.shape[i]) for i in range(t.ndim))
    strides = (tuple(int(t.strides[i]) * dtype.itemsize for i in range(t.ndim))
               if t.strides else None)
    ptr = int(t.data or 0) + int(t.byte_offset)
    _api.PyCapsule_SetName(capsule, _USED)
    deleter = m.deleter

    def release() -> None:
        if deleter:
            deleter(addr)

    return Imported(ptr, shape, strides, dtype, int(t.device.device_type),
                    int(t.device.device_id), release)
