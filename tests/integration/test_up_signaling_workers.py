"""`quietwire up --signaling 2`: two signaling workers share the SIP port
(SO_REUSEPORT), the kernel spreads the phones' connections over them, a call
between phones on the two is handed over from one to the other, and a worker
SIGKILLed comes back under a new replica id (the dead one out of the replica
registry) while the other keeps answering.

One platform serves every test; which worker took a REGISTER is read from the
workers' own metrics (``quietwire_sip_registers_total``), each REGISTER sent
alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import urllib.request
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest
from quietwire.phone.useragent import UserAgent
from quietwire.runtime.registry import REPLICA_KEY, REPLICAS_KEY

from tests.conftest import Platform, agent
from tests.faults.test_up_supervision import call, child, hang_up, hung_up, kill, restarted
from tests.support.platforms import log_lines, logged_platform
from tests.support.wait import wait_until

WORKERS = ("signaling", "signaling-2")
#: New connections opened, at most, for one to land on a given worker: the
#: kernel hashes each connection's addresses to one of the two, so the chance
#: that 30 all miss one is 2**-30.
ATTEMPTS = 30


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """`quietwire up --signaling 2`, its log lines kept."""
    with logged_platform(tmp_path_factory.mktemp("workers"), ("--signaling", "2")) as platform:
        yield platform


def listening(port: int, pids: Sequence[int]) -> set[int]:
    """Those of ``pids`` holding a TCP socket that listens on ``port``."""
    sockets = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                sockets.add(f"socket:[{inode}]")
    found = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            fds = Path(f"/proc/{pid}/fd")
            if any(os.readlink(fds / fd) in sockets for fd in os.listdir(fds)):
                found.add(pid)
    return found


def counted(platform: Platform, worker: str, prefix: str) -> float:
    """The sum of ``worker``'s metric samples whose line starts with ``prefix``."""
    address = child(platform, worker)["metrics"]
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        lines = reply.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix))


def registers_answered(platform: Platform) -> dict[str, float]:
    """Per worker, the REGISTERs it answered 200."""
    return {
        name: counted(platform, name, 'quietwire_sip_registers_total{status="200"}')
        for name in WORKERS
    }


def handovers(platform: Platform) -> float:
    """Messages the workers handed to one another so far."""
    return sum(counted(platform, name, "quietwire_sip_handovers_total{") for name in WORKERS)


async def register_on(platform: Platform, ua: UserAgent) -> str:
    """Register ``ua`` (nothing else registering meanwhile): the worker that answered."""
    before = registers_answered(platform)
    assert (await ua.register()).status == 200
    after = registers_answered(platform)
    rose = [name for name in WORKERS if after[name] > before[name]]
    assert len(rose) == 1, (before, after)
    return rose[0]


@contextlib.asynccontextmanager
async def connected() -> AsyncIterator[list[UserAgent]]:
    """The phones a test opens (each on a new connection), unregistered and closed after."""
    phones: list[UserAgent] = []
    try:
        yield phones
    finally:
        for ua in phones:
            with contextlib.suppress(Exception):
                await ua.register(expires=0)
            await ua.close()


async def phone_on(
    platform: Platform, phones: list[UserAgent], user: str, worker: str
) -> UserAgent:
    """A registered phone of ``user`` whose connection landed on ``worker``; the phones
    that landed elsewhere are unregistered (no call forks to them) and kept in ``phones``."""
    for _ in range(ATTEMPTS):
        ua = await agent(platform, user)
        phones.append(ua)
        if await register_on(platform, ua) == worker:
            return ua
        assert (await ua.register(expires=0)).status == 200
    raise AssertionError(f"no connection of {ATTEMPTS} landed on {worker}")


def test_both_workers_listen_on_the_sip_port_each_its_own_replica(workers: Platform) -> None:
    entries = [child(workers, name) for name in WORKERS]
    for key in ("pid", "grpc", "metrics", "replica_id"):
        assert len({entry[key] for entry in entries}) == 2, key
    for name, entry in zip(WORKERS, entries, strict=True):
        assert entry["replica_id"].startswith(f"{name}-")
    pids = [entry["pid"] for entry in entries]
    assert listening(workers.sip_port, pids) == set(pids)
    client = workers.redis()
    try:

        def registered() -> bool:
            return all(
                client.get(REPLICA_KEY.format(replica=entry["replica_id"]))
                == entry["grpc"].encode()
                for entry in entries
            )

        wait_until(registered, 10, "both workers in the replica registry at their gRPC address")
    finally:
        client.close()


async def test_phones_spread_over_both_workers_and_call_across_them(workers: Platform) -> None:
    """Alice on one worker, Bob on the other: the call is handed over between them."""
    async with connected() as phones:
        alice = await agent(workers, "alice")
        phones.append(alice)
        alice_on = await register_on(workers, alice)
        other = next(name for name in WORKERS if name != alice_on)
        bob = await phone_on(workers, phones, "bob", other)
        before = handovers(workers)
        invite, caller, _ = await call(alice, bob, 40100)
        workers.calls_showing(invite.call_id)
        await hang_up(alice, bob, caller)
        assert handovers(workers) > before, "the call did not cross workers"


async def test_a_killed_worker_comes_back_while_the_other_answers(workers: Platform) -> None:
    """While ``signaling-2`` is away phones still register (the other worker holds
    the port); it comes back on its gRPC and metrics ports under a new replica id,
    the dead one gone from the registry, and takes connections again."""
    victim, survivor = "signaling-2", child(workers, "signaling")
    before = kill(workers, victim)
    wait_until(
        lambda: not listening(workers.sip_port, [before["pid"]]),
        10,
        f"{victim}'s listening socket closed",
    )
    async with connected() as phones:
        for _ in range(5):
            ua = await agent(workers, "alice")
            phones.append(ua)
            assert (await ua.register()).status == 200
    after = restarted(workers, victim, before)
    assert (after["grpc"], after["metrics"]) == (before["grpc"], before["metrics"])
    assert after["replica_id"] != before["replica_id"]
    assert child(workers, "signaling") == survivor
    client = workers.redis()
    try:
        assert not client.exists(REPLICA_KEY.format(replica=before["replica_id"]))
        assert before["replica_id"].encode() not in client.smembers(REPLICAS_KEY)
        wait_until(
            lambda: (
                client.get(REPLICA_KEY.format(replica=after["replica_id"]))
                == after["grpc"].encode()
            ),
            10,
            f"{victim}'s new replica id in the registry",
        )
    finally:
        client.close()
    async with connected() as phones:
        await phone_on(workers, phones, "alice", victim)
    said = [line["msg"] for line in log_lines(workers) if line.get("child") == victim]
    assert any(
        line.startswith(f"{victim} exited (killed by SIGKILL): restarting in ") for line in said
    )


async def test_sigterm_hangs_up_calls_through_a_live_worker(tmp_path: Path) -> None:
    """The first worker dead when `up` gets SIGTERM: a call's phones, on the other
    worker, still get their BYE with the Reason, and `up` exits 0."""
    with logged_platform(tmp_path, ("--signaling", "2")) as platform:
        phones: list[UserAgent] = []
        try:
            alice = await phone_on(platform, phones, "alice", "signaling-2")
            bob = await phone_on(platform, phones, "bob", "signaling-2")
            invite, _, _ = await call(alice, bob, 40200)
            platform.calls_showing(invite.call_id)
            first = child(platform, "signaling")["pid"]
            platform.process.send_signal(signal.SIGSTOP)  # so it restarts nothing before it stops
            try:
                os.kill(first, signal.SIGKILL)
                wait_until(
                    lambda: not listening(platform.sip_port, [first]), 10, "the first worker gone"
                )
                platform.process.send_signal(signal.SIGTERM)  # pending until SIGCONT
            finally:
                platform.process.send_signal(signal.SIGCONT)
            reasons = await asyncio.gather(
                hung_up(alice, invite.call_id, 10), hung_up(bob, invite.call_id, 10)
            )
            assert reasons == ['SIP;cause=200;text="platform stopping"'] * 2
            assert await asyncio.to_thread(platform.process.wait, 30) == 0
        finally:
            for ua in phones:
                await ua.close()
