"""The fuzz targets in ``make test``: the committed corpus and every past crash
replayed through each target, and a short coverage-guided run of each."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.__main__ import NAMES
from tests.fuzz.seeds import CORPUS, seeds
from tests.fuzz.targets import TARGETS

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
SHORT_RUN_SECONDS = 3


def test_every_target_has_a_name_and_seeds() -> None:
    assert sorted(TARGETS) == sorted(NAMES)
    for name in NAMES:
        assert list((CORPUS / name).iterdir()), name


@pytest.mark.parametrize("name", NAMES)
def test_seed_corpus_is_current(name: str) -> None:
    """``python -m tests.fuzz --seed`` was run after the vectors last changed."""
    on_disk = {path.name for path in (CORPUS / name).iterdir()}
    wanted = {hashlib.sha1(data).hexdigest() for data in seeds(name)}  # noqa: S324 - a name
    assert wanted <= on_disk


@pytest.mark.parametrize("name", NAMES)
def test_corpus_and_past_crashes_replay(name: str) -> None:
    target = TARGETS[name]
    files = [*(CORPUS / name).iterdir()]
    regressions = HERE / "regressions" / name
    if regressions.is_dir():
        files += regressions.iterdir()
    for path in files:
        target(path.read_bytes())


@pytest.mark.parametrize("name", NAMES)
def test_short_fuzzing_run(name: str, tmp_path: Path) -> None:
    """A few seconds of atheris per target: instrumented, seeded, no crash."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "services"), str(ROOT)])}
    command = [sys.executable, "-m", "tests.fuzz", name, "--seconds", str(SHORT_RUN_SECONDS)]
    run = subprocess.run(
        [*command, "--work", str(tmp_path / "work")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Done " in run.stderr
