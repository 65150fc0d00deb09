"""The lock files are what every install uses, and they still satisfy pyproject.toml.

A dependency edited in pyproject.toml without `bash scripts/lock.sh` would install the old
version everywhere (installs take the lock with --no-deps); these tests catch that offline,
without asking a registry.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
LOCKS = REPO / "requirements"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# What the lock files are installed on: CPython 3.11 on x86_64 Linux.
TARGET = {
    "python_version": "3.11",
    "python_full_version": "3.11.7",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
# Left out of every lock on purpose (scripts/lock.sh says why).
NOT_LOCKED = {"torchvision", "torchaudio", "torchcodec"}


def lock_extras() -> dict[str, list[str]]:
    """Each lock file and the extras scripts/lock.sh compiles it from."""
    script = (REPO / "scripts" / "lock.sh").read_text()
    out: dict[str, list[str]] = {}
    for line in script.splitlines():
        match = re.match(r"compile (\S+\.lock) (.*)", line.strip())
        if match:
            words = match.group(2).replace('"${dev_extras[@]}"', _dev_extras(script)).split()
            out[match.group(1)] = [
                w for i, w in enumerate(words) if i and words[i - 1] == "--extra"
            ]
    return out


def _dev_extras(script: str) -> str:
    """The words of the `dev_extras` shell array."""
    match = re.search(r"dev_extras=\((.*?)\)", script)
    assert match, "scripts/lock.sh defines dev_extras"
    return match.group(1)


def pinned(lock: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        match = re.match(r"([A-Za-z0-9_.\-]+)==(\S+)", line)
        if match:
            pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def requirements_of(extras: list[str]) -> list[Requirement]:
    reqs = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    optional = PYPROJECT["project"]["optional-dependencies"]
    for extra in extras:
        reqs += [Requirement(r) for r in optional[extra]]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(TARGET)]


def test_every_install_path_has_a_lock() -> None:
    assert set(lock_extras()) == {"cpu.lock", "gpu.lock", "image-cpu.lock", "image-gpu.lock"}
    for name in lock_extras():
        assert (LOCKS / name).is_file(), f"requirements/{name} is missing: bash scripts/lock.sh"


@pytest.mark.parametrize("name", sorted(lock_extras()))
def test_lock_satisfies_pyproject(name: str) -> None:
    pins = pinned(LOCKS / name)
    problems = []
    for req in requirements_of(lock_extras()[name]):
        version = pins.get(canonicalize_name(req.name))
        if version is None:
            problems.append(f"{req.name} is not in the lock")
        elif not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req.name}=={version} does not satisfy {req}")
    assert not problems, f"requirements/{name} is stale (bash scripts/lock.sh): {problems}"
    assert not NOT_LOCKED & set(pins), "these do not load beside the CPU torch"


def test_cpu_locks_take_the_cpu_build_of_torch() -> None:
    for name in ("cpu.lock", "image-cpu.lock"):
        assert pinned(LOCKS / name)["torch"].endswith("+cpu"), name
    assert not any(p.startswith("nvidia-") for p in pinned(LOCKS / "image-cpu.lock"))


def test_code_generators_and_linters_are_pinned_exactly() -> None:
    dev = [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["dev"]]
    exact = {canonicalize_name(r.name) for r in dev if str(r.specifier).startswith("==")}
    for tool in ("grpcio-tools", "mypy-protobuf", "ruff", "mypy", "uv"):
        assert tool in exact, f"{tool} must be pinned with == in the dev extra"


def test_installs_read_the_locks() -> None:
    install = (REPO / "scripts" / "install.sh").read_text()
    assert "--no-deps -r" in install and "requirements/$ENGINE.lock" in install
    for dockerfile, lock in (
        ("Dockerfile.cpu", "image-cpu.lock"),
        ("Dockerfile.gpu", "image-gpu.lock"),
    ):
        text = (REPO / "docker" / dockerfile).read_text()
        assert f"ARG LOCK=requirements/{lock}" in text, dockerfile
        extras = re.search(r"ARG EXTRAS=(\S+)", text)
        assert extras, dockerfile
        assert extras.group(1).split(",") == lock_extras()[lock], (
            f"{dockerfile} installs extras {extras.group(1)} but {lock} is made from "
            f"{lock_extras()[lock]}"
        )
