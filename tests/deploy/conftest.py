"""Tools and renderings for the deployment checks (no cluster, no Docker engine).

The tools come from ``tools/deploy-tools`` (``make test`` runs it) into
``.tools/`` at the repository root, or ``$QW_TOOLS_DIR``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "quietwire"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
NAMESPACE = "voip"


def tool(name: str) -> Path:
    directory = Path(os.environ.get("QW_TOOLS_DIR", ROOT / ".tools")) / "bin"
    path = directory / name
    if not path.exists():
        pytest.fail(f"{name} not found in {directory}: run tools/deploy-tools (make test does)")
    return path


def run(*args: str | Path, timeout: float = 300, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    command = [str(a) for a in args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


def helm_template(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return run(tool("helm"), "template", "qw", CHART, "--namespace", NAMESPACE, *args)


def render(*args: str | Path) -> list[dict[str, Any]]:
    """The chart's manifests for these helm arguments; a failure fails the test."""
    result = helm_template(*args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(docs: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"].endswith(suffix):
            return doc
    raise AssertionError(f"no {kind} named *{suffix}")


@pytest.fixture(scope="session")
def rendered_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every ci/ values file rendered, one manifest file each."""
    directory = tmp_path_factory.mktemp("rendered")
    for values in CI_VALUES:
        result = helm_template("-f", values)
        assert result.returncode == 0, f"{values.name}: {result.stderr}"
        (directory / values.name).write_text(result.stdout)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)
