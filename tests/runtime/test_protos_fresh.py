"""Generated code must match the .proto files: nobody edits it by hand or forgets to regenerate."""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

import pytest

from gearshift.dev import protogen


def test_committed_generated_code_matches_protos(tmp_path: Path) -> None:
    generated = protogen.generate(tmp_path)
    committed_dir = protogen.PACKAGE_ROOT / protogen.GENERATED_PACKAGE
    committed = sorted(
        p.relative_to(protogen.PACKAGE_ROOT)
        for p in committed_dir.iterdir()
        if p.is_file() and p.suffix in {".py", ".pyi", ".typed"}
    )
    assert committed == generated, "file set differs: run python -m gearshift.dev.protogen"
    stale = [
        str(rel)
        for rel in generated
        if not filecmp.cmp(tmp_path / rel, protogen.PACKAGE_ROOT / rel, shallow=False)
    ]
    assert not stale, f"stale generated files {stale}: run python -m gearshift.dev.protogen"


def test_a_stale_file_is_detected(tmp_path: Path) -> None:
    """The check itself works: edit one .proto in a copy and the outputs differ."""
    protos = tmp_path / "protos"
    shutil.copytree(protogen.PROTO_ROOT, protos)
    cache_proto = protos / "gearshift" / "v1" / "cache.proto"
    cache_proto.write_text(
        cache_proto.read_text().replace(
            "message StatsRequest {", "message StatsRequest {\n  bool verbose = 9;"
        )
    )
    before = protogen.generate(tmp_path / "a")
    original = protogen.PROTO_ROOT
    try:
        protogen.PROTO_ROOT = protos
        protogen.generate(tmp_path / "b")
    finally:
        protogen.PROTO_ROOT = original
    differing = [
        str(rel)
        for rel in before
        if not filecmp.cmp(tmp_path / "a" / rel, tmp_path / "b" / rel, shallow=False)
    ]
    assert "gearshift/v1/cache_pb2.py" in differing


@pytest.mark.parametrize("proto", sorted(protogen.PROTO_ROOT.glob("gearshift/v1/*.proto")))
def test_every_field_is_commented(proto: Path) -> None:
    """The .proto files are the API reference: every field and rpc has a comment above it."""
    lines = proto.read_text().splitlines()
    missing = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        is_field = (
            stripped.endswith(";")
            and "=" in stripped
            and not stripped.startswith(("option", "syntax", "package", "reserved"))
        )
        is_rpc = stripped.startswith("rpc ")
        if (is_field or is_rpc) and not lines[i - 1].strip().startswith("//"):
            missing.append(f"{proto.name}:{i + 1}: {stripped}")
    assert not missing, "uncommented fields:\n" + "\n".join(missing)
