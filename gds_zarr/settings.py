"""Settings: one table of names, defaults, environment variables and meanings.

A value comes from, in order: :func:`set` (globally, or inside a ``with`` block), the setting's
environment variable, its default. ``settings.set(...)`` applies at once and, used as a context
manager, restores the previous values on exit::

    import gds_zarr
    gds_zarr.settings.set(io_threads=8)              # global
    with gds_zarr.settings.set(memory_budget="64MiB"):
        ...                                           # only here

The README's settings table is generated from :data:`SETTINGS` (``python -m gds_zarr settings``).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

__all__ = ["SETTINGS", "Setting", "as_dict", "get", "parse_bytes", "set"]

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 1000**2,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1000**3, "gib": 1 << 30, "t": 1 << 40,
          "tb": 1000**4, "tib": 1 << 40}


def parse_bytes(value: int | str) -> int:
    """Parse a byte size such as ``4096``, ``"64KiB"``, ``"16 MiB"`` or ``"1GB"``."""
    if isinstance(value, bool):
        raise TypeError(f"a byte size must be an int or a string, got {value!r}")
    if isinstance(value, int):
        n = value
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
        if m is None or m.group(2).lower() not in _UNITS:
            raise ValueError(f"cannot parse {value!r} as a byte size (e.g. 4096, '64KiB', '1GiB')")
        n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if n < 0:
        raise ValueError(f"a byte size must be >= 0, got {value!r}")
    return n


def _parse_int(value: int | str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"expected an integer, got {value!r}")
    n = int(value)
    if n < 0:
        raise ValueError(f"expected an integer >= 0, got {value!r}")
    return n


def _parse_device(value: str) -> str:
    v = str(value).strip().lower()
    if v not in ("auto", "gpu", "cpu"):
        raise ValueError(f"device must be 'auto', 'gpu' or 'cpu', got {value!r}")
    return v


def _parse_bounced_reads(value: str) -> str:
    v = str(value).strip().lower()
    if v not in ("host", "kvikio"):
        raise ValueError(f"gpu_bounced_reads must be 'host' or 'kvikio', got {value!r}")
    return v


def _parse_seconds(value: float | str) -> float:
    if isinstance(value, bool):
        raise TypeError(f"expected a number of seconds, got {value!r}")
    t = float(str(value).strip().removesuffix("s")) if isinstance(value, str) else float(value)
    if not t > 0:
        raise ValueError(f"expected a number of seconds > 0, got {value!r}")
    return t


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: its name, default, environment variable, parser and meaning."""

    name: str
    default: Callable[[], Any]
    parse: Callable[[Any], Any]
    doc: str
    default_doc: str

    @property
    def env(self) -> str:
        return f"GDS_ZARR_{self.name.upper()}"


SETTINGS: Mapping[str, Setting] = {
    s.name: s
    for s in (
        Setting("device", lambda: "auto", _parse_device,
                "Where arrays are read to: 'auto' (GPU if usable, else CPU), 'gpu' (error if "
                "unusable) or 'cpu'.", "auto"),
        Setting("io_threads", lambda: max(4, 2 * _cpu_count()), _parse_int,
                "Threads issuing file reads on the CPU backend (open/pread/close run in them).",
                "max(4, 2 x cores)"),
        Setting("cold_io_threads", lambda: max(16, 4 * _cpu_count()), _parse_int,
                "Threads reading a batch of small files that are not in the page cache (a "
                "probe of each batch tells; they wait on the disk, not on the CPU).",
                "max(16, 4 x cores)"),
        Setting("decode_threads", _cpu_count, _parse_int,
                "Threads decoding chunks on the CPU (numcodecs releases the GIL).", "cores"),
        Setting("coalesce_max_gap", lambda: 64 << 10, parse_bytes,
                "Two ranges of one file at most this many bytes apart are read as one.",
                "64 KiB"),
        Setting("coalesce_max_size", lambda: 16 << 20, parse_bytes,
                "Upper bound on the size of one coalesced read (a single range may exceed it).",
                "16 MiB"),
        Setting("memory_budget", lambda: 1 << 30, parse_bytes,
                "Staging memory (encoded plus decoded bytes in flight, host or device) one read "
                "may hold; larger reads stream in batches. A Blosc batch's plan may hold a "
                "quarter of it more, and up to a quarter stays mapped for the next read for "
                "about 1 s.", "1 GiB"),
        Setting("shard_index_cache_size", lambda: 64 << 20, parse_bytes,
                "Parsed shard indexes kept per process, keyed by each file's identity (path, "
                "inode, size, mtime, ctime), so repeated window reads skip the index read; 0 turns "
                "it off.", "64 MiB"),
        Setting("kvikio_threads", lambda: 0, _parse_int,
                "kvikio thread-pool size for GPU reads; 0 sizes it from the workload.",
                "0 (auto)"),
        Setting("kvikio_task_size", lambda: 0, parse_bytes,
                "kvikio task size for GPU reads; 0 sizes it from the workload.", "0 (auto)"),
        Setting("gpu_bounced_reads", lambda: "host", _parse_bounced_reads,
                "GPU reads that cuFile would not move by DMA (all of them in kvikio's compat "
                "mode): 'host' reads them with preadv into pinned memory, every chunk placed "
                "for nvCOMP, and copies once; 'kvikio' hands them to kvikio at pages, and a "
                "shard's inner chunks are then gathered on the device (docs/gpu_decode.md).",
                "host"),
        Setting("file_handle_cache_size", lambda: 128, _parse_int,
                "Open kvikio CuFile handles kept per process (bounded, also by ulimit -n).",
                "128"),
        Setting("remote_concurrency", lambda: 256, _parse_int,
                "Requests one batched read of a remote store (s3://, gs://, az://, http(s)://) "
                "keeps in flight at once (lower it for a small server).", "256"),
        Setting("remote_timeout", lambda: 30.0, _parse_seconds,
                "Seconds one remote request may take (a stalled server) before it is retried.",
                "30"),
        Setting("remote_prefetch", lambda: 2 << 20, parse_bytes,
                "Bytes of a remote object's tail read with its shard index and kept briefly, so "
                "the chunk reads that follow need no second request round (shards up to this "
                "size: one round); 0 turns it off.", "2 MiB"),
        Setting("remote_retries", lambda: 5, _parse_int,
                "Retries of a failed remote request (5xx, dropped connection, timeout), with "
                "exponential backoff from 100 ms; then ChunkReadError names the key and URL.",
                "5"),
    )
}

_lock = threading.RLock()
_overrides: dict[str, Any] = {}


def _check_name(name: str) -> Setting:
    try:
        return SETTINGS[name]
    except KeyError:
        raise KeyError(
            f"unknown gds_zarr setting {name!r}; known settings: {', '.join(SETTINGS)}"
        ) from None


def get(name: str) -> Any:
    """Return the current value of setting ``name``."""
    spec = _check_name(name)
    with _lock:
        if name in _overrides:
            return _overrides[name]
    raw = os.environ.get(spec.env)
    if raw is not None and raw.strip() != "":
        try:
            return spec.parse(raw)
        except (TypeError, ValueError) as e:
            raise ValueError(f"environment variable {spec.env}={raw!r}: {e}") from None
    return spec.default()


def as_dict() -> dict[str, Any]:
    """Every setting's current value."""
    return {name: get(name) for name in SETTINGS}


class _SetContext:
    """Returned by :func:`set`: values are applied already; ``with`` restores them on exit."""

    def __init__(self, previous: dict[str, Any]) -> None:
        self._previous = previous

    def __enter__(self) -> _SetContext:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with _lock:
            for name, value in self._previous.items():
                if value is _UNSET:
                    _overrides.pop(name, None)
                else:
                    _overrides[name] = value


_UNSET = object()


def set(**values: Any) -> _SetContext:
    """Set settings by name; ``None`` returns a setting to its environment value or default.

    Raises
    ------
    KeyError
        For an unknown setting name.
    ValueError, TypeError
        For a value the setting does not accept; nothing is changed then.
    """
    parsed = {}
    for name, value in values.items():
        spec = _check_name(name)
        parsed[name] = None if value is None else spec.parse(value)
    with _lock:
        previous = {name: _overrides.get(name, _UNSET) for name in parsed}
        for name, value in parsed.items():
            if value is None:
                _overrides.pop(name, None)
            else:
                _overrides[name] = value
    return _SetContext(previous)


def _items() -> Iterator[Setting]:
    return iter(SETTINGS.values())


def markdown_table() -> str:
    """The settings as a Markdown table (name, default, environment variable, meaning)."""
    rows = ["| setting | default | environment variable | meaning |", "|---|---|---|---|"]
    rows += [f"| `{s.name}` | {s.default_doc} | `{s.env}` | {s.doc} |" for s in _items()]
    return "\n".join(rows)
