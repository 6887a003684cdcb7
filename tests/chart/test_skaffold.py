"""skaffold.yaml builds the one image and deploys it through the chart; deploy/ is consistent."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.chart.conftest import ROOT

SKAFFOLD = ROOT / "skaffold.yaml"
DEV = ROOT / "deploy" / "dev"


@pytest.fixture(scope="module")
def configs() -> dict[str, dict[str, Any]]:
    documents = list(yaml.safe_load_all(SKAFFOLD.read_text()))
    return {doc["metadata"]["name"]: doc for doc in documents}


@pytest.fixture(scope="module")
def main(configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return configs["taskforge"]


def profile(config: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [p for p in config["profiles"] if p["name"] == name]
    return dict(found)


def test_skaffold_schema_version(configs: dict[str, dict[str, Any]]) -> None:
    for config in configs.values():
        assert config["apiVersion"].startswith("skaffold/v4beta")
        assert config["kind"] == "Config"


def test_one_artifact_built_from_services_dockerfile(main: dict[str, Any]) -> None:
    (artifact,) = main["build"]["artifacts"]
    assert artifact["image"] == "taskforge"
    assert artifact["context"] == "."
    assert artifact["docker"]["dockerfile"] == "services/Dockerfile"
    assert (ROOT / artifact["docker"]["dockerfile"]).exists()


def test_deploys_the_chart_with_the_built_image(main: dict[str, Any]) -> None:
    (release,) = main["deploy"]["helm"]["releases"]
    assert release["chartPath"] == "charts/taskforge"
    assert (ROOT / release["chartPath"] / "Chart.yaml").exists()
    assert release["setValueTemplates"] == {
        "image.repository": "{{.IMAGE_REPO_taskforge}}",
        "image.tag": "{{.IMAGE_TAG_taskforge}}",
    }


def test_dev_and_ci_profiles_deploy_the_dependencies_first(
    configs: dict[str, dict[str, Any]], main: dict[str, Any]
) -> None:
    (required,) = main["requires"]
    assert required["configs"] == ["taskforge-dev-deps"]
    assert {p["name"] for p in required["activeProfiles"]} == {"dev", "ci"}
    deps = configs["taskforge-dev-deps"]
    assert "deploy" not in deps and "manifests" not in deps, "only the profiles deploy anything"
    for name in ["dev", "ci"]:
        profile(main, name)
        deps_profile = profile(deps, name)
        assert "kubectl" in deps_profile["deploy"]
        files = deps_profile["manifests"]["rawYaml"]
        for path in files:
            assert (ROOT / path).exists(), path
        assert {(ROOT / p).name for p in files} == {p.name for p in DEV.glob("[0-9]*.yaml")}


def test_profiles_point_the_chart_at_the_dev_values(main: dict[str, Any]) -> None:
    for name in ["dev", "ci"]:
        patches = {p["path"]: p["value"] for p in profile(main, name)["patches"]}
        values = patches["/deploy/helm/releases/0/valuesFiles"]
        assert values == ["deploy/dev/chart-values.yaml"]
        assert patches["/deploy/helm/releases/0/namespace"] == "taskforge"


def dev_manifests() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(DEV.glob("[0-9]*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def test_dev_manifests_are_valid_kubernetes() -> None:
    manifests = dev_manifests()
    kinds = {m["kind"] for m in manifests}
    assert {"Namespace", "Secret", "Deployment", "Service", "ConfigMap"} <= kinds
    for manifest in manifests:
        kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=True)
    names = {m["metadata"]["name"] for m in manifests if m["kind"] == "Deployment"}
    assert names == {"postgres", "redis", "jaeger", "prometheus"}


def test_dev_manifests_create_the_secrets_the_dev_values_name() -> None:
    values = yaml.safe_load((DEV / "chart-values.yaml").read_text())
    secrets = {
        m["metadata"]["name"]: m["stringData"] for m in dev_manifests() if m["kind"] == "Secret"
    }
    for block in ["postgres", "redis", "apiTokens"]:
        name, key = values[block]["existingSecret"], values[block]["secretKey"]
        assert key in secrets[name], f"{block}: Secret {name} has no key {key}"
    for manifest in dev_manifests():
        if manifest["kind"] != "Namespace":
            assert manifest["metadata"]["namespace"] == "taskforge"


def test_prometheus_adapter_rule_serves_queue_depth() -> None:
    adapter = yaml.safe_load((ROOT / "deploy" / "prometheus-adapter" / "values.yaml").read_text())
    (rule,) = adapter["rules"]["external"]
    assert "taskforge_queue_depth" in rule["seriesQuery"]
    assert rule["name"]["as"] == "taskforge_queue_depth"
    assert "by (queue)" in rule["metricsQuery"]


def test_kind_config() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "kind" / "kind-config.yaml").read_text())
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert any(node["role"] == "control-plane" for node in config["nodes"])
