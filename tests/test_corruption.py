"""Bad bytes and bad files, end to end through ``zarr.open_array(GDSStore(...))``.

Every corruption here must give a :class:`~gds_zarr.errors.ChunkDecodeError` (or its subclass
:class:`~gds_zarr.errors.ShardIndexError`) naming the key, never another exception, never silent
garbage where the format can tell, and never an allocation the size a header claims. A missing
chunk is the fill value; a chunk path that exists but cannot be read is a
:class:`~gds_zarr.errors.ChunkReadError`, never the fill value.

What zarr's own pipeline does with the same bytes is recorded in ``docs/bad_input.md``; the
tests compare against it only where the answer is data.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import tracemalloc
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import google_crc32c
import numcodecs
import numpy as np
import pytest
import zarr
import zarr.codecs as zc
from zarr.storage import LocalStore

import gds_zarr
from gds_zarr.errors import ChunkDecodeError, ChunkReadError, InvalidKeyError, ShardIndexError
from gds_zarr.store import GDSStore

SHAPE, CHUNKS = (32, 32), (16, 16)
CHUNK_NBYTES = 16 * 16 * 4
DATA = np.arange(32 * 32, dtype="float32").reshape(SHAPE)
FILL = -1.0
KEY = "c/0/0"


@pytest.fixture(autouse=True)
def _cpu_pipeline() -> Iterator[None]:
    with gds_zarr.enable(device="cpu"):
        yield


def _make(root: Path, compressors: Any, *, shards: tuple[int, int] | None = None,
          serializer: Any = "auto") -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numcodecs codecs in v3 arrays warn about stability
        a = zarr.create_array(GDSStore(root), shape=SHAPE, chunks=CHUNKS, shards=shards,
                              dtype="float32", compressors=compressors, serializer=serializer,
                              fill_value=FILL)
        a[...] = DATA
    return root


def _read(root: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return zarr.open_array(GDSStore(root, read_only=True), mode="r")[...]


def _raises_naming(root: Path, key: str, exc: type[Exception] = ChunkDecodeError) -> Exception:
    with pytest.raises(exc) as info:
        _read(root)
    assert info.value.key == key, info.value  # type: ignore[attr-defined]
    assert repr(key) in str(info.value)
    assert isinstance(info.value, ValueError)  # what zarr users already catch
    return info.value


def _lz4() -> Any:
    from zarr.codecs.numcodecs import LZ4

    return LZ4()


# --------------------------------------------------------------------- corrupt chunk matrix

CODECS: dict[str, Callable[[], Any]] = {
    "zstd": lambda: zc.ZstdCodec(),
    "zstd+checksum": lambda: zc.ZstdCodec(checksum=True),
    "zstd+crc32c": lambda: [zc.ZstdCodec(), zc.Crc32cCodec()],
    "gzip": lambda: zc.GzipCodec(),
    "blosc": lambda: zc.BloscCodec(),
    "lz4": _lz4,
    "crc32c": lambda: zc.Crc32cCodec(),
}


def _truncate_half(raw: bytes) -> bytes:
    return raw[: len(raw) // 2]


def _drop_last_byte(raw: bytes) -> bytes:
    return raw[:-1]


def _empty(raw: bytes) -> bytes:
    return b""


def _trailing_garbage(raw: bytes) -> bytes:
    return raw + b"\x00garbage"


def _header_only(raw: bytes) -> bytes:
    return raw[:6]


MUTATIONS = {"truncated-half": _truncate_half, "truncated-1": _drop_last_byte,
             "zero-length": _empty, "header-only": _header_only,
             "trailing-garbage": _trailing_garbage}
# Formats that decode a valid prefix and ignore what follows it: trailing bytes are not an error
# for them in zarr either (blosc and lz4 carry their compressed size in the header).
TRAILING_OK = {"blosc"}


def _matrix() -> list[Any]:
    out = []
    for codec in CODECS:
        for mutation in MUTATIONS:
            out.append(pytest.param(codec, mutation, id=f"{codec}-{mutation}"))
    return out


@pytest.mark.parametrize(("codec", "mutation"), _matrix())
def test_corrupt_chunk_raises_naming_the_key(tmp_path: Path, codec: str, mutation: str) -> None:
    root = _make(tmp_path / "a.zarr", CODECS[codec]())
    path = root / KEY
    path.write_bytes(MUTATIONS[mutation](path.read_bytes()))
    if mutation == "trailing-garbage" and codec in TRAILING_OK:
        np.testing.assert_array_equal(_read(root), DATA)
        return
    _raises_naming(root, KEY)


def test_empty_blosc_chunk_never_decodes_its_neighbour(tmp_path: Path) -> None:
    root = _make(tmp_path / "a.zarr", zc.BloscCodec())
    (root / KEY).write_bytes(b"")
    _raises_naming(root, KEY)


@pytest.mark.parametrize("keep", [0, 8, 16, 40])
def test_truncated_blosc_chunk_is_refused_before_decoding(tmp_path: Path, keep: int) -> None:
    # c-blosc reads as many bytes as its header says, whatever the buffer holds: a chunk cut
    # short in front of its neighbours in one batch buffer must be refused, never decoded.
    root = _make(tmp_path / "a.zarr", zc.BloscCodec())
    path = root / KEY
    path.write_bytes(path.read_bytes()[:keep])
    _raises_naming(root, KEY)


# Header bytes a flip cannot hurt: gzip's MTIME, XFL and OS fields (RFC 1952).
HARMLESS = {"gzip": set(range(4, 10))}


@pytest.mark.parametrize("codec", ["zstd+checksum", "zstd+crc32c", "gzip", "crc32c"])
def test_bit_flips_are_caught_where_the_format_has_a_checksum(tmp_path: Path,
                                                               codec: str) -> None:
    root = _make(tmp_path / "a.zarr", CODECS[codec]())
    raw = (root / KEY).read_bytes()
    rng = np.random.default_rng(0)
    harmless = HARMLESS.get(codec, set())
    for pos in rng.choice(len(raw), size=12, replace=False).tolist():
        flipped = bytearray(raw)
        flipped[pos] ^= 1 << int(rng.integers(8))
        (root / KEY).write_bytes(bytes(flipped))
        if pos in harmless:
            np.testing.assert_array_equal(_read(root), DATA)
        else:
            _raises_naming(root, KEY)


def test_bit_flip_without_a_checksum_can_be_silent_garbage(tmp_path: Path) -> None:
    # Documented limitation (docs/bad_input.md): zstd without a checksum has nothing to check a
    # flipped literal byte against; zarr's own pipeline returns the same garbage.
    root = _make(tmp_path / "a.zarr", zc.ZstdCodec())
    raw = bytearray((root / KEY).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (root / KEY).write_bytes(bytes(raw))
    got = _read(root)
    assert not np.array_equal(got, DATA)
    with gds_zarr.enable(device="cpu"), zarr.config.set(
            {"codec_pipeline.path": "zarr.core.codec_pipeline.BatchedCodecPipeline"}):
        np.testing.assert_array_equal(got, _read(root))


@pytest.mark.parametrize(("codec", "other"), [
    ("zstd", lambda: gzip.compress(DATA[:16, :16].tobytes())),
    ("gzip", lambda: numcodecs.Zstd().encode(DATA[:16, :16].tobytes())),
    ("blosc", lambda: numcodecs.Zstd().encode(DATA[:16, :16].tobytes())),
    ("lz4", lambda: numcodecs.Zstd().encode(DATA[:16, :16].tobytes())),
])
def test_chunk_written_with_another_codec(tmp_path: Path, codec: str,
                                          other: Callable[[], bytes]) -> None:
    root = _make(tmp_path / "a.zarr", CODECS[codec]())
    (root / KEY).write_bytes(other())
    _raises_naming(root, KEY)


def test_raw_chunk_of_the_wrong_size(tmp_path: Path) -> None:
    root = _make(tmp_path / "a.zarr", None)
    (root / KEY).write_bytes((root / KEY).read_bytes()[:-4])
    err = _raises_naming(root, KEY)
    assert str(CHUNK_NBYTES) in str(err)


def test_gzip_multi_member(tmp_path: Path) -> None:
    root = _make(tmp_path / "a.zarr", zc.GzipCodec())
    raw = DATA[:16, :16].tobytes()
    # Two members that together are the chunk: valid gzip, decoded whole (as zarr does).
    (root / KEY).write_bytes(gzip.compress(raw[:500]) + gzip.compress(raw[500:]))
    np.testing.assert_array_equal(_read(root), DATA)
    # Two members that together are twice the chunk: a size error naming the key (inflating
    # stops one byte past the chunk's size, so the total is not known).
    (root / KEY).write_bytes(gzip.compress(raw) + gzip.compress(raw))
    assert "expected 1024 decoded bytes, found more" in str(_raises_naming(root, KEY))


# --------------------------------------------------------------------- claimed sizes

HUGE = 1 << 30  # 1 GiB claimed by a header of a chunk that decodes to 1 KiB


def _zstd_claiming(size: int) -> bytes:
    raw = numcodecs.Zstd().encode(DATA[:16, :16].tobytes())
    fhd = raw[4]
    assert fhd >> 6 == 1 and fhd & 0x20  # numcodecs writes a 2-byte content size, one segment
    return raw[:4] + bytes([0xE0]) + struct.pack("<Q", size) + raw[7:]


def _claiming(codec: str, raw: bytes, size: int) -> bytes:
    if codec == "zstd":
        return _zstd_claiming(size)
    b = bytearray(raw)
    size = min(size, 2**31 - 1)  # both write int32 sizes
    if codec == "lz4":
        b[0:4] = struct.pack("<i", size)
    elif codec == "blosc":
        b[4:8] = struct.pack("<i", size)
    return bytes(b)


@pytest.mark.parametrize("codec", ["zstd", "lz4", "blosc"])
def test_claimed_huge_size_does_not_allocate_it(tmp_path: Path, codec: str) -> None:
    root = _make(tmp_path / "a.zarr", CODECS[codec]())
    (root / KEY).write_bytes(_claiming(codec, (root / KEY).read_bytes(), HUGE))
    tracemalloc.start()
    try:
        _raises_naming(root, KEY)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"peak {peak >> 20} MiB for a 1 KiB chunk"


@pytest.mark.parametrize("codec", ["zstd", "lz4", "blosc"])
def test_claimed_huge_size_is_an_error(tmp_path: Path, codec: str) -> None:
    # The error half of the test above, which holds today.
    root = _make(tmp_path / "a.zarr", CODECS[codec]())
    (root / KEY).write_bytes(_claiming(codec, (root / KEY).read_bytes(), 1 << 40))
    _raises_naming(root, KEY)


# --------------------------------------------------------------------- shard indexes

N_INNER = 4
INDEX_NBYTES = 16 * N_INNER + 4


def _sharded(tmp_path: Path) -> tuple[Path, bytes, np.ndarray]:
    root = _make(tmp_path / "s.zarr", zc.ZstdCodec(), shards=SHAPE)
    raw = (root / KEY).read_bytes()
    index = np.frombuffer(raw[-INDEX_NBYTES:-4], "<u8").reshape(N_INNER, 2).copy()
    return root, raw, index


def _put_index(root: Path, raw: bytes, index: np.ndarray, *, crc: bool = True) -> None:
    table = index.astype("<u8").tobytes()
    c = google_crc32c.value(table) if crc else 0
    (root / KEY).write_bytes(raw[:-INDEX_NBYTES] + table + struct.pack("<I", c))


def _set(row: int, col: int, value: int) -> Callable[[np.ndarray, int], None]:
    def f(index: np.ndarray, size: int) -> None:
        index[row, col] = value
    return f


def _partial_overlap(index: np.ndarray, size: int) -> None:
    index[1, 0] = index[0, 0] + 10


SHARD_INDEXES: dict[str, Callable[[np.ndarray, int], None]] = {
    "offset-past-eof": _set(1, 0, 10**9),
    "size-past-eof": _set(1, 1, 1 << 40),
    "absurd-size": _set(1, 1, (1 << 62) + 5),
    "offset+size-overflows": lambda i, n: (_set(1, 0, 2**64 - 2)(i, n), _set(1, 1, 5)(i, n)),
    "offset-above-2**63": _set(1, 0, 2**64 - 1000),
    "offset-2**63-size-eof": lambda i, n: (_set(1, 0, 2**63)(i, n), _set(1, 1, n)(i, n)),
    "half-empty": _set(1, 0, 2**64 - 1),
    "partial-overlap": _partial_overlap,
    "points-into-index": _set(1, 0, 0),  # fine at the end? the bytes there are other data
}


@pytest.mark.parametrize("case", list(SHARD_INDEXES))
def test_garbage_shard_index(tmp_path: Path, case: str) -> None:
    root, raw, index = _sharded(tmp_path)
    SHARD_INDEXES[case](index, len(raw))
    _put_index(root, raw, index)
    with pytest.raises(ChunkDecodeError) as info:
        _read(root)
    # Index errors name the shard; decode errors of an inner chunk name "<shard>[<inner>]".
    assert info.value.key in (KEY, f"{KEY}[1]"), info.value


@pytest.mark.parametrize(("case", "content"), [
    ("bad-crc", None), ("truncated-to-30-bytes", 30), ("zero-length", 0),
    ("body-cut-in-half", -1)])
def test_truncated_or_unchecked_shard(tmp_path: Path, case: str, content: int | None) -> None:
    root, raw, index = _sharded(tmp_path)
    if content is None:
        _put_index(root, raw, index, crc=False)
    elif content >= 0:
        (root / KEY).write_bytes(raw[:content])
    else:
        (root / KEY).write_bytes(raw[: len(raw) // 2] + raw[-INDEX_NBYTES:])
    _raises_naming(root, KEY, ShardIndexError)


def test_duplicate_shard_entries_read_as_zarr_reads_them(tmp_path: Path) -> None:
    # Two inner chunks sharing one byte range is valid sharding (deduplicated chunks): both
    # decode to the same values, as in zarr.
    root, raw, index = _sharded(tmp_path)
    index[1] = index[0]
    _put_index(root, raw, index)
    ours = _read(root)
    with zarr.config.set({"codec_pipeline.path":
                          "zarr.core.codec_pipeline.BatchedCodecPipeline"}):
        np.testing.assert_array_equal(ours, _read(root))
    np.testing.assert_array_equal(ours[:16, 16:], DATA[:16, :16])


# --------------------------------------------------------------------- missing vs unreadable


def test_missing_chunk_is_the_fill_value(tmp_path: Path) -> None:
    root = _make(tmp_path / "a.zarr", zc.ZstdCodec())
    (root / KEY).unlink()
    got = _read(root)
    assert (got[:16, :16] == FILL).all()
    np.testing.assert_array_equal(got[16:], DATA[16:])


def test_directory_where_a_chunk_should_be(tmp_path: Path) -> None:
    root = _make(tmp_path / "a.zarr", zc.ZstdCodec())
    (root / KEY).unlink()
    (root / KEY).mkdir()
    with pytest.raises(ChunkReadError, match="directory") as info:
        _read(root)
    assert info.value.key == KEY and isinstance(info.value, OSError)
    # zarr's LocalStore (with zarr's pipeline) reads the directory as a missing chunk.
    with warnings.catch_warnings(), zarr.config.set(
            {"codec_pipeline.path": "zarr.core.codec_pipeline.BatchedCodecPipeline"}):
        warnings.simplefilter("ignore")
        assert (zarr.open_array(LocalStore(root), mode="r")[:16, :16] == FILL).all()


def test_fifo_where_a_chunk_should_be_does_not_hang(tmp_path: Path) -> None:
    root = _make(tmp_path / "a.zarr", zc.ZstdCodec())
    (root / KEY).unlink()
    os.mkfifo(root / KEY)
    # A reader that opened the FIFO blocking would wait for a writer forever: fail instead.
    old = signal.signal(signal.SIGALRM, lambda *a: pytest.fail("reading a FIFO hung"))
    signal.alarm(20)
    try:
        with pytest.raises(ChunkReadError, match="not a regular file") as info:
            _read(root)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert info.value.key == KEY


_UNREADABLE_CHILD = textwrap.dedent("""
    import json, os, sys, warnings
    import zarr, gds_zarr
    from gds_zarr.store import GDSStore
    gds_zarr.enable(device="cpu")
    warnings.simplefilter("ignore")
    zarr.open_array(GDSStore(sys.argv[1], read_only=True), mode="r")[16:, 16:]  # warm imports
    if os.geteuid() == 0:
        os.setgid(65534)
        os.setuid(65534)  # nobody: mode 000 now means something
    try:
        zarr.open_array(GDSStore(sys.argv[1], read_only=True), mode="r")[...]
        print(json.dumps({"raised": None}))
    except Exception as e:
        print(json.dumps({"raised": type(e).__name__, "key": getattr(e, "key", None),
                          "msg": str(e)}))
""")


def test_unreadable_chunk_file_is_an_error_not_the_fill_value() -> None:
    # Under root, chmod 000 changes nothing, so the reader runs as 'nobody' in a subprocess;
    # the store must then live where 'nobody' can reach it (pytest's tmp_path is 0700).
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        root = _make(Path(tmp) / "a.zarr", zc.ZstdCodec())
        for dirpath, _dirnames, filenames in os.walk(root):
            os.chmod(dirpath, 0o755)
            for name in filenames:
                os.chmod(os.path.join(dirpath, name), 0o644)
        os.chmod(root / KEY, 0)
        assert stat.S_IMODE(os.stat(root / KEY).st_mode) == 0
        proc = subprocess.run([sys.executable, "-c", _UNREADABLE_CHILD, str(root)],
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["raised"] == "ChunkReadError", got
    assert got["key"] == KEY and "Permission denied" in got["msg"]


# --------------------------------------------------------------------- keys in listings

ESCAPING_PREFIXES = ["..", "../", "../x/", "a/..", "a/../../", "/etc", "/etc/", "a\x00",
                     "a\\..\\..", ".", "./", "a//", "//"]


@pytest.mark.parametrize("prefix", ESCAPING_PREFIXES)
async def test_escaping_prefixes_are_refused_by_listings_and_deletes(tmp_path: Path,
                                                                     prefix: str) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_bytes(b"s")
    store = GDSStore(tmp_path / "root")
    await store.set("a/k", zarr.core.buffer.cpu.Buffer.from_bytes(b"v"))
    for listing in (store.list_prefix, store.list_dir):
        with pytest.raises(InvalidKeyError):
            _ = [k async for k in listing(prefix)]
    for call in (store.delete_dir, store.getsize_prefix, store.is_empty):
        with pytest.raises(InvalidKeyError):
            await call(prefix)
    assert (tmp_path / "outside" / "secret").read_bytes() == b"s"
    assert [k async for k in store.list()] == ["a/k"]


async def test_listing_through_a_directory_symlink_out_of_the_root(tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_bytes(b"s")
    store = GDSStore(tmp_path / "root")
    await store.set("k", zarr.core.buffer.cpu.Buffer.from_bytes(b"v"))
    os.symlink(tmp_path / "outside", tmp_path / "root" / "out")
    for prefix in ("out", "out/", "out/s"):
        with pytest.raises(InvalidKeyError, match="outside the store root"):
            _ = [k async for k in store.list_prefix(prefix + ("" if prefix.endswith("/")
                                                              else "/"))]
        with pytest.raises(InvalidKeyError, match="outside the store root"):
            _ = [k async for k in store.list_dir(prefix)]
    with pytest.raises(InvalidKeyError):
        await store.delete_dir("out/")
    assert [k async for k in store.list()] == ["k"]  # the link itself is not descended
    assert (tmp_path / "outside" / "secret").read_bytes() == b"s"
