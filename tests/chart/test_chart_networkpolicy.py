"""NetworkPolicies: default deny, then only what each deployable needs."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.conftest import CHART, Manifest, Render, find, one

ALL_FEATURES = CHART / "ci" / "all-features-on-values.yaml"


@pytest.fixture(scope="module")
def policies(render: Render) -> dict[str, Manifest]:
    return {p["metadata"]["name"]: p for p in find(render(ALL_FEATURES), "NetworkPolicy")}


def ports(rules: list[dict[str, Any]]) -> set[int]:
    return {port["port"] for rule in rules for port in rule.get("ports", [])}


def test_default_deny_covers_every_pod_of_the_release(policies: dict[str, Manifest]) -> None:
    deny = policies["tf-taskforge-default-deny"]["spec"]
    assert deny["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/name": "taskforge", "app.kubernetes.io/instance": "tf"}
    }
    assert deny["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny and "egress" not in deny


def test_every_workload_has_its_own_policy(render: Render, policies: dict[str, Manifest]) -> None:
    manifests = render(ALL_FEATURES)
    for workload in find(manifests, "Deployment") + find(manifests, "Job"):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        name = f"tf-taskforge-{labels['app.kubernetes.io/component']}"
        selector = policies[name]["spec"]["podSelector"]["matchLabels"]
        assert selector.items() <= labels.items()


def test_api_accepts_rest_on_8080_and_everyone_scrapes_on_9090(
    policies: dict[str, Manifest],
) -> None:
    api = policies["tf-taskforge-api"]["spec"]
    assert ports(api["ingress"]) == {8080, 9090}
    rest = next(rule for rule in api["ingress"] if ports([rule]) == {8080})
    assert rest["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "ingress-nginx"
    }
    for name in ["scheduler", "worker", "reaper", "operator"]:
        (scrape,) = policies[f"tf-taskforge-{name}"]["spec"]["ingress"]
        assert ports([scrape]) == {9090}
        assert scrape["from"] == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ]
    assert policies["tf-taskforge-migration"]["spec"]["ingress"] == []


def test_egress_is_limited_to_what_each_deployable_talks_to(
    policies: dict[str, Manifest],
) -> None:
    egress = {
        name.removeprefix("tf-taskforge-"): ports(policy["spec"]["egress"])
        for name, policy in policies.items()
        if name != "tf-taskforge-default-deny"
    }
    stores = {53, 5432, 6379, 4317, 4318}
    assert egress["api"] == stores
    assert egress["scheduler"] == stores
    assert egress["reaper"] == stores
    assert egress["worker"] == stores | {587}
    assert egress["migration"] == {53, 5432}
    assert egress["operator"] == {53, 6379, 4317, 4318, 443, 6443}


def test_network_policy_only_when_enabled(render: Render) -> None:
    assert not find(render(), "NetworkPolicy")
    manifests = render(sets={"networkPolicy.enabled": "true"})
    one(manifests, "NetworkPolicy", "tf-taskforge-default-deny")
    assert not find(manifests, "NetworkPolicy", "tf-taskforge-operator")
