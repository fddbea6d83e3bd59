"""The corrupt-chunk matrix of tests/test_corruption.py on the GPU decoder (NvcompDecoder).

Each corruption goes through the whole GPU path (kvikio read into device memory, header checks,
nvCOMP batched decode, decoded-size and checksum checks) by reading with
``gds_zarr.enable(device="gpu")``; the answer must be what the CPU path gives: the data, or a
:class:`~gds_zarr.errors.ChunkDecodeError` naming the key. Results go into the GPU column of
docs/bad_input.md once run. Skips cleanly without a usable GPU.
"""

from __future__ import annotations

import gzip
import struct
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest

from gds_zarr._device import gpu_status

if not gpu_status().usable:
    pytest.skip(f"GPU path not usable: {gpu_status().reason}", allow_module_level=True)

cupy = pytest.importorskip("cupy")

import zarr
import zarr.codecs as zc

import gds_zarr
from gds_zarr.errors import ChunkDecodeError
from gds_zarr.store import GDSStore

# Corrupt input to nvCOMP is undefined behaviour: each test in a child process of its own.
pytestmark = pytest.mark.fresh_process

SHAPE, CHUNKS = (64, 64), (32, 32)
DATA = np.arange(64 * 64, dtype="float32").reshape(SHAPE)
KEY = "c/0/0"


def _lz4() -> Any:
    from zarr.codecs.numcodecs import LZ4

    return LZ4()


CODECS: dict[str, Callable[[], Any]] = {
    "zstd": lambda: zc.ZstdCodec(),
    "zstd+crc32c": lambda: [zc.ZstdCodec(), zc.Crc32cCodec()],
    "gzip": lambda: zc.GzipCodec(),
    "lz4": _lz4,
    "crc32c": lambda: zc.Crc32cCodec(),
}
MUTATIONS: dict[str, Callable[[bytes], bytes]] = {
    "truncated-half": lambda r: r[: len(r) // 2],
    "truncated-1": lambda r: r[:-1],
    "zero-length": lambda r: b"",
    "header-only": lambda r: r[:6],
    "trailing-garbage": lambda r: r + b"\x00garbage",
    "bit-flip-middle": lambda r: r[: len(r) // 2] + bytes([r[len(r) // 2] ^ 0x10])
    + r[len(r) // 2 + 1:],
}
# Bit flips are only detectable where the format checks the decoded bytes.
UNDETECTABLE = {("zstd", "bit-flip-middle"), ("lz4", "bit-flip-middle")}


def _make(root: Path, compressors: Any) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = zarr.create_array(GDSStore(root), shape=SHAPE, chunks=CHUNKS, dtype="float32",
                              compressors=compressors, fill_value=-1)
        a[...] = DATA
    return root


def _read(root: Path, device: str) -> Any:
    with warnings.catch_warnings(), gds_zarr.enable(device=device):
        warnings.simplefilter("ignore")
        got = zarr.open_array(GDSStore(root, read_only=True), mode="r")[...]
    return cupy.asnumpy(got) if device == "gpu" else got


def _outcome(root: Path, device: str) -> tuple[str, Any]:
    try:
        return "data", _read(root, device)
    except ChunkDecodeError as e:
        return "error", e.key


@pytest.mark.parametrize("mutation", list(MUTATIONS))
@pytest.mark.parametrize("codec", list(CODECS))
def test_gpu_matches_cpu_on_corrupt_chunks(tmp_path: Path, codec: str, mutation: str) -> None:
    root = _make(tmp_path / "a.zarr", CODECS[codec]())
    path = root / KEY
    path.write_bytes(MUTATIONS[mutation](path.read_bytes()))
    cpu_kind, cpu = _outcome(root, "cpu")
    gpu_kind, gpu = _outcome(root, "gpu")
    if (codec, mutation) in UNDETECTABLE:
        assert cpu_kind == gpu_kind == "data"
        np.testing.assert_array_equal(gpu, cpu)  # the same garbage, never a crash
        return
    assert gpu_kind == "error" and gpu == KEY, (gpu_kind, gpu)
    assert cpu_kind == "error" and cpu == KEY


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_gpu_refuses_a_claimed_huge_size(tmp_path: Path, codec: str) -> None:
    root = _make(tmp_path / "a.zarr", CODECS[codec]())
    raw = (root / KEY).read_bytes()
    if codec == "zstd":
        raw = numcodecs.Zstd().encode(DATA[:32, :32].tobytes())
        bad = raw[:4] + bytes([0xE0]) + struct.pack("<Q", 1 << 40) + raw[7:]
    else:
        bad = struct.pack("<i", 2**31 - 1) + raw[4:]
    (root / KEY).write_bytes(bad)
    free_before = cupy.cuda.runtime.memGetInfo()[0]
    with pytest.raises(ChunkDecodeError) as info:
        _read(root, "gpu")
    assert info.value.key == KEY
    assert cupy.cuda.runtime.memGetInfo()[0] > free_before - (256 << 20)


def test_gpu_gzip_multi_member_answer(tmp_path: Path) -> None:
    # ISIZE covers the last member only, so the GPU pre-check sends a multi-member stream to
    # the CPU decoder: the GPU path gives the CPU path's answer.
    root = _make(tmp_path / "a.zarr", zc.GzipCodec())
    raw = DATA[:32, :32].tobytes()
    (root / KEY).write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    np.testing.assert_array_equal(_read(root, "cpu"), DATA)
    kind, value = _outcome(root, "gpu")
    assert kind != "error", value
    np.testing.assert_array_equal(value, DATA)
