"""The committed protobuf modules of the member protocol match a fresh generation."""

from __future__ import annotations

from pathlib import Path

import pytest

from flotilla.node.transport import gen_protos


def test_committed_code_matches_regeneration(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    written = gen_protos.generate(tmp_path)
    assert sorted(p.name for p in written) == gen_protos.generated_names()
    committed = {p.name for p in gen_protos.OUT_DIR.iterdir() if p.is_file()}
    stale = committed - set(gen_protos.generated_names()) - {"__init__.py"}
    assert not stale, f"files not produced by the generator: {sorted(stale)}"
    for path in written:
        actual = (gen_protos.OUT_DIR / path.name).read_text(encoding="utf-8")
        hint = "run python -m flotilla.node.transport.gen_protos"
        assert actual == path.read_text(encoding="utf-8"), f"{path.name} is stale: {hint}"
