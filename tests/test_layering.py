"""The architecture's import rules, checked on the source: planning is device-free and imports
neither ``io/`` nor ``decode/``; shared data types live where both sides can import them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "gds_zarr"


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (function-level imports count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


FORBIDDEN = {
    "planning": ("gds_zarr.io", "gds_zarr.decode", "gds_zarr.store", "gds_zarr.pipeline",
                 "cupy", "kvikio", "nvidia"),
    "decode": ("gds_zarr.io", "gds_zarr.store", "gds_zarr.pipeline"),
    "io": ("gds_zarr.decode", "gds_zarr.pipeline"),
}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports(layer: str) -> None:
    bad = []
    for path in sorted((PKG / layer).rglob("*.py")):
        for mod in sorted(_imports(path)):
            if any(mod == f or mod.startswith(f + ".") for f in FORBIDDEN[layer]):
                bad.append(f"{path.relative_to(PKG.parent)} imports {mod}")
    assert not bad, "\n".join(bad)


def test_checker_sees_a_violation(tmp_path: Path) -> None:
    # The rule above must be able to fail: a function-level import is found too.
    p = tmp_path / "m.py"
    p.write_text("def f():\n    from gds_zarr.io._base import IOStats\n")
    assert "gds_zarr.io._base" in _imports(p)
