"""`make bench`, signaling part: quietwire vs Kamailio over TLS, two loads.

- REGISTER with digest: REGISTER, 401, REGISTER, 200; the time is from the
  first REGISTER to the 200.
- Call setup and teardown through the proxy: INVITE, 407, ACK, INVITE with
  credentials, forwarded to a registered callee down its connection, 200,
  ACK, BYE, 200; the time is from the first INVITE to the 200. SDP passes
  through on both sides (quietwire ``QW_SIP_MEDIA=passthrough``): media
  anchoring is measured by ``bench.relay``.

Both servers get one core (``taskset``); the load (sipp behind stunnel, which
adds the TLS sipp lacks) runs on the other. For each offered rate we report the
rate achieved, failures, p50/p99 times, and the server's CPU per operation read
from /proc (quietwire counts its Redis too). The machine is shared and noisy:
compare CPU per operation and the ratios, not raw rates. ``--rounds R`` runs
every step R times, the two servers in turn (which goes first alternates), and
reports each step's medians and the ratio of each round — quietwire's figures
over Kamailio's from the same round, minutes apart — with their median: a
machine that slows down over a run then weighs on both sides. (:class:`Quietwire`
and :class:`Kamailio` can be given more cores and workers: ``bench.storm
--cores``.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.processes import (
    cpu_seconds,
    descendants,
    redis_server,
    wait_port,
    wait_ready,
)
from tests.conftest import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SERVER_CORE, LOAD_CORE = "1", "0"
DOMAIN = "127.0.0.1"
USER, PASSWORD = "user0", "password-00000"
CALLEE, CALLEE_PASSWORD = "user1", "password-11111"


@dataclass(frozen=True)
class Load:
    """One kind of sipp load: its scenario and the arguments naming its user."""

    name: str
    scenario: Path
    args: tuple[str, ...]


#: sipp's digest ``uri`` is its remote address (here stunnel's port) unless told:
#: quietwire holds it to the Request-URI (RFC 7616 section 3.4.6), so it is told.
REGISTER = Load(
    "REGISTER",
    HERE / "register.xml",
    ("-s", USER, "-au", USER, "-ap", PASSWORD, "-auth_uri", DOMAIN),
)
CALL = Load(
    "call",
    HERE / "call_uac.xml",
    (
        *("-s", USER, "-au", USER, "-ap", PASSWORD, "-key", "callee", CALLEE),
        *("-auth_uri", f"{CALLEE}@{DOMAIN}"),
    ),
)


@dataclass
class Result:
    offered: float
    achieved: float
    ok: int
    failed: int
    p50_ms: float
    p99_ms: float
    cpu_us: float


class Server:
    name = ""
    port = 0

    def pids(self) -> list[int]:
        raise NotImplementedError


class Quietwire(Server):
    name = "quietwire"

    def __init__(
        self,
        work: Path,
        users: list[tuple[str, str]],
        env: Mapping[str, str] | None = None,
        wrapper: tuple[str, ...] = (),
        start_timeout: float = 20.0,
        cores: Sequence[str] = (SERVER_CORE,),
        workers: int = 1,
    ) -> None:
        """``env``: settings over the benchmark's own (the storm's connection caps);
        ``wrapper``: a command the service runs under (``bench.instructions``: valgrind);
        ``cores``: where signaling and its Redis run (``taskset``); ``workers``:
        signaling processes sharing the SIP port (SO_REUSEPORT), as ``quietwire up
        --signaling N`` runs them, each its own replica."""
        from quietwire.embedded.pki import ensure_pki
        from quietwire.embedded.up import signaling_names

        self.pki = ensure_pki(work / "pki", DOMAIN)
        self.work, self.users, self.env = work, users, dict(env or {})
        self.wrapper, self.start_timeout = wrapper, start_timeout
        self.cores = ",".join(cores)
        #: The workers' names, also their replica ids (what their bindings in Redis name).
        self.workers = signaling_names(workers)
        self.port = free_port()
        self.redis_url = ""

    @contextlib.contextmanager
    def running(self) -> Iterator[Quietwire]:
        with redis_server(self.work, self.cores) as (redis, redis_port):
            url = self.redis_url = f"redis://127.0.0.1:{redis_port}/0"
            asyncio.run(add_users(url, self.users))
            env = {**os.environ, "QW_REDIS_URL": url, "QW_SIP_DOMAIN": DOMAIN}
            env.update(
                {
                    "QW_GRPC_INSECURE": "true",
                    "QW_GRPC_PORT": "0",
                    "QW_METRICS_PORT": "0",
                    "QW_SIP_BIND": "127.0.0.1",
                    "QW_SIP_PORT": str(self.port),
                    "QW_SIP_TLS_CERT": str(self.pki.sip_cert),
                    "QW_SIP_TLS_KEY": str(self.pki.sip_key),
                    "QW_SIP_DIGEST_ALGORITHMS": "MD5",
                    "QW_SIP_RATE_LIMIT": "100000",
                    "QW_SIP_RATE_BURST": "100000",
                    # All of sipp's calls come from one address (stunnel's).
                    "QW_SIP_MAX_TRANSACTIONS_PER_SOURCE": "20000",
                    "QW_SIP_MEDIA": "passthrough",
                    "QW_DRAIN_TIMEOUT": "2",
                    "QW_LOG_LEVEL": "warning",
                    "QW_SIP_REUSE_PORT": "true" if len(self.workers) > 1 else "false",
                    **self.env,
                }
            )
            services: list[subprocess.Popen[bytes]] = []
            try:
                for name in self.workers:
                    services.append(self._start(name, env))
                self._pids = [redis.pid, *(service.pid for service in services)]
                yield self
            finally:
                for service in services:
                    stop(service)

    def _start(self, name: str, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        """One signaling worker, once it listens (it says so on ``QW_READY_FD``)."""
        read_end, write_end = os.pipe()
        try:
            service = subprocess.Popen(
                [
                    *("taskset", "-c", self.cores, *self.wrapper),
                    *(sys.executable, "-m", "quietwire", "signaling"),
                ],
                env={**env, "QW_REPLICA_ID": name, "QW_READY_FD": str(write_end)},
                pass_fds=(write_end,),
                stderr=subprocess.DEVNULL,
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        wait_ready(read_end, service, f"quietwire {name}", self.start_timeout)
        return service

    def pids(self) -> list[int]:
        """Redis's, then each worker's."""
        return self._pids


def stop(process: subprocess.Popen[bytes], grace: float = 60.0) -> None:
    """SIGTERM, and SIGKILL if it has not exited within ``grace`` seconds (said on stderr)."""
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        print(f"bench: pid {process.pid} did not stop in {grace:.0f} s: killed", file=sys.stderr)
        process.kill()
        process.wait()


async def add_users(url: str, users: list[tuple[str, str]]) -> None:
    """The users, as ``quietwire user add`` stores them (MD5 HA1 only, as the bench runs)."""
    import redis.asyncio as redis
    from quietwire.protocols.sip.digest import DigestAlgorithm
    from quietwire.signaling.users import UserStore

    client = redis.Redis.from_url(url)
    try:
        store = UserStore(client, DOMAIN, (DigestAlgorithm.MD5,))
        for user, password in users:
            await store.put(user, password)
    finally:
        await client.aclose()


class Kamailio(Server):
    name = "kamailio"

    def __init__(
        self,
        work: Path,
        users: list[tuple[str, str]],
        pki_dir: Path,
        shm_mb: int = 256,
        pkg_mb: int = 16,
        cores: Sequence[str] = (SERVER_CORE,),
        children: int = 1,
    ) -> None:
        """``pkg_mb``: each process's private memory, where the users' lines of the
        configuration are held (the storm's thousands need more); ``cores``: where
        it runs (``taskset``); ``children``: its worker processes per transport
        (``children`` and ``tcp_children``: TLS is served by the latter)."""
        self.work, self.users = work, users
        self.cores, self.children = ",".join(cores), children
        self.port = free_port()
        self.pki_dir = pki_dir
        self.shm_mb, self.pkg_mb = shm_mb, pkg_mb
        self.control = work / "kamailio-ctl.sock"

    @contextlib.contextmanager
    def running(self) -> Iterator[Kamailio]:
        tls = self.work / "kamailio-tls.cfg"
        tls.write_text(
            "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\n"
            f"require_certificate = no\nprivate_key = {self.pki_dir / 'sip.key'}\n"
            f"certificate = {self.pki_dir / 'sip.pem'}\n",
            encoding="utf-8",
        )
        users = "\n".join(f'    $sht(users=>{u}) = "{p}";' for u, p in self.users)
        config = (HERE / "kamailio.cfg").read_text(encoding="utf-8")
        config = config.replace("__PORT__", str(self.port)).replace("__TLS_CONFIG__", str(tls))
        config = config.replace("__USERS__", users).replace("__CTL__", str(self.control))
        config = config.replace("__CHILDREN__", str(self.children))
        path = self.work / "kamailio.cfg"
        path.write_text(config, encoding="utf-8")
        process = subprocess.Popen(
            [
                "taskset",
                "-c",
                self.cores,
                "kamailio",
                "-DD",
                "-E",
                "-f",
                str(path),
                "-P",
                str(self.work / "kamailio.pid"),
                "-Y",
                str(self.work),
                "-m",
                str(self.shm_mb),
                "-M",
                str(self.pkg_mb),
            ],
            stderr=(self.work / "kamailio.log").open("w"),
        )
        try:
            wait_port(self.port, process, "kamailio")
            self._wait_control(process)
            self._process = process
            yield self
        finally:
            stop(process)

    def pids(self) -> list[int]:
        return descendants(self._process.pid)

    def exited(self) -> str | None:
        """None while it runs; else its exit status and the last alert of its log
        (e.g. ``child process 123 exited by a signal 11``)."""
        status = self._process.poll()
        if status is None:
            return None
        log = (self.work / "kamailio.log").read_text(encoding="utf-8", errors="replace")
        alerts = [line.split(": ", 2)[-1] for line in log.splitlines() if " ALERT: " in line]
        return f"exit status {status}" + (f", {alerts[0]}" if alerts else "")

    def _wait_control(self, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
        """Wait until its control socket answers: its processes are all forked by then
        (it listens on TLS before; a SIGTERM or a ``kamcmd`` sooner can find it half up)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.shm_used()
                return
            except subprocess.CalledProcessError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("kamailio's control socket did not answer") from None
                time.sleep(0.1)

    def shm_used(self) -> int:
        """Bytes of Kamailio's shared memory in use (``core.shmmem`` real_used, over ctl)."""
        out = subprocess.run(
            ["kamcmd", "-s", f"unix:{self.control}", "core.shmmem"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        fields = dict(line.strip().split(": ", 1) for line in out.splitlines() if ": " in line)
        return int(fields["real_used"])


@contextlib.contextmanager
def tunnel(work: Path, target: int, ca: Path) -> Iterator[int]:
    port = free_port()
    config = work / f"stunnel-{target}.conf"
    config.write_text(
        f"foreground = yes\npid =\n[sip]\nclient = yes\naccept = 127.0.0.1:{port}\n"
        f"connect = 127.0.0.1:{target}\nverifyChain = yes\nCAfile = {ca}\ncheckHost = {DOMAIN}\n",
        encoding="utf-8",
    )
    process = subprocess.Popen(
        ["taskset", "-c", LOAD_CORE, "stunnel4", str(config)], stderr=subprocess.DEVNULL
    )
    try:
        wait_port(port, process, "stunnel")
        yield port
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def callee(via: int, work: Path) -> Iterator[None]:
    """A registered callee that answers every call (sipp's out-of-call scenario)."""
    run = Path(tempfile.mkdtemp(prefix="callee-", dir=work))
    process = subprocess.Popen(
        [
            *_sipp(via, HERE / "callee_register.xml"),
            "-oocsf",
            str(HERE / "callee_ooc.xml"),
            "-s",
            CALLEE,
            "-au",
            CALLEE,
            "-ap",
            CALLEE_PASSWORD,
            "-auth_uri",
            DOMAIN,
            "-t",
            "t1",
            "-m",
            "1",
            "-i",
            "127.0.0.1",
            "-p",
            str(free_port()),
            "-nostdin",
        ],
        cwd=run,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(2.0)  # registered by then; a callee that is not shows as failed calls
        yield
    finally:
        process.terminate()
        process.wait(10)


def _sipp(via: int, scenario: Path) -> list[str]:
    """sipp on the load core, through the stunnel port ``via``, playing ``scenario``."""
    return ["taskset", "-c", LOAD_CORE, "sipp", f"127.0.0.1:{via}", "-sf", str(scenario)]


def sipp_load(
    server: Server, via: int, work: Path, load: Load, rate: float, seconds: float
) -> Result:
    total = int(rate * seconds)
    run = Path(tempfile.mkdtemp(prefix=f"{server.name}-{load.name}-{int(rate)}-", dir=work))
    before = cpu_seconds(server.pids())
    started = time.monotonic()
    subprocess.run(
        [
            *_sipp(via, load.scenario),
            *load.args,
            "-t",
            "t1",
            "-r",
            str(rate),
            "-m",
            str(total),
            "-l",
            str(max(100, int(rate * 2))),
            "-i",
            "127.0.0.1",
            "-p",
            str(free_port()),
            "-timeout",
            f"{int(seconds * 3 + 10)}s",
            "-nostdin",
            "-trace_stat",
            "-trace_rtt",
            "-rtt_freq",
            "1",
            "-max_socket",
            "100",
        ],
        cwd=run,
        capture_output=True,
        text=True,
        timeout=seconds * 3 + 30,
    )
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(server.pids()) - before
    ok, failed = _counts(run)
    times = _rtts(run)
    return Result(
        offered=rate,
        achieved=ok / elapsed if elapsed else 0.0,
        ok=ok,
        failed=failed,
        p50_ms=statistics.median(times) if times else float("nan"),
        p99_ms=statistics.quantiles(times, n=100)[98] if len(times) >= 100 else float("nan"),
        cpu_us=cpu / ok * 1e6 if ok else float("nan"),
    )


def _counts(run: Path) -> tuple[int, int]:
    stats = sorted(run.glob("*_.csv"))
    if not stats:
        return 0, 0
    header, *rows = stats[-1].read_text().splitlines()
    columns = header.split(";")
    last = rows[-1].split(";")
    value = dict(zip(columns, last, strict=False))
    return int(value.get("SuccessfulCall(C)", 0)), int(value.get("FailedCall(C)", 0))


def _rtts(run: Path) -> list[float]:
    times: list[float] = []
    for path in run.glob("*_rtt.csv"):
        for line in path.read_text().splitlines()[1:]:
            fields = line.split(";")
            with contextlib.suppress(IndexError, ValueError):
                times.append(float(fields[1]))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", default="100,200,400,800", help="offered REGISTERs per second")
    parser.add_argument("--call-rates", default="25,50,100,200", help="offered calls per second")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each step")
    parser.add_argument(
        "--rounds", type=int, default=1, help="runs of every step per server, in turn (medians)"
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    missing = [
        b
        for b in ("kamailio", "sipp", "stunnel4", "redis-server", "taskset")
        if shutil.which(b) is None
    ]
    if missing:
        print(f"make bench: missing {', '.join(missing)}", file=sys.stderr)
        return 1
    steps = {
        REGISTER: [float(r) for r in args.rates.split(",")],
        CALL: [float(r) for r in args.call_rates.split(",")],
    }
    users = [(USER, PASSWORD), (CALLEE, CALLEE_PASSWORD)]
    #: Each load's runs: by server, a list of steps per round.
    rounds: dict[Load, dict[str, list[list[Result]]]] = {
        load: {"quietwire": [], "kamailio": []} for load in steps
    }
    with tempfile.TemporaryDirectory(prefix="qw-bench-") as scratch:
        work = Path(scratch)
        for name in ("qw", "kam"):
            (work / name).mkdir()
        quietwire = Quietwire(work / "qw", users)
        kamailio = Kamailio(work / "kam", users, work / "qw" / "pki")
        for index in range(args.rounds):
            servers: list[Quietwire | Kamailio] = [quietwire, kamailio]
            for server in servers if index % 2 == 0 else servers[::-1]:
                with server.running(), tunnel(work, server.port, quietwire.pki.ca) as via:
                    sipp_load(server, via, work, REGISTER, steps[REGISTER][0], 1.0)  # warm up
                    rounds[REGISTER][server.name].append(
                        [
                            sipp_load(server, via, work, REGISTER, rate, args.seconds)
                            for rate in steps[REGISTER]
                        ]
                    )
                    with callee(via, work):
                        rounds[CALL][server.name].append(
                            [
                                sipp_load(server, via, work, CALL, rate, args.seconds)
                                for rate in steps[CALL]
                            ]
                        )
    report("REGISTER with MD5 digest", rounds[REGISTER])
    report("call setup and teardown (INVITE with digest, 200, ACK, BYE)", rounds[CALL])
    return 0


def sustained(r: Result) -> bool:
    """Kept up: nothing failed, at least 95 % of the offered rate, p99 within 50 ms."""
    return r.failed == 0 and r.achieved >= 0.95 * r.offered and r.p99_ms <= 50


def median_result(runs: Sequence[Result]) -> Result:
    """One step's runs as one row: the median of each figure, and the most
    failures any run had (a step that failed once is not called sustained)."""
    return Result(
        offered=runs[0].offered,
        achieved=statistics.median(r.achieved for r in runs),
        ok=int(statistics.median(r.ok for r in runs)),
        failed=max(r.failed for r in runs),
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs),
        cpu_us=statistics.median(r.cpu_us for r in runs),
    )


def round_ratios(ours: list[Result], anchor: list[Result]) -> tuple[float | None, float | None]:
    """One round's quietwire/Kamailio CPU per operation: the median over the steps
    both sustained, and over every step where both completed operations."""
    steps = list(zip(ours, anchor, strict=True))
    clean = [q.cpu_us / k.cpu_us for q, k in steps if sustained(q) and sustained(k) and k.cpu_us]
    done = [q.cpu_us / k.cpu_us for q, k in steps if q.ok and k.ok and k.cpu_us]
    return (
        statistics.median(clean) if clean else None,
        statistics.median(done) if done else None,
    )


def report(title: str, rounds: dict[str, list[list[Result]]]) -> None:
    count = len(rounds["quietwire"])
    median_of = f", medians of {count} rounds" if count > 1 else ""
    print(f"signaling: {title} over TLS (one open connection per sipp), one core each{median_of}")
    print(
        f"{'server':10} {'offered/s':>9} {'achieved/s':>10} {'ok':>6} {'failed':>6} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'CPU us/op':>10}"
    )
    results = {
        name: [median_result(step) for step in zip(*runs, strict=True)]
        for name, runs in rounds.items()
    }
    for name, rows in results.items():
        for r in rows:
            print(
                f"{name:10} {r.offered:9.0f} {r.achieved:10.1f} {r.ok:6d} {r.failed:6d} "
                f"{r.p50_ms:7.2f} {r.p99_ms:7.2f} {r.cpu_us:10.0f}"
            )
    ratios = [
        round_ratios(q, k) for q, k in zip(rounds["quietwire"], rounds["kamailio"], strict=True)
    ]
    # On a shared machine latency is noise more often than CPU time is: the
    # ratio over every step where both completed operations, too.
    for kind, index in (("clean steps", 0), ("every step", 1)):
        each = [ratio for r in ratios if (ratio := r[index]) is not None]
        if each:
            listed = f" (rounds: {', '.join(f'{x:.2f}' for x in each)})" if count > 1 else ""
            print(
                f"quietwire/kamailio CPU per operation (median over {kind}):"
                f" {statistics.median(each):.2f}x{listed}"
            )
    best = {
        n: max((r.achieved for r in rows if sustained(r)), default=0.0)
        for n, rows in results.items()
    }
    if best["kamailio"]:
        ratio = best["quietwire"] / best["kamailio"]
        print(
            "sustained (no failure, >=95% of offered, p99 <= 50 ms):"
            f" quietwire {best['quietwire']:.0f}/s, kamailio {best['kamailio']:.0f}/s,"
            f" ratio {ratio:.2f}"
        )
    print()


if __name__ == "__main__":
    sys.exit(main())
