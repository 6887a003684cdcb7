"""The operator's RBAC: namespaced, scale subresource yes, Deployment writes never."""

from __future__ import annotations

from tests.chart.conftest import CHART, NAMESPACE, Manifest, Render, find, one

OPERATOR = "tf-taskforge-operator"


def allows(role: Manifest, group: str, resource: str, verb: str) -> bool:
    return any(
        group in rule.get("apiGroups", [])
        and (resource in rule.get("resources", []) or "*" in rule.get("resources", []))
        and (verb in rule.get("verbs", []) or "*" in rule.get("verbs", []))
        for rule in role["rules"]
    )


def test_operator_role_can_scale_but_never_write_deployments(render: Render) -> None:
    role = one(render(CHART / "ci" / "operator-values.yaml"), "Role", OPERATOR)
    for verb in ["get", "patch", "update"]:
        assert allows(role, "apps", "deployments/scale", verb)
    for verb in ["get", "list", "watch"]:
        assert allows(role, "apps", "deployments", verb)
    for verb in ["patch", "update", "create", "delete", "deletecollection"]:
        assert not allows(role, "apps", "deployments", verb), verb


def test_operator_role_covers_its_resources_status_and_events(render: Render) -> None:
    role = one(render(CHART / "ci" / "operator-values.yaml"), "Role", OPERATOR)
    for verb in ["get", "list", "watch", "patch"]:
        assert allows(role, "taskforge.io", "workerautoscalers", verb)
    for verb in ["get", "patch", "update"]:
        assert allows(role, "taskforge.io", "workerautoscalers/status", verb)
    for group in ["", "events.k8s.io"]:
        assert allows(role, group, "events", "create")
        assert allows(role, group, "events", "patch")
    assert not allows(role, "taskforge.io", "workerautoscalers", "delete")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert "secrets" not in rule["resources"]


def test_operator_rbac_is_namespaced_and_bound_to_its_account(render: Render) -> None:
    manifests = render(CHART / "ci" / "operator-values.yaml")
    assert not find(manifests, "ClusterRole") and not find(manifests, "ClusterRoleBinding")
    binding = one(manifests, "RoleBinding", OPERATOR)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": OPERATOR,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": OPERATOR, "namespace": NAMESPACE}
    ]


def test_no_rbac_without_the_operator(render: Render) -> None:
    manifests = render()
    assert not find(manifests, "Role") and not find(manifests, "RoleBinding")
