"""The image's venv, made without a Docker engine the way the Dockerfile's build
stage makes it (``tools/image-venv``): the runtime packages of uv.lock, no
development tools, and the SIP parser compiled, as the benchmarks measure it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.deploy.conftest import ROOT, run

#: The Dockerfile's build stage runs exactly this.
IMAGE_VENV = "RUN tools/image-venv /opt/quietwire /opt/build"


def test_the_dockerfile_makes_its_venv_with_tools_image_venv() -> None:
    assert IMAGE_VENV in (ROOT / "Dockerfile").read_text().splitlines()


def test_the_image_venv_runs_the_compiled_parser(tmp_path: Path) -> None:
    target, build = tmp_path / "quietwire", tmp_path / "build"
    env = {
        **os.environ,
        "UV": str(ROOT / ".uv" / "bin" / "uv"),
        "PYTHON": os.path.realpath(sys.executable),
    }
    made = run(ROOT / "tools" / "image-venv", target, build, cwd=ROOT, env=env)
    assert made.returncode == 0, made.stderr
    python = target / "bin" / "python"
    clean = {k: v for k, v in os.environ.items() if k != "QW_NATIVE"}
    parser = run(
        python, "-c", "import quietwire.protocols.sip.message as m; print(m.__file__)", env=clean
    )
    assert parser.returncode == 0, parser.stderr
    assert parser.stdout.strip().endswith(".so"), parser.stdout
    assert str(target) in parser.stdout  # the installed package, not the checkout
    assert run(target / "bin" / "quietwire", "--help", env=clean).returncode == 0
    assert not (target / "bin" / "pytest").exists() and not (target / "bin" / "mypy").exists()
