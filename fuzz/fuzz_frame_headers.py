"""atheris harness: the frame header checks of ``gds_zarr.decode.formats`` and the CPU decoder.

Run on demand (not collected by pytest)::

    python fuzz/fuzz_frame_headers.py -atheris_runs=100000

For each input, one of zstd, gzip, zlib, lz4 or crc32c is picked, the bytes are placed between
other bytes of one buffer (as in a batch read) and checked; then the same bytes are decoded by
:class:`~gds_zarr.decode._cpu.CpuDecoder`. Findings: any exception but
:class:`~gds_zarr.errors.ChunkDecodeError`; a check that refuses a single-member frame numcodecs
decodes to the expected size; a decoded row that is not the expected size.
"""

from __future__ import annotations

import sys
import zlib

import atheris

with atheris.instrument_imports():
    import numcodecs
    import numpy as np

    from gds_zarr.decode import formats
    from gds_zarr.decode._base import BytesStep
    from gds_zarr.decode._cpu import CpuDecoder
    from gds_zarr.errors import ChunkDecodeError
    from gds_zarr.io._base import BatchRead

EXPECTED = 1024
RAW = np.arange(EXPECTED // 4, dtype="<f4").tobytes()
KINDS = {
    "zstd": (formats.check_zstd, numcodecs.Zstd(level=1)),
    "gzip": (formats.check_gzip, numcodecs.GZip(level=1)),
    "zlib": (formats.check_zlib, numcodecs.Zlib(level=1)),
    "lz4": (formats.check_lz4, numcodecs.LZ4()),
}
SEEDS = {k: bytes(c.encode(RAW)) for k, (_, c) in KINDS.items()}
DECODER = CpuDecoder(threads=1)


def _valid(kind: str, chunk: bytes) -> bool:
    try:
        if kind == "gzip":
            d = zlib.decompressobj(31)
            return d.decompress(chunk) == RAW and d.eof and not d.unused_data
        return bytes(KINDS[kind][1].decode(chunk)) == RAW
    except Exception:  # noqa: BLE001 - not a valid encoding of RAW
        return False


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    kind = fdp.PickValueInList([*sorted(KINDS), "crc32c"])
    if fdp.ConsumeBool() and kind in SEEDS:  # mutate a real frame: deeper than random bytes
        chunk = bytearray(SEEDS[kind])
        for _ in range(fdp.ConsumeIntInRange(0, 4)):
            if chunk:
                chunk[fdp.ConsumeIntInRange(0, len(chunk) - 1)] = fdp.ConsumeInt(1) & 0xFF
        chunk = bytes(chunk[: fdp.ConsumeIntInRange(0, len(chunk))])
    else:
        chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 256))
    buf = np.frombuffer(b"\x11" * 3 + chunk + b"\x22" * 5, np.uint8)
    starts, stops = np.array([3]), np.array([3 + len(chunk)])
    try:
        if kind == "crc32c":
            formats.check_crc32c_host(buf, starts, stops, ["c/0"])
        else:
            KINDS[kind][0](formats.numpy_reader(buf), starts, stops, EXPECTED, ["c/0"])
    except ChunkDecodeError as e:
        assert e.key == "c/0"
        assert kind == "crc32c" or not _valid(kind, chunk), "check refused a valid frame"
    if kind == "crc32c":
        return
    step = BytesStep(kind, KINDS[kind][1], kind)
    src = BatchRead(buf.copy(), starts, stops - starts, np.array([True]))
    try:
        rows = DECODER.decode_batch([step], src, np.array([0]), EXPECTED, ["c/0"])
    except ChunkDecodeError:
        return
    assert rows.shape == (1, EXPECTED)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
