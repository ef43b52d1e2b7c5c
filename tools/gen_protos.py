"""Generate quietwire.rpc from protos/ (``make protos``), or check it is fresh.

Each ``protos/quietwire/<service>/v1/<service>.proto`` is compiled under the
virtual path ``quietwire/rpc/<service>/v1/`` so that the generated modules
import each other as ``quietwire.rpc.<service>.v1``. Type stubs come from
mypy-protobuf. ``--check`` generates into a scratch directory and fails when
the committed files differ, so CI catches a proto edited without ``make protos``.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
RPC_PACKAGE = Path("quietwire") / "rpc"
COMMITTED = ROOT / "services" / RPC_PACKAGE


def generate(out_root: Path) -> Path:
    sources = sorted(str(p.relative_to(ROOT)) for p in PROTOS.rglob("*.proto"))
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{RPC_PACKAGE.as_posix()}=protos/quietwire",
            f"--python_out={out_root}",
            f"--grpc_python_out={out_root}",
            f"--mypy_out=quiet:{out_root}",
            f"--mypy_grpc_out=quiet:{out_root}",
            *sources,
        ],
        cwd=ROOT,
        env=env,
        check=True,
    )
    package = out_root / RPC_PACKAGE
    for directory in [package, *(d for d in package.rglob("*") if d.is_dir())]:
        (directory / "__init__.py").touch()
    return package


def differences(left: Path, right: Path) -> list[str]:
    found: list[str] = []
    names = {p.relative_to(left) for p in left.rglob("*") if p.is_file()}
    names |= {
        p.relative_to(right)
        for p in right.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    for name in sorted(names):
        a, b = left / name, right / name
        if not (a.is_file() and b.is_file() and filecmp.cmp(a, b, shallow=False)):
            found.append(str(name))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed code is stale")
    args = parser.parse_args()
    if not args.check:
        generate(COMMITTED.parent.parent)
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        stale = differences(generate(Path(scratch)), COMMITTED)
    if stale:
        print("quietwire.rpc is stale; run `make protos` and commit:", *stale, sep="\n  ")
        return 1
    print("quietwire.rpc matches protos/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
