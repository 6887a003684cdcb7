"""Every workload is hardened, probed and sized; each deployable gets the settings it reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.chart.conftest import (
    CHART,
    CI_VALUES,
    HelmError,
    Manifest,
    Render,
    component,
    env_of,
    find,
    one,
)

ALL_FEATURES = CHART / "ci" / "all-features-on-values.yaml"
DEPLOYABLES = ["api", "scheduler", "worker", "reaper", "operator"]
ci_values = pytest.mark.parametrize("values", CI_VALUES, ids=[p.stem for p in CI_VALUES])


def container_of(workload: Manifest) -> dict[str, Any]:
    """The one container of a workload's pod."""
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return dict(container)


def pods(manifests: list[Manifest]) -> list[tuple[Manifest, dict[str, Any]]]:
    """(workload, pod spec) of every Deployment and Job."""
    return [
        (m, m["spec"]["template"]["spec"]) for m in manifests if m["kind"] in {"Deployment", "Job"}
    ]


@ci_values
def test_every_container_meets_the_restricted_pod_security_standard(
    render: Render, values: Path
) -> None:
    workloads = pods(render(values))
    assert workloads
    for workload, pod in workloads:
        name = workload["metadata"]["name"]
        pod_context = pod["securityContext"]
        assert pod_context["runAsNonRoot"] is True, name
        assert pod_context["runAsUser"] == 10001, name
        assert pod_context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        for container in pod["containers"] + pod.get("initContainers", []):
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, name
            assert context["runAsUser"] == 10001, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert not context["capabilities"].get("add"), name
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert context.get("privileged") is not True, name


@ci_values
def test_tmp_is_the_only_writable_path_and_is_an_empty_dir(render: Render, values: Path) -> None:
    for workload, pod in pods(render(values)):
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes["tmp"], workload["metadata"]["name"]
        for container in pod["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts == {"/tmp": "tmp"}


@ci_values
def test_every_container_has_resource_requests_and_a_memory_limit(
    render: Render, values: Path
) -> None:
    for workload, pod in pods(render(values)):
        for container in pod["containers"]:
            resources = container["resources"]
            assert {"cpu", "memory"} <= resources["requests"].keys(), workload["metadata"]["name"]
            assert "memory" in resources["limits"], workload["metadata"]["name"]


@ci_values
def test_deployables_are_probed_on_the_ops_port(render: Render, values: Path) -> None:
    for deployment in find(render(values), "Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == 9090
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        if component(deployment) == "operator":
            # kopf operator: liveness only (nothing routes traffic to it).
            assert "readinessProbe" not in container
        else:
            assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


@ci_values
def test_one_deployment_per_deployable_running_its_command(render: Render, values: Path) -> None:
    manifests = render(values)
    deployments = {component(d): d for d in find(manifests, "Deployment")}
    assert {"api", "scheduler", "worker", "reaper"} <= deployments.keys() <= set(DEPLOYABLES)
    for name, deployment in deployments.items():
        assert deployment["metadata"]["name"] == f"tf-taskforge-{name}"
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["args"] == [name]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/component"] == name
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        env = env_of(container)
        assert env["OTEL_SERVICE_NAME"]["value"] == f"taskforge-{name}"
        assert env["TASKFORGE_OPS_PORT"]["value"] == "9090"


def test_image_is_pinned_by_digest_when_one_is_given(render: Render) -> None:
    for _, pod in pods(render(ALL_FEATURES)):
        (container,) = pod["containers"]
        assert container["image"] == (
            "registry.example.com/taskforge:1.2.3@sha256:"
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        )
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]


def test_store_urls_and_api_tokens_come_from_the_named_secrets(render: Render) -> None:
    manifests = render(ALL_FEATURES)
    containers = {
        component(d): d["spec"]["template"]["spec"]["containers"][0]
        for d in find(manifests, "Deployment")
    }
    for name in ["api", "scheduler", "worker", "reaper"]:
        env = env_of(containers[name])
        postgres = env["TASKFORGE_POSTGRES_URL"]["valueFrom"]["secretKeyRef"]
        assert postgres == {"name": "prod-postgres", "key": "dsn"}
        redis = env["TASKFORGE_REDIS_URL"]["valueFrom"]["secretKeyRef"]
        assert redis == {"name": "prod-redis", "key": "dsn"}
        assert ("TASKFORGE_API_TOKENS" in env) == (name == "api")
    operator = env_of(containers["operator"])
    assert "TASKFORGE_POSTGRES_URL" not in operator, "the operator reads the backlog from Redis"
    assert operator["TASKFORGE_OPERATOR_NAMESPACE"]["valueFrom"]["fieldRef"] == {
        "fieldPath": "metadata.namespace"
    }
    tokens = env_of(containers["api"])["TASKFORGE_API_TOKENS"]["valueFrom"]["secretKeyRef"]
    secret = one(manifests, "Secret", tokens["name"])
    digests = secret["stringData"][tokens["key"]].split(",")
    assert len(digests) == 2
    assert all(d.startswith("sha256:") and len(d) == 71 for d in digests)


def test_api_tokens_from_an_existing_secret(render: Render) -> None:
    manifests = render(sets={"apiTokens.existingSecret": "my-tokens"})
    api = one(manifests, "Deployment", "tf-taskforge-api")
    env = env_of(api["spec"]["template"]["spec"]["containers"][0])
    assert env["TASKFORGE_API_TOKENS"]["valueFrom"]["secretKeyRef"] == {
        "name": "my-tokens",
        "key": "tokens",
    }
    assert not find(manifests, "Secret"), "the chart does not create a Secret it was given"


def test_environment_follows_values_and_a_deployables_env_wins(render: Render) -> None:
    manifests = render(ALL_FEATURES)
    api = env_of(container_of(one(manifests, "Deployment", "tf-taskforge-api")))
    worker_deployment = one(manifests, "Deployment", "tf-taskforge-worker")
    worker = env_of(container_of(worker_deployment))
    assert api["TASKFORGE_HTTP_PORT"]["value"] == "8080"
    assert api["TASKFORGE_RATE_LIMIT"]["value"] == "50"
    assert api["TASKFORGE_LOG_LEVEL"]["value"] == "debug"
    assert api["TASKFORGE_LOG_FORMAT"]["value"] == "console"
    assert api["TASKFORGE_JOB_TIMEOUT"]["value"] == "15m"
    assert api["TASKFORGE_BACKOFF_MAX"]["value"] == "10m"
    assert api["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://otel-collector.monitoring:4318"
    assert worker["TASKFORGE_QUEUES"]["value"] == "default,mail"
    assert worker["TASKFORGE_WORKER_CONCURRENCY"]["value"] == "64"
    assert worker["TASKFORGE_HANDLERS"]["value"] == "myapp.jobs:registry,myapp.mail:registry"
    assert container_of(worker_deployment)["envFrom"] == [
        {"secretRef": {"name": "mail-credentials"}}
    ]
    overridden = render(sets={"worker.env.TASKFORGE_QUEUES": "urgent"})
    worker = one(overridden, "Deployment", "tf-taskforge-worker")
    assert env_of(worker["spec"]["template"]["spec"]["containers"][0])["TASKFORGE_QUEUES"] == {
        "name": "TASKFORGE_QUEUES",
        "value": "urgent",
    }


def test_no_env_var_is_defined_twice(render: Render) -> None:
    for _, pod in pods(render(ALL_FEATURES)):
        names = [e["name"] for e in pod["containers"][0]["env"]]
        assert len(names) == len(set(names))


@pytest.mark.parametrize(("grace", "margin"), [(25, 10), (120, 15)])
def test_worker_termination_grace_covers_its_shutdown_grace(
    render: Render, grace: int, margin: int
) -> None:
    manifests = render(
        sets={
            "worker.shutdownGraceSeconds": grace,
            "worker.terminationGraceMarginSeconds": margin,
        }
    )
    worker = one(manifests, "Deployment", "tf-taskforge-worker")
    pod = worker["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == grace + margin
    assert env_of(pod["containers"][0])["TASKFORGE_SHUTDOWN_GRACE"]["value"] == str(grace)


def test_operator_is_a_single_replica_recreated_on_rollout(render: Render) -> None:
    operator = one(render(sets={"operator.enabled": "true"}), "Deployment", "tf-taskforge-operator")
    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"] == {"type": "Recreate"}
    pod = operator["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "tf-taskforge-operator"
    assert pod["automountServiceAccountToken"] is True


def test_only_the_operator_mounts_a_service_account_token(render: Render) -> None:
    for workload, pod in pods(render(ALL_FEATURES)):
        mounts_token = pod.get("automountServiceAccountToken", True)
        assert mounts_token == (component(workload) == "operator"), workload["metadata"]["name"]


def test_migration_runs_as_a_pre_install_and_pre_upgrade_hook(render: Render) -> None:
    job = one(render(), "Job", "tf-taskforge-migration")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["args"] == ["migrate"]
    assert "TASKFORGE_POSTGRES_URL" in env_of(container)
    assert "taskforge.io/metrics" not in job["spec"]["template"]["metadata"]["labels"]
    assert not find(render(sets={"migration.enabled": "false"}), "Job")


def test_api_service_and_metrics_service(render: Render) -> None:
    manifests = render()
    api = one(manifests, "Service", "tf-taskforge-api")
    assert api["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    ]
    assert api["spec"]["selector"]["app.kubernetes.io/component"] == "api"
    metrics = one(manifests, "Service", "tf-taskforge-metrics")
    assert metrics["spec"]["clusterIP"] == "None"
    selector = metrics["spec"]["selector"]
    scraped = {
        component(d)
        for d in find(manifests, "Deployment")
        if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
    }
    assert scraped == {"api", "scheduler", "worker", "reaper"}


def test_ingress_routes_to_the_api_service(render: Render) -> None:
    ingress = one(render(ALL_FEATURES), "Ingress", "tf-taskforge-api")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "jobs.example.com"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "tf-taskforge-api", "port": {"name": "http"}}
    assert ingress["spec"]["tls"] == [
        {"hosts": ["jobs.example.com"], "secretName": "jobs-example-com-tls"}
    ]


def test_pod_disruption_budgets_skip_the_single_replica_operator(render: Render) -> None:
    budgets = find(render(ALL_FEATURES), "PodDisruptionBudget")
    assert {component(b) for b in budgets} == {"api", "scheduler", "worker", "reaper"}
    for budget in budgets:
        assert budget["spec"]["maxUnavailable"] == 1
        assert budget["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == (
            component(budget)
        )


def test_scheduling_constraints_reach_the_pods(render: Render) -> None:
    api = one(render(ALL_FEATURES), "Deployment", "tf-taskforge-api")
    pod = api["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert "podAntiAffinity" in pod["affinity"]
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert api["spec"]["template"]["metadata"]["annotations"] == {"example.com/team": "jobs"}
    assert api["spec"]["template"]["metadata"]["labels"]["example.com/tier"] == "backend"


def test_whole_numbers_from_values_files_stay_integers(render: Render, tmp_path: Path) -> None:
    # Helm reads numbers in values files as floats; 1000000 must not become "1e+06".
    values = tmp_path / "big-values.yaml"
    values.write_text("worker:\n  concurrency: 1000000\nconfig:\n  visibilityTimeout: 2.5\n")
    worker = one(render(values), "Deployment", "tf-taskforge-worker")
    env = env_of(container_of(worker))
    assert env["TASKFORGE_WORKER_CONCURRENCY"]["value"] == "1000000"
    assert env["TASKFORGE_VISIBILITY_TIMEOUT"]["value"] == "2.5"


@pytest.mark.parametrize("name", ["TASKFORGE_POSTGRES_URL", "TASKFORGE_API_TOKENS", "POD_NAME"])
def test_env_cannot_shadow_what_the_chart_sets_from_secrets(render: Render, name: str) -> None:
    with pytest.raises(HelmError, match=f"{name} is set by the chart"):
        render(sets={f"api.env.{name}": "x"})
