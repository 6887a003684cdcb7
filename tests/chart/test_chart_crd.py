"""The WorkerAutoscaler CRD: structural, status subresource, printer columns, public spec."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.chart.conftest import CHART

CRD_FILE = CHART / "crds" / "workerautoscalers.yaml"


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CRD_FILE.read_text())
    return loaded


@pytest.fixture(scope="module")
def version(crd: dict[str, Any]) -> dict[str, Any]:
    (only,) = crd["spec"]["versions"]
    return dict(only)


def test_crd_is_valid_kubernetes(crd: dict[str, Any]) -> None:
    kubernetes_validate.validate(crd, kubernetes_validate.latest_version(), strict=True)
    kubernetes_validate.validate(crd, "1.27.0", strict=True)


def test_crd_names_the_namespaced_worker_autoscaler(crd: dict[str, Any]) -> None:
    assert crd["metadata"]["name"] == "workerautoscalers.taskforge.io"
    spec = crd["spec"]
    assert spec["group"] == "taskforge.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "WorkerAutoscaler"
    assert spec["names"]["plural"] == "workerautoscalers"


def test_crd_serves_v1alpha1_with_a_status_subresource(version: dict[str, Any]) -> None:
    assert version["name"] == "v1alpha1"
    assert version["served"] is True and version["storage"] is True
    assert version["subresources"] == {"status": {}}


def test_crd_printer_columns(version: dict[str, Any]) -> None:
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Target": ".spec.scaleTargetRef.name",
        "Backlog": ".status.backlog",
        "Replicas": ".status.currentReplicas",
        "Desired": ".status.desiredReplicas",
        "Age": ".metadata.creationTimestamp",
    }


def _assert_structural(schema: dict[str, Any], path: str) -> None:
    """Every node has a type (or preserves unknown fields); no refs or unions."""
    assert "type" in schema or schema.get("x-kubernetes-preserve-unknown-fields"), path
    for forbidden in ("$ref", "oneOf", "anyOf", "allOf", "not"):
        assert forbidden not in schema, f"{path}: {forbidden}"
    for name, child in schema.get("properties", {}).items():
        _assert_structural(child, f"{path}.{name}")
    if "items" in schema:
        _assert_structural(schema["items"], f"{path}[]")


def test_crd_schema_is_structural(version: dict[str, Any]) -> None:
    _assert_structural(version["schema"]["openAPIV3Schema"], "")


def test_crd_spec_is_the_public_interface(version: dict[str, Any]) -> None:
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["required"] == ["scaleTargetRef"]
    props = spec["properties"]
    assert props["scaleTargetRef"]["required"] == ["name"]
    assert props["queue"] == props["queue"] | {"type": "string", "default": "default"}
    expected = {
        # name: (type, minimum, default)
        "minReplicas": ("integer", 0, 0),
        "maxReplicas": ("integer", 1, 20),
        "targetBacklogPerReplica": ("integer", 1, 100),
        "activationBacklog": ("integer", 0, 0),
        "pollIntervalSeconds": ("integer", 1, 5),
        "scaleDownStabilizationSeconds": ("integer", 0, 60),
        "scaleUpMaxStep": ("integer", 0, 4),
    }
    for name, (kind, minimum, default) in expected.items():
        assert (props[name]["type"], props[name]["minimum"], props[name]["default"]) == (
            kind,
            minimum,
            default,
        ), name
    assert props["paused"] == props["paused"] | {"type": "boolean", "default": False}
    assert set(props) == {"scaleTargetRef", "queue", "paused", *expected}


def test_crd_status_keeps_kopf_bookkeeping(version: dict[str, Any]) -> None:
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status["x-kubernetes-preserve-unknown-fields"] is True
    props = status["properties"]
    for name in ["currentReplicas", "desiredReplicas", "backlog", "observedGeneration"]:
        assert props[name]["type"] == "integer", name
    assert props["lastScaleTime"] == props["lastScaleTime"] | {
        "type": "string",
        "format": "date-time",
    }
    condition = props["conditions"]["items"]["properties"]
    assert set(condition) == {"type", "status", "reason", "message", "lastTransitionTime"}
