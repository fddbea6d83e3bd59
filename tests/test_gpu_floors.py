"""The cu12/cu13 extras' floors guarantee every API the GPU path calls.

Each row of :data:`APIS` names an API gds_zarr calls, the first release of the distribution
that has it, the last release that does not, and where that was read. A floor that admits the
release without it fails here: on 5.x nvCOMP every batch would silently decode on the CPU, and a
CuPy without its ``ctk`` extra has no NVRTC on a driver-only host (every RawKernel fails).

Checked twice: against pyproject.toml (the source), and against the installed gds-zarr
metadata (what pip resolved), when gds-zarr is installed from this checkout and up to date.
"""

from __future__ import annotations

import importlib.metadata
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LEGS = ("cu12", "cu13")


@dataclass(frozen=True)
class Api:
    """An API the GPU path calls, and the releases that first have it and last lack it."""

    distribution: str  # without the -cu12/-cu13 (nvidia-nvcomp, kvikio) or -cuda1Xx (cupy) tail
    api: str
    first: str
    last_without: str
    source: str
    extra: str | None = None  # an extra of the distribution that must be requested


APIS = (
    Api("nvidia-nvcomp", "nvcomp.as_arrays(buffer, offsets, sizes) -> BatchArray", "6.0",
        "5.3.0.16", "REFERENCE.md (nvCOMP): the 5.0 and 5.3 wheels have no BatchArray and no "
        "offsets form of as_arrays; 6.0.0.12's docstring has both"),
    Api("nvidia-nvcomp", "Codec.get_required_decompression_alignment()", "6.0", "5.3.0.16",
        "REFERENCE.md (nvCOMP): absent from 5.x; docstring of 6.0.0.12"),
    Api("nvidia-nvcomp", "BatchArray.buffer_sizes", "6.0", "5.3.0.16",
        "REFERENCE.md (nvCOMP): absent from 5.x; docstring of 6.0.0.12"),
    Api("nvidia-nvcomp", "Codec.decode(srcs, out=BatchArray, decompression_config=...)", "6.0",
        "5.3.0.16", "6.0.0.12 docstring: batch decode into fixed-capacity out, with a config"),
    Api("nvidia-nvcomp", "Codec.compression_config(list[int]) -> decompression_config(cfg)",
        "6.0", "5.3.0.16", "6.0.0.12 docstrings (the sync-free preconfigured round trip)"),
    Api("cupy", "[ctk] extra (cuda-toolkit[nvrtc,...]) for RawKernel on driver-only hosts",
        "14.0.0", "13.6.0", "PyPI metadata via pip install --dry-run --report: cupy-cuda12x and "
        "cupy-cuda13x 13.6.0 provide extras all, test; 14.0.0 adds ctk", extra="ctk"),
    Api("kvikio", "kvikio.defaults.set(dict) / get(name)", "25.04", "25.02.01",
        "rapidsai/kvikio git: python/kvikio/kvikio/defaults.py has set/get at v25.04.00, not at "
        "v25.02.01"),
    Api("kvikio", "kvikio.defaults.is_compat_mode_preferred()", "25.04", "25.02.01",
        "rapidsai/kvikio git: defaults.py at v25.04.00, not at v25.02.01"),
    Api("kvikio", "kvikio.cufile_driver.get('is_gds_available')", "25.04", "25.02.01",
        "rapidsai/kvikio git: cufile_driver.py has get() at v25.04.00, not at v25.02.01"),
)


def _base(name: str) -> str:
    """``nvidia-nvcomp-cu12`` -> ``nvidia-nvcomp``; ``cupy-cuda13x`` -> ``cupy``."""
    for tail in ("-cu12", "-cu13", "-cuda12x", "-cuda13x"):
        if name.endswith(tail):
            return name[: -len(tail)]
    return name


def violations(requirements: list[Requirement]) -> list[str]:
    """Every API of :data:`APIS` that ``requirements`` (one leg's) do not guarantee."""
    found: dict[str, Requirement] = {_base(r.name): r for r in requirements}
    bad = []
    for api in APIS:
        req = found.get(api.distribution)
        if req is None:
            bad.append(f"{api.distribution}: not required at all, but {api.api} is called")
            continue
        if req.specifier.contains(Version(api.last_without), prereleases=True):
            bad.append(f"{req}: admits {api.last_without}, which lacks {api.api} "
                       f"(first in {api.first}; {api.source})")
        if api.extra is not None and api.extra not in req.extras:
            bad.append(f"{req}: without [{api.extra}] ({api.api})")
    return bad


def _pyproject_leg(leg: str) -> list[Requirement]:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    return [Requirement(r) for r in extras[leg]]


@pytest.mark.parametrize("leg", LEGS)
def test_pyproject_floors_cover_every_api(leg: str) -> None:
    reqs = _pyproject_leg(leg)
    assert violations(reqs) == []
    # Every distribution of the table is pinned for this leg's CUDA major version.
    names = {r.name for r in reqs}
    major = leg[-2:]
    assert {f"nvidia-nvcomp-cu{major}", f"kvikio-cu{major}", f"cupy-cuda{major}x"} <= names


def _installed_from_this_checkout() -> importlib.metadata.Distribution | None:
    # Not distribution(): a gds_zarr.egg-info left in the checkout (on sys.path) may come first.
    for dist in importlib.metadata.distributions(name="gds-zarr"):
        url = json.loads(dist.read_text("direct_url.json") or "{}").get("url", "")
        if url.rstrip("/") == ROOT.as_uri():
            return dist
    return None


@pytest.mark.parametrize("leg", LEGS)
def test_installed_metadata_floors_cover_every_api(leg: str) -> None:
    dist = _installed_from_this_checkout()
    if dist is None:
        pytest.skip("gds-zarr is not installed from this checkout")
    reqs = [Requirement(r) for r in dist.requires or []]
    marker_env = {"extra": leg}
    installed = [r for r in reqs if r.marker is not None and r.marker.evaluate(marker_env)
                 and not r.marker.evaluate({"extra": ""})]
    if sorted(map(str, (r for r in installed))) != sorted(
            str(Requirement(f"{r}; extra == {leg!r}")) for r in _pyproject_leg(leg)):
        pytest.skip("the installed metadata predates pyproject.toml: pip install -e . again "
                    "(ci/test_cpu.sh does)")
    for r in installed:
        r.marker = None
    assert violations(installed) == []


@pytest.mark.parametrize(("requirement", "expected"), [
    ("nvidia-nvcomp-cu12>=5.0", "admits 5.3.0.16"),
    ("cupy-cuda12x>=14.0", "without [ctk]"),
    ("cupy-cuda13x[ctk]>=13.6", "admits 13.6.0"),
    ("kvikio-cu12>=24.12", "admits 25.02.01"),
])
def test_a_loose_floor_is_caught(requirement: str, expected: str) -> None:
    reqs = [r for r in _pyproject_leg("cu12") if _base(r.name) != _base(
        Requirement(requirement).name)]
    bad = violations([*reqs, Requirement(requirement)])
    assert bad and all(expected in b for b in bad), bad


def test_installed_gpu_libraries_have_every_api() -> None:
    """Where a leg is installed (ci/gpu_libs_without_driver.sh, a GPU machine), the versions
    pip picked have every API of the table."""
    checked = 0
    for api in APIS:
        for leg in LEGS:
            dist = next(r.name for r in _pyproject_leg(leg) if _base(r.name) == api.distribution)
            try:
                version = Version(importlib.metadata.version(dist))
            except importlib.metadata.PackageNotFoundError:
                continue
            assert version >= Version(api.first), (
                f"{dist} {version} is installed, which lacks {api.api} (first in {api.first})")
            checked += 1
    if checked == 0:
        pytest.skip("no GPU library of the cu12/cu13 legs is installed here")
