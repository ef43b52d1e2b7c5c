"""Attacks on digest authentication (issue 12 findings 3, 4, 5, 11) against a real
``quietwire signaling`` process, its real Redis, over real TLS from loopback.

Each attacker speaks from its own loopback address, so the blocks one earns do not
change what the next one sees; the real user always speaks from 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as redis
from quietwire.embedded.pki import Pki, ensure_pki
from quietwire.phone.useragent import UserAgent
from quietwire.protocols.sip.digest import DigestAlgorithm
from quietwire.protocols.sip.message import Request
from quietwire.signaling.users import UserStore

from tests.conftest import (
    RedisServer,
    free_port,
    quietwire_env,
    start_redis,
    start_service,
    stop_process,
    stop_redis,
)
from tests.integration.digest_client import (
    attempt,
    challenges,
    connect_from,
    credential,
    send_with,
)

DOMAIN = "127.0.0.1"
ALICE = "alice-secret"
BOB = "bob-secret-1"


@dataclass
class Platform:
    pki: Pki
    redis: RedisServer
    process: subprocess.Popen[str]
    port: int

    async def phone(self, address: str, user: str, password: str) -> UserAgent:
        return UserAgent(
            await connect_from(address, self.port, self.pki.ca), user, password, DOMAIN
        )

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(
            next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]
        )


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A signaling process with SHA-256 only and small lockout limits (5 per source,
    36 per user: above the 5 x (600/600 + 1) = 10 one source can make)."""
    state = tmp_path_factory.mktemp("platform")
    pki = ensure_pki(state / "pki", DOMAIN)
    server = start_redis(state)
    asyncio.run(_users(server.url))
    port = free_port()
    env = quietwire_env(
        QW_REDIS_URL=server.url,
        QW_GRPC_INSECURE="true",
        QW_METRICS_PORT="0",
        QW_SIP_BIND="127.0.0.1",
        QW_SIP_PORT=str(port),
        QW_SIP_DOMAIN=DOMAIN,
        QW_SIP_TLS_CERT=str(pki.sip_cert),
        QW_SIP_TLS_KEY=str(pki.sip_key),
        QW_SIP_SECRET="security-test-secret",
        QW_SIP_MEDIA="passthrough",
        QW_SIP_DIGEST_ALGORITHMS="SHA-256",
        QW_SIP_RATE_BURST="5000",
        QW_SIP_RATE_LIMIT="1000",
        QW_SIP_MAX_AUTH_FAILURES="5",
        QW_SIP_USER_MAX_AUTH_FAILURES="36",
    )
    log = state / "signaling.log"
    with log.open("w") as stderr:
        try:
            service = start_service("signaling", env, stderr=stderr)
        except BaseException:
            stop_redis(server)
            raise
    platform = Platform(pki, server, service.process, port)
    yield platform
    try:
        stop_process(service.process)
    finally:
        stop_redis(server)
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


async def _users(url: str) -> None:
    client = redis.from_url(url)
    store = UserStore(client, DOMAIN, (DigestAlgorithm.SHA_256,))
    await store.put("alice", ALICE)
    await store.put("bob", BOB)
    await client.aclose()


@pytest.fixture
async def keys(platform: Platform) -> AsyncIterator[redis.Redis]:
    client = redis.from_url(platform.redis.url)
    yield client
    await client.aclose()


def register(ua: UserAgent) -> Request:
    return ua.build("REGISTER", f"sip:{DOMAIN}", to=f"<{ua.aor}>")


async def _overlong_nc(platform: Platform, address: str) -> list[int | None]:
    """Four INVITEs from ``address`` whose nc is 4000 hex digits; their final statuses."""
    mallory = await platform.phone(address, "alice", "unknown-pw")
    invite = mallory.build("INVITE", f"sip:bob@{DOMAIN}")
    first = (await challenges(mallory, invite))[0]
    value = credential(first, mallory, invite).replace("nc=00000001", "nc=" + "f" * 4000)
    statuses = []
    for _ in range(4):  # under the source's 5: every one reaches the credential check
        answer = await send_with(mallory, invite, value, timeout=5)
        statuses.append(None if answer is None else answer.status)
    await mallory.close()
    return statuses


async def test_overlong_nc_cannot_grow_memory(platform: Platform, keys: redis.Redis) -> None:
    """Finding 3: INVITEs whose nc is 4000 hex digits each get 400, reach no Redis key
    but the failure counts, and leave no memory behind (the old code kept each
    transaction and logged a traceback)."""
    before = set(await keys.keys("*"))
    for n in range(25):  # warm up: caches, allocator arenas
        assert await _overlong_nc(platform, f"127.0.1.{n + 1}") == [400] * 4
    settled = platform.rss_kib()
    for n in range(100):
        assert await _overlong_nc(platform, f"127.0.2.{n + 1}") == [400] * 4
    grown = platform.rss_kib() - settled
    print(f"RSS {settled} KiB after the warm-up, {grown:+} KiB after 400 attacks")
    assert grown < 4096, f"RSS grew {grown} KiB over 400 attacks"
    made = set(await keys.keys("*")) - before
    assert made and all(key.startswith(b"qw:auth") for key in made), made
    again = await platform.phone("127.0.1.1", "alice", "guess-1234")
    assert (await again.register()).reason == "Forbidden"  # its 5th failure: malformed ones count
    assert (await again.register()).reason == "Too Many Failed Attempts"
    await again.close()


async def test_password_guessing_through_the_proxy_blocks(platform: Platform) -> None:
    """Finding 4: wrong passwords through OPTIONS to a user, then the right REGISTER: 403."""
    mallory = await platform.phone("127.0.0.3", "alice", "guess-0000")
    for _ in range(5):
        answer = await attempt(mallory, mallory.build("OPTIONS", f"sip:bob@{DOMAIN}"))
        assert answer is not None and answer.status == 403
    mallory.password = ALICE  # guessed right at last: too late
    refused = await mallory.register()
    assert (refused.status, refused.reason) == (403, "Too Many Failed Attempts")
    await mallory.close()
    alice = await platform.phone("127.0.0.1", "alice", ALICE)  # the real alice is not locked out
    assert (await alice.register()).status == 200
    await alice.close()


async def test_md5_downgrade_refused(platform: Platform) -> None:
    """Finding 5: with SHA-256 alone, an MD5 answer (to the SHA-256 nonce) is refused."""
    mallory = await platform.phone("127.0.0.4", "bob", BOB)
    offered = await challenges(mallory, register(mallory))
    assert [c.algorithm for c in offered] == [DigestAlgorithm.SHA_256]
    answer = await attempt(mallory, register(mallory), algorithm=DigestAlgorithm.MD5)
    assert answer is not None and answer.status == 403
    await mallory.close()


async def test_credentials_for_another_uri_refused(platform: Platform) -> None:
    """Finding 11: credentials made for one Request-URI do not serve another."""
    bob = await platform.phone("127.0.0.5", "bob", BOB)
    invite = bob.build("INVITE", f"sip:alice@{DOMAIN}")
    answer = await attempt(bob, invite, uri=f"sip:carol@{DOMAIN}")
    assert answer is not None and answer.status == 400
    await bob.close()
