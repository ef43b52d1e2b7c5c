"""charts/quietwire proven without a cluster: helm lint and template with a real
Helm 3 binary, Kubernetes schema validation, a checkov scan, and what the
manifests must say (host-network relays that drain, probes, policies...)."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import quietwire.cli  # noqa: F401 - imports every settings class
import yaml
from quietwire.relay.settings import RelaySettings
from quietwire.runtime.settings import SECRETS_DIR_ENV, env_name, known_settings

from tests.deploy.conftest import (
    CHART,
    CI_VALUES,
    ROOT,
    find,
    helm_template,
    render,
    run,
    tool,
)
from tests.deploy.crds import custom_errors, is_custom

#: The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schema.
KUBERNETES_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
SKIPS = yaml.safe_load((ROOT / "charts" / "checkov-skips.yaml").read_text())
MINIMAL = CHART / "ci" / "minimal-values.yaml"

ci_files = pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)


@ci_files
def test_lint_strict(values: Path) -> None:
    result = run(tool("helm"), "lint", "--strict", CHART, "-f", values)
    assert result.returncode == 0, result.stdout + result.stderr


@ci_files
def test_renders_valid_kubernetes(values: Path, rendered_dir: Path) -> None:
    docs = [d for d in yaml.safe_load_all((rendered_dir / values.name).read_text()) if d]
    assert docs
    for doc in filter(is_custom, docs):
        errors = custom_errors(doc)
        assert not errors, f"{doc['kind']}/{doc['metadata']['name']}: {errors}"
    for version in KUBERNETES_VERSIONS:
        for doc in itertools.filterfalse(is_custom, docs):
            where = f"{doc['kind']}/{doc['metadata']['name']} on {version}"
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                pytest.fail(f"{where}: unknown kind")
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{where}: {exc.message} at {'.'.join(map(str, exc.path))}")


def test_every_setting_the_chart_sets_exists(rendered_dir: Path) -> None:
    settings = {env_name(name) for name in known_settings()} | {SECRETS_DIR_ENV}
    for path in rendered_dir.iterdir():
        for doc in yaml.safe_load_all(path.read_text()):
            for container in _containers(doc):
                names = {e["name"] for e in container.get("env", []) if e["name"].startswith("QW_")}
                assert names <= settings, f"{path.name}: unknown {sorted(names - settings)}"


def test_security_scan_passes_with_its_documented_exceptions(rendered_dir: Path) -> None:
    assert all(entry["reason"].strip() for entry in SKIPS.values())
    result = run(
        tool("checkov"),
        "--directory",
        rendered_dir,
        "--framework",
        "kubernetes",
        "--output",
        "json",
        "--quiet",
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_NO_UPDATE_CHECK": "1"},
    )
    reports = json.loads(result.stdout)
    failed = [
        (check["check_id"], check["resource"])
        for report in (reports if isinstance(reports, list) else [reports])
        for check in report["results"]["failed_checks"]
    ]
    unexpected = sorted({(cid, res) for cid, res in failed if cid not in SKIPS})
    assert not unexpected, f"checkov failures without a documented reason: {unexpected}"
    for check_id, entry in SKIPS.items():
        resources = [res for cid, res in failed if cid == check_id]
        assert resources, f"{check_id} no longer fails: remove it from charts/checkov-skips.yaml"
        for component in entry.get("only", []):
            strays = [r for r in resources if f"-{component}" not in r]
            assert not strays, f"{check_id} is only excused for {component}: {strays}"


def test_relay_runs_on_the_host_and_drains() -> None:
    docs = render("-f", MINIMAL)
    relay = find(docs, "DaemonSet", "-relay")
    pod = relay["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["nodeSelector"] == {"quietwire.io/relay": "true"}
    assert pod["terminationGracePeriodSeconds"] >= 3600
    container = pod["containers"][0]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[:3] == ["quietwire", "drain-relay", "--migrate"]
    assert int(pre_stop[-1]) < pod["terminationGracePeriodSeconds"]
    env = _env(container)
    assert env["QW_KEYAGREEMENT_TARGET"] == "qw-quietwire-keyagreement:50052"
    assert env["QW_RELAY_ADVERTISE_FROM_NODE"] == "ExternalIP"
    assert env["QW_RELAY_PORT_MIN"] == "30000"
    assert env["QW_RELAY_POD_DELETION_COST"] == "false"  # only a ReplicaSet reads it
    labels = relay["spec"]["template"]["metadata"]["labels"]
    assert labels["sidecar.istio.io/inject"] == "false"
    rules = find(docs, "ClusterRole", "-relay-voip")["rules"]
    assert rules == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]
    assert not [d for d in docs if d["kind"] == "Role"]


def test_relay_without_migration_waits_for_its_calls() -> None:
    docs = render("-f", MINIMAL, "--set", "relay.migrateOnDrain=false")
    container = find(docs, "DaemonSet", "-relay")["spec"]["template"]["spec"]["containers"][0]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert "--migrate" not in pre_stop


def test_relay_deployment_spreads_and_publishes_its_load() -> None:
    docs = render("-f", CHART / "ci" / "relay-deployment-values.yaml")
    relay = find(docs, "Deployment", "-relay")
    assert relay["spec"]["replicas"] == 4
    assert relay["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    anti = relay["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = anti["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert _env(relay["spec"]["template"]["spec"]["containers"][0])[
        "QW_RELAY_POD_DELETION_COST"
    ] == ("true")
    role = find(docs, "Role", "-relay")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]}]


def test_kernel_forwarding_relay_has_net_admin_and_the_node_address() -> None:
    docs = render("-f", CHART / "ci" / "kernel-forwarding-values.yaml")
    relay = find(docs, "DaemonSet", "-relay")["spec"]["template"]["spec"]["containers"][0]
    assert relay["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    assert relay["securityContext"]["readOnlyRootFilesystem"] is True
    # Added capabilities take effect for uid 0 only; every other one is still dropped.
    assert relay["securityContext"]["runAsUser"] == 0
    assert relay["securityContext"]["allowPrivilegeEscalation"] is False
    names = [entry["name"] for entry in relay["env"]]
    assert names.index("HOST_IP") < names.index("QW_RELAY_BIND")  # $(HOST_IP) expands
    env = _env(relay)
    assert env["QW_RELAY_BIND"] == "$(HOST_IP)"
    assert env["QW_RELAY_KERNEL_FORWARDING"] == "true"
    others = [c for doc in docs for c in _containers(doc) if c["name"] != "relay"]
    assert others and all(c["securityContext"]["capabilities"] == {"drop": ["ALL"]} for c in others)


def test_signaling_front_door() -> None:
    docs = render("-f", MINIMAL)
    sip = find(docs, "Service", "-sip")
    assert sip["spec"]["type"] == "LoadBalancer"
    assert sip["spec"]["externalTrafficPolicy"] == "Local"
    assert sip["spec"]["ports"] == [
        {"name": "sip-tls", "port": 5061, "targetPort": "sip-tls", "protocol": "TCP"}
    ]
    hpa = find(docs, "HorizontalPodAutoscaler", "-signaling")
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert find(docs, "PodDisruptionBudget", "-signaling")
    deployment = find(docs, "Deployment", "-signaling")
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    env = _env(deployment["spec"]["template"]["spec"]["containers"][0])
    assert env["QW_SIP_TLS_CERT"] == "/etc/quietwire/sip/tls.crt"
    assert env["QW_KEYAGREEMENT_TARGET"] == "qw-quietwire-keyagreement:50052"


def test_every_quietwire_pod_is_locked_down() -> None:
    for doc in render("-f", MINIMAL):
        for container in _containers(doc):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            pod = doc["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            if container["image"].startswith("quietwire"):
                readiness = container["readinessProbe"]["grpc"]
                assert readiness == {"port": 8086}
                assert container["livenessProbe"]["grpc"]["service"] == "liveness"
                assert _env(container)["QW_HEALTH_PORT"] == "8086"


def test_network_policies() -> None:
    docs = render("-f", CHART / "ci" / "network-policies-values.yaml")
    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    assert set(policies) == {
        "qw-quietwire-signaling",
        "qw-quietwire-keyagreement",
        "qw-quietwire-redis",
    }
    keyagreement = policies["qw-quietwire-keyagreement"]["ingress"][0]
    assert keyagreement["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == (
        "signaling"
    )
    # A draining relay's preStop (host network) asks keyagreement to move its calls.
    assert {"ipBlock": {"cidr": "10.0.0.0/16"}} in keyagreement["from"]
    redis_from = policies["qw-quietwire-redis"]["ingress"][0]["from"]
    assert {"ipBlock": {"cidr": "10.0.0.0/16"}} in redis_from
    sip_ports = policies["qw-quietwire-signaling"]["ingress"][0]["ports"]
    assert {"port": 5060, "protocol": "UDP"} in sip_ports
    service = find(docs, "Service", "-sip")["spec"]["ports"]
    assert {(p["port"], p["protocol"]) for p in service} == {
        (5061, "TCP"),
        (5060, "TCP"),
        (5060, "UDP"),
    }

    missing = helm_template(
        "-f",
        MINIMAL,
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "networkPolicy.nodeCIDRs=null",
    )
    assert missing.returncode != 0
    assert "networkPolicy.nodeCIDRs is required" in missing.stderr


def test_relay_refuses_the_platforms_own_networks() -> None:
    """relay.peerDeny reaches the relay as QW_RELAY_PEER_DENY, in a form its settings accept."""
    default = find(render("-f", MINIMAL), "DaemonSet", "-relay")
    assert "QW_RELAY_PEER_DENY" not in _env(default["spec"]["template"]["spec"]["containers"][0])
    docs = render("-f", CHART / "ci" / "network-policies-values.yaml")
    relay = find(docs, "Deployment", "-relay")["spec"]["template"]["spec"]["containers"][0]
    deny = _env(relay)["QW_RELAY_PEER_DENY"]
    assert deny == "10.0.0.0/8,fd00::/8"
    settings = {"relay_peer_deny": deny, "grpc_insecure": True}
    policy = RelaySettings.model_validate(settings).peer_policy
    assert not policy.permits("10.1.2.3") and not policy.permits("fd00::1")
    assert policy.permits("203.0.113.7")


def test_external_redis_with_tls_and_sentinels() -> None:
    external = render("-f", CHART / "ci" / "external-redis-values.yaml")
    assert not [d for d in external if d["kind"] == "StatefulSet"]
    pod = find(external, "Deployment", "-keyagreement")["spec"]["template"]["spec"]
    env = _env(pod["containers"][0])
    assert env["QW_REDIS_URL"].startswith("rediss://")
    assert env["QW_REDIS_TLS_CA"] == "/etc/quietwire/redis-ca/ca.crt"
    assert "QW_REDIS_PASSWORD" not in env  # a file, not the environment
    assert env["QW_SECRETS_DIR"] == "/etc/quietwire/secrets"
    assert "QW_REDIS_WAIT_REPLICAS" not in env  # no Sentinels: no replicas to wait for
    (secrets,) = [v for v in pod["volumes"] if v["name"] == "secrets"]
    assert secrets["projected"]["sources"] == [
        {
            "secret": {
                "name": "quietwire-redis",
                "items": [{"key": "password", "path": "QW_REDIS_PASSWORD"}],
            }
        }
    ]

    sentinel = render("-f", CHART / "ci" / "sentinel-values.yaml")
    container = find(sentinel, "Deployment", "-signaling")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["image"].startswith("registry.example.com/quietwire@sha256:")
    assert _env(container)["QW_REDIS_SENTINEL_MASTER"] == "quietwire"
    assert _env(container)["QW_REDIS_SENTINELS"].count(":26379") == 3
    # With replicas, the writes that matter wait for one of them.
    assert _env(container)["QW_REDIS_WAIT_REPLICAS"] == "1"
    assert _env(container)["QW_REDIS_WAIT_TIMEOUT"] == "0.25"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("relay.portRange.min=30001", "Must be a multiple of 2"),
        ("relay.kind=StatefulSet", "relay.kind"),
        ("keyagreement.mediaPolicy=plain", "keyagreement.mediaPolicy"),
        ("redis.mode=external", "redis.external.url"),
        ("relay.portRange.max=30002", "at least two port pairs"),
        ("sip.domian=x", "domian"),
        ("relay.peerDeny={pods.cluster.local}", "relay.peerDeny"),
    ],
)
def test_bad_values_are_refused_with_their_name(setting: str, message: str) -> None:
    result = helm_template("-f", MINIMAL, "--set", setting)
    assert result.returncode != 0
    assert message in result.stderr


def test_required_values_are_named() -> None:
    result = helm_template()
    assert result.returncode != 0
    assert "sip" in result.stderr and "grpc" in result.stderr


def test_service_monitors_are_optional() -> None:
    assert not [d for d in render("-f", MINIMAL) if d["kind"] == "ServiceMonitor"]
    docs = render("-f", MINIMAL, "--set", "serviceMonitor.enabled=true")
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    assert len(monitors) == 3
    for monitor in monitors:
        service = find(docs, "Service", monitor["metadata"]["name"].removeprefix("qw-quietwire"))
        assert "metrics" in [p["name"] for p in service["spec"]["ports"]]


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    template = doc.get("spec", {}).get("template", {})
    return list(template.get("spec", {}).get("containers", []))


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
