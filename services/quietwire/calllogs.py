"""Where one call's log lines are, for ``quietwire calls CALL_ID``.

Every service writes JSON lines, and those about a call carry its Call-ID as
``call_id``; the call record names the signaling replica of its INVITE and the
relay carrying its media. Under Kubernetes the chart names replicas and relays
after their pods (``QW_REPLICA_ID``, ``QW_RELAY_ID``); under ``quietwire up``
every service writes to the stderr of ``quietwire up``.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

#: In a ``quietwire up`` state directory: the pid of the running ``up`` (its lock).
UP_LOCK = "up.lock"


def jq_filter(call_id: str) -> str:
    """The jq command that keeps the lines of ``call_id`` (quoted for a POSIX shell)."""
    return f"jq -c --arg id {shlex.quote(call_id)} 'select(.call_id == $id)'"


def up_log(state: Path) -> Path | None:
    """The file the running ``quietwire up`` of ``state`` writes its services' lines
    to, when its stderr is a file (None: a terminal, a pipe, or not running)."""
    try:
        pid = int((state / UP_LOCK).read_text().strip())
        target = Path(os.readlink(f"/proc/{pid}/fd/2"))
    except (OSError, ValueError):
        return None
    return target if target.is_file() else None


def kubernetes_hints(call_id: str, replica: str, relay_id: str) -> list[str]:
    """``kubectl logs`` commands for the call's pods (add ``-n NAMESPACE``)."""
    keep = jq_filter(call_id)
    lines = []
    if replica:
        lines.append(f"kubectl logs {shlex.quote(replica)} | {keep}")
    lines.append(
        "kubectl logs -l app.kubernetes.io/component=keyagreement --prefix --tail=-1"
        f" | sed 's/^[^ ]* //' | {keep}"
    )
    if relay_id:
        lines.append(f"kubectl logs {shlex.quote(relay_id)} | {keep}")
    return lines


def up_hint(call_id: str, state: Path) -> str:
    """The command for a ``quietwire up`` platform in ``state``."""
    keep = jq_filter(call_id)
    log = up_log(state)
    if log is not None:
        return f"{keep} {shlex.quote(str(log))}"
    return f"quietwire up 2>>quietwire.log  (its stderr), then: {keep} quietwire.log"


def where(call_id: str, replica: str, relay_id: str, config: Path | None) -> list[str]:
    """Lines telling an operator which replica and relay handled the call and the
    exact commands that pull its log lines."""
    lines = [
        f"signaling replica: {replica or '(unknown)'} (its INVITE; its 'call routed'"
        " line names the callee's replicas, where requests from the callee arrive)",
        f"relay: {relay_id or '(none yet)'}",
        "log lines:",
    ]
    if config is not None and (config.parent / UP_LOCK).exists():
        lines.append(f"  {up_hint(call_id, config.parent)}")
    else:
        lines.extend(f"  {hint}" for hint in kubernetes_hints(call_id, replica, relay_id))
    return lines
