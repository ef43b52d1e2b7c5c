"""Redis Sentinel failover under live calls, every part a real process: a master,
two replicas a little behind it (slow links), three Sentinels (quorum 2), and
the three services run separately with QW_REDIS_SENTINELS, QW_REDIS_WAIT_REPLICAS=1
and mutual TLS.

The master is killed (SIGKILL) right after a REGISTER was answered. A replica
is promoted; the services find it on their own; every request meanwhile is
answered (503 with Retry-After, never silence); what phones were told before
the kill still holds: the registrations (a call reaches a user who does not
register again), the established call (its BYE ends it, and its record and
relay ports are gone after). The time from the kill to the first REGISTER
answered 200 is printed (``-s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import redis as redis_sync
from quietwire.embedded.pki import ensure_pki
from quietwire.keyagreement.calls import CALLS_KEY, CallStore
from quietwire.phone.useragent import Dialog, UserAgent
from quietwire.runtime.redisclient import redis_client
from quietwire.runtime.settings import CommonSettings, load_settings
from quietwire.signaling.dialogs import DIALOG_KEY
from quietwire.signaling.users import UserStore

from tests.conftest import RedisServer, free_port, start_redis, stop_redis
from tests.faults.cluster import DOMAIN, PASSWORDS, Cluster
from tests.integration.signaling_harness import establish, next_request
from tests.interop.test_relay_calls import sdp
from tests.support.replication import (
    MASTER_NAME,
    Sentinels,
    SlowLink,
    link_up,
    sentinels,
    start_replica,
)
from tests.support.wait import eventually

PASSWORD = "failover-test-password"
#: How far behind the master the replica is (each way): a write not waited for
#: is not on the replica when the master dies right after answering it.
LINK_DELAY = 0.2
#: As docs/deploy.md recommends: two replicas, and writes that matter wait for one.
REPLICAS = 2
#: Sentinel down-after-milliseconds, as docs/deploy.md recommends.
DOWN_AFTER_MS = 3000
FAILOVER_TIMEOUT_MS = 20000
#: Bounds: the failover, and any one request (an unanswered one is silence).
RECOVERY_DEADLINE = 90.0
ANSWER_DEADLINE = 20.0
SDP = "application/sdp"


def sentinel_settings(sentinel_set: Sentinels) -> dict[str, str]:
    """What every service is started with: the master from the Sentinels (the
    cluster's QW_REDIS_URL then gives only scheme and database), and the writes
    that matter waiting for one replica."""
    return {
        "QW_REDIS_PASSWORD": PASSWORD,
        "QW_REDIS_SENTINELS": sentinel_set.addresses,
        "QW_REDIS_SENTINEL_MASTER": MASTER_NAME,
        "QW_REDIS_WAIT_REPLICAS": "1",
        "QW_REDIS_WAIT_TIMEOUT": "2",
    }


async def start_services(cluster: Cluster, settings: dict[str, str]) -> int:
    """Every service of ``cluster`` with ``settings``, serving; the relay's metrics
    port. Its socket is bound here and handed over (``QW_METRICS_FD``), as
    ``quietwire up`` does: a port picked free and bound later by the relay could
    be taken in between (the relay then stopped at start, status 2)."""
    with socket.create_server(("127.0.0.1", 0)) as metrics:
        for name in cluster.names:
            if name == "relay":
                fd = metrics.fileno()
                await cluster.start(name, pass_fds=(fd,), QW_METRICS_FD=str(fd), **settings)
            else:
                await cluster.start(name, **settings)
        return int(metrics.getsockname()[1])


def relay_calls(metrics_port: int) -> float:
    """The relay's calls with ports allocated (``quietwire_relay_calls``)."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith("quietwire_relay_calls "):
                return float(line.split()[1])
    raise AssertionError("quietwire_relay_calls not exported")


async def add_users(sentinel_set: Sentinels) -> None:
    settings = load_settings(
        CommonSettings,
        redis_url="redis:///0",
        redis_password=PASSWORD,
        redis_sentinels=sentinel_set.addresses,
        redis_sentinel_master=MASTER_NAME,
    )
    client = redis_client(settings)
    try:
        store = UserStore(client, DOMAIN)
        for name, password in PASSWORDS.items():
            await store.put(name, password)
    finally:
        await client.aclose()


@asynccontextmanager
async def replicated(tmp_path: Path) -> AsyncIterator[tuple[RedisServer, list[RedisServer]]]:
    """A master and REPLICAS replicas, each behind its own slow link, in sync;
    all stopped after."""
    for part in ("master", *(f"replica-{n}" for n in range(REPLICAS))):
        (tmp_path / part).mkdir()
    master = start_redis(
        tmp_path / "master",
        "--requirepass",
        PASSWORD,
        "--masterauth",
        PASSWORD,
        "--repl-diskless-sync-delay",
        "0",
    )
    replicas: list[RedisServer] = []
    try:
        async with contextlib.AsyncExitStack() as links:
            try:
                for number in range(REPLICAS):
                    link = await links.enter_async_context(SlowLink(master.port, LINK_DELAY))
                    directory = tmp_path / f"replica-{number}"
                    replicas.append(start_replica(directory, link.port, PASSWORD))
                for replica in replicas:
                    await eventually(
                        lambda replica=replica: asyncio.to_thread(link_up, replica, PASSWORD),
                        30,
                        f"replica on port {replica.port} in sync with the master",
                    )
                yield master, replicas
            finally:
                for replica in replicas:
                    stop_redis(replica)
    finally:  # once the links are closed: a master stopping waits for replicas it still sees
        if master.process.poll() is None:
            stop_redis(master)


async def hang_up(caller: UserAgent, callee: UserAgent, dialog: Dialog) -> int:
    """The caller's BYE, answered 200 by the callee: the final status the caller got."""
    bye = caller.in_dialog(dialog, "BYE")
    sending = asyncio.create_task(caller.send(bye, timeout=ANSWER_DEADLINE))
    incoming = await next_request(callee, "BYE", timeout=ANSWER_DEADLINE)
    await callee.connection.send(callee.answer(incoming, 200, "OK"))
    final = (await sending).final
    assert final is not None
    return final.status


async def test_a_sentinel_failover_loses_no_registration_and_no_call(tmp_path: Path) -> None:
    async with replicated(tmp_path) as (master, replicas):
        with sentinels(
            tmp_path,
            master.port,
            PASSWORD,
            down_after_ms=DOWN_AFTER_MS,
            failover_timeout_ms=FAILOVER_TIMEOUT_MS,
        ) as watchers:

            async def watching() -> bool:
                return await asyncio.to_thread(watchers.watching, master.port, REPLICAS)

            await eventually(watching, 60, lambda: f"Sentinels ready: {watchers.views()}")
            await add_users(watchers)
            cluster = Cluster(tmp_path, ensure_pki(tmp_path / "pki", DOMAIN), master, free_port())
            try:
                metrics_port = await start_services(cluster, sentinel_settings(watchers))
                alice, bob, carol = [await cluster.agent(u) for u in ("alice", "bob", "carol")]
                try:
                    await failover(cluster, metrics_port, replicas, watchers, alice, bob, carol)
                finally:
                    for ua in (alice, bob, carol):
                        await ua.close()
            finally:
                cluster.close()


async def failover(
    cluster: Cluster,
    relay_metrics: int,
    replicas: list[RedisServer],
    watchers: Sentinels,
    alice: UserAgent,
    bob: UserAgent,
    carol: UserAgent,
) -> None:
    assert (await alice.register()).status == 200
    assert (await bob.register()).status == 200
    invite = alice.build(
        "INVITE", f"sip:bob@{DOMAIN}", body=sdp("alice", 40000, True), content_type=SDP
    )
    caller, _ = await establish(alice, bob, invite, sdp("bob", 40002, True))
    assert await asyncio.to_thread(relay_calls, relay_metrics) == 1

    master_now = await asyncio.to_thread(watchers.agreed_master)
    assert master_now == cluster.redis.port, f"a failover before the kill: {watchers.views()}"
    # Carol's registration is the master's last write before it dies.
    assert (await carol.register()).status == 200
    os.kill(cluster.redis.process.pid, signal.SIGKILL)
    killed = time.monotonic()
    cluster.redis.process.wait(10)

    # Every REGISTER meanwhile is answered: 503 with Retry-After until Redis is back.
    answers: list[tuple[float, int]] = []
    while True:
        sent = time.monotonic()
        assert sent - killed < RECOVERY_DEADLINE, f"no REGISTER answered 200: {answers}"
        response = await alice.register()  # raises TimeoutError on silence
        answers.append((round(time.monotonic() - sent, 2), response.status))
        if response.status == 200:
            break
        assert (response.status, response.headers.get("Retry-After")) == (503, "5"), answers
        await asyncio.sleep(0.2)
    recovered = time.monotonic() - killed
    slowest = max(took for took, _ in answers)
    print(
        f"\nfailover: first REGISTER 200 {recovered:.2f} s after the master's SIGKILL"
        f" (down-after-milliseconds {DOWN_AFTER_MS}); {len(answers) - 1} answered 503"
        f" meanwhile, slowest answer {slowest:.2f} s"
    )

    async def promoted() -> int | None:
        port = await asyncio.to_thread(watchers.agreed_master)
        return port if port in {r.port for r in replicas} else None

    new_port = await eventually(promoted, 30, lambda: f"a replica promoted: {watchers.views()}")
    for name in cluster.names:
        await cluster.wait_serving(name)

    # Carol did not register again: the binding from before the kill reaches her.
    call = alice.build(
        "INVITE", f"sip:carol@{DOMAIN}", body=sdp("alice", 40004, True), content_type=SDP
    )
    calling = asyncio.create_task(alice.send(call, timeout=ANSWER_DEADLINE))
    ringing = asyncio.create_task(next_request(carol, "INVITE", timeout=ANSWER_DEADLINE))
    await asyncio.wait({calling, ringing}, return_when=asyncio.FIRST_COMPLETED)
    if not ringing.done():
        ringing.cancel()
        final = (await calling).final
        raise AssertionError(f"carol was not reached: {final.status if final else None}")
    await carol.connection.send(carol.answer(ringing.result(), 486, "Busy Here"))
    final = (await calling).final
    assert final is not None and final.status == 486

    # The call established before the kill: its records survived, its BYE ends
    # it, and nothing is left.
    new_master = redis_sync.Redis(port=new_port, password=PASSWORD)
    try:
        kept = {
            "dialog": new_master.exists(DIALOG_KEY.format(call_id=invite.call_id)),
            "call record": new_master.exists(CallStore.key(invite.call_id)),
        }
        assert kept == {"dialog": 1, "call record": 1}, kept
        assert await hang_up(alice, bob, caller) == 200

        def left() -> dict[str, object]:
            return {
                "dialog": new_master.exists(DIALOG_KEY.format(call_id=invite.call_id)),
                "listed": new_master.zscore(CALLS_KEY, invite.call_id) is not None,
                "relay calls": relay_calls(relay_metrics),  # both calls
            }

        async def cleaned() -> bool:
            return left() == {"dialog": 0, "listed": False, "relay calls": 0}

        await eventually(cleaned, 30, lambda: f"the call cleaned up: {left()}")
    finally:
        new_master.close()
