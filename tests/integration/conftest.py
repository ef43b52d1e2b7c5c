"""Fixtures of the integration tier: a dev PKI, and one signaling replica with users."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from quietwire.embedded.pki import Pki

from tests.integration.signaling_harness import Replica, add_users, make_pki, replica


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


@pytest.fixture
async def one(pki: Pki, redis_url: str) -> AsyncIterator[Replica]:
    """A signaling replica (media passthrough) with the harness's users."""
    await add_users(redis_url)
    async with replica(pki, redis_url) as r:
        yield r
