"""ObstoreIOBackend: batched ranged reads of remote objects (S3, GCS, Azure, HTTP) into one
numpy buffer.

The remote twin of :class:`gds_zarr.io._cpu.PosixIOBackend`, with the same request encoding
(:class:`~gds_zarr.io._base.IOBackend`) and the same coalescing rules
(:func:`gds_zarr.planning.ranges.plan_reads`). One batch is ONE round of requests, all in flight
at once up to the ``remote_concurrency`` setting:

* bounded ranges of one object are coalesced by the gap/size rules and fetched with one
  ``obstore.get_ranges_async`` call per object (object sizes are not needed: servers clamp a
  range that runs past the end, as LocalStore does);
* a whole value, an offset to the end or a suffix is one GET each (with a ``Range`` header for
  the last two), so a whole chunk or a shard index costs one request and no HEAD;
* a zero-length request is answered by the object's other requests, else by a HEAD.

A suffix read (a shard index at the end of its shard) fetches at least ``remote_prefetch``
bytes of the object's tail and keeps them briefly (:class:`_Tails`): the chunk reads that
follow the index round are answered from memory when they lie in that tail, so a selection of
shards up to that size is ONE request round instead of two, as when zarr reads a whole shard.

Only an object whose coalesced range starts past its end (a server answers 416) costs a second
round: a HEAD for its size, then the ranges that are left.

The requests run on one event loop in a daemon thread of the process (obstore's futures need a
running loop; the store's callers are plain threads or zarr's own loop, which must not be
re-entered). The bodies, Rust-owned buffers, are copied once into the batch's one buffer.

Errors: a missing object (404) makes its requests ``present=False``; anything else that is
still failing after obstore's retries (``remote_retries``, ``remote_timeout``: 5xx, dropped
connections, stalls, short bodies) or that is refused (401/403) raises
:class:`~gds_zarr.errors.ChunkReadError` naming the object and its URL, with secrets removed.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import numpy as np

from gds_zarr import settings
from gds_zarr._hostpool import host_empty
from gds_zarr.errors import ChunkReadError
from gds_zarr.io._base import BatchRead, IOStats
from gds_zarr.io._cpu import group_requests
from gds_zarr.planning.ranges import MAX_OFFSET, plan_reads
from gds_zarr.planning.staging import Payload, place_requests

__all__ = ["ObstoreIOBackend", "describe_error", "run_async"]

T = TypeVar("T")

_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid = -1


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop where installed, else asyncio's.

    obstore completes every awaitable from its Rust threads with ``call_soon_threadsafe``,
    twice per object (headers, body). asyncio's version writes a byte to its wake-up socket
    each time, under the GIL: 256 small objects over loopback HTTP spent ~24 ms per read in
    those writes. uvloop's coalesces them (libuv async handles): 34-36 ms per read against
    48-51 ms with asyncio's loop, tensorstore 31 ms (2-core VM, same run; results in
    benchmarks/results/*_remote*.md). Only this private loop changes, never the caller's.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()  # type: ignore[no-any-return]


def _event_loop() -> asyncio.AbstractEventLoop:
    """The process's I/O event loop, started on first use (and again in a forked child)."""
    global _loop, _loop_pid
    with _loop_lock:
        if _loop is None or _loop_pid != os.getpid() or _loop.is_closed():
            loop = _new_loop()
            threading.Thread(target=loop.run_forever, name="gds_zarr-remote-io",
                             daemon=True).start()
            _loop, _loop_pid = loop, os.getpid()
        return _loop


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the I/O loop and wait for it (blocking; any thread but the loop's)."""
    future = asyncio.run_coroutine_threadsafe(coro, _event_loop())
    try:
        return future.result()
    except BaseException:
        future.cancel()  # an interrupted caller: stop the batch's requests too
        raise


def _status(e: BaseException) -> int | None:
    """The HTTP status an obstore error reports, if it names one."""
    text = str(e)
    for code in (416, 412, 403, 401, 404):
        if f"{code} " in text or f"status code: {code}" in text:
            return code
    return None


def _range_refused(e: BaseException) -> bool:
    """Whether ``e`` says the server would not answer a byte range (416, or a full answer that
    obstore refuses: "non-partial response", NotSupportedError "Range request not supported")."""
    text = str(e).lower()
    return (_status(e) == 416 or type(e).__name__ == "NotSupportedError"
            or "non-partial response" in text or "range request not supported" in text)


def describe_error(e: BaseException, redact: Callable[[str], str]) -> str:
    """A one-paragraph, secret-free reason from an obstore (or other) exception.

    A connection that failed starts with its cause and the endpoint (``connection refused by
    host:port``, ``name not resolved``, ``timed out``), which obstore keeps only in the debug
    text after its first lines.
    """
    import obstore.exceptions as oe

    first, _, debug = str(e).strip().partition("\n\nDebug source:")
    # Server bodies (S3's XML) repeat the status with request ids: the first lines suffice.
    first = " ".join(first.splitlines()[:2])[:400]
    denied = isinstance(e, (oe.PermissionDeniedError, oe.UnauthenticatedError)) \
        or _status(e) in (401, 403)
    what = "access denied" if denied else type(e).__name__
    cause = _connection_cause(first, debug)
    return redact(f"{cause}: {what}: {first}" if cause else f"{what}: {first}")


def _connection_cause(first: str, debug: str) -> str | None:
    """Why a request never got an answer, from obstore's debug text (reqwest's and hyper's
    error chain), naming the endpoint where the text does; None when it does not say."""
    url = re.search(r"\b(?:GET|HEAD|PUT|POST|DELETE) (\S+)", first)
    host = urlsplit(url.group(1)).netloc.rpartition("@")[2] if url else None  # no user:pw
    if "ConnectionRefused" in debug:
        return f"connection refused by {host or 'the server'}"
    if '"dns error"' in debug:
        detail = re.search(r'error: "([^"]+)"', debug)
        return (f"name not resolved: {host or 'the server'}"
                + (f" ({detail.group(1)})" if detail else ""))
    if re.search(r"\bkind: Timeout\b|\bTimedOut\b", debug):
        return f"timed out: no answer from {host or 'the server'} within remote_timeout"
    os_error = re.search(r'Os \{[^}]*message: "([^"]+)"', debug)
    if os_error:
        return os_error.group(1).lower() + (f" ({host})" if host else "")
    return None


def _read_of(plan: Any, file_ids: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Which read of ``plan`` serves each request: the last read of its file starting at or
    before it. (The plan's staging offsets cannot tell: ranges "to the end" are 2**62 long, so
    their sums overflow; only files and offsets are used.)"""
    nreads = plan.nreads
    files = np.concatenate([plan.read_file, file_ids])
    offsets = np.concatenate([plan.read_offset, starts])
    is_request = np.r_[np.zeros(nreads, dtype=np.int8), np.ones(len(starts), dtype=np.int8)]
    order = np.lexsort((is_request, offsets, files))  # a read sorts before its requests
    last = np.where(order < nreads, order, -1)
    np.maximum.accumulate(last, out=last)
    out = np.empty(len(starts), dtype=np.int64)
    mask = order >= nreads
    out[order[mask] - nreads] = last[mask]
    return out


#: A cached tail serves reads for this long after it arrived (the reads of one zarr selection
#: follow their shard-index round within milliseconds); then it is only memory.
_TAIL_TTL_S = 10.0


class _Tails:
    """Object tails that prefetching suffix reads brought in (see ``remote_prefetch``), kept
    for the chunk reads that follow their shard-index round, bounded in bytes (LRU).

    Only bounded range reads are answered from here, never a suffix read: an index is always
    read anew (which refreshes the tail), and the chunks then come from the same version of
    the object as the index that located them. Writes through the store drop the tail; a
    write by another client reaches a bounded read through this store at most
    ``_TAIL_TTL_S`` later (only reads inside a tail fetched before the write).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[int, int, Any, float]] = OrderedDict()
        self._nbytes = 0

    def put(self, path: str, tail_start: int, size: int, body: Any, limit: int) -> None:
        with self._lock:
            self._pop(path)
            self._entries[path] = (tail_start, size, body, time.monotonic())
            self._nbytes += len(body)
            while self._nbytes > limit and self._entries:
                self._pop(next(iter(self._entries)))

    def _pop(self, path: str) -> None:
        old = self._entries.pop(path, None)
        if old is not None:
            self._nbytes -= len(old[2])

    def lookup(self, files: list[str]) -> tuple[np.ndarray, np.ndarray, list[Any]]:
        """Per file: tail start (-1: none), object size, tail bytes (None)."""
        ts = np.full(len(files), -1, dtype=np.int64)
        sizes = np.zeros(len(files), dtype=np.int64)
        bodies: list[Any] = [None] * len(files)
        if not self._entries:
            return ts, sizes, bodies
        now = time.monotonic()
        with self._lock:
            for i, f in enumerate(files):
                e = self._entries.get(f)
                if e is not None and now - e[3] < _TAIL_TTL_S:
                    ts[i], sizes[i], bodies[i] = e[0], e[1], e[2]
        return ts, sizes, bodies

    def drop(self, path: str | None = None) -> None:
        """Forget ``path``'s tail (it was written or deleted), or every tail."""
        with self._lock:
            if path is None:
                self._entries.clear()
                self._nbytes = 0
            else:
                self._pop(path)


class _PastEnd(Exception):
    """A range that starts past the object's end (HTTP 416): read again once its size is
    known."""


def _placed(bodies: Sequence[Any], body_dest: np.ndarray, offsets: np.ndarray,
            sizes: np.ndarray, place: Payload) -> np.ndarray:
    """Copy each distinct request out of its body into a slot placed for ``place``; rewrite
    ``offsets`` (their places in the bodies back to back, as concatenated) to the slots."""
    live = np.flatnonzero(sizes > 0)
    order, first, dest, nbytes = place_requests(offsets[live], sizes[live], place)
    data = host_empty(nbytes)  # pooled: not left in this worker thread's malloc arena
    out = memoryview(data)
    uniq = live[order][first]
    body = np.searchsorted(body_dest, offsets[uniq], side="right") - 1
    for b, w, size, d in zip(body.tolist(), (offsets[uniq] - body_dest[body]).tolist(),
                             sizes[uniq].tolist(), dest[order][first].tolist(), strict=True):
        out[d: d + size] = memoryview(bodies[b]).cast("B")[w: w + size]
    offsets[live] = dest
    return data


class ObstoreIOBackend:
    """CPU backend over an obstore store (see the module docstring).

    Parameters
    ----------
    store
        An obstore store (``S3Store``, ``GCSStore``, ``AzureStore``, ``HTTPStore``).
    object_url
        ``object_url(path)`` is the URL of an object, for error messages.
    redact
        Removes secrets from a message.
    """

    device: Literal["cpu", "gpu"] = "cpu"

    def __init__(self, store: Any, object_url: Callable[[str], str],
                 redact: Callable[[str], str]) -> None:
        self.store = store
        self.stats = IOStats()
        self._url = object_url
        self._redact = redact
        self.tails = _Tails()

    def __repr__(self) -> str:
        return "ObstoreIOBackend()"

    def read_batch(
        self,
        paths: Sequence[str],
        starts: np.ndarray,
        stops: np.ndarray,
        *,
        max_gap: int | None = None,
        max_size: int | None = None,
        size_hint: int | None = None,
        resolve_link: Callable[[str], str] | None = None,
        place: Payload | None = None,
    ) -> BatchRead:
        """Read every request into one numpy uint8 buffer, all requests in flight at once.

        Parameters
        ----------
        paths
            Object paths, one per request (repeats are coalesced).
        starts, stops
            Encoded requests, as :class:`~gds_zarr.io._base.IOBackend` documents.
        max_gap, max_size
            Coalescing bounds (default: the ``coalesce_max_gap``/``coalesce_max_size``
            settings).
        size_hint
            Bytes a whole object is expected to fit in (a chunk's encoded bound): a whole
            object is then asked for as the range ``[0, size_hint)``, which servers clamp to
            the object, so its body comes in one awaited call instead of two (headers, then
            body); an object that fills the range is read again whole.
        resolve_link
            Accepted for the shared interface (object stores have no links).
        place
            Lay the buffer out for the GPU (the host-staged device backends): every distinct
            request gets its own slot, placed so that its decode input lands aligned for
            nvCOMP (:func:`~gds_zarr.planning.staging.place_requests`), instead of the bodies
            back to back; the bodies are copied once either way.

        Returns
        -------
        BatchRead

        Raises
        ------
        ChunkReadError
            An object that exists but cannot be read; ``key`` is its path.
        """
        starts, stops, file_of, files = group_requests(paths, starts, stops)
        n = len(starts)
        stops = np.where(stops < 0, stops, np.minimum(stops, MAX_OFFSET))
        bounded = (starts >= 0) & (stops > starts)
        open_ended = stops < 0
        # Bounded ranges inside a tail fetched with the shard index are answered from it.
        tail_start, tail_size, tail_body = self.tails.lookup(files)
        ts = tail_start[file_of]
        cached = bounded & (ts >= 0) & (starts >= ts)
        bounded &= ~cached
        b_idx = np.flatnonzero(bounded)
        plan = plan_reads(file_of[b_idx], starts[b_idx], stops[b_idx], max_gap=max_gap,
                          max_size=max_size)
        o_idx = np.flatnonzero(open_ended)
        z_idx = np.flatnonzero(~bounded & ~open_ended & ~cached)  # zero-length: presence only
        if plan.nreads or len(o_idx) or len(z_idx):
            bodies, present_file, fetches = run_async(
                self._fetch(files, plan, file_of[o_idx], starts[o_idx], stops[o_idx],
                            np.unique(file_of[z_idx]), size_hint))
        else:  # all from tails (a shard's chunks after its index round): no hop to the loop
            bodies, present_file, fetches = [], np.ones(len(files), dtype=bool), 0
        nreads = plan.nreads
        c_idx = np.flatnonzero(cached)
        c_end = np.zeros(0, dtype=np.int64)
        c_first = 0
        if len(c_idx):
            # One slice of each tail, spanning its requests, joins the batch's bodies.
            c_file = file_of[c_idx]
            c_end = np.maximum(np.minimum(stops[c_idx], tail_size[c_file]), starts[c_idx])
            used, slot = np.unique(c_file, return_inverse=True)
            lo = np.full(len(used), MAX_OFFSET, dtype=np.int64)
            hi = np.zeros(len(used), dtype=np.int64)
            np.minimum.at(lo, slot, starts[c_idx])
            np.maximum.at(hi, slot, c_end)
            hi = np.maximum(hi, lo)
            c_first = len(bodies)
            for f, a, b in zip(used.tolist(), lo.tolist(), hi.tolist(), strict=True):
                t0 = int(tail_start[f])
                bodies.append(memoryview(tail_body[f])[a - t0: b - t0] if b > a else b"")
            c_lo = lo[slot]
        lengths = np.fromiter((len(b) for b in bodies), dtype=np.int64, count=len(bodies))
        dest = np.zeros(len(bodies), dtype=np.int64)
        if len(bodies) > 1:
            np.cumsum(lengths[:-1], out=dest[1:])
        offsets = np.zeros(n, dtype=np.int64)
        sizes = np.zeros(n, dtype=np.int64)
        if len(b_idx):
            r = _read_of(plan, file_of[b_idx], starts[b_idx])
            within = starts[b_idx] - plan.read_offset[r]
            got_end = plan.read_offset[r] + lengths[r]  # a short body: the object ended there
            sizes[b_idx] = np.maximum(np.minimum(stops[b_idx], got_end) - starts[b_idx], 0)
            offsets[b_idx] = np.where(sizes[b_idx] > 0, dest[r] + within, 0)
        if len(o_idx):
            sizes[o_idx] = lengths[nreads:nreads + len(o_idx)]
            offsets[o_idx] = dest[nreads:nreads + len(o_idx)]
        if len(c_idx):
            sizes[c_idx] = c_end - starts[c_idx]
            offsets[c_idx] = dest[c_first + slot] + (starts[c_idx] - c_lo)
        present = present_file[file_of]
        sizes[~present] = 0
        offsets[~present] = 0
        if place is None:
            parts = [np.frombuffer(b, dtype=np.uint8) for b in bodies if len(b)]
            data = np.concatenate(parts) if parts else np.empty(0, dtype=np.uint8)
        else:
            data = _placed(bodies, dest, offsets, sizes, place)
        self.stats.add(files_opened=len(files), reads=fetches, bytes_read=int(lengths.sum()),
                       requests=n)
        return BatchRead(data=data, offsets=offsets, sizes=sizes, present=present,
                         device="cpu", nbytes_staged=int(data.nbytes))

    async def _fetch(self, files: list[str], plan: Any, o_file: np.ndarray, o_start: np.ndarray,
                     o_stop: np.ndarray, z_files: np.ndarray, size_hint: int | None = None
                     ) -> tuple[list[Any], np.ndarray, int]:
        """Issue every request of the batch at once; the bodies (coalesced reads first, then
        open-ended requests, in order), which files exist, and how many requests were sent
        (``size_hint``: see :meth:`read_batch`)."""
        import obstore as obs

        sem = asyncio.Semaphore(max(1, int(settings.get("remote_concurrency"))))
        present = np.ones(len(files), dtype=bool)
        nreads = plan.nreads
        bodies: list[Any] = [b""] * (nreads + len(o_file))
        sent = [0]
        store = self.store

        async def fetch(f: int, make: Callable[[], Any], requests: int = 1) -> Any:
            """``requests`` requests for file ``f``: a 404 marks it missing (returns None)."""
            async with sem:
                sent[0] += requests
                try:
                    return await make()
                except FileNotFoundError:  # obstore's NotFoundError: the object does not exist
                    present[f] = False
                    return None
                except Exception as e:  # noqa: BLE001 - each failure: ChunkReadError naming it
                    # 416: a range starts past the end. A panic: obstore merged overlapping
                    # ranges of which one ends past the object and then could not slice the
                    # next one; both are answered by clamping to the object's size.
                    if _status(e) == 416 or type(e).__name__ == "RustPanic":
                        raise _PastEnd from None
                    raise ChunkReadError(files[f], f"{describe_error(e, self._redact)} "
                                                   f"({self._url(files[f])})") from None

        async def ranges(f: int, rows: np.ndarray) -> None:
            path = files[f]
            lo = plan.read_offset[rows]
            hi = lo + plan.read_size[rows]
            try:
                got = await fetch(f, lambda: obs.get_ranges_async(
                    store, path, starts=lo.tolist(), ends=hi.tolist(), coalesce=0), len(lo))
            except _PastEnd:
                got = await past_end(f, lo, hi)
            if got is not None:
                for row, body in zip(rows.tolist(), got, strict=True):
                    bodies[row] = body

        async def past_end(f: int, lo: np.ndarray, hi: np.ndarray) -> list[Any] | None:
            """Some range starts past the object's end: learn its size, read what exists."""
            meta = await fetch(f, lambda: obs.head_async(store, files[f]))
            if meta is None:
                return None
            size = int(meta["size"])
            keep = lo < size
            out: list[Any] = [b""] * len(lo)
            if keep.any():
                got = await fetch(f, lambda: obs.get_ranges_async(
                    store, files[f], starts=lo[keep].tolist(),
                    ends=np.minimum(hi[keep], size).tolist(), coalesce=0), int(keep.sum()))
                if got is None:
                    return None
                for j, body in zip(np.flatnonzero(keep).tolist(), got, strict=True):
                    out[j] = body
            return out

        async def hinted(j: int, f: int) -> None:
            """A whole object in one awaited call: the range [0, hint), clamped by the server."""
            path = files[f]

            async def get() -> Any:
                try:
                    body = await obs.get_range_async(store, path, start=0, end=hint)
                except Exception as e:
                    # An empty object has no byte of the range: servers answer 416, or 200
                    # with no body, which obstore refuses as a range answer. A plain GET
                    # settles it (any other failure was retried by obstore already).
                    if not _range_refused(e):
                        raise
                    sent[0] += 1
                    return await (await obs.get_async(store, path)).bytes_async()
                if len(body) < hint:
                    return body  # the server clamped the range: this is the whole object
                # At least the hint (a chunk past its encoded bound: rare): the whole object
                # again in one GET, so that its bytes come from one version of it.
                sent[0] += 1
                return await (await obs.get_async(store, path)).bytes_async()

            body = await fetch(f, get)
            if body is not None:
                bodies[nreads + j] = body

        async def whole(j: int, f: int, start: int, tail: bool) -> None:
            path = files[f]
            options: Any = None
            if start > 0:
                options = {"range": {"offset": start}}
            elif start < 0:
                options = {"range": {"suffix": max(-start, prefetch) if tail else -start}}

            async def get() -> Any:
                try:
                    result = await obs.get_async(store, path, options=options)
                except Exception as e:
                    if _status(e) == 416:
                        return b""  # an offset past the end of an existing object: empty
                    raise
                body = await result.bytes_async()
                if tail and prefetch > -start:
                    # A shard index with the tail of its shard: the chunk reads that follow
                    # are answered from it (one request round instead of two).
                    self.tails.put(path, int(result.range[0]), int(result.meta["size"]), body,
                                   tail_limit)
                    return memoryview(body)[max(len(body) + start, 0):]
                return body

            body = await fetch(f, get)
            if body is not None:
                bodies[nreads + j] = body

        async def exists(f: int) -> None:
            await fetch(f, lambda: obs.head_async(store, files[f]))

        tasks: list[Coroutine[Any, Any, None]] = []
        rf = plan.read_file
        if nreads:
            cuts = np.flatnonzero(np.diff(rf)) + 1
            for rows in np.split(np.arange(nreads), cuts):
                tasks.append(ranges(int(rf[rows[0]]), rows))
        prefetch = int(settings.get("remote_prefetch"))
        hint = int(size_hint or 0)
        tail_limit = max(64 << 20, 16 * prefetch)
        # Tails beyond the cache's bound would be dropped unused: prefetch only that many.
        tails_left = tail_limit // prefetch if prefetch else 0
        for j, (f, start) in enumerate(zip(o_file.tolist(), o_start.tolist(), strict=True)):
            tail = start < 0 and tails_left > 0
            tails_left -= tail
            tasks.append(hinted(j, f) if start == 0 and hint > 0 else whole(j, f, start, tail))
        answered = set(rf.tolist()) | set(o_file.tolist())
        for f in z_files.tolist():
            if f not in answered:
                tasks.append(exists(f))
        results = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        return bodies, present, sent[0]

    def write_file(self, path: str, data: Any, *, exclusive: bool = False) -> None:
        """Upload ``data`` (host bytes) to the object ``path``; atomic on every object store.

        Parameters
        ----------
        path
            The object path.
        data
            Anything with the buffer protocol.
        exclusive
            If True, raise ``FileExistsError`` when the object exists (a conditional put).
        """
        import obstore as obs

        mode = "create" if exclusive else "overwrite"
        body = memoryview(data).cast("B").tobytes()

        async def put() -> Any:  # obstore's awaitables need the running loop when made
            return await obs.put_async(self.store, path, body, mode=mode)

        try:
            run_async(put())
        except FileExistsError:
            raise
        except Exception as e:  # noqa: BLE001 - each failure: an OSError naming it
            if exclusive and _status(e) == 412:
                raise FileExistsError(path) from None
            raise OSError(f"could not write {path!r}: {describe_error(e, self._redact)} "
                          f"({self._url(path)})") from None

    def close(self) -> None:
        """Nothing to release: obstore's connection pool lives with its store object."""
