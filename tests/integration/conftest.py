"""Fixtures of the integration tier: a dev PKI, one signaling replica with users, and a
dialog store holding one recorded call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as redis
from quietwire.embedded.pki import Pki
from quietwire.signaling.dialogs import Dialog, DialogStore, Leg, Side

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


#: The call the ``store`` fixture has recorded (caller r.1, callee r.2).
DIALOG = Dialog(
    "call-legs",
    20,
    Side("r.1", "<sip:alice@192.0.2.1>", "<sip:alice@d>;tag=a"),
    Side("r.2", "<sip:bob@192.0.2.2>", "<sip:bob@d>;tag=b"),
    Leg(b"v=0 answer", 20),
    Leg(b"v=0 offer"),
)


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[DialogStore]:
    client = redis.from_url(redis_url)
    try:
        made = DialogStore(client)
        await made.record(DIALOG)
        yield made
    finally:
        await client.aclose()
