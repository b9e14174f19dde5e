"""The committed generated code in libs/contracts is exactly what `make proto` produces."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_contracts_are_fresh(tmp_path: Path) -> None:
    protos = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "proto").rglob("*.proto"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-Iproto",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            *protos,
        ],
        cwd=ROOT,
        check=True,
    )
    generated = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert generated, "protoc generated nothing"
    committed_dir = ROOT / "libs" / "contracts"
    stale = [str(rel) for rel, body in generated.items() if (committed_dir / rel).read_bytes() != body]
    missing = [str(rel) for rel in generated if not (committed_dir / rel).exists()]
    assert not stale and not missing, f"run `make proto`: stale {stale}, missing {missing}"
    extra = {
        p.relative_to(committed_dir)
        for p in committed_dir.rglob("*_pb2*.py*")
        if p.relative_to(committed_dir) not in generated
    }
    assert not extra, f"generated files without a .proto: {sorted(map(str, extra))}"
