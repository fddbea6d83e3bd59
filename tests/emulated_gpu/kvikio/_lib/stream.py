"""``kvikio._lib.stream``: ``cuFileStreamRegister`` on the emulated device (a no-op: the
emulated cuFile needs no registration to queue I/O on a stream)."""

from __future__ import annotations

from ._common import as_c_int

__all__ = ["stream_deregister", "stream_register"]


def stream_register(raw_stream: int, flags: int) -> None:
    as_c_int(raw_stream)
    as_c_int(flags, "unsigned int")


def stream_deregister(raw_stream: int) -> None:
    as_c_int(raw_stream)
