"""`make bench`, registration storm: quietwire vs Kamailio, on 1 and 2 cores.

N phones, each its own user, each open a *new* TLS connection and REGISTER
with digest (REGISTER, 401, REGISTER, 200), as after an outage or a signaling
rollout; at most ``--concurrency`` phones are connecting or registering at a
time (phones back off; a listen backlog is finite), and every phone keeps its
connection open once registered, as a phone does. Per server we report:

- seconds until every phone was registered (first connect to the last 200);
- CPU per phone: the server's process CPU time (user + system, from /proc;
  quietwire counts its Redis too) over the storm, divided by the phones registered;
- failures: phones with no 200 within ``--deadline`` (refused, reset, timed out);
- peak memory: the largest PSS of the server's processes during the storm;
- memory per registration, with every phone still connected: quietwire's
  Redis bytes per binding (``MEMORY USAGE`` of the location keys, and the
  ``used_memory`` delta over N, which also holds the nonce counters until
  they expire) and the signaling process's RSS per open TLS flow; Kamailio's
  shared memory per phone (``core.shmmem``: its usrloc record, TLS connection
  and transaction state together) and its PSS per phone.

With ``--cores 1,2`` each server is given one core, then two (``taskset``):
quietwire runs as many signaling workers as it has cores, sharing the SIP port
(SO_REUSEPORT, as ``quietwire up --signaling N``), its Redis on the same cores;
Kamailio as many ``children``/``tcp_children``. We report phones/s and CPU per
phone for each, quietwire's share of phones per worker (the replica its
bindings name), and how the rate grows from one core to two.

The load (this process, one asyncio loop) runs on core 0, the servers on the
other cores first: on a 2-core machine the 2-core servers share core 0 with the
load (said in the output), so the second core gives them less than a core.
``--rounds R`` runs each case R times, quietwire and Kamailio in turn, and
reports medians. The machine is shared: compare CPU per phone and the ratios,
not raw times.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from quietwire.protocols.sip.digest import client_credentials, format_credentials, parse_challenge
from quietwire.protocols.sip.framing import StreamFramer
from quietwire.protocols.sip.message import Response
from quietwire.rpc.signaling.v1.signaling_pb2 import Registration

from bench.processes import cpu_seconds
from bench.signaling import DOMAIN, LOAD_CORE, Kamailio, Quietwire, Server

#: Seconds a phone is sampled for memory while the storm runs.
SAMPLE_EVERY = 0.25


@dataclass
class Storm:
    phones: int
    registered: int = 0
    failed: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_pss: int = 0
    #: name → bytes per phone (memory per registration and per flow).
    memory: dict[str, float] = field(default_factory=dict)
    why: dict[str, int] = field(default_factory=dict)
    #: quietwire: phones registered per signaling worker.
    per_worker: Counter[str] = field(default_factory=Counter)
    #: Why the server died during the storm, if it did.
    crashed: str = ""

    @property
    def rate(self) -> float:
        return self.registered / self.seconds if self.seconds else 0.0

    @property
    def cpu_us(self) -> float:
        return self.cpu_seconds / self.registered * 1e6 if self.registered else float("nan")


def user(i: int) -> tuple[str, str]:
    return f"storm{i}", f"storm-password-{i:06d}"


def _register(name: str, port: int, cseq: int, call_id: str, auth: str = "") -> bytes:
    tag = call_id[:8]
    lines = [
        f"REGISTER sip:{DOMAIN} SIP/2.0",
        f"Via: SIP/2.0/TLS 127.0.0.1:{port};branch=z9hG4bK{secrets.token_hex(8)};rport",
        f"From: <sip:{name}@{DOMAIN}>;tag={tag}",
        f"To: <sip:{name}@{DOMAIN}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:{name}@127.0.0.1:{port};transport=tls>",
        *([auth] if auth else []),
        "Expires: 600",
        "Max-Forwards: 70",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _response(reader: asyncio.StreamReader, framer: StreamFramer) -> Response:
    while True:
        data = await reader.read(65536)
        if not data:
            raise ConnectionError("closed")
        for item in framer.feed(data):
            if isinstance(item, Response) and item.status >= 200:
                return item


async def phone(
    i: int, port: int, context: ssl.SSLContext
) -> tuple[asyncio.StreamWriter | None, str]:
    """One phone: connect, REGISTER, answer the 401, REGISTER; its open writer, or why not."""
    name, password = user(i)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname=DOMAIN
    )
    local = int(writer.get_extra_info("sockname")[1])
    framer = StreamFramer()
    call_id = secrets.token_hex(12)
    writer.write(_register(name, local, 1, call_id))
    first = await _response(reader, framer)
    if first.status != 401:
        writer.close()
        return None, f"first {first.status}"
    challenge = parse_challenge(first.headers.get("WWW-Authenticate") or "")
    credentials = client_credentials(
        challenge, name, password, "REGISTER", f"sip:{DOMAIN}", 1, secrets.token_hex(4)
    )
    auth = f"Authorization: {format_credentials(credentials)}"
    writer.write(_register(name, local, 2, call_id, auth))
    second = await _response(reader, framer)
    if second.status != 200:
        writer.close()
        return None, f"second {second.status}"
    return writer, "ok"


async def storm(
    server: Server, phones: int, concurrency: int, deadline: float, context: ssl.SSLContext
) -> tuple[Storm, list[asyncio.StreamWriter]]:
    result = Storm(phones)
    gate = asyncio.Semaphore(concurrency)
    held: list[asyncio.StreamWriter] = []
    last = 0.0

    async def one(i: int) -> None:
        nonlocal last
        async with gate:
            try:
                writer, why = await asyncio.wait_for(phone(i, server.port, context), deadline)
            except (OSError, TimeoutError, ssl.SSLError, ConnectionError) as exc:
                writer, why = None, type(exc).__name__
        if writer is None:
            result.failed += 1
            result.why[why] = result.why.get(why, 0) + 1
            return
        held.append(writer)
        result.registered += 1
        last = time.monotonic()

    sampler = asyncio.create_task(_sample_peak(server, result))
    cpu_before = cpu_seconds(server.pids())
    started = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(phones)))
    result.cpu_seconds = cpu_seconds(server.pids()) - cpu_before
    result.seconds = (last or time.monotonic()) - started
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    return result, held


async def _sample_peak(server: Server, result: Storm) -> None:
    while True:
        result.peak_pss = max(result.peak_pss, pss(server.pids()))
        await asyncio.sleep(SAMPLE_EVERY)


def pss(pids: list[int]) -> int:
    """Proportional set size of ``pids`` in bytes (shared pages split between them)."""
    return sum(_status_kb(pid, "Pss", "smaps_rollup") for pid in pids) * 1024


def rss(pid: int) -> int:
    return _status_kb(pid, "VmRSS", "status") * 1024


def _status_kb(pid: int, name: str, where: str) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/{where}").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return int(line.split()[1])
    return 0


async def _redis_memory(url: str) -> tuple[int, list[int]]:
    """``used_memory`` and the ``MEMORY USAGE`` of every location key."""
    import redis.asyncio as redis

    client = redis.Redis.from_url(url)
    try:
        used = int((await client.info("memory"))["used_memory"])
        sizes = [
            int(await client.memory_usage(key) or 0)
            async for key in client.scan_iter(match="qw:loc:*", count=1000)
        ]
    finally:
        await client.aclose()
    return used, sizes


async def _phones_per_worker(url: str) -> Counter[str]:
    """The replica each binding names (where its phone's connection is), counted."""
    import redis.asyncio as redis

    client = redis.Redis.from_url(url)
    found: Counter[str] = Counter()
    try:
        async for key in client.scan_iter(match="qw:loc:*", count=1000):
            for value in await client.hvals(key):
                # <expires ms> <cseq> <call-id>\n, then the Registration (signaling/locations.py)
                found[Registration.FromString(value.split(b"\n", 1)[1]).replica] += 1
    finally:
        await client.aclose()
    return found


def _close(held: list[asyncio.StreamWriter]) -> None:
    for writer in held:
        writer.transport.abort()


async def run_quietwire(server: Quietwire, args: argparse.Namespace) -> Storm:
    context = ssl.create_default_context(cafile=str(server.pki.ca))
    workers = server.pids()[1:]
    used_before, _ = await _redis_memory(server.redis_url)
    rss_before = sum(rss(pid) for pid in workers)
    result, held = await storm(server, args.phones, args.concurrency, args.deadline, context)
    try:
        used_after, sizes = await _redis_memory(server.redis_url)
        flows = sum(rss(pid) for pid in workers) - rss_before
        result.per_worker = await _phones_per_worker(server.redis_url)
        if result.registered:
            result.memory["Redis bytes per binding (MEMORY USAGE)"] = (
                statistics.mean(sizes) if sizes else float("nan")
            )
            result.memory["Redis used_memory delta per phone"] = (
                used_after - used_before
            ) / result.registered
            result.memory["signaling RSS per open TLS flow (all workers)"] = (
                flows / result.registered
            )
    finally:
        _close(held)
    return result


async def run_kamailio(server: Kamailio, args: argparse.Namespace, ca: Path) -> Storm:
    context = ssl.create_default_context(cafile=str(ca))
    shm_before = server.shm_used()
    pss_before = pss(server.pids())
    result, held = await storm(server, args.phones, args.concurrency, args.deadline, context)
    if (why := server.exited()) is not None:
        result.crashed = why
        _close(held)
        return result
    try:
        if result.registered:
            result.memory["shared memory per phone (usrloc + TLS connection)"] = (
                server.shm_used() - shm_before
            ) / result.registered
            result.memory["PSS per phone"] = (pss(server.pids()) - pss_before) / result.registered
    finally:
        _close(held)
    return result


@contextlib.contextmanager
def pinned(core: str) -> Iterator[None]:
    """This process (the phones) on ``core``, the servers on theirs."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(core)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def server_cores(count: int) -> list[str]:
    """The cores given to the servers: those the load does not run on first, then
    the load's own (shared with it)."""
    ours = sorted(os.sched_getaffinity(0))
    order = [str(core) for core in ours if str(core) != LOAD_CORE] + [LOAD_CORE]
    if count > len(order):
        raise SystemExit(f"bench.storm: --cores {count}: this machine has {len(order)}")
    return order[:count]


def _median(storms: list[Storm], value: Callable[[Storm], float]) -> float:
    return statistics.median(value(storm) for storm in storms)


def completed(storms: list[Storm]) -> list[Storm]:
    """The storms the server lived through (the others' figures mean nothing)."""
    return [storm for storm in storms if not storm.crashed]


def report(phones: int, cores: list[str], results: dict[str, list[Storm]]) -> None:
    shared = f", sharing core {LOAD_CORE} with the load" if LOAD_CORE in cores else ""
    rounds = max((len(storms) for storms in results.values()), default=0)
    print(
        f"registration storm: {phones} phones, a new TLS connection each, REGISTER with digest;"
        f" servers on {len(cores)} core(s) ({','.join(cores)}{shared}), load on core {LOAD_CORE};"
        f" median of {rounds} round(s)"
    )
    print(
        f"{'server':10} {'registered':>10} {'failed':>6} {'seconds':>8} {'phones/s':>8}"
        f" {'CPU us/phone':>12} {'peak PSS MB':>11}"
    )
    for name, storms in results.items():
        whole = completed(storms)
        if whole:
            registered, seconds = (
                _median(whole, lambda r: r.registered),
                _median(whole, lambda r: r.seconds),
            )
            rate, cpu_us = _median(whole, lambda r: r.rate), _median(whole, lambda r: r.cpu_us)
            peak = _median(whole, lambda r: r.peak_pss) / 2**20
            print(
                f"{name:10} {registered:10.0f} {sum(r.failed for r in whole):6d} {seconds:8.1f}"
                f" {rate:8.0f} {cpu_us:12.0f} {peak:11.1f}"
            )
        for crashed in (r for r in storms if r.crashed):
            print(
                f"{name:10} crashed during a storm ({crashed.registered} registered,"
                f" {crashed.failed} failed): {crashed.crashed}"
            )
        why: Counter[str] = sum((Counter(r.why) for r in whole), Counter())
        if why:
            print(f"{'':10} failures: {', '.join(f'{k} x{v}' for k, v in sorted(why.items()))}")
        per_worker: Counter[str] = sum((r.per_worker for r in storms), Counter())
        if per_worker:
            total = sum(per_worker.values())
            shares = ", ".join(f"{w} {n / total:.0%}" for w, n in sorted(per_worker.items()))
            print(f"{'':10} phones per worker: {shares}")
    ours, anchor = results.get("quietwire", []), results.get("kamailio", [])
    ratios = [
        q.cpu_us / k.cpu_us
        for q, k in zip(ours, anchor, strict=False)
        if q.registered and k.registered and not (q.crashed or k.crashed)
    ]
    if ratios:
        print(f"quietwire/kamailio CPU per phone: {statistics.median(ratios):.2f}x")
    for name, storms in results.items():
        whole = completed(storms)
        for what in next((r.memory for r in whole if r.memory), {}):
            value = statistics.median(r.memory.get(what, float("nan")) for r in whole)
            print(f"{name:10} {what}: {value:,.0f} bytes")
    print()


def report_scaling(phones: int, rates: dict[int, dict[str, float]]) -> None:
    """Each server's phones/s on each core count over its rate on the first."""
    counts = sorted(rates)
    if len(counts) < 2:
        return
    first = counts[0]
    for name in rates[first]:
        steps = ", ".join(
            f"{count} cores {rates[count][name] / rates[first][name]:.2f}x"
            for count in counts[1:]
            if rates[first][name] and name in rates[count]
        )
        if steps:
            print(f"{phones} phones, {name} phones/s over {first} core: {steps}")
    print()


def run_case(
    size: int, cores: list[str], users: list[tuple[str, str]], args: argparse.Namespace
) -> dict[str, list[Storm]]:
    """``args.rounds`` storms of ``size`` phones against each server on ``cores``."""
    results: dict[str, list[Storm]] = {"quietwire": [], "kamailio": []}
    with tempfile.TemporaryDirectory(prefix="qw-storm-") as scratch:
        work = Path(scratch)
        for name in ("qw", "kam"):
            (work / name).mkdir()
        caps = {
            "QW_SIP_MAX_CONNECTIONS": str(size + 100),
            "QW_SIP_MAX_CONNECTIONS_PER_SOURCE": str(size + 100),
        }
        quietwire = Quietwire(work / "qw", users[:size], caps, cores=cores, workers=len(cores))
        shm = max(256, size // 10)  # Kamailio's TLS connections live in shared memory
        pkg = max(16, size // 80)  # the users' configuration lines
        kamailio = Kamailio(
            work / "kam",
            users[:size],
            work / "qw" / "pki",
            shm_mb=shm,
            pkg_mb=pkg,
            cores=cores,
            children=len(cores),
        )
        runs: list[tuple[str, Callable[[], contextlib.AbstractContextManager[Server]]]] = [
            ("quietwire", quietwire.running),
            ("kamailio", kamailio.running),
        ]
        for _ in range(args.rounds):
            for name, running in runs:
                try:
                    with running(), pinned(LOAD_CORE):
                        results[name].append(
                            asyncio.run(
                                run_quietwire(quietwire, args)
                                if name == "quietwire"
                                else run_kamailio(kamailio, args, quietwire.pki.ca)
                            )
                        )
                except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                    print(
                        f"bench.storm: {name} with {size} phones on {len(cores)} core(s): {exc}",
                        file=sys.stderr,
                    )
    return {name: storms for name, storms in results.items() if storms}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--phones", default="2000,10000", help="storm sizes, comma-separated")
    parser.add_argument(
        "--cores", default="1,2", help="cores given to each server, comma-separated counts"
    )
    parser.add_argument("--rounds", type=int, default=1, help="storms per case (medians)")
    parser.add_argument("--concurrency", type=int, default=200, help="phones registering at once")
    parser.add_argument("--deadline", type=float, default=30.0, help="seconds a phone may take")
    args = parser.parse_args()
    missing = [b for b in ("kamailio", "kamcmd", "redis-server", "taskset") if not shutil.which(b)]
    if missing:
        print(f"make bench: missing {', '.join(missing)}", file=sys.stderr)
        return 1
    sizes = [int(n) for n in args.phones.split(",")]
    core_counts = [int(n) for n in args.cores.split(",")]
    given = {count: server_cores(count) for count in core_counts}
    users = [user(i) for i in range(max(sizes))]
    for size in sizes:
        args.phones = size
        rates: dict[int, dict[str, float]] = {}
        for count in core_counts:
            results = run_case(size, given[count], users, args)
            report(size, given[count], results)
            rates[count] = {
                name: _median(completed(storms), lambda r: r.rate)
                for name, storms in results.items()
                if completed(storms)
            }
        report_scaling(size, rates)
    return 0


if __name__ == "__main__":
    sys.exit(main())
