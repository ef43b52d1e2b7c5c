"""A network namespace of a test's own, joined to this one by a veth pair.

Processes run inside with :attr:`Netns.prefix`; the two ends have addresses
of a /30 of 10.213.0.0/16 picked from the process id, so concurrent runs do
not collide. Needs root (CI runs as root); :func:`available` says whether
this machine can.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

_made = itertools.count()


@dataclass(frozen=True)
class Netns:
    name: str
    #: The namespace's address, and this namespace's address on the link.
    inside: str
    outside: str
    #: The namespace's end of the veth pair.
    interface: str

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def run(self, *command: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [*self.prefix, *command], input=stdin, capture_output=True, text=True, check=True
        )
        return done.stdout


def available() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


@contextlib.contextmanager
def netns(sysctls: Mapping[str, str] | None = None) -> Iterator[Netns]:
    """A fresh namespace, with ``sysctls`` (``{"net.ipv4.ip_forward": "1"}``) set in it."""
    serial = next(_made)
    pid = os.getpid()
    name = f"qwt{pid}-{serial}"
    outer, inner = f"qw{pid % 100000}o{serial}", f"qw{pid % 100000}i{serial}"
    block = ((pid % 4096) * 16 + serial % 16) * 4
    outside = f"10.213.{block >> 8 & 255}.{(block & 255) + 1}"
    inside = f"10.213.{block >> 8 & 255}.{(block & 255) + 2}"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    ip("netns", "add", name)
    try:
        ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        ip("link", "set", inner, "netns", name)
        ip("addr", "add", f"{outside}/30", "dev", outer)
        ip("link", "set", outer, "up")
        ip("-n", name, "addr", "add", f"{inside}/30", "dev", inner)
        ip("-n", name, "link", "set", inner, "up")
        ip("-n", name, "link", "set", "lo", "up")
        space = Netns(name, inside, outside, inner)
        for key, value in (sysctls or {}).items():
            space.run("sysctl", "-qw", f"{key}={value}")
        yield space
    finally:
        subprocess.run(["ip", "link", "del", outer], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
