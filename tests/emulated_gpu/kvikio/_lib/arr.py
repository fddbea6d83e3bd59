"""``kvikio._lib.arr``: the buffer argument of every kvikio read and write.

As kvikio's Cython ``Array``: an object with ``__cuda_array_interface__`` is device memory (its
pointer, shape, strides, typestr), anything else must export the buffer protocol; the array
must be C or F contiguous; ``size`` may not exceed its bytes. kvikio keeps only the pointer:
what it points to is decided by the CUDA driver (``is_host_memory``), here by the emulated
device's allocation table (:mod:`_emucuda.memory`).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np
from _emucuda import errors, memory

from ._common import DeviceFault, as_c_int, check_alive

__all__ = ["Array", "Target", "asarray", "parse_buffer_argument"]

_ITEMSIZE = {f"{o}{k}{n}": int(n) for o in "<>" for k in "iuf" for n in ("2", "4", "8")}
_ITEMSIZE.update({"|b1": 1, "|i1": 1, "|u1": 1, "<f16": 16, ">f16": 16, "<c8": 8, ">c8": 8,
                  "<c16": 16, ">c16": 16})


def _c_contiguous(itemsize: int, shape: tuple[int, ...], strides: tuple[int, ...] | None) -> bool:
    if strides is None:
        return True
    s = itemsize
    for n, st in zip(reversed(shape), reversed(strides), strict=True):
        if s != st:
            return False
        s *= n
    return True


def _f_contiguous(itemsize: int, shape: tuple[int, ...], strides: tuple[int, ...] | None) -> bool:
    if strides is None:
        return len(shape) <= 1
    s = itemsize
    for n, st in zip(shape, strides, strict=True):
        if s != st:
            return False
        s *= n
    return True


class Array:
    """ An efficient wrapper for host and device array-like objects

    Parameters
    ----------
    obj: Object exposing the buffer protocol or __cuda_array_interface__
        A host and device array-like object
    """

    def __init__(self, obj: Any) -> None:
        iface = getattr(obj, "__cuda_array_interface__", None)
        self.cuda = iface is not None
        self._strides: tuple[int, ...] | None
        if self.cuda:
            if iface.get("mask") is not None:
                raise NotImplementedError("mask attribute not supported")
            self.obj = obj
            ptr, readonly = iface["data"]
            self.ptr, self.readonly = int(ptr), bool(readonly)
            typestr = iface["typestr"]
            if typestr is None:
                raise ValueError("Expected `str`, but got `None`")
            if typestr == "":
                raise ValueError("Got unexpected empty `str`")
            self.itemsize = _ITEMSIZE.get(typestr) or np.dtype(typestr).itemsize
            self._shape = tuple(int(n) for n in iface["shape"])
            strides = iface.get("strides")
            if strides is not None and len(self._shape) > 0:
                if len(strides) != len(self._shape):
                    raise ValueError("The length of shape and strides must be equal")
                self._strides = tuple(int(s) for s in strides)
            else:
                self._strides = None
        else:
            try:
                mv = memoryview(obj)
            except TypeError:
                raise TypeError(f"a bytes-like object is required, not "
                                f"'{type(obj).__name__}'") from None
            if mv.suboffsets:
                raise NotImplementedError("Suboffsets are not supported")
            self.obj = mv.obj
            self.readonly = mv.readonly
            self.itemsize = mv.itemsize
            self._shape = tuple(mv.shape or ())
            self._strides = None if mv.c_contiguous else tuple(mv.strides or ())
            self.ptr = _address(mv)

    @property
    def c_contiguous(self) -> bool:
        return _c_contiguous(self.itemsize, self._shape, self._strides)

    @property
    def f_contiguous(self) -> bool:
        return _f_contiguous(self.itemsize, self._shape, self._strides)

    @property
    def contiguous(self) -> bool:
        return self.c_contiguous or self.f_contiguous

    @property
    def nbytes(self) -> int:
        n = self.itemsize
        for d in self._shape:
            n *= d
        return n

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def strides(self) -> tuple[int, ...]:
        if self._strides is not None:
            return self._strides
        out, s = [], self.itemsize
        for n in reversed(self._shape):
            out.append(s)
            s *= n
        return tuple(reversed(out))


def _address(mv: memoryview) -> int:
    """Address of the first element of a buffer (read-only buffers too)."""
    if mv.nbytes == 0:
        return 0
    try:
        return int(np.asarray(mv).__array_interface__["data"][0])
    except (TypeError, ValueError):  # formats numpy cannot take: view it as raw bytes
        return ctypes.addressof(ctypes.c_char.from_buffer(mv.cast("B")))


def asarray(obj: Any) -> Array:
    """Coerce other objects to ``Array``. No-op for existing ``Array``s.

    Args:
        obj: Object exposing the Python buffer protocol or ``__cuda_array_interface__``
    Returns:
        Array: An instance of the ``Array`` class
    """
    return obj if isinstance(obj, Array) else Array(obj)


@dataclass(eq=False)
class Target:
    """Where an I/O lands or comes from: ``nbytes`` at ``ptr``.

    ``device``: the emulated device whose memory ``ptr`` is (the CUDA driver's answer to
    ``is_host_memory``), None for host memory. ``cuda``: given as a CUDA array. ``checked``:
    every access is checked against the allocation table (device, pinned and CUDA-array
    pointers; pageable host memory is the caller's Python object). ``keep``: the
    exporting object, held for pageable host memory only (emulator safety: a freed host buffer
    would be written unchecked); device and pinned buffers are held by pointer only, as kvikio
    holds them, so one freed before the future is waited on faults.
    """

    ptr: int
    nbytes: int
    cuda: bool
    device: int | None
    readonly: bool
    checked: bool
    keep: Any = None

    @property
    def is_host(self) -> bool:
        return self.device is None

    def view(self, offset: int, n: int, what: str) -> np.ndarray:
        """A checked, writable uint8 view of ``n`` bytes at ``ptr + offset``.

        Raises
        ------
        DeviceFault
            The range is not inside one live allocation of the emulated device (device and
            pinned buffers; a CUDA array pointer outside every allocation is an illegal address).
        CUDADriverError
            The device's context died earlier.
        """
        ptr = self.ptr + offset
        if self.device is not None:
            check_alive(self.device)
        try:
            if self.checked:
                a = memory.check(ptr, n, what)  # host=False: outside every allocation faults
                if a is not None and a.device >= 0:
                    check_alive(a.device)
        except errors.Fault as e:
            if memory.find(ptr) is None:
                hint = "an illegal address: no allocation of the device holds it"
            else:
                hint = ("on a GPU: an invalid-argument error from the copy or DMA, or silent "
                        "corruption of the memory after the allocation")
            raise DeviceFault(f"{e} ({hint})") from None
        return memory.view(ptr, n, what)


def parse_buffer_argument(buf: Any, size: Any, accept_host_buffer: bool,
                          *, for_write_into: bool = False) -> Target:
    """Parse `buf` and `size` argument and return a pointer and nbytes

    Parameters
    ----------
    buf
        Device or host buffer.
    size
        Bytes to move; None: all of ``buf``.
    accept_host_buffer
        False for the ``raw_*`` calls, which take device buffers only.
    for_write_into
        The call writes into ``buf`` (a read): a read-only buffer is refused. Real kvikio
        writes into it regardless (corrupting e.g. a ``bytes`` object); the emulator cannot.

    Raises
    ------
    ValueError
        Not contiguous; a host buffer where only device ones are taken; ``size`` larger than
        the buffer; a read into a read-only buffer (emulator only).
    """
    arr = asarray(buf)
    if not arr.contiguous:
        raise ValueError("Array must be contiguous")
    if not accept_host_buffer and not arr.cuda:
        raise ValueError("Non-CUDA buffers not supported")
    if size is None:
        nbytes = arr.nbytes
    elif size > arr.nbytes:
        raise ValueError("Size is greater than the size of the buffer")
    else:
        nbytes = as_c_int(size)
    if for_write_into and arr.readonly and nbytes:
        raise ValueError("emulated kvikio: cannot read into a read-only buffer (real kvikio "
                         "writes into it anyway, corrupting it)")
    a = memory.find(arr.ptr)
    # The CUDA driver decides: device memory is device memory, whatever the Python object
    # claims; pinned and pageable memory is host memory. A CUDA-array pointer to nothing the
    # driver knows is host memory to kvikio too; the emulator refuses it when the I/O touches it
    # (Target.view: an illegal address).
    device = a.device if a is not None and a.device >= 0 else None
    checked = a is not None or arr.cuda
    return Target(arr.ptr, nbytes, arr.cuda, device, arr.readonly, checked,
                  None if checked else arr.obj)
