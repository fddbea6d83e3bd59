"""Range coalescing: property tests over random requests, plus the policy's edge cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gds_zarr.planning.ranges import plan_reads


@st.composite
def requests(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    n = draw(st.integers(0, 60))
    files = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    starts = draw(st.lists(st.integers(0, 5000), min_size=n, max_size=n))
    lengths = draw(st.lists(st.integers(0, 700), min_size=n, max_size=n))
    gap = draw(st.integers(0, 300))
    size = draw(st.integers(1, 2000))
    s = np.array(starts, dtype=np.int64)
    return np.array(files, dtype=np.int64), s, s + np.array(lengths, dtype=np.int64), gap, size


def _reads(plan):  # one tuple per read
    return list(zip(plan.read_file.tolist(), plan.read_offset.tolist(),
                    plan.read_size.tolist(), plan.read_dest.tolist(), strict=True))


@settings(max_examples=150, deadline=None)
@given(requests())
def test_every_request_lands_on_its_own_bytes(req) -> None:
    files, starts, stops, gap, size = req
    plan = plan_reads(files, starts, stops, max_gap=gap, max_size=size)
    # Simulate the reads: byte b of file f holds value (f * 7919 + b) % 251.
    staging = np.full(plan.total_size, -1, dtype=np.int64)
    for f, off, n, dest in _reads(plan):
        staging[dest : dest + n] = (f * 7919 + np.arange(off, off + n)) % 251
    assert not (staging == -1).any()  # reads are packed back to back
    for i in range(len(files)):
        n = stops[i] - starts[i]
        got = staging[plan.request_dest[i] : plan.request_dest[i] + n]
        want = (files[i] * 7919 + np.arange(starts[i], stops[i])) % 251
        np.testing.assert_array_equal(got, want)


@settings(max_examples=150, deadline=None)
@given(requests())
def test_reads_respect_the_size_bound(req) -> None:
    files, starts, stops, gap, size = req
    plan = plan_reads(files, starts, stops, max_gap=gap, max_size=size)
    longest = int((stops - starts).max()) if len(files) else 0
    assert (plan.read_size <= max(size, longest)).all()
    for f, off, n, _ in _reads(plan):
        if n > size:  # only a single request larger than the bound may exceed it
            assert any(files[i] == f and starts[i] == off and stops[i] == off + n
                       for i in range(len(files)))
    assert (plan.read_size > 0).all()
    assert plan.total_size == int(plan.read_size.sum())


@settings(max_examples=150, deadline=None)
@given(requests())
def test_holes_inside_a_read_are_bounded_by_max_gap(req) -> None:
    files, starts, stops, gap, size = req
    # The bound holds for disjoint requests (see the module docstring for overlaps).
    keep = np.ones(len(files), dtype=bool)
    order = np.lexsort((starts, files))
    for a, b in itertools.pairwise(order):
        if files[a] == files[b] and starts[b] < stops[a]:
            keep[b] = False
    files, starts, stops = files[keep], starts[keep], stops[keep]
    plan = plan_reads(files, starts, stops, max_gap=gap, max_size=size)
    for f, off, n, _ in _reads(plan):
        covered = np.zeros(n, dtype=bool)
        for i in np.flatnonzero((files == f) & (starts >= off) & (stops <= off + n)):
            covered[starts[i] - off : stops[i] - off] = True
        assert covered[0] and covered[-1]
        edges = np.diff(np.r_[0, (~covered).astype(np.int8), 0])
        holes = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
        assert (holes <= gap).all()


def test_many_ranges_of_one_file_coalesce_into_few_reads() -> None:
    starts = np.arange(1000, dtype=np.int64) * 1024
    plan = plan_reads(np.zeros(1000), starts, starts + 1000, max_gap=64, max_size=256 << 10)
    assert plan.nreads == 4  # 1000 KiB in reads of at most 256 KiB
    assert (plan.read_size <= 256 << 10).all()
    assert plan.total_size == 999 * 1024 + 1000 - 3 * 24  # no read carries a trailing gap


def test_duplicates_share_bytes_and_empty_requests_read_nothing() -> None:
    plan = plan_reads(np.array([5, 5, 5, 9]), np.array([10, 10, 0, 3]), np.array([20, 20, 0, 3]),
                      max_gap=0, max_size=100)
    assert plan.nreads == 1 and plan.total_size == 10
    assert plan.request_dest.tolist() == [0, 0, 0, 0]


def test_gap_zero_merges_only_touching_ranges() -> None:
    plan = plan_reads(np.zeros(3), np.array([0, 10, 21]), np.array([10, 20, 30]),
                      max_gap=0, max_size=100)
    assert plan.read_offset.tolist() == [0, 21]


def test_defaults_come_from_settings() -> None:
    import gds_zarr

    starts = np.array([0, 1000], dtype=np.int64)
    with gds_zarr.settings.set(coalesce_max_gap=10):
        assert plan_reads(np.zeros(2), starts, starts + 10).nreads == 2
    with gds_zarr.settings.set(coalesce_max_gap=2000):
        assert plan_reads(np.zeros(2), starts, starts + 10).nreads == 1


@pytest.mark.parametrize(("starts", "stops"), [([-1], [3]), ([5], [4])])
def test_bad_ranges_are_refused(starts: list[int], stops: list[int]) -> None:
    with pytest.raises(ValueError, match="0 <= start <= stop"):
        plan_reads(np.zeros(1), np.array(starts), np.array(stops))
