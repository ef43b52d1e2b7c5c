"""docker-compose.yml and the Dockerfile, checked without a Docker engine:
Compose v2's own `config` parses and resolves the compose file; checkov scans
the Dockerfile."""

from __future__ import annotations

import json
import os

from tests.deploy.conftest import ROOT, run, tool

ENV = {"QW_REDIS_PASSWORD": "compose-test-password", "QW_SIP_DOMAIN": "voip.example.com"}


def compose_config(env: dict[str, str]) -> tuple[int, str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("QW_")}
    result = run(
        tool("docker-compose"),
        "--project-directory",
        ROOT,
        "-f",
        ROOT / "docker-compose.yml",
        "config",
        "--format",
        "json",
        env={**clean, **env},
    )
    return result.returncode, result.stdout, result.stderr


def test_compose_file_is_accepted() -> None:
    status, out, err = compose_config(ENV)
    assert status == 0, err
    services = json.loads(out)["services"]
    assert set(services) == {"redis", "keyagreement", "relay", "signaling"}
    for name in ("keyagreement", "relay", "signaling"):
        service = services[name]
        assert service["healthcheck"]["test"] == ["CMD", "quietwire", "health"]
        assert service["read_only"] is True
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "QW_REDIS_PASSWORD" not in service["environment"]  # a file, not the environment
        assert service["environment"]["QW_SECRETS_DIR"] == "/run/secrets"
        assert service["secrets"] == [{"source": "redis_password", "target": "QW_REDIS_PASSWORD"}]
    assert services["signaling"]["environment"]["QW_SIP_DOMAIN"] == "voip.example.com"
    udp = [p for p in services["relay"]["ports"] if p["protocol"] == "udp"]
    assert len(udp) == 200
    assert services["signaling"]["ports"][0]["target"] == 5061


def test_compose_names_a_missing_password() -> None:
    status, _, err = compose_config({})
    assert status != 0
    assert "QW_REDIS_PASSWORD" in err


def test_dockerfile_security_scan() -> None:
    result = run(
        tool("checkov"),
        "--file",
        ROOT / "Dockerfile",
        "--framework",
        "dockerfile",
        "--output",
        "json",
        "--quiet",
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    report = json.loads(result.stdout)
    assert report["summary"]["passed"] > 0, result.stderr
    failed = report["results"]["failed_checks"]
    assert not failed, [(c["check_id"], c["check_name"]) for c in failed]
