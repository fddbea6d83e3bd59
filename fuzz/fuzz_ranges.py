"""atheris harness: ``plan_reads`` on arbitrary request arrays.

Run on demand (not collected by pytest)::

    python fuzz/fuzz_ranges.py -atheris_runs=100000

Any exception other than ``ValueError`` (refused input), or a plan that does not put every
request's bytes where it says, is a finding.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import numpy as np

    from gds_zarr.planning.ranges import plan_reads


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    n = fdp.ConsumeIntInRange(0, 64)
    files = np.array(fdp.ConsumeIntListInRange(n, 0, 7), dtype=np.int64)
    starts = np.array(fdp.ConsumeIntListInRange(n, 0, 1 << 62), dtype=np.int64)
    lengths = np.array(fdp.ConsumeIntListInRange(n, 0, 1 << 20), dtype=np.int64)
    if len(files) != n or len(starts) != n or len(lengths) != n:
        return
    gap = fdp.ConsumeIntInRange(0, (1 << 63) - 1)
    size = fdp.ConsumeIntInRange(0, (1 << 63) - 1)
    stops = starts + lengths
    try:
        plan = plan_reads(files, starts, stops, max_gap=gap, max_size=size)
    except ValueError:
        return
    rf, ro, rs, rd = plan.read_file, plan.read_offset, plan.read_size, plan.read_dest
    assert plan.total_size == int(rs.sum())
    for i in np.flatnonzero(stops > starts).tolist():
        hit = (rf == files[i]) & (ro <= starts[i]) & (stops[i] <= ro + rs)
        assert hit.any(), "a request lies in no read of its file"
        assert plan.request_dest[i] in (rd[hit] + starts[i] - ro[hit]).tolist()


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
