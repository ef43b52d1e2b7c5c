"""Custom resources the chart renders (Prometheus Operator kinds), validated against
the schemas in ``schemas/``: kubernetes-validate knows only built-in kinds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SCHEMAS = Path(__file__).parent / "schemas"
#: (apiVersion, kind) -> its schema file.
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.yaml",
}


def _registry() -> Registry:
    resources = [
        (path.name, Resource.from_contents(yaml.safe_load(path.read_text()), DRAFT202012))
        for path in SCHEMAS.glob("*.yaml")
    ]
    return Registry().with_resources(resources)


REGISTRY = _registry()


def is_custom(doc: dict[str, Any]) -> bool:
    return (doc.get("apiVersion"), doc.get("kind")) in CUSTOM_KINDS


def custom_errors(doc: dict[str, Any]) -> list[str]:
    """What is wrong with a custom resource, one line each (empty: valid)."""
    name = CUSTOM_KINDS[(doc["apiVersion"], doc["kind"])]
    schema = REGISTRY.contents(name)
    validator = jsonschema.Draft202012Validator(schema, registry=REGISTRY)
    return [
        f"{error.message} at {'.'.join(map(str, error.absolute_path))}"
        for error in validator.iter_errors(doc)
    ]
