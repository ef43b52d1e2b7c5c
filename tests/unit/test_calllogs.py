"""`quietwire calls CALL_ID`: the commands it prints pull exactly that call's lines,
whatever characters its Call-ID holds (RFC 3261 section 25.1 allows quotes)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from quietwire.calllogs import kubernetes_hints, where

CALL_IDS = ["a84b4c76e66710@pc33.atlanta.com", 'it\'s "quoted" $(true) `x`\\', "a-b"]


@pytest.mark.parametrize("call_id", CALL_IDS)
def test_the_printed_command_keeps_only_the_calls_lines(tmp_path: Path, call_id: str) -> None:
    log = tmp_path / "up.log"
    lines = [{"msg": "call routed", "call_id": c} for c in CALL_IDS] + [{"msg": "listening"}]
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    (tmp_path / "up.lock").write_text("not a pid")  # a state directory whose up is not running
    hint = where(call_id, "sig-1", "relay-1", tmp_path / "quietwire.yaml")[-1]
    command = hint.split("then: ")[1].replace("quietwire.log", str(log))
    shown = subprocess.run(command, shell=True, capture_output=True, text=True, check=True)  # noqa: S602
    assert [json.loads(line) for line in shown.stdout.splitlines()] == [
        {"msg": "call routed", "call_id": call_id}
    ]


def test_kubernetes_hints_name_the_replica_and_relay_pods() -> None:
    hints = kubernetes_hints("c1", "quietwire-signaling-6d9c-x2x7q", "quietwire-relay-k8w2d")
    assert hints[0].startswith("kubectl logs quietwire-signaling-6d9c-x2x7q | jq")
    assert "component=keyagreement" in hints[1]
    assert hints[2].startswith("kubectl logs quietwire-relay-k8w2d | jq")
    assert len(kubernetes_hints("c1", "", "")) == 1  # not planned: keyagreement's lines only
