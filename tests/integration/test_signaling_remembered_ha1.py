"""A re-REGISTER answered in one Redis round trip (the HA1 a replica remembers,
signaling/auth.py), and a proxied request authenticated in the round trip of the
callee's lookup, let through nothing the stored HA1 would not: a new password,
a deleted user, a block made elsewhere, a replayed nonce-count; a callee who
does not exist is still a 404."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis
from quietwire.embedded.pki import Pki
from quietwire.phone.useragent import UserAgent
from quietwire.protocols.sip.message import Request
from quietwire.signaling.users import UserStore

from tests.integration.digest_client import attempt, challenges, connect_from, credential, send_with
from tests.integration.signaling_harness import (
    DOMAIN,
    SMALL_LOCKOUT,
    Replica,
    add_users,
    phone,
    replica,
)


def register(ua: UserAgent) -> Request:
    return ua.build("REGISTER", f"sip:{DOMAIN}", to=f"<{ua.aor}>")


async def calls(client: redis.Redis, command: str = "evalsha") -> int:
    """Commands run (not scripts Redis did not have yet: loaded, then run again)."""
    stats = (await client.info("commandstats")).get(f"cmdstat_{command}", {})
    return int(stats.get("calls", 0)) - int(stats.get("failed_calls", 0))


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.Redis]:
    await add_users(redis_url)
    connection = redis.from_url(redis_url)
    yield connection
    await connection.aclose()


@pytest.fixture
async def one(pki: Pki, redis_url: str, client: redis.Redis) -> AsyncIterator[Replica]:
    async with replica(pki, redis_url, **SMALL_LOCKOUT) as started:
        yield started


@pytest.fixture
async def alice(pki: Pki, one: Replica) -> AsyncIterator[UserAgent]:
    """Registered once: the replica remembers her HA1."""
    ua = await phone(pki, one.port, "alice")
    assert (await ua.register()).status == 200
    yield ua
    await ua.close()


async def test_a_reregister_is_one_round_trip(alice: UserAgent, client: redis.Redis) -> None:
    """The full check reads the user, then runs the bindings' script; a REGISTER
    whose credentials match the remembered HA1 runs that script alone."""
    before = await calls(client)
    assert (await alice.register()).status == 200
    assert await calls(client) - before == 1


async def test_the_proxy_checks_the_remembered_ha1(alice: UserAgent, client: redis.Redis) -> None:
    """One HGET of the stored HA1 (the full check reads the whole user), in the
    script that looks the callee up: one round trip for both."""
    before, scripts = await calls(client, "hget"), await calls(client)
    answer = await attempt(alice, alice.build("OPTIONS", f"sip:bob@{DOMAIN}"))
    assert answer is not None and answer.status == 480  # bob has no binding
    assert await calls(client, "hget") - before == 1
    assert await calls(client) - scripts == 1


async def test_a_callee_who_does_not_exist_is_not_found(
    alice: UserAgent, client: redis.Redis
) -> None:
    """The lookup with the proof finds no user: the nonce-count is given back, and
    the full way says 404 (not a challenge for a count the failed lookup used up)."""
    answer = await attempt(alice, alice.build("OPTIONS", f"sip:nobody@{DOMAIN}"))
    assert answer is not None and answer.status == 404


@pytest.mark.parametrize("method", ["REGISTER", "OPTIONS"])
async def test_a_new_password_ends_the_old_one(
    alice: UserAgent, client: redis.Redis, method: str
) -> None:
    await UserStore(client, DOMAIN).put("alice", "a-new-secret")
    request = (
        register(alice) if method == "REGISTER" else alice.build("OPTIONS", f"sip:bob@{DOMAIN}")
    )
    old = await attempt(alice, request)
    assert old is not None and old.status == 403
    answer = await attempt(alice, request.copy(), password="a-new-secret")
    assert answer is not None and answer.status not in (401, 403, 407)


async def test_a_deleted_user_cannot_register(alice: UserAgent, client: redis.Redis) -> None:
    assert await UserStore(client, DOMAIN).delete("alice")
    answer = await attempt(alice, register(alice))
    assert answer is not None and answer.status == 403


async def test_a_user_blocked_elsewhere_is_refused(
    pki: Pki, redis_url: str, alice: UserAgent
) -> None:
    """Guesses at alice through another replica block her; the replica that
    remembers her HA1 refuses her right password too."""
    async with replica(pki, redis_url, **SMALL_LOCKOUT) as other:
        for n in range(7):
            guesser = UserAgent(
                await connect_from(f"127.0.0.{10 + n // 2}", other.port, pki.ca),
                "alice",
                "guess-1234",
                DOMAIN,
            )
            assert (await guesser.register()).reason == "Forbidden"
            await guesser.close()
    answer = await attempt(alice, register(alice))
    assert answer is not None and answer.status == 403


@pytest.mark.parametrize("method", ["REGISTER", "OPTIONS"])
async def test_a_replayed_nonce_count_is_not_taken(alice: UserAgent, method: str) -> None:
    request = (
        register(alice) if method == "REGISTER" else alice.build("OPTIONS", f"sip:bob@{DOMAIN}")
    )
    value = credential((await challenges(alice, request))[0], alice, request)
    first = await send_with(alice, request, value)
    assert first is not None and first.status in (200, 480)
    again = await send_with(alice, request.copy(), value)
    assert again is not None and again.status in (401, 407)  # stale: challenged afresh
    header = "WWW-Authenticate" if method == "REGISTER" else "Proxy-Authenticate"
    assert "stale=true" in str(again.headers.get(header)).lower()


@pytest.mark.parametrize("method", ["REGISTER", "OPTIONS"])
async def test_a_nonce_of_another_replica_is_stale(
    pki: Pki, redis_url: str, alice: UserAgent, method: str
) -> None:
    """A replica keeps the counts of the nonces it minted: the answer to another
    replica's challenge is challenged afresh with stale=true (the phone answers
    again without its user), never refused, and the fresh answer is taken."""
    async with replica(pki, redis_url, **SMALL_LOCKOUT) as other:
        moved = await phone(pki, other.port, "alice")
        try:
            target = f"sip:bob@{DOMAIN}"
            request = register(moved) if method == "REGISTER" else moved.build("OPTIONS", target)
            elsewhere = register(alice) if method == "REGISTER" else alice.build("OPTIONS", target)
            value = credential((await challenges(alice, elsewhere))[0], moved, request)
            again = await send_with(moved, request, value)
            assert again is not None and again.status in (401, 407)
            header = "WWW-Authenticate" if method == "REGISTER" else "Proxy-Authenticate"
            assert "stale=true" in str(again.headers.get(header)).lower()
            answer = await attempt(moved, request.copy())
            assert answer is not None and answer.status in (200, 480)
        finally:
            await moved.close()
