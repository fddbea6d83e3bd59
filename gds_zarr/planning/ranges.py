"""Coalesce byte ranges of files into few reads that land in ONE staging buffer: pure numpy.

The policy, applied per file to the requests sorted by start:

* Requests are chained into one *gap group* while the next request starts at most ``max_gap``
  bytes after the furthest end seen so far in that file (overlapping and duplicate requests
  always chain: their gap is negative). A gap group is contiguous enough that reading the
  bytes between its requests costs less than another system call.
* A gap group wider than ``max_size`` is split greedily from its first request: a read starting
  at request ``a`` takes every following request whose end (the running maximum) lies within
  ``max_size`` bytes of ``a``'s start. A single request larger than ``max_size`` is a read of its
  own, never split, so reads exceed ``max_size`` only by exactly one request's length.
* Each read lands at its own offset in one staging buffer (reads back to back); request ``i``'s
  bytes are ``staging[request_dest[i] : request_dest[i] + (stop[i] - start[i])]``. Requests
  served by one read share its bytes, so duplicate and overlapping requests cost nothing extra.
* Empty requests (``start == stop``) cause no read; their destination is 0.

Everything is vectorised over the requests (``lexsort``, ``maximum.accumulate``, ``cumsum``,
``searchsorted``). The only Python loop is the greedy size split, which iterates once per
*piece* of the longest gap group (e.g. 64 times for a 1 GiB run of ranges with a 16 MiB bound),
each step touching only the groups still being split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gds_zarr import settings

__all__ = ["MAX_OFFSET", "ReadPlan", "plan_reads"]

MAX_OFFSET = 1 << 62
"""Largest byte offset accepted (4 EiB, past any real file). Keeping offsets, gaps and sizes
at most this keeps every sum below (shifted offset + size bound) inside int64."""


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """Coalesced reads and where every request's bytes land.

    Attributes
    ----------
    read_file, read_offset, read_size, read_dest
        int64 arrays, one entry per read, sorted by (file, offset): which file (the caller's
        file id), where in the file, how many bytes, and where in the staging buffer.
    request_dest
        int64 array, one entry per request, in the caller's order: where its bytes start in
        the staging buffer (0 for empty requests).
    total_size
        Bytes the staging buffer must hold: the sum of ``read_size`` for the packed reads of
        :func:`plan_reads`; more where :func:`~gds_zarr.planning.staging.layout_reads` widens
        them to pages and pads their destinations.
    """

    read_file: np.ndarray
    read_offset: np.ndarray
    read_size: np.ndarray
    read_dest: np.ndarray
    request_dest: np.ndarray
    total_size: int

    @property
    def nreads(self) -> int:
        return len(self.read_offset)

    @classmethod
    def empty(cls, n: int) -> ReadPlan:
        """No reads, for ``n`` requests that are all empty."""
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z, z, z, np.zeros(n, dtype=np.int64), 0)


def plan_reads(
    file_ids: np.ndarray,
    starts: np.ndarray,
    stops: np.ndarray,
    *,
    max_gap: int | None = None,
    max_size: int | None = None,
) -> ReadPlan:
    """Group requests by file, sort them and coalesce nearby ranges (policy: module docstring).

    Parameters
    ----------
    file_ids
        Integer array, one entry per request: which file it reads (any non-negative ids).
    starts, stops
        Integer arrays of resolved byte ranges, ``0 <= start <= stop`` (already clamped to
        the file sizes; ``stop`` exclusive).
    max_gap
        Requests at most this many bytes apart are read together; default: the
        ``coalesce_max_gap`` setting. ``0`` merges only touching or overlapping ranges.
    max_size
        Upper bound on one coalesced read; default: the ``coalesce_max_size`` setting.

    Returns
    -------
    ReadPlan

    Raises
    ------
    ValueError
        If the arrays differ in length, or a range is negative, inverted or ends past
        :data:`MAX_OFFSET`.
    """
    gap = int(settings.get("coalesce_max_gap") if max_gap is None else max_gap)
    size_bound = int(settings.get("coalesce_max_size") if max_size is None else max_size)
    if gap < 0 or size_bound < 0:
        raise ValueError(f"max_gap and max_size must be >= 0, got {gap} and {size_bound}")
    # Larger bounds mean the same as MAX_OFFSET (no range is longer) and cannot overflow.
    gap, size_bound = min(gap, MAX_OFFSET), min(size_bound, MAX_OFFSET)
    fid = np.asarray(file_ids, dtype=np.int64)
    lo = np.asarray(starts, dtype=np.int64)
    hi = np.asarray(stops, dtype=np.int64)
    n = len(fid)
    if not (len(lo) == len(hi) == n):
        raise ValueError(f"file_ids, starts and stops differ in length: {n}, {len(lo)}, {len(hi)}")
    if n and (int(lo.min()) < 0 or bool(np.any(hi < lo))):
        raise ValueError("byte ranges must satisfy 0 <= start <= stop")
    if n and int(hi.max()) > MAX_OFFSET:
        raise ValueError(f"byte ranges must end at most at 2**62, got {int(hi.max())}")

    nonempty = np.flatnonzero(hi > lo)
    if len(nonempty) == 0:
        return ReadPlan.empty(n)
    order = nonempty[np.lexsort((lo[nonempty], fid[nonempty]))]
    f, s, e = fid[order], lo[order], hi[order]
    m = len(order)

    new_file = np.empty(m, dtype=bool)
    new_file[0] = True
    np.not_equal(f[1:], f[:-1], out=new_file[1:])
    file_first = np.flatnonzero(new_file)
    counts = np.diff(np.append(file_first, m))
    # Shift each file's ranges (relative to its first start) past the previous file's largest
    # end, so that one global running maximum (and one searchsorted) serves every file at once.
    base = np.repeat(s[file_first], counts)
    file_span = np.maximum.reduceat(e - base, file_first) + 1
    if sum(file_span.tolist()) <= MAX_OFFSET:  # exact (Python ints): the shifts fit in int64
        read_start = _read_starts(s - base, e - base, new_file, file_span, counts, gap,
                                  size_bound)
    else:  # files with ranges exabytes apart: plan them one at a time
        read_start = np.zeros(m, dtype=bool)
        for a, c, span in zip(file_first.tolist(), counts.tolist(), file_span.tolist(),
                              strict=True):
            sl = slice(a, a + c)
            read_start[sl] = _read_starts(s[sl] - s[a], e[sl] - s[a], new_file[sl],
                                          np.array([span]), np.array([c]), gap, size_bound)

    first = np.flatnonzero(read_start)
    read_offset = s[first]
    read_size = np.maximum.reduceat(e, first) - read_offset
    read_dest = np.cumsum(read_size) - read_size
    read_of_request = np.cumsum(read_start) - 1
    request_dest = np.zeros(n, dtype=np.int64)
    request_dest[order] = read_dest[read_of_request] + (s - read_offset[read_of_request])
    return ReadPlan(
        read_file=f[first],
        read_offset=read_offset,
        read_size=read_size,
        read_dest=read_dest,
        request_dest=request_dest,
        total_size=int(read_size.sum()),
    )


def _read_starts(s: np.ndarray, e: np.ndarray, new_file: np.ndarray, file_span: np.ndarray,
                 counts: np.ndarray, gap: int, size_bound: int) -> np.ndarray:
    """Which sorted requests start a read (``s``/``e`` relative to each file's first start)."""
    m = len(s)
    shift = np.repeat(np.cumsum(file_span) - file_span, counts)
    s_sh, e_sh = s + shift, e + shift
    run_end = np.maximum.accumulate(e_sh)  # nondecreasing: furthest end so far

    # Gap groups: a new one where the file changes or the gap to the furthest end is too big.
    gap_start = new_file.copy()
    gap_start[1:] |= (s_sh[1:] - run_end[:-1]) > gap
    gap_first = np.flatnonzero(gap_start)
    gap_end = np.repeat(np.append(gap_first[1:], m), np.diff(np.append(gap_first, m)))

    # Greedy size split: from a read starting at request a, the next read starts at the first
    # request whose running end lies past s[a] + max_size (at least a + 1, so a request larger
    # than max_size stands alone), and never past the end of a's gap group.
    nxt = np.searchsorted(run_end, s_sh + size_bound, side="right")
    nxt = np.minimum(np.maximum(nxt, np.arange(1, m + 1)), gap_end)
    read_start = np.zeros(m, dtype=bool)
    frontier = gap_first
    while len(frontier):
        read_start[frontier] = True
        step = nxt[frontier]
        frontier = step[step < gap_end[frontier]]

    # The gaps above are measured from the furthest end of the whole gap group. Where the size
    # split cut a group inside an overlap (a request of an earlier read reaches past this
    # read's first start), a read's own requests may leave a hole wider than max_gap: re-split
    # those few reads by their own running end. Only overlapping requests get here.
    first = np.flatnonzero(read_start)
    todo = first[(first > 0) & (run_end[np.maximum(first - 1, 0)] > s_sh[first])].tolist()
    while todo:
        a = todo.pop()
        end, j = int(e_sh[a]), a + 1
        while j < m and not read_start[j]:
            if int(s_sh[j]) - end > gap:
                read_start[j] = True  # a new read, whose own gaps are checked in turn
                todo.append(j)
                break
            end = max(end, int(e_sh[j]))
            j += 1
    return read_start
