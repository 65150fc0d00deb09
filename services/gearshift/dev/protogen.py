"""Generates Python code and typing stubs from `protos/`.

Generated files are committed so that running Gearshift never needs grpcio-tools;
`tests/test_protos_fresh.py` regenerates into a temporary folder and fails when
the committed copy differs, so nobody edits generated code by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
PROTO_ROOT = REPO_ROOT / "protos"
PACKAGE_ROOT = REPO_ROOT / "services"
GENERATED_PACKAGE = Path("gearshift") / "v1"


def proto_files() -> list[Path]:
    """Every .proto file of the API, relative to `protos/`, in a stable order."""
    folder = PROTO_ROOT / GENERATED_PACKAGE
    return sorted(p.relative_to(PROTO_ROOT) for p in folder.glob("*.proto"))


def generate(out_root: Path) -> list[Path]:
    """Runs protoc (from grpcio-tools) with the mypy-protobuf plugins into `out_root`."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    out_root.mkdir(parents=True, exist_ok=True)
    # mypy-protobuf's plugins live beside this interpreter, which need not be on PATH.
    bindir = Path(sys.executable).parent
    args = [
        "protoc",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *(str(p) for p in proto_files()),
    ]
    code = protoc.main(args)
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code}: {' '.join(args)}")
    package_dir = out_root / GENERATED_PACKAGE
    (package_dir / "__init__.py").write_text(
        '"""Generated from protos/gearshift/v1 by gearshift.dev.protogen; do not edit."""\n'
    )
    (package_dir / "py.typed").write_text("")
    return sorted(p.relative_to(out_root) for p in package_dir.iterdir() if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=PACKAGE_ROOT, help="output root")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
