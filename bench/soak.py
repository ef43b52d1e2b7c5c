"""`make soak`: many secure calls through a real `quietwire up` for a long time,
then nothing may be left behind.

``--calls`` N concurrent ZRTP calls (2N phones, each a TLS connection of our
SIP user agent, registered and re-registering every ``--reregister`` s), each
call held ``--hold`` s on average (uniform from half to one and a half times),
then hung up by either side and followed by a new one: about N / hold new
calls a second for ``--seconds``. Media per call: a real ZRTP handshake
replayed through the relay, then 50 SRTP-shaped packets a second each way
from the C generator (``bench/soak_media.py``).

At the end, with every call hung up: each attempt answered, zrtp-verified,
media both ways, ended with 200 (a failure names its step); the relay holds no
call and no port pair; Redis holds only users, live registrations, registries,
TTL'd nonces and ended call records on their short TTL; after `up` stops, no
process it ran is left. RSS of every service is sampled and its least-squares
slope over the steady part (from ``--warmup`` s into the load, half of it by
default, until the last calls start) reported in KiB/min; above
``--rss-bound`` it counts as a leak (``--no-rss``: report only). Exit status 1
on any failure or leak.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as redis
import yaml
from quietwire.keyagreement.settings import KeyAgreementSettings
from quietwire.phone.connection import SipConnection
from quietwire.phone.useragent import UserAgent
from quietwire.relay.settings import RelaySettings
from quietwire.runtime.redisclient import redis_client
from quietwire.runtime.settings import load_settings
from quietwire.signaling.settings import UserAdminSettings
from quietwire.signaling.users import UserStore

from bench.soak_calls import DOMAIN, Phone, Tally, expires, slot
from bench.soak_checks import Keys, Memory, Processes, RelayPorts, classify_keys, relay_ports
from bench.soak_media import Generator, build
from tests.conftest import Platform, running_platform

#: What one relay core holds (issue 14: 1,000 calls on a core); the soak aims at 80 %
#: of it. Where everything shares two cores (the services, Redis, 2N phones, the
#: generator and other work), 800 and 400 calls failed: INVITEs and BYEs got 503
#: when keyagreement and signaling ran out of Redis connections (MaxConnectionsError
#: from their pool of 64), relay releases missed their deadline. 200 held.
RELAY_CORE_CALLS = 1000
DEFAULT_CALLS = 200
#: Phones connecting and registering at once while the soak starts.
CONNECT_BATCH = 20
#: Seconds the platform gets, once the last call ended, to release what it held.
SETTLE_TIMEOUT = 30.0
#: Seconds `up`'s processes get to be gone after it stopped.
EXIT_TIMEOUT = 20.0


@dataclass
class Options:
    calls: int
    seconds: float
    hold: float
    reregister: float
    sample: float
    warmup: float
    rss_bound: float
    check_rss: bool
    #: A CSV file for every RSS and CPU sample (default: none).
    samples: Path | None = None
    #: Where the services' log lines go (default: a temporary file), and their level.
    log: Path | None = None
    log_level: str = "warning"


@dataclass
class Result:
    """What a soak saw; ``problems`` is empty when it passed."""

    options: Options
    tally: Tally
    keys: Keys
    relay: RelayPorts
    left_processes: list[int]
    slopes: dict[str, tuple[float, int, int]]
    elapsed: float

    @property
    def problems(self) -> list[str]:
        found = []
        if self.tally.failed:
            found.append(f"{self.tally.failed} failed calls")
        if self.tally.attempts != self.tally.completed + self.tally.failed:
            found.append("call attempts unaccounted for")
        if not self.tally.completed:
            found.append("no call completed")
        if sum(self.tally.registration_failures.values()):
            found.append("failed registrations")
        if self.relay.calls != 0 or self.relay.leaked != 0:
            found.append(f"relay: {self.relay.summary()}")
        if self.keys.leaked:
            found.append(f"{len(self.keys.leaked)} leaked Redis keys")
        if self.left_processes:
            found.append(f"processes left: {self.left_processes}")
        if self.options.check_rss:
            found += [
                f"{name} RSS grows {slope:.0f} KiB/min"
                for name, (slope, _, _) in self.slopes.items()
                if slope > self.options.rss_bound
            ]
        return found

    def report(self) -> str:
        t, o = self.tally, self.options
        lines = [
            f"soak: {o.calls} concurrent ZRTP calls (most at once {t.most_at_once}),"
            f" hold ~{o.hold:g} s, {self.elapsed:.0f} s",
            f"calls: {t.attempts} attempts, {t.completed} completed, {t.failed} failed",
            *(f"  failed {count}x: {reason}" for reason, count in t.failures.most_common()),
            f"registrations: {t.registrations}, failed {sum(t.registration_failures.values())}"
            + "".join(f"; {r} {c}x" for r, c in t.registration_failures.items()),
            f"media: {t.sent} packets sent, {t.received} received (loss {t.loss * 100:.2f} %)",
            f"relay at the end: {self.relay.summary()}",
            f"redis at the end: {self.keys.summary()}",
            *(f"  leaked {key}: {why}" for key, why in sorted(self.keys.leaked.items())[:20]),
            f"processes left after up stopped: {len(self.left_processes)}",
            f"RSS slope from {o.warmup:g} s into the load (bound {o.rss_bound:g} KiB/min"
            f"{'' if o.check_rss else ', reported only'}):",
            *(
                f"  {name:<13} {slope:>+9.1f} KiB/min"
                f"  ({first / 1024:.1f} -> {last / 1024:.1f} MiB)"
                for name, (slope, first, last) in sorted(self.slopes.items())
            ),
            "PASS" if not self.problems else "FAIL: " + "; ".join(self.problems),
        ]
        return "\n".join(lines)


def tools_missing(what: str) -> bool:
    """Whether a tool the soak's media needs is missing (then said on stderr)."""
    missing = [tool for tool in ("cc", "redis-server") if not shutil.which(tool)]
    if missing:
        print(f"{what} needs {', '.join(missing)}", file=sys.stderr)
    return bool(missing)


def platform_settings(calls: int, phones: int, log_level: str) -> dict[str, str]:
    """`up`'s settings for ``calls`` at once between ``phones`` (each a TLS
    connection). Every phone is on 127.0.0.1, one source address, so the
    per-source limits (meant for one stranger) are sized for the whole load."""
    return {
        "QW_LOG_LEVEL": log_level,
        "QW_SIP_RATE_LIMIT": str(max(50, 4 * calls)),
        "QW_SIP_RATE_BURST": str(max(200, 8 * calls)),
        "QW_SIP_MAX_CONNECTIONS_PER_SOURCE": str(phones + 16),
        "QW_SIP_MAX_TRANSACTIONS_PER_SOURCE": str(max(500, 4 * calls)),
    }


async def add_users(platform: Platform, count: int) -> dict[str, str]:
    """``count`` users made for the soak, and their passwords."""
    # `up`'s config file holds every service's settings; each must be known to read it.
    assert {KeyAgreementSettings, RelaySettings}
    settings = load_settings(UserAdminSettings, platform.config)
    client = redis_client(settings)
    users = {f"soak{n:04d}": f"soak-password-{n:04d}" for n in range(count)}
    try:
        store = UserStore(client, settings.sip_domain, settings.digest_algorithms)
        for name, password in users.items():
            await store.put(name, password)
    finally:
        await client.aclose()
    return users


async def settle(platform: Platform, relay_metrics: str) -> tuple[RelayPorts, Keys]:
    """The relay's ports and Redis's keys, once clean or after SETTLE_TIMEOUT."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_TIMEOUT
    sync = platform.redis()
    try:
        while True:
            ports = await asyncio.to_thread(relay_ports, relay_metrics)
            keys = await asyncio.to_thread(classify_keys, sync)
            clean = ports.calls == 0 and ports.leaked == 0 and not keys.leaked
            if clean or loop.time() > deadline:
                return ports, keys
            await asyncio.sleep(1)
    finally:
        sync.close()


def async_redis(platform: Platform) -> redis.Redis:
    """A client of the platform's Redis for the soak's own reads."""
    config = yaml.safe_load(platform.config.read_text())
    # Calls wait their turn for a connection rather than fail when all are busy.
    pool = redis.BlockingConnectionPool.from_url(
        config["redis_url"], password=config["redis_password"], max_connections=32, timeout=30
    )
    return redis.Redis(connection_pool=pool)


async def soak(platform: Platform, options: Options, work: Path, processes: Processes) -> Result:
    loop = asyncio.get_running_loop()
    status = platform.status()
    pids = {name: int(s["pid"]) for name, s in status["services"].items()}
    pids["redis"] = int(status["redis"]["pid"])
    processes.look()
    memory = Memory()
    tally = Tally()
    users = await add_users(platform, 2 * options.calls)
    generator = Generator(build(work))
    client = async_redis(platform)
    phones: list[Phone] = []
    started = loop.time()
    try:

        async def connect(user: str, password: str) -> Phone:
            connection = await SipConnection.open(DOMAIN, platform.sip_port, platform.ca)
            made = Phone(UserAgent(connection, user, password, DOMAIN, platform.sip_port), tally)
            await made.register(expires(options.reregister))
            return made

        names = list(users.items())
        for start in range(0, len(names), CONNECT_BATCH):
            batch = names[start : start + CONNECT_BATCH]
            phones += await asyncio.gather(*(connect(user, password) for user, password in batch))
        ramp = min(options.hold, 30.0)
        until = loop.time() + options.seconds
        tasks = [asyncio.create_task(phone.refresh(options.reregister, until)) for phone in phones]

        async def delayed(index: int) -> None:
            await asyncio.sleep(ramp * index / options.calls)
            first, second = phones[2 * index], phones[2 * index + 1]
            await slot(first, second, options.hold, until, generator, client, tally)

        tasks += [asyncio.create_task(delayed(n)) for n in range(options.calls)]
        steady_from = until - options.seconds - started + max(ramp, options.warmup)
        last_line = 0.0
        while not all(task.done() for task in tasks):
            now = loop.time() - started
            memory.sample(now, pids)
            processes.look()
            if now - last_line >= 30:
                last_line = now
                print(
                    f"[{now:5.0f} s] calls in progress {tally.in_progress}, attempts"
                    f" {tally.attempts}, completed {tally.completed}, failed {tally.failed}",
                    flush=True,
                )
            await asyncio.wait(tasks, timeout=options.sample)
        for task in tasks:
            task.result()
        if options.samples is not None:
            options.samples.write_text("\n".join(["seconds,service,rss_kib,cpu_s", *memory.lines]))
        ports, keys = await settle(platform, status["services"]["relay"]["metrics"])
    finally:
        for phone in phones:
            with contextlib.suppress(Exception):
                await phone.ua.close()
        generator.close()
        await client.aclose()
    return Result(
        options,
        tally,
        keys,
        ports,
        [],
        memory.slopes((steady_from, until - started)),
        loop.time() - started,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=DEFAULT_CALLS)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--hold", type=float, default=30.0, help="mean seconds a call lasts")
    parser.add_argument("--reregister", type=float, default=60.0)
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument(
        "--warmup", type=float, help="seconds of load before RSS is judged (default: half)"
    )
    parser.add_argument("--rss-bound", type=float, default=256.0, help="KiB/min")
    parser.add_argument("--no-rss", action="store_true", help="report RSS slopes only")
    parser.add_argument("--samples", type=Path, help="CSV: seconds,service,rss_kib,cpu_s")
    parser.add_argument("--log", type=Path, help="the services' log lines (default: dropped)")
    parser.add_argument("--log-level", default="warning", help="the services' QW_LOG_LEVEL")
    args = parser.parse_args()
    if tools_missing("soak"):
        return 2
    options = Options(
        args.calls,
        args.seconds,
        args.hold,
        args.reregister,
        args.sample,
        args.warmup if args.warmup is not None else args.seconds / 2,
        args.rss_bound,
        not args.no_rss,
        args.samples,
        args.log,
        args.log_level,
    )
    result = run(options)
    print(result.report())
    return 1 if result.problems else 0


def run(options: Options) -> Result:
    with tempfile.TemporaryDirectory(prefix="qw-soak-") as tmp:
        work = Path(tmp)
        with (
            (options.log or work / "services.log").open("w") as log,
            running_platform(
                work, log, **platform_settings(options.calls, 2 * options.calls, options.log_level)
            ) as platform,
        ):
            processes = Processes(platform.process.pid)
            result = asyncio.run(soak(platform, options, work, processes))
        deadline = time.monotonic() + EXIT_TIMEOUT
        while processes.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        result.left_processes = processes.alive()
        return result


if __name__ == "__main__":
    sys.exit(main())
