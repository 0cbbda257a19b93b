"""Generate the protobuf/gRPC Python modules of ``ppml_hybrid/rpc/*.proto``.

The generated ``*_pb2.py`` / ``*_pb2_grpc.py`` are committed; regenerate after editing a .proto:

    .venv/bin/python -m ppml_hybrid.rpc.codegen

(needs the dev group's grpcio-tools). ``tests/keyservice/test_codegen.py`` checks that the
committed files match what this produces.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from ppml_hybrid.errors import PPMLError

log = logging.getLogger(__name__)

RPC_DIR = Path(__file__).resolve().parent
ROOT = RPC_DIR.parents[1]
PROTOS = ("common.proto", "keyservice.proto", "evaluator.proto")


def generate(*, out_dir: Path) -> list:
    """Run protoc for every proto into ``out_dir`` (mirroring ``ppml_hybrid/rpc/``); return the files."""
    from grpc_tools import protoc  # dev dependency
    import grpc_tools

    include = str(Path(grpc_tools.__file__).parent / "_proto")
    args = ["protoc", f"-I{ROOT}", f"-I{include}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}"]
    args += [f"ppml_hybrid/rpc/{p}" for p in PROTOS]
    if protoc.main(args) != 0:
        raise PPMLError(f"protoc failed on {', '.join(PROTOS)}")
    gen = Path(out_dir) / "ppml_hybrid" / "rpc"
    return sorted(gen.glob("*_pb2*.py"))


def main() -> int:
    import shutil
    import tempfile

    logging.basicConfig(level=logging.INFO)
    with tempfile.TemporaryDirectory() as tmp:
        for f in generate(out_dir=Path(tmp)):
            shutil.copyfile(f, RPC_DIR / f.name)
            log.info("wrote %s", RPC_DIR / f.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
