"""``quietwire health`` (every container's HEALTHCHECK) loads only what it uses."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import quietwire_env

#: What only the services and the phone need: kubernetes (relay), pyroute2 (the
#: relay's kernel path), aiortc (the phone's codecs), and the services themselves.
HEAVY = (
    "kubernetes",
    "pyroute2",
    "aiortc",
    "quietwire.signaling.service",
    "quietwire.keyagreement.service",
    "quietwire.relay.service",
    "quietwire.phone.call",
)

PROBE = """
import sys
from quietwire import cli
status = cli.main(sys.argv[1:])
print(status, *sorted(name for name in {heavy!r} if name in sys.modules))
"""


def test_health_loads_no_service() -> None:
    """Asked of a closed port, it answers ``unknown`` and exits 1, importing none of them."""
    env = quietwire_env(QW_GRPC_INSECURE="true", QW_GRPC_PORT="1")
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), "health"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout.splitlines() == ["unknown", "1"], done.stdout + done.stderr
