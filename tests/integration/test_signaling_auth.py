"""Digest authentication of the signaling service over real TLS and Redis (issue 12
findings 3, 4, 5, 11): malformed credentials answered before Redis, the uri bound to
the Request-URI, only configured algorithms, and every failure counted in Redis."""

from __future__ import annotations

import redis.asyncio as redis
from quietwire.embedded.pki import Pki
from quietwire.phone.useragent import UserAgent
from quietwire.protocols.sip.digest import DigestAlgorithm
from quietwire.protocols.sip.message import Request
from quietwire.signaling.users import UserStore

from tests.integration.digest_client import (
    attempt,
    challenges,
    connect_from,
    credential,
    send_with,
)
from tests.integration.signaling_harness import (
    DOMAIN,
    PASSWORDS,
    SMALL_LOCKOUT,
    Replica,
    add_users,
    phone,
    replica,
)


def register(ua: UserAgent) -> Request:
    return ua.build("REGISTER", f"sip:{DOMAIN}", to=f"<{ua.aor}>")


def options_to(ua: UserAgent, user: str) -> Request:
    return ua.build("OPTIONS", f"sip:{user}@{DOMAIN}")


async def keys(url: str, pattern: str) -> list[str]:
    client = redis.from_url(url)
    try:
        return sorted(k.decode() for k in await client.keys(pattern))
    finally:
        await client.aclose()


async def test_overlong_nc_answered_400_before_redis(pki: Pki, one: Replica) -> None:
    """Finding 3: 4000 hex digits of nc made redis-py raise; the INVITE got no answer and
    its transaction stayed in memory."""
    ua = await phone(pki, one.port, "alice")
    counts = one.service.proxy.auth.counts
    counted = len(counts)
    for request in (ua.build("INVITE", f"sip:bob@{DOMAIN}"), register(ua)):
        first = (await challenges(ua, request))[0]
        value = credential(first, ua, request).replace("nc=00000001", "nc=" + "f" * 4000)
        live = len(one.service.proxy.servers)
        for _ in range(4):  # 8 in all: under the 10 that block the source
            answer = await send_with(ua, request, value)
            assert answer is not None and answer.status == 400, answer
        assert len(one.service.proxy.servers) <= live  # none left behind
    assert len(counts) == counted  # no nonce-count taken for them
    assert (await ua.register()).status == 200  # the connection and the listener go on
    await ua.close()


async def test_malformed_credentials_answered_400(pki: Pki, one: Replica) -> None:
    ua = await phone(pki, one.port, "alice")
    request = register(ua)
    first = (await challenges(ua, request))[0]
    good = credential(first, ua, request)
    for bad in (
        good + ', username="bob"',  # a parameter twice
        good.replace("nc=00000001", "nc=1"),
        good.replace(f'uri="{request.uri}"', f"uri={request.uri}"),
        good.replace('response="', 'response="0'),
    ):
        answer = await send_with(ua, request, bad)
        assert answer is not None and answer.status == 400, (bad, answer)
    await ua.close()


async def test_digest_uri_must_name_the_request_uri(pki: Pki, one: Replica) -> None:
    """Finding 11 (RFC 7616 section 3.4.6): credentials computed for another URI get 400."""
    ua = await phone(pki, one.port, "alice")
    answer = await attempt(ua, register(ua), uri=f"sip:elsewhere.{DOMAIN}")
    assert answer is not None and answer.status == 400
    invite = ua.build("INVITE", f"sip:bob@{DOMAIN}")
    answer = await attempt(ua, invite, uri=f"sip:carol@{DOMAIN}")
    assert answer is not None and answer.status == 400
    same = await attempt(ua, register(ua), uri=f"sip:{DOMAIN.upper()}")  # equal by RFC 3261 19.1.4
    assert same is not None and same.status == 200
    await ua.close()


async def test_only_configured_algorithms(pki: Pki, redis_url: str) -> None:
    """Finding 5: with SHA-256 alone, an MD5 answer is refused, and no MD5 HA1 is kept."""
    client = redis.from_url(redis_url)
    await UserStore(client, DOMAIN, (DigestAlgorithm.SHA_256,)).put("alice", PASSWORDS["alice"])
    assert await client.hkeys(f"qw:{{users:{DOMAIN}}}:user:alice") != []
    assert b"ha1_md5" not in await client.hkeys(f"qw:{{users:{DOMAIN}}}:user:alice")
    await client.aclose()
    async with replica(pki, redis_url, sip_digest_algorithms="SHA-256") as only:
        ua = await phone(pki, only.port, "alice")
        offered = await challenges(ua, register(ua))
        assert [c.algorithm for c in offered] == [DigestAlgorithm.SHA_256]
        md5 = await attempt(ua, register(ua), algorithm=DigestAlgorithm.MD5)
        assert md5 is not None and md5.status == 403
        assert (await ua.register()).status == 200
        await ua.close()


async def test_md5_answer_to_the_sha256_challenge_refused(pki: Pki, one: Replica) -> None:
    """Finding 5: the nonce is bound to the algorithm of the challenge it came in."""
    ua = await phone(pki, one.port, "alice")
    offered = await challenges(ua, register(ua))
    assert [c.algorithm for c in offered] == [DigestAlgorithm.SHA_256, DigestAlgorithm.MD5]
    request = register(ua)
    downgraded = credential(offered[0], ua, request, algorithm=DigestAlgorithm.MD5)
    answer = await send_with(ua, request, downgraded)
    assert answer is not None and answer.status == 403
    md5 = credential(offered[1], ua, request)
    answer = await send_with(ua, request, md5)
    assert answer is not None and answer.status == 200
    await ua.close()


async def test_failed_proxy_authentications_block_the_source(pki: Pki, redis_url: str) -> None:
    """Finding 4: wrong passwords through OPTIONS count; then even a right REGISTER is refused."""
    await add_users(redis_url)
    async with replica(pki, redis_url, **SMALL_LOCKOUT) as small:
        ua = await phone(pki, small.port, "alice")
        for _ in range(3):
            answer = await attempt(ua, options_to(ua, "bob"), password="not-the-password")
            assert answer is not None and answer.status == 403
        refused = await ua.register()
        assert (refused.status, refused.reason) == (403, "Too Many Failed Attempts")
        await ua.close()
    sources = await keys(redis_url, "qw:auth*:{src:*")
    assert sources and not [k for k in sources if "127.0.0.1" in k]  # no address at rest


async def test_a_block_is_shared_by_every_replica(pki: Pki, redis_url: str) -> None:
    await add_users(redis_url)
    async with (
        replica(pki, redis_url, **SMALL_LOCKOUT) as first,
        replica(pki, redis_url, **SMALL_LOCKOUT) as second,
    ):
        ua = await phone(pki, first.port, "alice")
        for _ in range(3):
            answer = await attempt(ua, register(ua), password="not-the-password")
            assert answer is not None and answer.status == 403
        await ua.close()
        elsewhere = await phone(pki, second.port, "alice")
        answer = await attempt(elsewhere, register(elsewhere))  # the right password
        assert answer is not None and answer.status == 403
        again = await elsewhere.register()
        assert (again.status, again.reason) == (403, "Too Many Failed Attempts")
        await elsewhere.close()


async def test_one_address_cannot_lock_a_user_out(pki: Pki, redis_url: str) -> None:
    await add_users(redis_url)
    async with replica(pki, redis_url, **SMALL_LOCKOUT) as small:
        mallory = UserAgent(
            await connect_from("127.0.0.2", small.port, pki.ca), "alice", "guess-1234", DOMAIN
        )
        statuses = [(await mallory.register()).reason for _ in range(12)]
        assert statuses[:3] == ["Forbidden"] * 3
        assert set(statuses[3:]) == {"Too Many Failed Attempts"}
        await mallory.close()
        alice = await phone(pki, small.port, "alice")
        assert (await alice.register()).status == 200
        await alice.close()


async def test_guesses_from_many_sources_block_the_user(pki: Pki, redis_url: str) -> None:
    """Per user, slower: 7 failures from 4 addresses (none blocked) stop guessing at alice."""
    await add_users(redis_url)
    async with replica(pki, redis_url, **SMALL_LOCKOUT) as small:
        for n in range(7):
            address = f"127.0.0.{10 + n // 2}"
            ua = UserAgent(
                await connect_from(address, small.port, pki.ca), "alice", "guess-1234", DOMAIN
            )
            assert (await ua.register()).reason == "Forbidden"
            await ua.close()
        fresh = await connect_from("127.0.0.30", small.port, pki.ca)
        alice = UserAgent(fresh, "alice", PASSWORDS["alice"], DOMAIN)
        assert (await alice.register()).status == 403  # alice's credentials, refused for now
        await alice.close()
        fresh = await connect_from("127.0.0.30", small.port, pki.ca)
        bob = UserAgent(fresh, "bob", PASSWORDS["bob"], DOMAIN)
        assert (await bob.register()).status == 200  # the address is not blocked
        await bob.close()


async def test_unknown_users_count_per_source_only(pki: Pki, redis_url: str) -> None:
    await add_users(redis_url)
    async with replica(pki, redis_url, **SMALL_LOCKOUT) as small:
        ua = await phone(pki, small.port, "nobody", "whatever-1")
        assert (await ua.register()).status == 403
        await ua.close()
    assert await keys(redis_url, "qw:auth*:{user:*") == []
    assert len(await keys(redis_url, "qw:authfail:{src:*")) == 1
