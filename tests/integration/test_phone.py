"""Two quietwire phones through the signaling service: ZRTP, the same SAS, SRTP
audio each way (the right tone heard), key continuity on the next call."""

from __future__ import annotations

import asyncio
import re
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from quietwire.embedded.pki import Pki
from quietwire.phone.audio import dominant_frequency, tone, write_wav
from quietwire.phone.call import CallResult, Phone, PhoneOptions
from quietwire.signaling.media import Offer, Passthrough

from tests.integration.signaling_harness import (
    DOMAIN,
    PASSWORDS,
    Replica,
)


def options(pki: Pki, port: int, user: str, tmp: Path, hz: int, **extra: object) -> PhoneOptions:
    play = tmp / f"{user}-play.wav"
    write_wav(play, tone(hz, 1.0), 8000)
    values: dict[str, object] = {
        "registrar": "127.0.0.1",
        "port": port,
        "user": user,
        "password": PASSWORDS[user],
        "ca": pki.ca,
        "domain": DOMAIN,
        "zid_cache": tmp / f"{user}-zid.json",
        "play": play,
        "record": tmp / f"{user}-heard.wav",
        "duration": 2.0,
    }
    values.update(extra)
    return PhoneOptions(**values)  # type: ignore[arg-type]


def heard(path: Path) -> tuple[float, float]:
    """Seconds of audio in a recording, and its dominant frequency."""
    with wave.open(str(path)) as wav:
        frames = wav.readframes(wav.getnframes())
        rate = wav.getframerate()
    return len(frames) / 2 / rate, dominant_frequency(frames[rate:], rate)


async def talk(
    pki: Pki,
    port: int,
    tmp: Path,
    say: Callable[[str], None],
    keys: Callable[[], AsyncIterator[str]] | None = None,
    **extra: object,
) -> tuple[CallResult, CallResult]:
    """Alice (440 Hz) calls Bob (880 Hz); both phones closed afterwards. ``keys``
    makes each phone's user keys."""
    alice = Phone(options(pki, port, "alice", tmp, 440, keys=keys and keys(), **extra), say)
    bob = Phone(options(pki, port, "bob", tmp, 880, keys=keys and keys(), **extra), say)
    await alice.start()
    await bob.start()
    try:
        answering = asyncio.create_task(bob.answer(timeout=10))
        calling = asyncio.create_task(alice.call(f"sip:bob@{DOMAIN}"))
        return await calling, await answering
    finally:
        await alice.close()
        await bob.close()


async def test_secure_call_with_audio_both_ways(pki: Pki, one: Replica, tmp_path: Path) -> None:
    lines: list[str] = []
    caller, callee = await talk(pki, one.port, tmp_path, lines.append)
    assert caller.secured is not None and callee.secured is not None, (caller, callee)
    assert caller.secured.sas == callee.secured.sas
    assert lines.count(f"SAS {caller.secured.sas}") == 2
    assert any(line.startswith("secure AES1/") for line in lines)
    assert caller.stats["srtp_in"] > 40 and callee.stats["srtp_in"] > 40
    assert caller.stats["rejected"] == 0 and callee.stats["rejected"] == 0
    seconds, frequency = heard(tmp_path / "alice-heard.wav")
    assert seconds > 1.0 and abs(frequency - 880) <= 10
    seconds, frequency = heard(tmp_path / "bob-heard.wav")
    assert seconds > 1.0 and abs(frequency - 440) <= 10


async def test_second_call_remembers_the_verified_sas(
    pki: Pki, one: Replica, tmp_path: Path
) -> None:
    silent: list[str] = []
    for attempt in range(2):
        caller, callee = await talk(
            pki, one.port, tmp_path, silent.append, duration=0.5, verified=True
        )
        assert caller.secured is not None and callee.secured is not None
        assert caller.secured.sas_verified is (attempt == 1)
        assert callee.secured.sas_verified is (attempt == 1)
        assert not caller.secured.cache_mismatch


async def test_users_mark_the_sas_verified_with_a_key(
    pki: Pki, one: Replica, tmp_path: Path
) -> None:
    """``v`` on both phones (quietwire phone --keys) is remembered for the next call;
    ``h`` hangs up at once."""

    async def verify() -> AsyncIterator[str]:
        yield "v"

    async def hang_up() -> AsyncIterator[str]:
        yield "h"

    lines: list[str] = []
    await talk(pki, one.port, tmp_path, lines.append, keys=verify, duration=0.5)
    assert lines.count("SAS marked verified") == 2
    loop = asyncio.get_running_loop()
    started = loop.time()
    caller, callee = await talk(pki, one.port, tmp_path, lines.append, keys=hang_up, duration=30.0)
    assert loop.time() - started < 10
    assert caller.secured is not None and callee.secured is not None
    assert caller.secured.sas_verified and callee.secured.sas_verified
    assert lines.count("SAS previously verified") == 2


class TamperingPlanner:
    """A man in the middle on signaling: rewrites the caller's a=zrtp-hash, passes
    the rest through (a :class:`Passthrough`'s)."""

    def __init__(self) -> None:
        self.through = Passthrough()
        self.answer = self.through.answer
        self.end = self.through.end

    async def offer(self, offer: Offer) -> bytes:
        return re.sub(rb"zrtp-hash:1\.10 [0-9a-f]{64}", b"zrtp-hash:1.10 " + b"ab" * 32, offer.sdp)


async def test_tampered_zrtp_hash_is_never_secure(pki: Pki, one: Replica, tmp_path: Path) -> None:
    one.plan_with(TamperingPlanner())
    lines: list[str] = []
    caller, callee = await talk(pki, one.port, tmp_path, lines.append)
    assert callee.secured is None
    assert callee.failure is not None and "a=zrtp-hash" in callee.failure
    assert any(line.startswith("not secure: ") for line in lines)
    assert caller.secured is None
    for result in (caller, callee):
        assert result.stats.get("srtp_out", 0) == 0


async def test_echo_service_sends_back_what_it_hears(
    pki: Pki, one: Replica, tmp_path: Path
) -> None:
    alice = Phone(options(pki, one.port, "alice", tmp_path, 660, duration=2.5), lambda _: None)
    echo = Phone(options(pki, one.port, "bob", tmp_path, 880), lambda _: None)
    await alice.start()
    await echo.start()
    try:
        answering = asyncio.create_task(echo.answer(echo=True, timeout=10))
        caller = await alice.call(f"sip:bob@{DOMAIN}")
        await answering
    finally:
        await alice.close()
        await echo.close()
    assert caller.secured is not None
    seconds, frequency = heard(tmp_path / "alice-heard.wav")
    assert seconds > 1.0 and abs(frequency - 660) <= 10
