"""docker/: what can be checked without a Docker engine.

The Dockerfile parses (known instructions, FROM first, an official NVIDIA CUDA runtime base for
CUDA 12 or 13), every file it copies exists in the build context (the repository root), and
the pip install line it runs is the one docker/README.md documents.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "Dockerfile"
README = REPO / "docker" / "README.md"

INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
                "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK",
                "SHELL", "MAINTAINER"}
BASE_IMAGE = re.compile(r"^nvidia/cuda:(12|13)\.\d+(\.\d+)?-(cudnn\d*-)?runtime-ubuntu\d+\.\d+$")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile: comments dropped, ``\\`` continuations joined.

    Raises
    ------
    ValueError
        For an unknown instruction, a continuation at the end of the file, or an instruction
        without arguments.
    """
    out: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue  # comments and parser directives
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        line = " ".join(p for p in pending if p)
        pending = []
        keyword, _, args = line.partition(" ")
        if keyword.upper() not in INSTRUCTIONS:
            raise ValueError(f"line {start}: unknown instruction {keyword!r}")
        if not args.strip():
            raise ValueError(f"line {start}: {keyword} without arguments")
        out.append(Instruction(keyword.upper(), args.strip(), start))
    if pending:
        raise ValueError("the file ends inside a continued instruction")
    return out


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


def test_parser_rejects_broken_files() -> None:
    assert [i.keyword for i in parse_dockerfile("# c\nFROM a\nRUN x \\\n  y\n")] == ["FROM", "RUN"]
    assert parse_dockerfile("FROM a\nRUN x \\\n  y\n")[1].args == "x y"
    with pytest.raises(ValueError, match="unknown instruction"):
        parse_dockerfile("FROM a\nRUNN x\n")
    with pytest.raises(ValueError, match="continued"):
        parse_dockerfile("FROM a\nRUN x \\\n")
    with pytest.raises(ValueError, match="without arguments"):
        parse_dockerfile("FROM\n")


def test_from_first_and_an_nvidia_cuda_runtime_base(instructions: list[Instruction]) -> None:
    assert instructions[0].keyword == "FROM"
    froms = [i for i in instructions if i.keyword == "FROM"]
    assert len(froms) == 1, "a single-stage build is expected"
    image = froms[0].args.split()[0]
    assert BASE_IMAGE.match(image), f"base image {image!r} is not an nvidia/cuda runtime tag"


def test_json_form_instructions_are_valid_json(instructions: list[Instruction]) -> None:
    for i in instructions:
        if i.keyword in {"CMD", "ENTRYPOINT"}:
            value = json.loads(i.args)  # the exec form: a JSON list of strings
            assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    entry = next(i for i in instructions if i.keyword == "ENTRYPOINT")
    assert json.loads(entry.args) == ["gds-zarr"]


def test_every_copied_file_exists_in_the_build_context(instructions: list[Instruction]) -> None:
    copies = [i for i in instructions if i.keyword in {"COPY", "ADD"}]
    assert copies
    for i in copies:
        parts = [p for p in shlex.split(i.args) if not p.startswith("--")]
        *sources, _dest = parts
        assert sources, f"line {i.line}: {i.keyword} without a source"
        for src in sources:
            assert (REPO / src).exists(), f"line {i.line}: {src!r} is not in the repository"
    # The package and its metadata are what pip needs.
    copied = {s for i in copies for s in shlex.split(i.args)[:-1]}
    assert {"pyproject.toml", "README.md", "gds_zarr"} <= copied


def _pip_installs(instructions: list[Instruction]) -> list[str]:
    cmds = []
    for i in instructions:
        if i.keyword == "RUN":
            cmds += [c.strip() for c in re.split(r"&&|;", i.args) if "pip install" in c]
    return cmds


def test_install_line_is_the_documented_one(instructions: list[Instruction]) -> None:
    installs = _pip_installs(instructions)
    assert len(installs) == 1, installs
    line = installs[0]
    assert re.search(r"""["']?\.\[cu1[23]\]["']?""", line), "installs without the GPU extra"
    readme = README.read_text()
    assert f"\n{line}\n" in readme, f"docker/README.md does not document {line!r}"
    # The extra matches the CUDA major version of the base image.
    cuda_major = re.search(r"nvidia/cuda:(\d+)", instructions[0].args).group(1)  # type: ignore[union-attr]
    assert f"[cu{cuda_major}]" in line


def test_readme_documents_run_mounts_and_the_gds_check() -> None:
    readme = README.read_text()
    assert "docker build -f docker/Dockerfile" in readme
    run = [line for line in readme.splitlines() if line.startswith("docker run")]
    assert run and all("--gpus all" in line for line in run)
    assert any("-v /run/udev:/run/udev:ro" in line and "-v /data:/data" in line for line in run)
    assert "gds-zarr info" in readme and "compat" in readme


def test_dockerignore_keeps_what_the_dockerfile_copies(instructions: list[Instruction]) -> None:
    ignore = (REPO / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = {s.rstrip("/") for i in instructions if i.keyword == "COPY"
              for s in shlex.split(i.args)[:-1]}
    assert copied <= kept


# --- the build checks the GPU stack (issue 20, item 8) -----------------------------------------

CHECK = REPO / "docker" / "check_install.py"
EMULATED = REPO / "tests" / "emulated_gpu"


def test_the_build_runs_the_install_check_after_the_install(
        instructions: list[Instruction]) -> None:
    runs = [i for i in instructions if i.keyword == "RUN"]
    install = next(n for n, i in enumerate(runs) if "pip install" in i.args)
    checks = [n for n, i in enumerate(runs) if "docker/check_install.py" in i.args]
    assert checks and checks[0] > install, "check_install.py must run after pip install"
    assert re.fullmatch(r"python (-P )?docker/check_install\.py", runs[checks[0]].args)
    copied = {s for i in instructions if i.keyword == "COPY" for s in shlex.split(i.args)[:-1]}
    assert "docker/check_install.py" in copied


def test_the_install_check_imports_the_gpu_stack_and_runs_info() -> None:
    source = CHECK.read_text()
    assert 'LIBRARIES = {"cupy": "cupy", "kvikio": "kvikio", "nvidia.nvcomp": "nvcomp"}' \
        in source
    assert '"info", "--json"' in source


def _check(*args: str, pythonpath: list[Path], **env: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **env,
           "PYTHONPATH": os.pathsep.join(map(str, [*pythonpath, REPO]))}
    return subprocess.run([sys.executable, "-P", str(CHECK), *args], capture_output=True,
                          text=True, timeout=300, env=env, check=False)


def test_the_install_check_passes_with_the_gpu_stack() -> None:
    """On the emulated device (stand-ins for CuPy, kvikio and nvCOMP): every check passes."""
    done = _check(pythonpath=[EMULATED])
    assert done.returncode == 0, done.stderr
    assert "cupy " in done.stdout and "nvidia.nvcomp " in done.stdout
    assert "device: " in done.stdout


def test_the_install_check_fails_on_a_broken_library(tmp_path: Path) -> None:
    """A wheel whose shared library is missing fails the build, naming the library."""
    broken = tmp_path / "kvikio"
    broken.mkdir()
    (broken / "__init__.py").write_text(
        'raise OSError("libcufile.so.0: cannot open shared object file")\n')
    done = _check(pythonpath=[tmp_path, EMULATED])
    assert done.returncode == 1
    assert "import kvikio: OSError: libcufile.so.0" in done.stderr
    assert "gds-zarr info: kvikio is not importable" in done.stderr


def test_the_install_check_fails_without_the_gpu_libraries() -> None:
    done = _check(pythonpath=[])
    if done.returncode == 0:
        pytest.skip("the GPU libraries are installed here")
    assert "import cupy" in done.stderr and "gds-zarr info: cupy is not importable" in done.stderr


def test_gpu_requires_a_usable_device() -> None:
    """``--gpu`` (a container run with ``--gpus all``): the libraries alone are not enough."""
    assert _check("--gpu", pythonpath=[EMULATED], EMULATED_GPU_DEVICES="2").returncode == 0
    none = _check("--gpu", pythonpath=[EMULATED], EMULATED_GPU_DEVICES="0")
    assert none.returncode == 1 and "no usable GPU" in none.stderr, none.stderr
    assert _check(pythonpath=[EMULATED], EMULATED_GPU_DEVICES="0").returncode == 0  # the build
