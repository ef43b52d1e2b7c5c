"""Redis away while a phone registers or calls: the phone hears 503 with
Retry-After at once (RFC 3261 section 21.5.4), never silence, never 500."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import start_redis, stop_redis
from tests.integration.signaling_harness import DOMAIN, add_users, make_pki, phone, replica


async def test_requests_meeting_a_dead_redis_get_503_with_retry_after(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    redis = start_redis(tmp_path)
    stopped = False
    try:
        await add_users(redis.url)
        async with replica(pki, redis.url) as one:
            alice = await phone(pki, one.port, "alice")
            try:
                assert (await alice.register()).status == 200
                stop_redis(redis)
                stopped = True
                again = await alice.register()
                assert (again.status, again.headers.get("Retry-After")) == (503, "5")
                call = await alice.send(alice.build("INVITE", f"sip:bob@{DOMAIN}"))
                assert call.final is not None
                assert (call.final.status, call.final.headers.get("Retry-After")) == (503, "5")
            finally:
                await alice.close()
            assert not one.service.proxy.servers, "a transaction outlived its failure"
    finally:
        if not stopped:
            stop_redis(redis)
