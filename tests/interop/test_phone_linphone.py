"""Our phone and Linphone through `quietwire up`, in both directions, with
Linphone's default ZRTP algorithms and its extended set (X25519, SHA-384,
B256): the same SAS on both sides, and each hears the other's tone."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import pytest
from quietwire.phone.audio import dominant_frequency, tone, write_wav

from tests.conftest import Platform
from tests.interop.conftest import phone_process
from tests.interop.linphone import on_platform, requires_linphone

pytestmark = [pytest.mark.interop, requires_linphone]

EXTENDED = {
    "zrtp_key_agreements_suites": "MS_ZRTP_KEY_AGREEMENT_X255",
    "zrtp_hash_suites": "MS_ZRTP_HASH_S384",
    "zrtp_sas_suites": "MS_ZRTP_SAS_B256",
}


def heard(path: Path) -> float:
    with wave.open(str(path)) as wav:
        frames, rate = wav.readframes(wav.getnframes()), wav.getframerate()
        assert wav.getnchannels() == 1
    assert len(frames) / 2 / rate > 1.5, "less than 1.5 s of audio arrived"
    return dominant_frequency(frames[rate:], rate)


def phone(platform: Platform, tmp: Path, command: list[str]) -> subprocess.Popen[str]:
    play = tmp / "phone-880.wav"
    write_wav(play, tone(880, 2.0), 8000)
    return phone_process(
        platform,
        "bob",
        *command,
        *("--play", str(play), "--record", str(tmp / "phone-heard.wav"), "--duration", "4"),
        *("--zid-cache", str(tmp / "bob-zid.json")),
        stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize("extended", [False, True], ids=["default", "extended"])
@pytest.mark.parametrize("direction", ["phone-calls", "linphone-calls"])
def test_phone_and_linphone(
    platform: Platform, tmp_path: Path, direction: str, extended: bool
) -> None:
    play = tmp_path / "linphone-440.wav"
    write_wav(play, tone(440, 2.0), 8000)
    linphone = on_platform(
        platform,
        tmp_path / "linphone",
        "alice",
        auto_answer=True,
        sip_extra=EXTENDED if extended else None,
    )
    try:
        linphone.command(f"play {play}")
        linphone.command(f"record {tmp_path / 'linphone-heard.wav'}")
        linphone.registered()
        first = ""
        if direction == "phone-calls":
            ours = phone(platform, tmp_path, ["call", "sip:alice@127.0.0.1"])
        else:
            ours = phone(platform, tmp_path, ["answer"])
            assert ours.stdout is not None
            first = ours.stdout.readline()  # our phone prints this once registered
            assert first.startswith("registered"), first
            linphone.command("call sip:bob@127.0.0.1")
        out, err = ours.communicate(timeout=60)
        out = first + out
        sas = linphone.sas()
        linphone.wait_for(r"ended", 15)
    finally:
        linphone.stop()
    assert ours.returncode == 0, out + err
    lines = out.splitlines()
    assert f"SAS {sas.replace(':', ' ')}" in lines, (sas, lines)
    # Linphone's default list puts Opus first; our phone offers it first too:
    # whoever offers, the call runs in Opus (RFC 3264 section 6.1).
    assert "codec opus/48000/2" in lines, lines
    secure = next(line for line in lines if line.startswith("secure "))
    if extended:
        # X25519 is the only key agreement both sides then offer; the SAS type
        # (B32 or B256) is the Commit winner's choice, and contention is random.
        assert "/X255/" in secure, secure
    assert abs(heard(tmp_path / "phone-heard.wav") - 440) <= 10
    assert abs(heard(tmp_path / "linphone-heard.wav") - 880) <= 10
