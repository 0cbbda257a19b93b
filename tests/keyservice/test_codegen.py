"""The committed *_pb2.py / *_pb2_grpc.py match what `python -m ppml_hybrid.rpc.codegen` generates."""

from __future__ import annotations

import pytest

from ppml_hybrid.rpc.codegen import RPC_DIR, generate


def test_generated_modules_match_the_protos(tmp_path):
    pytest.importorskip("grpc_tools")
    files = generate(out_dir=tmp_path)
    assert len(files) == 6
    for f in files:
        committed = RPC_DIR / f.name
        assert committed.read_bytes() == f.read_bytes(), (
            f"{committed.name} is stale: run .venv/bin/python -m ppml_hybrid.rpc.codegen")
