"""docker/: what can be checked without a Docker engine.

The Dockerfile parses (known instructions, FROM first, an official NVIDIA CUDA runtime base for
CUDA 12 or 13), every file it copies exists in the build context (the repository root), and
the pip install line it runs is the one docker/README.md documents.
"""

from __future__ import annotations

import json
import re
import shlex
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
