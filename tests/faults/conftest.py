"""The fault tier's platform: each service a process of its own (tests/faults/cluster.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.faults.cluster import Cluster, cluster_files, start_all


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """Redis, keyagreement, one relay and one signaling replica, run separately, with
    alice, bob and carol; stopped after the test."""
    with cluster_files(tmp_path) as files:
        yield await start_all(files)
