"""The fault tier's platform: each service a process of its own (tests/faults/cluster.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from pathlib import Path

import pytest

from tests.faults.cluster import Cluster, cluster_files, start_all


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """Redis, keyagreement, one relay and one signaling replica, run separately, with
    alice, bob and carol; stopped after the test."""
    with cluster_files(tmp_path) as files:
        yield await start_all(files)


#: Log lines of each service shown with a failed test, and the width kept of each.
LOG_TAIL, LOG_WIDTH = 60, 400


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test shows the last lines its services logged (a CI run's
    temporary directory, and the logs in it, are gone when it is read)."""
    report = yield
    funcargs = getattr(item, "funcargs", {})
    shared = funcargs.get("cluster")
    root = shared.root if isinstance(shared, Cluster) else funcargs.get("tmp_path")
    if not report.failed or root is None:
        return report
    for log in sorted((root / "logs").glob("*.log")):
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL:]
        text = "\n".join(line[:LOG_WIDTH] for line in lines)
        report.sections.append((f"service log {log.name}", text))
    return report
