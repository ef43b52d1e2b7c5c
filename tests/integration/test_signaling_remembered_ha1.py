"""A re-REGISTER answered in one Redis round trip (the HA1 a replica remembers,
signaling/auth.py) lets through nothing the stored HA1 would not: a new password,
a deleted user, a block made elsewhere, a replayed nonce-count."""

from __future__ import annotations

import redis.asyncio as redis
from quietwire.embedded.pki import Pki
from quietwire.phone.useragent import UserAgent
from quietwire.protocols.sip.message import Request
from quietwire.signaling.users import UserStore

from tests.integration.digest_client import attempt, challenges, connect_from, credential, send_with
from tests.integration.signaling_harness import DOMAIN, add_users, phone, replica

#: Per-user blocks after 7 failures (see test_signaling_auth.py: the rule still holds).
SMALL = {
    "sip_max_auth_failures": 3,
    "sip_auth_failure_window": 60,
    "sip_auth_block": 60,
    "sip_user_max_auth_failures": 7,
    "sip_user_auth_failure_window": 60,
    "sip_user_auth_block": 60,
}


def register(ua: UserAgent) -> Request:
    return ua.build("REGISTER", f"sip:{DOMAIN}", to=f"<{ua.aor}>")


async def calls(client: redis.Redis, command: str = "evalsha") -> int:
    """Commands run (not scripts Redis did not have yet: loaded, then run again)."""
    stats = (await client.info("commandstats")).get(f"cmdstat_{command}", {})
    return int(stats.get("calls", 0)) - int(stats.get("failed_calls", 0))


async def test_a_reregister_is_one_round_trip(pki: Pki, redis_url: str) -> None:
    """The full check runs two scripts (nonce-count, then the bindings); a REGISTER
    whose credentials match the remembered HA1, one."""
    await add_users(redis_url)
    client = redis.from_url(redis_url)
    async with replica(pki, redis_url) as one:
        ua = await phone(pki, one.port, "alice")
        assert (await ua.register()).status == 200
        before = await calls(client)
        assert (await ua.register()).status == 200
        assert await calls(client) - before == 1
        await ua.close()
    await client.aclose()


async def test_a_new_password_ends_the_old_one(pki: Pki, redis_url: str) -> None:
    await add_users(redis_url)
    client = redis.from_url(redis_url)
    async with replica(pki, redis_url) as one:
        ua = await phone(pki, one.port, "alice")
        assert (await ua.register()).status == 200
        await UserStore(client, DOMAIN).put("alice", "a-new-secret")
        old = await attempt(ua, register(ua))
        assert old is not None and old.status == 403
        answer = await attempt(ua, register(ua), password="a-new-secret")
        assert answer is not None and answer.status == 200
        await ua.close()
    await client.aclose()


async def test_a_new_password_ends_the_old_one_through_the_proxy(pki: Pki, redis_url: str) -> None:
    """The proxy checks credentials against the remembered HA1 the same way."""
    await add_users(redis_url)
    client = redis.from_url(redis_url)
    async with replica(pki, redis_url) as one:
        ua = await phone(pki, one.port, "alice")
        options = ua.build("OPTIONS", f"sip:bob@{DOMAIN}")
        for _ in range(2):  # the full check (HGETALL), then the remembered HA1's (HGET)
            before = await calls(client, "hget")
            answer = await attempt(ua, options)
            assert answer is not None and answer.status not in (403, 407)
        assert await calls(client, "hget") - before == 1
        await UserStore(client, DOMAIN).put("alice", "a-new-secret")
        old = await attempt(ua, ua.build("OPTIONS", f"sip:bob@{DOMAIN}"))
        assert old is not None and old.status == 403
        await ua.close()
    await client.aclose()


async def test_a_deleted_user_cannot_register(pki: Pki, redis_url: str) -> None:
    await add_users(redis_url)
    client = redis.from_url(redis_url)
    async with replica(pki, redis_url) as one:
        ua = await phone(pki, one.port, "alice")
        assert (await ua.register()).status == 200
        assert await UserStore(client, DOMAIN).delete("alice")
        answer = await attempt(ua, register(ua))
        assert answer is not None and answer.status == 403
        await ua.close()
    await client.aclose()


async def test_a_user_blocked_elsewhere_is_refused(pki: Pki, redis_url: str) -> None:
    """Guesses at alice through another replica block her; the replica that
    remembers her HA1 refuses her right password too."""
    await add_users(redis_url)
    async with replica(pki, redis_url, **SMALL) as first, replica(pki, redis_url, **SMALL) as other:
        alice = await phone(pki, first.port, "alice")
        assert (await alice.register()).status == 200
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
        await alice.close()


async def test_a_replayed_nonce_count_is_not_taken(pki: Pki, redis_url: str) -> None:
    await add_users(redis_url)
    async with replica(pki, redis_url) as one:
        ua = await phone(pki, one.port, "alice")
        assert (await ua.register()).status == 200
        request = register(ua)
        value = credential((await challenges(ua, request))[0], ua, request)
        first = await send_with(ua, request, value)
        assert first is not None and first.status == 200
        again = await send_with(ua, request, value)
        assert again is not None and again.status == 401  # stale: challenged afresh
        await ua.close()
