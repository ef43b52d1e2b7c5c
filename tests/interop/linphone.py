"""Drive headless ``linphonec`` (Debian's linphone-cli) as a test peer.

Facts from INTEROP.md: one HOME and one fresh config per instance, the data
directory created first, stdin kept open (EOF ends it), ``soundcard use
files`` for machines without audio, TLS with certificate verification.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from tests.conftest import Platform, free_port
from tests.support.wait import wait_until

SAS = re.compile(r"auth token is (\S+?)\.?$")

#: Marks tests that need linphonec: skipped (before any platform starts) without it.
requires_linphone = pytest.mark.skipif(
    shutil.which("linphonec") is None,
    reason="linphonec not installed (Debian package linphone-cli)",
)


def require_linphone() -> str:
    binary = shutil.which("linphonec")
    if binary is None:
        pytest.skip("linphonec not installed (Debian package linphone-cli)")
    return binary


class Linphone:
    def __init__(
        self,
        directory: Path,
        user: str,
        password: str,
        proxy_port: int,
        ca: Path,
        tls_port: int,
        rtp_port: int,
        *,
        auto_answer: bool = False,
        domain: str = "127.0.0.1",
        sip_extra: dict[str, str] | None = None,
    ) -> None:
        self.user = user
        home = directory / "home"
        (home / ".local" / "share" / "linphone").mkdir(parents=True, exist_ok=True)
        config = directory / "linphonerc"
        proxy = f"<sip:{domain}:{proxy_port};transport=tls>"
        config.write_text(
            "[sip]\nsip_port=0\nsip_tcp_port=0\n"
            f"sip_tls_port={tls_port}\nbind_address=127.0.0.1\n"
            "media_encryption=zrtp\nmedia_encryption_mandatory=1\n"
            f"root_ca={ca}\nverify_server_certs=1\nverify_server_cn=1\ndefault_proxy=0\n"
            + "".join(f"{key}={value}\n" for key, value in (sip_extra or {}).items())
            + "\n"
            f"[rtp]\nbind_address=127.0.0.1\naudio_rtp_port={rtp_port}\n\n"
            f"[proxy_0]\nreg_proxy={proxy}\nreg_route={proxy}\n"
            f"reg_identity=sip:{user}@{domain}\nreg_expires=600\nreg_sendregister=1\npublish=0\n\n"
            f"[auth_info_0]\nusername={user}\npasswd={password}\nrealm={domain}\ndomain={domain}\n",
            encoding="utf-8",
        )
        args = [require_linphone(), "-c", str(config)] + (["-a"] if auto_answer else [])
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HOME": str(home)},
            text=True,
            bufsize=1,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.command("soundcard use files")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())

    def command(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def _search(self, pattern: re.Pattern[str], since: int) -> re.Match[str] | None:
        return next((m for line in self.lines[since:] if (m := pattern.search(line))), None)

    def _tail(self) -> str:
        return "\n".join(self.lines[-25:])

    def wait_for(self, pattern: str, timeout: float = 20.0, since: int = 0) -> re.Match[str]:
        compiled = re.compile(pattern)
        return wait_until(
            lambda: self._search(compiled, since),
            timeout,
            lambda: f"{self.user}: no {pattern!r}:\n{self._tail()}",
        )

    def registered(self, timeout: float = 20.0) -> None:
        """Ask until Linphone says it is registered (it answers once per question)."""
        answer = re.compile(r"registered, identity=sip:" + re.escape(self.user))
        mark = len(self.lines)

        def answered() -> bool:
            if self._search(answer, mark):
                return True
            self.command("status register")
            return False

        wait_until(answered, timeout, lambda: f"{self.user} registered:\n{self._tail()}", 1.0)

    def sas(self, timeout: float = 20.0) -> str:
        return self.wait_for(SAS.pattern, timeout).group(1)

    def call_state(self) -> str:
        mark = len(self.lines)
        self.command("calls")
        return self.wait_for(r"^\d+\s+\|[^|]*\|\s+(\w+)\s+\|", 5, since=mark).group(1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.command("quit")
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def on_platform(
    platform: Platform,
    directory: Path,
    user: str,
    *,
    auto_answer: bool = False,
    sip_extra: dict[str, str] | None = None,
) -> Linphone:
    """``user``'s Linphone registering to ``platform``, on free SIP and RTP ports."""
    return Linphone(
        directory,
        user,
        platform.users[user],
        platform.sip_port,
        platform.ca,
        tls_port=free_port(),
        rtp_port=2 * (free_port() // 2),
        auto_answer=auto_answer,
        sip_extra=sip_extra,
    )
