"""Regenerate the Python protobuf and gRPC modules of the member-to-member protocol.

Run as ``python -m flotilla.node.transport.gen_protos``. As for the client API (see
``flotilla.node.api.gen_protos``), the generated modules are committed so the runtime does not
need grpcio-tools, protoc's bare sibling imports are made package-relative, and a test checks
the committed files against a fresh generation.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

TRANSPORT_DIR = Path(__file__).resolve().parent
PROTO_DIR = TRANSPORT_DIR / "proto"
OUT_DIR = TRANSPORT_DIR / "pb"
PROTO_FILE = "raftpeer.proto"

_ABSOLUTE_IMPORT = re.compile(r"^import (\w+_pb2) as (\w+)$", re.MULTILINE)


def generated_names() -> list[str]:
    return ["raftpeer_pb2.py", "raftpeer_pb2.pyi", "raftpeer_pb2_grpc.py"]


def generate(out_dir: Path) -> list[Path]:
    """Generate the modules into ``out_dir`` and return the written paths, sorted."""
    from grpc_tools import protoc  # imported lazily: only a build-time dependency

    include = str(Path(protoc.__file__).resolve().parent / "_proto")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp)
        args = [f"--python_out={raw}", f"--pyi_out={raw}", f"--grpc_python_out={raw}"]
        rc = protoc.main(["grpc_tools.protoc", f"-I{PROTO_DIR}", f"-I{include}", *args, PROTO_FILE])
        if rc != 0:
            raise RuntimeError(f"protoc failed with exit code {rc}")
        written = []
        for src in sorted(raw.iterdir()):
            text = _ABSOLUTE_IMPORT.sub(r"from . import \1 as \2", src.read_text("utf-8"))
            dst = out_dir / src.name
            dst.write_text(text, encoding="utf-8")
            written.append(dst)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output package folder")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
