"""Regenerate the Python protobuf and gRPC modules for the etcd v3 API.

Run as ``python -m flotilla.node.api.gen_protos``. The generated modules are committed so that
the runtime does not need grpcio-tools; a test checks that they match what this script emits.

protoc writes absolute imports (``import kv_pb2``) because the .proto files import each other by
bare file name. Those imports only work if the output folder is on ``sys.path``, so they are
rewritten to package-relative ones (``from . import kv_pb2``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

API_DIR = Path(__file__).resolve().parent
PROTO_DIR = API_DIR / "proto"
OUT_DIR = API_DIR / "etcdpb"

# Order matters only for readability; protoc resolves imports itself.
PROTO_FILES = (
    "kv.proto",
    "auth.proto",
    "rpc.proto",
    "v3lock.proto",
    "v3election.proto",
    "flotilla.proto",
)
# Only these files declare services, so only they get a *_pb2_grpc module.
SERVICE_FILES = ("rpc.proto", "v3lock.proto", "v3election.proto", "flotilla.proto")

_ABSOLUTE_IMPORT = re.compile(r"^import (\w+_pb2) as (\w+)$", re.MULTILINE)


def _relativize(text: str) -> str:
    """Turn protoc's top-level imports of sibling modules into package-relative imports."""
    return _ABSOLUTE_IMPORT.sub(r"from . import \1 as \2", text)


def _run_protoc(args: list[str]) -> None:
    from grpc_tools import protoc  # imported lazily: only a build-time dependency

    include = str(Path(protoc.__file__).resolve().parent / "_proto")
    rc = protoc.main(["grpc_tools.protoc", f"-I{PROTO_DIR}", f"-I{include}", *args])
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit code {rc}")


def generate(out_dir: Path) -> list[Path]:
    """Generate all modules into ``out_dir`` and return the written paths, sorted."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp)
        _run_protoc([f"--python_out={raw}", f"--pyi_out={raw}", *PROTO_FILES])
        _run_protoc([f"--grpc_python_out={raw}", *SERVICE_FILES])
        written = []
        for src in sorted(raw.iterdir()):
            dst = out_dir / src.name
            dst.write_text(_relativize(src.read_text(encoding="utf-8")), encoding="utf-8")
            written.append(dst)
    return written


def generated_names() -> list[str]:
    """The file names ``generate`` produces, so stale files can be detected."""
    names = []
    for proto in PROTO_FILES:
        stem = proto.removesuffix(".proto")
        names += [f"{stem}_pb2.py", f"{stem}_pb2.pyi"]
        if proto in SERVICE_FILES:
            names.append(f"{stem}_pb2_grpc.py")
    return sorted(names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output package folder")
    args = parser.parse_args(argv)
    out: Path = args.out
    for name in generated_names():
        (out / name).unlink(missing_ok=True)
    for path in generate(out):
        print(path)
    cache = out / "__pycache__"
    if cache.exists():
        shutil.rmtree(cache)
    return 0


if __name__ == "__main__":
    sys.exit(main())
