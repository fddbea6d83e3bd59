"""atheris harness: the shard index parser (``gds_zarr.planning.shards.parse_indexes``).

Run on demand (not collected by pytest)::

    python fuzz/fuzz_shard_index.py -atheris_runs=100000

Anything but a valid table or :class:`~gds_zarr.errors.ShardIndexError` naming the shard is a
finding, as is a returned entry whose ``offset + nbytes`` overflows or whose size is absurd.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import numpy as np

    from gds_zarr.decode.chain import ShardLayout
    from gds_zarr.errors import ShardIndexError
    from gds_zarr.io._base import BatchRead
    from gds_zarr.planning.shards import parse_indexes


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    n_inner = fdp.ConsumeIntInRange(1, 8)
    layout = ShardLayout((2,), (n_inner,), "start" if fdp.ConsumeBool() else "end",
                         fdp.ConsumeBool())
    present = fdp.ConsumeBool()
    raw = fdp.ConsumeBytes(layout.index_nbytes + fdp.ConsumeIntInRange(-4, 4))
    pad = fdp.ConsumeIntInRange(0, 7)
    buf = np.frombuffer(b"\x00" * pad + raw, np.uint8)
    batch = BatchRead(buf, np.array([pad]), np.array([len(raw) if present else 0]),
                      np.array([present]))
    try:
        offsets, nbytes, empty = parse_indexes(batch, ["c/0"], layout)
    except ShardIndexError as e:
        assert e.key == "c/0"
        return
    used = ~empty
    assert all(int(o) + int(b) < 2**64 for o, b in zip(offsets[used], nbytes[used], strict=False))
    assert (nbytes[used] <= np.uint64(1 << 62)).all()


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
