"""Helpers for tests that look at which GPU libraries this machine has (no fixtures here:
fixtures live in conftest.py, which test modules cannot import by name when tests_gpu/ and its
own conftest.py are collected in the same run)."""

from __future__ import annotations

GPU_MODULES = ("cupy", "kvikio", "nvidia.nvcomp", "pynvml")


def importable(name: str) -> bool:
    """True if ``import name`` works here (a GPU library may be installed yet fail to load)."""
    try:
        __import__(name)
    except Exception:  # noqa: BLE001 - any failure means not importable
        return False
    return True
