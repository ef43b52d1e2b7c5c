"""`make bench`, ZRTP on the network: handshake time through `quietwire up`.

Pairs, caller first: our phone → our phone, our phone → Linphone, Linphone →
our phone, and Linphone → Linphone (the anchor), per key agreement; each
call goes through the platform, media through its relay. The relay's event
stream times every ZRTP message it forwards on one clock for both sides: a
handshake runs from the caller's first Hello (the media path is complete
once the caller has the answer) to the Conf2ACK. Medians over the calls.
CPU per handshake, without the network, is ``bench.zrtp``'s part.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import quietwire.cli  # noqa: F401 - every settings class, for up's settings file
from quietwire.rpc.relay.v1 import relay_pb2, relay_pb2_grpc
from quietwire.runtime.channels import open_channel
from quietwire.runtime.redisclient import redis_client
from quietwire.runtime.registry import RelayRegistry
from quietwire.runtime.settings import CommonSettings, load_settings
from quietwire.runtime.tls import TlsFiles

from tests.conftest import Platform, running_platform
from tests.interop.conftest import phone_process
from tests.interop.linphone import Linphone, on_platform

KEY_AGREEMENTS = ("DH3k", "EC25", "X255")
PAIRS = ("ours→ours", "ours→linphone", "linphone→ours", "linphone→linphone")
CALLER, CALLEE = "alice", "bob"
Event = relay_pb2.MediaEvent


@dataclass
class Handshakes:
    """What the relay saw per session: the caller's first Hello and the Conf2ACK."""

    hello: dict[str, float] = field(default_factory=dict)
    done: dict[str, float] = field(default_factory=dict)
    waiters: list[asyncio.Event] = field(default_factory=list)

    def see(self, event: relay_pb2.MediaEvent) -> None:
        if event.kind != Event.KIND_ZRTP_MESSAGE:
            return
        session = event.call_id
        if event.zrtp_message == "Hello" and event.side == relay_pb2.LEG_SIDE_CALLER:
            self.hello.setdefault(session, event.at_unix)
        elif event.zrtp_message == "Conf2ACK" and session in self.hello:
            self.done.setdefault(session, event.at_unix)
            for waiter in self.waiters:
                waiter.set()

    def times_ms(self) -> list[float]:
        return [(self.done[s] - self.hello[s]) * 1000 for s in self.done]


@contextlib.asynccontextmanager
async def relay_events(platform: Platform) -> AsyncIterator[Handshakes]:
    """Follow the platform's relay events, over mutual TLS with up's certificates."""
    settings = load_settings(CommonSettings, platform.config)
    client = redis_client(settings)
    relays = await RelayRegistry(client).alive()
    await client.aclose()
    pki = platform.state / "pki"
    tls = TlsFiles(pki / "grpc.pem", pki / "grpc.key", pki / "ca.pem")
    seen = Handshakes()
    async with open_channel(relays[0].grpc, tls) as channel:
        stream = relay_pb2_grpc.RelayStub(channel).WatchEvents(relay_pb2.WatchEventsRequest())

        async def follow() -> None:
            with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
                async for event in stream:
                    seen.see(event)

        task = asyncio.create_task(follow())
        await asyncio.sleep(0.5)  # the stream is open before the first call
        try:
            yield seen
        finally:
            stream.cancel()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@contextlib.contextmanager
def linphone(
    platform: Platform, work: Path, user: str, ka: str, *, answer: bool
) -> Iterator[Linphone]:
    phone = on_platform(
        platform,
        work / f"linphone-{user}-{ka}",
        user,
        auto_answer=answer,
        sip_extra={"zrtp_key_agreements_suites": f"MS_ZRTP_KEY_AGREEMENT_{ka.upper()}"},
    )
    try:
        phone.registered()
        yield phone
    finally:
        phone.stop()


def our_phone(
    platform: Platform, work: Path, user: str, ka: str, *command: str
) -> subprocess.Popen[str]:
    return phone_process(
        platform,
        user,
        *command,
        *("--key-agreement", ka, "--duration", "1.5"),
        *("--zid-cache", str(work / f"zid-{user}-{ka}.json")),
    )


async def completed(seen: Handshakes, count: int, timeout: float = 30.0) -> bool:
    """Until ``count`` handshakes have reached Conf2ACK (False on timeout)."""
    waiter = asyncio.Event()
    seen.waiters.append(waiter)
    try:
        async with asyncio.timeout(timeout):
            while len(seen.done) < count:
                waiter.clear()
                await waiter.wait()
        return True
    except TimeoutError:
        return False
    finally:
        seen.waiters.remove(waiter)


async def measure(platform: Platform, work: Path, pair: str, ka: str, calls: int) -> list[float]:
    caller_kind, callee_kind = pair.split("→")
    uri = f"sip:{CALLEE}@127.0.0.1"
    with contextlib.ExitStack() as stack:
        callee: Linphone | subprocess.Popen[str]
        if callee_kind == "linphone":
            callee = stack.enter_context(linphone(platform, work, CALLEE, ka, answer=True))
        else:
            callee = our_phone(platform, work, CALLEE, ka, "echo")
            stack.callback(lambda: (callee.terminate(), callee.wait(10)))
            await asyncio.sleep(2.0)  # registered
        caller = (
            stack.enter_context(linphone(platform, work, CALLER, ka, answer=False))
            if caller_kind == "linphone"
            else None
        )
        async with relay_events(platform) as seen:
            for n in range(1, calls + 1):
                if caller is None:
                    process = our_phone(platform, work, CALLER, ka, "call", uri)
                    ok = await completed(seen, n)
                    await asyncio.to_thread(process.wait, 30)
                else:
                    caller.command(f"call {uri}")
                    ok = await completed(seen, n)
                    await asyncio.sleep(0.5)
                    caller.command("terminate")
                    await asyncio.sleep(1.0)
                if not ok:
                    print(f"  {pair} {ka}: call {n} never reached Conf2ACK", file=sys.stderr)
                    break
            return seen.times_ms()


async def run(calls: int, key_agreements: list[str], pairs: list[str]) -> None:
    results: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="qw-bench-zrtp-") as scratch:
        work = Path(scratch)
        with running_platform(work) as platform:
            for ka in key_agreements:
                for pair in pairs:
                    results[pair, ka] = await measure(platform, work, pair, ka, calls)
    print("ZRTP handshake through quietwire (caller's first Hello to Conf2ACK, at the relay)")
    print(f"{'pair':20} {'key agr.':8} {'calls':>5} {'median ms':>9} {'max ms':>7}")
    for (pair, ka), times in results.items():
        median = statistics.median(times) if times else float("nan")
        worst = max(times) if times else float("nan")
        print(f"{pair:20} {ka:8} {len(times):5d} {median:9.1f} {worst:7.1f}")
    for ka in key_agreements:
        anchor = results.get(("linphone→linphone", ka))
        ours = results.get(("ours→ours", ka))
        if anchor and ours:
            ratio = statistics.median(ours) / statistics.median(anchor)
            print(f"ours→ours / linphone→linphone, {ka}: {ratio:.2f}x the time")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=3, help="calls per pair and key agreement")
    parser.add_argument("--key-agreements", default=",".join(KEY_AGREEMENTS))
    parser.add_argument("--pairs", default=",".join(PAIRS))
    args = parser.parse_args()
    if shutil.which("linphonec") is None:
        print("make bench: missing linphonec (Debian package linphone-cli)", file=sys.stderr)
        return 1
    asyncio.run(run(args.calls, args.key_agreements.split(","), args.pairs.split(",")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
