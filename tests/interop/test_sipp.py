"""sipp (sip-tester) against `quietwire up` over TLS: REGISTER with a digest
challenge, a bad password, a full call UAC -> quietwire -> UAS with BYE, a
CANCEL while ringing, and a call to an unknown user; and calls from sipp
over plain TCP and UDP (QW_SIP_TCP_PORT, QW_SIP_UDP_PORT) to callees over
TLS and UDP.

Debian's sipp has no TLS, so each sipp talks TCP to a local stunnel that
opens a verified TLS connection to quietwire: one sipp connection, one flow.
sipp answers only the first digest challenge and knows only MD5, so this
platform challenges with MD5 alone (QW_SIP_DIGEST_ALGORITHMS).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from quietwire.signaling.locations import LOCATION_KEY

from tests.conftest import Platform, free_port, port_open, running_platform
from tests.support.wait import wait_until

pytestmark = pytest.mark.interop
SCENARIOS = Path(__file__).parent / "sipp"
SIPP_TIMEOUT = "15s"
Via = int | str


@dataclass
class Setup:
    platform: Platform
    #: stunnel's ports (each a TLS connection to quietwire).
    ports: list[int]
    workdir: Path
    #: quietwire's plain ports: "tcp" and "udp".
    plain: dict[str, int]

    @property
    def users(self) -> dict[str, str]:
        return self.platform.users


def need(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} not installed (Debian package {package})")
    return path


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    sipp, stunnel = need("sipp", "sip-tester"), need("stunnel4", "stunnel4")
    del sipp
    plain = {"tcp": free_port(), "udp": free_port()}
    with running_platform(
        tmp_path,
        QW_SIP_DIGEST_ALGORITHMS="MD5",
        QW_SIP_TCP_PORT=str(plain["tcp"]),
        QW_SIP_UDP_PORT=str(plain["udp"]),
    ) as platform:
        # A port picked free may be taken (an outgoing connection's) before stunnel
        # binds it: then stunnel exits, and we try again with other ports.
        tunnel: subprocess.Popen[bytes] | None = None
        for _ in range(3):
            ports = [free_port() for _ in range(4)]
            tunnel = start_stunnel(stunnel, tmp_path, ports, platform.sip_port, platform.ca)
            if tunnel is not None:
                break
        assert tunnel is not None, "stunnel did not start"
        try:
            yield Setup(platform, ports, tmp_path, plain)
        finally:
            tunnel.terminate()
            tunnel.wait(10)


def start_stunnel(
    stunnel: str, directory: Path, ports: list[int], sip_port: int, ca: Path
) -> subprocess.Popen[bytes] | None:
    """stunnel accepting on ``ports``, each a verified TLS client to quietwire; None if
    it could not listen on all of them within 10 s."""
    config = directory / "stunnel.conf"
    services = "".join(
        f"[sip{i}]\nclient = yes\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{sip_port}\n"
        f"verifyChain = yes\nCAfile = {ca}\ncheckHost = 127.0.0.1\n"
        for i, port in enumerate(ports)
    )
    config.write_text(f"foreground = yes\npid =\n{services}", encoding="utf-8")
    tunnel = subprocess.Popen([stunnel, str(config)], stderr=subprocess.DEVNULL)

    def listening() -> bool:
        assert tunnel.poll() is None, "stunnel exited"
        return all(port_open(p) for p in ports)

    try:
        wait_until(listening, 10, "stunnel listening")
    except AssertionError:
        tunnel.kill()
        tunnel.wait(10)
        return None
    return tunnel


def scenario(setup: Setup, name: str, **replace: str) -> Path:
    text = (SCENARIOS / name).read_text(encoding="utf-8")
    for key, value in replace.items():
        text = text.replace(f"__{key}__", value)
    path = setup.workdir / name
    path.write_text(text, encoding="utf-8")
    return path


def sipp(
    setup: Setup, path: Path, via: Via, user: str, password: str, *extra: str
) -> subprocess.Popen[str]:
    """sipp through stunnel connection ``via`` (an index), or plain "tcp"/"udp" to quietwire."""
    errors = setup.workdir / f"{path.stem}-{user}-errors.log"
    return subprocess.Popen(
        [
            "sipp",
            f"127.0.0.1:{setup.plain[via] if isinstance(via, str) else setup.ports[via]}",
            "-sf",
            str(path),
            "-t",
            "u1" if via == "udp" else "t1",
            "-m",
            "1",
            "-s",
            user,
            "-au",
            user,
            "-ap",
            password,
            # The digest uri must be the Request-URI (RFC 7616 section 3.4.6); sipp's
            # default is the address it sends to (stunnel's port, and no user).
            "-auth_uri",
            f"{extra[extra.index('callee') + 1]}@127.0.0.1" if "callee" in extra else "127.0.0.1",
            "-i",
            "127.0.0.1",
            "-p",
            str(free_port()),
            "-timeout",
            SIPP_TIMEOUT,
            "-timeout_error",
            "-nostdin",
            "-trace_err",
            "-error_file",
            str(errors),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(process: subprocess.Popen[str]) -> int:
    return process.wait(40)


def test_register_with_digest(setup: Setup) -> None:
    path = scenario(setup, "register.xml", FINAL="200")
    assert finished(sipp(setup, path, 0, "alice", setup.users["alice"])) == 0


def test_register_with_a_bad_password_is_forbidden(setup: Setup) -> None:
    path = scenario(setup, "register.xml", FINAL="403")
    assert finished(sipp(setup, path, 0, "alice", "not-the-password")) == 0


def registered(setup: Setup, user: str, call_id: str) -> bool:
    """A binding of ``user`` made by the REGISTER with this Call-ID is in the location service."""
    client = setup.platform.redis()
    try:
        bindings = client.hvals(LOCATION_KEY.format(aor=f"sip:{user}@127.0.0.1"))
    finally:
        client.close()
    return any(f" {call_id}\n".encode() in binding for binding in bindings)


def call(
    setup: Setup, uac: str, uas: str, call_id: str, caller_via: Via = 0, callee_via: Via = 1
) -> tuple[int, int]:
    callee = sipp(
        setup,
        scenario(setup, uas),
        callee_via,
        "bob",
        setup.users["bob"],
        "-cid_str",
        f"{call_id}@127.0.0.1",
    )
    wait_until(
        lambda: registered(setup, "bob", f"{call_id}@127.0.0.1"), 15, "the callee registered"
    )
    caller = sipp(
        setup,
        scenario(setup, uac),
        caller_via,
        "alice",
        setup.users["alice"],
        "-key",
        "callee",
        "bob",
        "-cid_str",
        f"{call_id}@127.0.0.1",
    )
    return finished(caller), finished(callee)


def test_sdes_call_accepted_and_reported_hop_by_hop(setup: Setup) -> None:
    assert call(setup, "uac.xml", "uas.xml", "sippcall") == (0, 0)
    security = setup.platform.quietwire("calls", "sippcall@127.0.0.1")
    assert "sdes_srtp not-e2e" in security.stdout, security.stdout + security.stderr


def test_cancel_while_ringing(setup: Setup) -> None:
    assert call(setup, "uac_cancel.xml", "uas_cancel.xml", "sippcancel") == (0, 0)


def test_plain_rtp_refused_with_a_warning(setup: Setup) -> None:
    path = scenario(setup, "uac_plain.xml")
    caller = sipp(setup, path, 0, "alice", setup.users["alice"], "-key", "callee", "bob")
    assert finished(caller) == 0


def test_unknown_user(setup: Setup) -> None:
    path = scenario(setup, "uac_unknown.xml")
    caller = sipp(setup, path, 0, "alice", setup.users["alice"], "-key", "callee", "nobody")
    assert finished(caller) == 0


def test_call_from_plain_tcp_to_tls(setup: Setup) -> None:
    """The caller talks plain TCP straight to quietwire, the callee TLS through stunnel."""
    assert call(setup, "uac.xml", "uas.xml", "sipptcp", caller_via="tcp") == (0, 0)


def test_register_over_udp(setup: Setup) -> None:
    path = scenario(setup, "register.xml", FINAL="200")
    assert finished(sipp(setup, path, "udp", "alice", setup.users["alice"])) == 0


def test_calls_over_udp(setup: Setup) -> None:
    """UDP to TLS, then UDP to UDP: unreliable transactions on either side."""
    assert call(setup, "uac.xml", "uas.xml", "sippudp1", caller_via="udp") == (0, 0)
    assert call(setup, "uac.xml", "uas.xml", "sippudp2", "udp", "udp") == (0, 0)
