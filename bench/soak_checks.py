"""What a soak leaves behind, and how its services' memory moved.

- Redis: every key classified by the pattern its owner declares (the key
  constants of the services); what may stay after every call ended is users,
  user policies, live registrations, the registries (heartbeat TTLs), nonces
  with a TTL and ended call records on their short TTL. Anything else is a leak.
- Relay: its own metrics, calls with ports allocated and port pairs free.
- Processes: every process `quietwire up` ran (seen while it ran) is gone after.
- RSS: sampled per service; the least-squares slope over the steady part.
"""

from __future__ import annotations

import contextlib
import fnmatch
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import redis as redis_sync
from quietwire.keyagreement.calls import CALL_KEY, CALLS_KEY, ENDED_TTL
from quietwire.keyagreement.userpolicies import USER_POLICY_KEY
from quietwire.runtime.redisclient import text
from quietwire.runtime.registry import RELAY_KEY, RELAYS_KEY, REPLICA_KEY, REPLICAS_KEY
from quietwire.signaling.locations import LOCATION_KEY
from quietwire.signaling.users import USER_INDEX_KEY, USER_KEY

from bench.processes import cpu_seconds, descendants

#: Key kinds that may outlive every call: (kind, pattern, must it have a TTL).
KEPT = [
    ("users", USER_KEY.format(realm="*", username="*"), False),
    ("users", USER_INDEX_KEY.format(realm="*"), False),
    ("user policies", USER_POLICY_KEY, False),
    ("registrations", LOCATION_KEY.format(aor="*"), True),
    ("registry", RELAY_KEY.format(relay="*"), True),
    ("registry", RELAYS_KEY, True),
    ("registry", REPLICA_KEY.format(replica="*"), True),
    ("registry", REPLICAS_KEY, True),
]
CALL_PATTERN = CALL_KEY.format(call_id="*")


@dataclass
class Keys:
    """Redis keys by kind; ``leaked``: each leaked key and why."""

    kept: dict[str, int] = field(default_factory=dict)
    leaked: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        kept = ", ".join(f"{kind} {count}" for kind, count in sorted(self.kept.items()))
        return f"kept: {kept or 'none'}; leaked: {len(self.leaked)}"


def classify_keys(client: redis_sync.Redis) -> Keys:
    found = Keys()
    for raw in client.scan_iter(count=1000):
        key = raw.decode()
        ttl = int(client.ttl(key))
        if ttl == -2:
            continue  # expired while we looked
        kind = next((k for k, pattern, _ in KEPT if fnmatch.fnmatchcase(key, pattern)), None)
        if kind is not None:
            needs_ttl = next(t for k, p, t in KEPT if fnmatch.fnmatchcase(key, p))
            if needs_ttl and ttl < 0:
                found.leaked[key] = f"{kind} without a TTL"
            else:
                found.kept[kind] = found.kept.get(kind, 0) + 1
        elif fnmatch.fnmatchcase(key, CALL_PATTERN):
            ended = client.hget(key, "ended")
            if ended and 0 <= ttl <= ENDED_TTL:
                found.kept["ended calls (TTL)"] = found.kept.get("ended calls (TTL)", 0) + 1
            else:
                found.leaked[key] = f"call record not ended (TTL {ttl} s)"
        elif key == CALLS_KEY:
            live = [
                text(member)
                for member in client.zrange(key, 0, 4)
                if isinstance(member, bytes | str)
            ]
            if live:
                found.leaked[key] = f"live calls listed: {', '.join(live)}"
        else:
            found.leaked[key] = f"{text(client.type(key))}, TTL {ttl} s"
    return found


def metric(address: str, name: str) -> float | None:
    """One sample of a service's Prometheus metrics (``host:port``), None if absent."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    for line in text.splitlines():
        if line.startswith(f"{name} ") or line.startswith(f"{name}{{"):
            return float(line.rsplit(" ", 1)[1])
    return None


@dataclass(frozen=True)
class RelayPorts:
    calls: float
    pairs: float
    free: float

    @property
    def leaked(self) -> float:
        return self.pairs - self.free

    def summary(self) -> str:
        return f"calls {self.calls:.0f}, port pairs in use {self.leaked:.0f} of {self.pairs:.0f}"


def relay_ports(address: str) -> RelayPorts:
    values = [
        metric(address, f"quietwire_relay_{name}")
        for name in ("calls", "port_pairs", "port_pairs_free")
    ]
    calls, pairs, free = (value if value is not None else -1.0 for value in values)
    return RelayPorts(calls, pairs, free)


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot), None if it is gone or a zombie."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            return int(fields[19])
    return None


class Processes:
    """Every process under a root seen so far, by (pid, start time): PIDs get reused."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.seen: dict[int, int] = {}

    def look(self) -> None:
        for pid in descendants(self.root):
            started = start_time(pid)
            if started is not None:
                self.seen.setdefault(pid, started)

    def alive(self) -> list[int]:
        return [pid for pid, started in self.seen.items() if start_time(pid) == started]


def rss_kib(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def slope_per_minute(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of (seconds, KiB) samples, in KiB per minute."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    spread = sum((t - mean_t) ** 2 for t, _ in samples)
    if spread == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in samples) / spread * 60


@dataclass
class Memory:
    """RSS samples of each service: name -> [(seconds since start, KiB)]."""

    samples: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    #: Each sample as a CSV line (seconds, service, RSS KiB, CPU seconds so far).
    lines: list[str] = field(default_factory=list)

    def sample(self, now: float, pids: dict[str, int]) -> None:
        for name, pid in pids.items():
            value = rss_kib(pid)
            if value is not None:
                self.samples.setdefault(name, []).append((now, value))
                self.lines.append(f"{now:.1f},{name},{value},{cpu_seconds([pid]):.2f}")

    def slopes(self, steady: tuple[float, float]) -> dict[str, tuple[float, int, int]]:
        """Per service: slope (KiB/min) within the ``steady`` (from, to) seconds, and
        the first and last RSS (KiB) there."""
        found = {}
        for name, samples in self.samples.items():
            window = [s for s in samples if steady[0] <= s[0] <= steady[1]] or samples
            found[name] = (slope_per_minute(window), window[0][1], window[-1][1])
        return found
