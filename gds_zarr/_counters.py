"""A base for the thread-safe counters that tests and ``info`` read (pipeline, I/O backends,
GPU decode, GPU scatter): fields with defaults, ``add`` and ``reset`` under one lock."""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field

__all__ = ["Counters"]


@dataclass
class Counters:
    """Subclass as a dataclass whose fields all have defaults."""

    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def reset(self) -> None:
        """Every counter back to its default."""
        with self._lock:
            for f in dataclasses.fields(self):
                if f.name != "_lock":
                    setattr(self, f.name, f.default)

    def add(self, **counts: float) -> None:
        """Add ``counts`` to the named counters."""
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)
