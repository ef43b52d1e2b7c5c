"""`make bench`, media part: RTP through the quietwire relay vs rtpengine.

Each relay gets one core (``taskset``); the load, ``rtpload`` (C, built here
from ``bench/rtpload.c``), runs on the other. A third contender, run as root,
is quietwire forwarding settled calls in the kernel (QW_RELAY_KERNEL_FORWARDING)
in a network namespace of its own, the generator on the other end of a veth
pair. Kernel forwarding runs in softirq on whatever core the packet arrives,
not in the relay's process, so every contender is also measured by the whole
machine's CPU beyond the generator's own (the generator alone on the same
load): that is the relay's cost wherever it is spent. A call is two UDP sockets in
the generator, one per side, each sending 172-byte packets at 50/s to its leg
of the relay and receiving the other side's. Calls are set up the way each
relay is driven in production: gRPC Allocate + Update for quietwire, the ng
protocol (offer/answer over UDP, bencode) for rtpengine.

For each number of concurrent calls we report loss, one-way latency p50/p99
(generator to generator, through the relay), and the relay's CPU (share of its
core) and resident memory per 1,000 calls; then the most calls each relay held
with under 0.1 % loss, and the ratios. The first line is the generator looping
to itself (no relay): the ceiling of what this load can show.

The machine is shared and noisy, so both relays run side by side and take
turns on the same load, several rounds each, and the medians are reported.
Each measured run follows a second of unmeasured media on the same calls
(and the relay's catching up with it): what is measured is calls in
progress, not a thousand calls starting within the same 20 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from quietwire.rpc.relay.v1 import relay_pb2 as pb
from quietwire.rpc.relay.v1 import relay_pb2_grpc

from bench.processes import cpu_seconds, machine_cpu_seconds, redis_server, wait_port
from tests.conftest import free_port
from tests.netns import Netns, available, netns

HERE = Path(__file__).resolve().parent
RELAY_CORE, LOAD_CORE = "1", "0"
RATE = 50
WARMUP_SECONDS = 1.0
MAX_LOSS = 0.001
MAX_P99_US = 50_000  # a relay whose queue grows is not holding the load
PORTS = (40000, 49999)


@dataclass
class Run:
    calls: int
    sent: int
    received: int
    p50_us: float
    p99_us: float
    relay_cpu: float  # share of one core during the run
    rss_kib_per_1000: float
    machine_cpu: float = 0.0  # share of one core, all cores busy, generator included

    @property
    def loss(self) -> float:
        return 1 - self.received / self.sent if self.sent else 1.0


def build_rtpload(work: Path) -> Path:
    binary = work / "rtpload"
    subprocess.run(
        ["cc", "-O2", "-o", str(binary), str(HERE / "rtpload.c")], check=True, capture_output=True
    )
    return binary


def udp_socket(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind((host, 0))
    return sock


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def generate(
    rtpload: Path, streams: list[tuple[socket.socket, int]], seconds: float, host: str = "127.0.0.1"
) -> tuple[int, int, float, float]:
    """Run the generator over (socket, relay port) streams to ``host``: sent,
    received, p50, p99."""
    args = [f"{sock.fileno()}:{host}:{port}" for sock, port in streams]
    done = subprocess.run(
        ["taskset", "-c", LOAD_CORE, str(rtpload), str(seconds), str(RATE), *args],
        pass_fds=[sock.fileno() for sock, _ in streams],
        capture_output=True,
        text=True,
        check=True,
    )
    sent, received, _, p50, p99, _ = done.stdout.split()
    return int(sent), int(received), float(p50), float(p99)


class Relay:
    name = ""
    pid = 0
    #: Where the relay takes media, and where the generator's sockets are.
    host = phone_host = "127.0.0.1"

    def running(self) -> contextlib.AbstractContextManager[Relay]:
        raise NotImplementedError

    def setup(self, calls: int) -> list[tuple[socket.socket, int]]:
        """Create ``calls`` calls; the generator's streams (two per call)."""
        raise NotImplementedError

    def teardown(self) -> None:
        raise NotImplementedError


class Quietwire(Relay):
    name = "quietwire"

    def __init__(self, work: Path) -> None:
        self.work = work
        self.grpc_port = free_port()
        self.calls: list[str] = []
        self.sockets: list[socket.socket] = []
        #: Run the relay under this (a network namespace), with these settings added.
        self.prefix: list[str] = []
        self.settings: dict[str, str] = {}

    @contextlib.contextmanager
    def running(self) -> Iterator[Quietwire]:
        with redis_server(self.work, LOAD_CORE) as (_, redis_port):
            env = {
                **os.environ,
                "QW_REDIS_URL": f"unix://{self.work / f'redis-{redis_port}.sock'}",
                "QW_GRPC_INSECURE": "true",
                "QW_GRPC_BIND": self.host,
                "QW_GRPC_PORT": str(self.grpc_port),
                "QW_METRICS_PORT": "0",
                "QW_RELAY_BIND": self.host,
                "QW_RELAY_ADVERTISE": self.host,
                "QW_RELAY_PORT_MIN": str(PORTS[0]),
                "QW_RELAY_PORT_MAX": str(PORTS[1]),
                "QW_RELAY_MEDIA_TIMEOUT": "600",
                "QW_RELAY_PEER_ALLOW": "127.0.0.0/8",  # the load generator's phones
                "QW_LOG_LEVEL": "warning",
                **self.settings,
            }
            relay = subprocess.Popen(
                [
                    *self.prefix,
                    *("taskset", "-c", RELAY_CORE, sys.executable, "-m", "quietwire", "relay"),
                ],
                env=env,
                stderr=(self.work / f"{self.name}.log").open("w"),
            )
            try:
                wait_port(self.grpc_port, relay, "quietwire relay", host=self.host)
                self.pid = relay.pid
                with grpc.insecure_channel(f"{self.host}:{self.grpc_port}") as channel:
                    self.stub = relay_pb2_grpc.RelayStub(channel)
                    yield self
            finally:
                relay.terminate()
                relay.wait(20)

    def setup(self, calls: int) -> list[tuple[socket.socket, int]]:
        sides = (pb.LEG_SIDE_CALLER, pb.LEG_SIDE_CALLEE)
        streams = []
        for n in range(calls):
            call_id = f"bench-{n}#0"
            legs = [pb.LegSpec(side=side, rtcp_mux=True) for side in sides]
            allocated = self.stub.Allocate(pb.AllocateRequest(call_id=call_id, legs=legs))
            ports = {leg.side: leg.rtp.port for leg in allocated.legs}
            for side in sides:
                sock = udp_socket(self.phone_host)
                here = pb.Address(host=self.phone_host, port=port_of(sock))
                self.stub.Update(
                    pb.UpdateRequest(call_id=call_id, side=side, remote_rtp=here, remote_rtcp=here)
                )
                streams.append((sock, ports[side]))
                self.sockets.append(sock)
            self.calls.append(call_id)
        return streams

    def teardown(self) -> None:
        for call_id in self.calls:
            self.stub.Release(pb.ReleaseRequest(call_id=call_id))
        self.calls.clear()
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()


class QuietwireKernel(Quietwire):
    """quietwire with kernel forwarding, in a network namespace of its own."""

    name = "qw-kernel"

    @contextlib.contextmanager
    def running(self) -> Iterator[Quietwire]:
        sysctls = {"net.ipv4.ip_forward": "1", "net.netfilter.nf_conntrack_acct": "1"}
        with netns(sysctls) as space:
            # Packets arriving in the namespace are handled (NAT, forwarding) on
            # the relay's core, not in the generator's softirq.
            rps = f"/sys/class/net/{space.interface}/queues/rx-0/rps_cpus"
            space.run("sh", "-c", f"echo {1 << int(RELAY_CORE):x} > {rps}")
            self.space: Netns = space
            self.host, self.phone_host = space.inside, space.outside
            self.prefix = space.prefix
            self.settings = {"QW_RELAY_KERNEL_FORWARDING": "true"}
            with super().running() as running:
                yield running


class Rtpengine(Relay):
    name = "rtpengine"

    def __init__(self, work: Path) -> None:
        self.work = work
        self.ng_port = free_port()
        self.calls: list[str] = []
        self.sockets: list[socket.socket] = []
        self.control = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.control.settimeout(5)

    @contextlib.contextmanager
    def running(self) -> Iterator[Rtpengine]:
        daemon = subprocess.Popen(
            [
                *("taskset", "-c", RELAY_CORE, "rtpengine", "--table=-1", "--foreground"),
                *("--log-stderr", "--log-level=3", "--interface=127.0.0.1", "--num-threads=1"),
                *(f"--listen-ng=127.0.0.1:{self.ng_port}", f"--port-min={PORTS[0]}"),
                *(f"--port-max={PORTS[1]}", "--delete-delay=0", "--timeout=600"),
            ],
            stderr=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        try:
            self.pid = daemon.pid
            deadline = time.monotonic() + 10
            while True:
                try:
                    self.ng({"command": "ping"})
                    break
                except OSError:
                    if time.monotonic() > deadline or daemon.poll() is not None:
                        raise
            yield self
        finally:
            daemon.terminate()
            daemon.wait(20)
            self.control.close()

    def ng(self, command: dict[str, str]) -> dict[str, bytes]:
        cookie = os.urandom(6).hex()
        self.control.sendto(f"{cookie} ".encode() + bencode(command), ("127.0.0.1", self.ng_port))
        while True:
            data = self.control.recv(65536)
            if data.startswith(cookie.encode()):
                answer = bdecode(data.split(b" ", 1)[1])
                if answer.get("result") not in (b"ok", b"pong"):
                    raise RuntimeError(f"rtpengine: {answer}")
                return answer

    def setup(self, calls: int) -> list[tuple[socket.socket, int]]:
        streams = []
        for n in range(calls):
            call_id = f"bench-{n}"
            caller, callee = udp_socket(), udp_socket()
            tags = {"call-id": call_id, "from-tag": "a", "to-tag": "b"}
            offer = self.ng({"command": "offer", "sdp": sdp(port_of(caller))} | tags)
            answer = self.ng({"command": "answer", "sdp": sdp(port_of(callee))} | tags)
            streams += [(caller, sdp_port(answer["sdp"])), (callee, sdp_port(offer["sdp"]))]
            self.sockets += [caller, callee]
            self.calls.append(call_id)
        return streams

    def teardown(self) -> None:
        for call_id in self.calls:
            self.ng({"command": "delete", "call-id": call_id, "from-tag": "a"})
        self.calls.clear()
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()


def sdp(port: int) -> str:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\n"
    )


def sdp_port(body: bytes) -> int:
    for line in body.decode().splitlines():
        if line.startswith("m=audio "):
            return int(line.split()[1])
    raise RuntimeError("no m=audio in rtpengine's SDP")


def bencode(value: dict[str, str]) -> bytes:
    out = b"d"
    for key in sorted(value):
        for item in (key, value[key]):
            raw = item.encode()
            out += str(len(raw)).encode() + b":" + raw
    return out + b"e"


def bdecode(data: bytes) -> dict[str, bytes]:
    """The top-level dictionary of an ng reply; nested values are kept undecoded."""
    found: dict[str, bytes] = {}
    position = 1
    while data[position : position + 1] != b"e":
        key, position = _bstring(data, position)
        start = position
        position = _bskip(data, position)
        raw = data[start:position]
        found[key.decode()] = _bstring(raw, 0)[0] if raw[:1].isdigit() else raw
    return found


def _bstring(data: bytes, position: int) -> tuple[bytes, int]:
    colon = data.index(b":", position)
    length = int(data[position:colon])
    return data[colon + 1 : colon + 1 + length], colon + 1 + length


def _bskip(data: bytes, position: int) -> int:
    kind = data[position : position + 1]
    if kind.isdigit():
        return _bstring(data, position)[1]
    if kind == b"i":
        return data.index(b"e", position) + 1
    position += 1  # a list or a dictionary
    while data[position : position + 1] != b"e":
        position = _bskip(data, position)
    return position + 1


def measure(relay: Relay, rtpload: Path, calls: int, seconds: float) -> Run:
    before_rss = rss_kib(relay.pid)
    streams = relay.setup(calls)
    try:
        generate(rtpload, streams, WARMUP_SECONDS, relay.host)
        quiet(relay.pid)
        for sock, _ in streams:
            drain(sock)
        rss = rss_kib(relay.pid) - before_rss
        cpu_before, machine_before = cpu_seconds([relay.pid]), machine_cpu_seconds()
        started = time.monotonic()
        sent, received, p50, p99 = generate(rtpload, streams, seconds, relay.host)
        elapsed = time.monotonic() - started
        cpu = (cpu_seconds([relay.pid]) - cpu_before) / elapsed
        machine = (machine_cpu_seconds() - machine_before) / elapsed
    finally:
        relay.teardown()
    return Run(calls, sent, received, p50, p99, cpu, rss * 1000 / calls, machine)


def quiet(pid: int, most: float = 15.0) -> None:
    """Wait (``most`` seconds at most) until the relay is done with the warm-up's
    packets: what it still had queued would count late in the measured run."""
    deadline = time.monotonic() + most
    while time.monotonic() < deadline:
        before = cpu_seconds([pid])
        time.sleep(0.5)
        if cpu_seconds([pid]) - before < 0.1:
            return


def drain(sock: socket.socket) -> None:
    """Drop what the warm-up left in a generator socket."""
    sock.setblocking(False)
    try:
        while True:
            sock.recv(2048)
    except OSError:
        pass
    finally:
        sock.setblocking(True)


def self_loop(rtpload: Path, calls: int, seconds: float) -> Run:
    pairs = [(udp_socket(), udp_socket()) for _ in range(calls)]
    streams = [s for a, b in pairs for s in ((a, port_of(b)), (b, port_of(a)))]
    try:
        machine_before, started = machine_cpu_seconds(), time.monotonic()
        sent, received, p50, p99 = generate(rtpload, streams, seconds)
        machine = (machine_cpu_seconds() - machine_before) / (time.monotonic() - started)
    finally:
        for a, b in pairs:
            a.close()
            b.close()
    return Run(calls, sent, received, p50, p99, 0.0, 0.0, machine)


def median(runs: list[Run]) -> Run:
    """Each figure's median over the rounds (loss: that of the median round by loss)."""

    def middle(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    by_loss = sorted(runs, key=lambda run: run.loss)[len(runs) // 2]
    return Run(
        runs[0].calls,
        by_loss.sent,
        by_loss.received,
        middle([run.p50_us for run in runs]),
        middle([run.p99_us for run in runs]),
        middle([run.relay_cpu for run in runs]),
        middle([run.rss_kib_per_1000 for run in runs]),
        middle([run.machine_cpu for run in runs]),
    )


def line(name: str, run: Run, generator: float) -> str:
    """``generator``: the machine's CPU for the generator alone on this load."""
    beyond = (run.machine_cpu - generator) * 1000 / run.calls
    return (
        f"{name:<10} {run.calls:>6} {run.loss * 100:>7.3f}% {run.p50_us / 1000:>8.2f}"
        f" {run.p99_us / 1000:>8.2f} {run.relay_cpu * 100:>6.0f}%"
        f" {run.relay_cpu * 1000 / run.calls:>8.2f} {run.rss_kib_per_1000 / 1024:>8.1f}"
        f" {beyond:>9.2f}"
    )


def contenders(work: Path) -> list[Relay]:
    found: list[Relay] = [Quietwire(work), Rtpengine(work)]
    if available():
        found.insert(1, QuietwireKernel(work))
    else:
        print("kernel forwarding not measured: a network namespace needs root")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="250,500,750,1000,1250")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    tools = ("cc", "rtpengine", "redis-server", "taskset")
    missing = [tool for tool in tools if not shutil.which(tool)]
    if missing:
        print(f"media benchmark skipped: missing {', '.join(missing)}")
        return 0
    ladder = [int(n) for n in options.calls.split(",")]
    with tempfile.TemporaryDirectory(prefix="qw-bench-relay-") as tmp:
        work = Path(tmp)
        rtpload = build_rtpload(work)
        print(
            "media relay: N calls x 2 streams of 172-byte packets at 50/s; relay on one core;"
            f" medians of {options.rounds} rounds; mach/1k: cores per 1,000 calls the whole"
            " machine spent beyond the generator's own"
        )
        print(
            f"{'relay':<10} {'calls':>6} {'loss':>8} {'p50 ms':>8} {'p99 ms':>8} {'cpu':>7}"
            f" {'cores/1k':>8} {'MiB/1k':>8} {'mach/1k':>9}"
        )
        generator: dict[int, float] = {}
        for n in ladder:
            run = median([self_loop(rtpload, n, options.seconds) for _ in range(options.rounds)])
            generator[n] = run.machine_cpu
            print(line("generator", run, 0.0), flush=True)
        with contextlib.ExitStack() as stack:
            relays = [stack.enter_context(relay.running()) for relay in contenders(work)]
            results: dict[str, dict[int, Run]] = {relay.name: {} for relay in relays}
            for n in ladder:
                rounds: dict[str, list[Run]] = {relay.name: [] for relay in relays}
                for _ in range(options.rounds):
                    for relay in relays:
                        rounds[relay.name].append(measure(relay, rtpload, n, options.seconds))
                for relay in relays:
                    results[relay.name][n] = median(rounds[relay.name])
                    print(line(relay.name, results[relay.name][n], generator[n]), flush=True)
        for line_ in summary(results, generator):
            print(line_)
    return 0


def summary(results: dict[str, dict[int, Run]], generator: dict[int, float]) -> list[str]:
    """The most calls each held (< 0.1 % loss, p99 < 50 ms), and each one's cost
    against rtpengine's where both carried the whole load (< 0.1 % loss): its own
    process's CPU, and the machine's CPU beyond the generator."""
    theirs = results["rtpengine"]
    most_theirs = held(theirs)
    lines = []
    for name, ours in results.items():
        if name == "rtpengine":
            continue
        both = [n for n in ours if n in theirs and max(ours[n].loss, theirs[n].loss) < MAX_LOSS]
        most = held(ours)
        calls_ratio = f"{most / most_theirs:.2f}" if most_theirs else "n/a"
        process, machine = "n/a", "n/a"
        if both:
            own = sum(ours[n].relay_cpu for n in both)
            process = f"{own / sum(theirs[n].relay_cpu for n in both):.2f}"
            beyond = sum(ours[n].machine_cpu - generator[n] for n in both)
            machine = f"{beyond / sum(theirs[n].machine_cpu - generator[n] for n in both):.2f}"
        lines.append(
            f"{name}: most calls held {most}, rtpengine {most_theirs} (ratio {calls_ratio});"
            f" CPU vs rtpengine where both lost nothing ({', '.join(map(str, both)) or 'none'}):"
            f" process {process}, machine {machine}"
        )
    return lines


def held(runs: dict[int, Run]) -> int:
    return max((n for n, run in runs.items() if holds(run)), default=0)


def holds(run: Run) -> bool:
    return run.loss < MAX_LOSS and run.p99_us < MAX_P99_US


if __name__ == "__main__":
    sys.exit(main())
