"""The image's venv, made without a Docker engine the way the Dockerfile's build
stage makes it (``tools/image-venv``): the runtime packages of uv.lock, no
development tools, and the signaling hot path compiled, as the benchmarks measure it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import ROOT, run
from tools.build_native import MODULES

#: The Dockerfile's build stage runs exactly this.
IMAGE_VENV = "RUN tools/image-venv /opt/quietwire /opt/build"


def test_the_dockerfile_makes_its_venv_with_tools_image_venv() -> None:
    assert IMAGE_VENV in (ROOT / "Dockerfile").read_text().splitlines()


@pytest.mark.timeout(900)  # mypyc compiles the hot path: minutes on a busy machine
def test_the_image_venv_runs_the_compiled_hot_path(tmp_path: Path) -> None:
    target, build = tmp_path / "quietwire", tmp_path / "build"
    env = {
        **os.environ,
        "UV": str(ROOT / ".uv" / "bin" / "uv"),
        "PYTHON": os.path.realpath(sys.executable),
    }
    made = run(ROOT / "tools" / "image-venv", target, build, cwd=ROOT, env=env, timeout=840)
    assert made.returncode == 0, made.stderr
    python = target / "bin" / "python"
    clean = {k: v for k, v in os.environ.items() if k != "QW_NATIVE"}
    where = (  # where each compiled module is loaded from
        "import importlib, sys\nfor m in sys.argv[1:]: print(importlib.import_module(m).__file__)"
    )
    loaded = run(python, "-c", where, *MODULES, env=clean)
    assert loaded.returncode == 0, loaded.stderr
    files = loaded.stdout.split()
    assert len(files) == len(MODULES)
    assert all(f.endswith(".so") for f in files), loaded.stdout
    assert all(f.startswith(str(target)) for f in files)  # the installed package, not the checkout
    assert run(target / "bin" / "quietwire", "--help", env=clean).returncode == 0
    assert not (target / "bin" / "pytest").exists() and not (target / "bin" / "mypy").exists()
