"""The generated protobuf modules are committed (so a clone, `pip install .` and a wheel all carry
them); this keeps them current: regenerating from the .proto files must change nothing.
After editing a .proto, run `make proto` and commit the result."""

from __future__ import annotations

import shutil
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent.parent / "proto"
PACKAGE = PROTO_ROOT / "infery_proto" / "v1"


def test_generated_modules_match_the_proto_files(tmp_path):
    protos = sorted(PACKAGE.glob("*.proto"))
    assert protos
    include = tmp_path / "src"
    shutil.copytree(PROTO_ROOT / "infery_proto", include / "infery_proto")
    out = tmp_path / "out"
    out.mkdir()
    for proto in protos:
        relative = proto.relative_to(PROTO_ROOT).as_posix()
        args = [
            "protoc",
            f"-I{include}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
        ]
        assert protoc.main([*args, relative]) == 0, relative
    generated = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(PROTO_ROOT) for p in PACKAGE.glob("*_pb2*.py*"))
    assert generated == committed, "run `make proto` and commit the result"
    stale = [str(p) for p in generated if (out / p).read_bytes() != (PROTO_ROOT / p).read_bytes()]
    assert stale == [], "run `make proto` and commit the result"
