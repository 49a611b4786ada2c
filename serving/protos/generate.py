"""Regenerates the lean client's ``*_pb2.py`` modules from the ``.proto`` files here.

Run with ``make protos`` (needs grpcio-tools, a dev dependency).  There are no
``service`` blocks in the protos: the client builds its method stubs by hand with
TF Serving's real method paths, because our messages live in the ``bgremover.tfs``
package and generated stubs would be named after it.

protoc stamps the gencode with its own protobuf version and a runtime guard that
refuses older runtimes.  The generated code only uses builder APIs that exist
since protobuf 5.26, so the guard is lowered to the oldest runtime the project
supports (``protobuf>=5.29`` in pyproject.toml).
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import resources
from pathlib import Path

MIN_RUNTIME = (5, 29, 0)
PROTO_DIR = Path(__file__).resolve().parent
REPO_ROOT = PROTO_DIR.parent.parent
_GUARD = re.compile(
    r"(_runtime_version\.ValidateProtobufRuntimeVersion\(\s*"
    r"_runtime_version\.Domain\.PUBLIC,\s*)\d+,\s*\d+,\s*\d+,"
)


def lower_runtime_guard(source: str) -> str:
    """Rewrites protoc's runtime version guard to accept ``MIN_RUNTIME`` and newer."""
    major, minor, patch = MIN_RUNTIME
    lowered, count = _GUARD.subn(rf"\g<1>{major},\n    {minor},\n    {patch},", source)
    if count != 1:
        raise RuntimeError("protoc output has no runtime version guard to lower")
    return lowered


def generate(out_root: Path = REPO_ROOT) -> list[Path]:
    """Compiles every .proto here into ``out_root/serving/protos/*_pb2.py``."""
    from grpc_tools import protoc

    protos = sorted(PROTO_DIR.glob("*.proto"))
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"--proto_path={REPO_ROOT}",
        f"--proto_path={well_known}",
        f"--python_out={out_root}",
        *(str(p) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {[p.name for p in protos]}")
    outputs = [out_root / p.relative_to(REPO_ROOT).with_name(f"{p.stem}_pb2.py") for p in protos]
    for out in outputs:
        out.write_text(lower_runtime_guard(out.read_text()))
    return outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out-root", type=Path, default=REPO_ROOT, help="where serving/protos/ is written"
    )
    args = parser.parse_args(argv)
    for out in generate(args.out_root):
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
