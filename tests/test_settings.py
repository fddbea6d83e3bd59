"""gds_zarr.settings: precedence (set > env > default), parsing, context restore."""

from __future__ import annotations

import pytest

from gds_zarr import settings


def test_every_setting_has_env_doc_and_valid_default() -> None:
    for name, spec in settings.SETTINGS.items():
        assert spec.env == f"GDS_ZARR_{name.upper()}"
        assert spec.doc and spec.default_doc
        # the default must itself be accepted by the parser
        assert spec.parse(spec.default()) == spec.default()


def test_precedence_set_over_env_over_default(monkeypatch: pytest.MonkeyPatch) -> None:
    default = settings.SETTINGS["io_threads"].default()
    monkeypatch.delenv("GDS_ZARR_IO_THREADS", raising=False)
    assert settings.get("io_threads") == default
    monkeypatch.setenv("GDS_ZARR_IO_THREADS", "7")
    assert settings.get("io_threads") == 7
    with settings.set(io_threads=3):
        assert settings.get("io_threads") == 3
        with settings.set(io_threads=None):  # None: back to env/default inside the block
            assert settings.get("io_threads") == 7
        assert settings.get("io_threads") == 3
    assert settings.get("io_threads") == 7


def test_global_set_stays_until_reset() -> None:
    settings.set(decode_threads=5)
    try:
        assert settings.get("decode_threads") == 5
    finally:
        settings.set(decode_threads=None)
    assert settings.get("decode_threads") == settings.SETTINGS["decode_threads"].default()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4096", 4096), ("64KiB", 64 << 10), ("16 MiB", 16 << 20), ("1GB", 10**9), ("2k", 2048),
     (0, 0), ("1.5MiB", 3 << 19)],
)
def test_parse_bytes(text: str | int, expected: int) -> None:
    assert settings.parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["", "12 parsecs", "-1", "MiB", True])
def test_parse_bytes_rejects(bad: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        settings.parse_bytes(bad)  # type: ignore[arg-type]


def test_bad_values_change_nothing() -> None:
    before = settings.get("memory_budget")
    with pytest.raises(ValueError, match="byte size"):
        settings.set(memory_budget="lots", io_threads=2)
    assert settings.get("memory_budget") == before
    assert settings.get("io_threads") == settings.SETTINGS["io_threads"].default()


def test_unknown_name_lists_known() -> None:
    with pytest.raises(KeyError, match="memory_budget"):
        settings.get("memory_budgett")


def test_bad_env_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GDS_ZARR_DEVICE", "tpu")
    with pytest.raises(ValueError, match="GDS_ZARR_DEVICE"):
        settings.get("device")


def test_markdown_table_lists_every_setting() -> None:
    table = settings.markdown_table()
    for spec in settings.SETTINGS.values():
        assert f"`{spec.env}`" in table
