"""Helpers of the interop tier: our phone as a process on the shared ``platform``."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import Platform, running_platform

#: ``running_platform`` and ``Platform`` live in tests/conftest.py (every tier's);
#: named here too for tests that import them from the interop tier.
__all__ = ["Platform", "phone_process", "running_platform"]


def phone_process(
    platform: Platform, user: str, *args: str, stderr: int = subprocess.DEVNULL
) -> subprocess.Popen[str]:
    """``quietwire phone ARGS...`` registered as ``user`` on the platform, stdout piped."""
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "quietwire", "phone", *args),
            *("--registrar", f"127.0.0.1:{platform.sip_port}", "--user", user),
            *("--ca", str(platform.ca)),
        ],
        env={**os.environ, "QW_PHONE_PASSWORD": platform.users[user]},
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
