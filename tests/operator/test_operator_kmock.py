"""The operator run for real by kopf against kmock's Kubernetes emulator and a real Redis.

Each test puts a worker Deployment and a WorkerAutoscaler into the emulator, makes a backlog
appear or drain in Redis (stream entries in the ``workers`` group, the scheduler's hash), and
watches what the operator does through the API: ``/scale`` patches, ``/status``, Events.
Windows are short (1 s polls, 2 s stabilization) so the whole module runs in well under a
minute; every timing assertion leaves at least a poll interval of slack.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from taskforge.operator.backlog import GROUP, figures_key, stream_key
from taskforge.operator.metrics import Metrics
from tests.operator.conftest import NAMESPACE, Emulator, running_operator

T = TypeVar("T")

POLL = 1.0
WINDOW = 2.0
SLACK = 0.75
DEPLOYMENTS = "apps/v1/deployments"
AUTOSCALERS = "taskforge.io/v1alpha1/workerautoscalers"
AUTOSCALERS_URL = f"/apis/taskforge.io/v1alpha1/namespaces/{NAMESPACE}/workerautoscalers"


# The cluster side.


def add_deployment(k8s: Emulator, name: str = "worker", replicas: int = 1) -> None:
    k8s.objects[DEPLOYMENTS, NAMESPACE, name] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"uid-{name}"},
        "spec": {"replicas": replicas},
    }


def replicas(k8s: Emulator, name: str = "worker") -> int:
    return int(k8s.objects[DEPLOYMENTS, NAMESPACE, name].raw["spec"]["replicas"])


async def add_autoscaler(k8s: Emulator, queue: str, **spec: Any) -> None:
    body = {
        "apiVersion": "taskforge.io/v1alpha1",
        "kind": "WorkerAutoscaler",
        "metadata": {"name": "workers", "namespace": NAMESPACE},
        "spec": {
            "scaleTargetRef": {"name": "worker"},
            "queue": queue,
            "minReplicas": 0,
            "maxReplicas": 20,
            "targetBacklogPerReplica": 100,
            "pollIntervalSeconds": POLL,
            "scaleDownStabilizationSeconds": WINDOW,
            "scaleUpMaxStep": 0,
            **spec,
        },
    }
    response = await k8s.post(AUTOSCALERS_URL, json=body)
    assert response.status == 200, await response.text()


def status(k8s: Emulator) -> dict[str, Any]:
    raw: dict[str, Any] = k8s.objects[AUTOSCALERS, NAMESPACE, "workers"].raw
    return dict(raw.get("status") or {})


def condition(k8s: Emulator, kind: str) -> dict[str, str]:
    found = [c for c in status(k8s).get("conditions", []) if c["type"] == kind]
    return found[0] if found else {}


def events(k8s: Emulator) -> list[dict[str, Any]]:
    return [
        obj.raw
        for (resource, _, _), obj in k8s.objects.items()
        if resource.plural == "events" and not obj.deleted
    ]


def scale_patches(k8s: Emulator) -> list[Any]:
    return [
        request.data
        for request in k8s._requests
        if request.method == "PATCH" and request.url.path.endswith("/scale")
    ]


async def eventually(check: Callable[[], T], timeout: float, what: str) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s (last: {result!r})")
        await asyncio.sleep(0.05)


# The queue side.


async def enqueue(redis: aioredis.Redis, queue: str, count: int) -> None:
    """Jobs the dispatcher put into the stream (the group exists: workers have joined)."""
    if not await redis.exists(stream_key(queue)):
        await redis.xgroup_create(stream_key(queue), GROUP, id="$", mkstream=True)
    pipe = redis.pipeline(transaction=False)
    for index in range(count):
        pipe.xadd(stream_key(queue), {"job": str(index)})
    await pipe.execute()


async def drain(redis: aioredis.Redis, queue: str) -> None:
    """Workers read and acknowledge every entry."""
    reply: Any = await redis.xreadgroup(GROUP, "worker-1", {stream_key(queue): ">"}, count=100_000)
    ids = [entry_id for _, entries in reply for entry_id, _ in entries]
    pending = await redis.xpending_range(stream_key(queue), GROUP, "-", "+", 100_000)
    ids += [entry["message_id"] for entry in pending]
    if ids:
        await redis.xack(stream_key(queue), GROUP, *ids)


async def publish(redis: aioredis.Redis, queue: str, due: int = 0, running: int = 0) -> None:
    """What the scheduler publishes every couple of seconds."""
    await redis.hset(
        figures_key(queue), mapping={"due": due, "running": running, "updated_at": time.time()}
    )


# The tests.


@pytest.mark.usefixtures("operator")
async def test_backlog_raises_replicas_to_ceil_backlog_over_target_within_a_poll(
    k8s: Emulator, redis: aioredis.Redis, queue: str, registry: CollectorRegistry
) -> None:
    add_deployment(k8s, replicas=2)
    await enqueue(redis, queue, 150)
    await publish(redis, queue, due=50, running=2)
    await add_autoscaler(k8s, queue)
    await eventually(lambda: status(k8s).get("backlog") == 200, 5, "first poll")
    assert replicas(k8s) == 2  # 200 / 100 per replica: already right

    started = time.monotonic()
    await enqueue(redis, queue, 450)
    await publish(redis, queue, due=100, running=2)  # 600 + 100 due = 700 -> 7 replicas
    await eventually(lambda: replicas(k8s) == 7, POLL + SLACK, "scale-up to 7")
    assert time.monotonic() - started <= POLL + SLACK
    assert scale_patches(k8s)[-1] == {"spec": {"replicas": 7}}
    # The operator's own requests use the credentials kopf logged in with.
    scale_requests = [r for r in k8s._requests if r.url.path.endswith("/scale")]
    assert {r.headers.get("Authorization") for r in scale_requests} == {"Bearer test-token"}

    await eventually(lambda: status(k8s).get("desiredReplicas") == 7, POLL + SLACK, "status")
    assert status(k8s)["backlog"] == 700
    assert status(k8s)["lastScaleTime"]
    assert status(k8s)["observedGeneration"] == 1
    assert condition(k8s, "Ready")["status"] == "True"
    assert condition(k8s, "Active")["status"] == "True"
    assert condition(k8s, "Stale") | {"lastTransitionTime": ""} == {
        "type": "Stale",
        "status": "False",
        "reason": "Fresh",
        "message": "scheduler figures are fresh",
        "lastTransitionTime": "",
    }
    scaled = await eventually(
        lambda: [e for e in events(k8s) if e["reason"] == "ScaledUp"], SLACK, "ScaledUp event"
    )
    assert "2 -> 7 replicas" in scaled[-1]["message"]
    assert scaled[-1]["involvedObject"]["name"] == "workers"
    labels = {"autoscaler": "workers", "namespace": NAMESPACE}
    assert registry.get_sample_value("taskforge_operator_backlog", labels) == 700
    assert registry.get_sample_value("taskforge_operator_desired_replicas", labels) == 7
    assert registry.get_sample_value("taskforge_operator_decisions_total", {"direction": "up"})


@pytest.mark.parametrize("minimum", [0, 1])
@pytest.mark.usefixtures("operator")
async def test_drained_queue_returns_to_the_minimum_only_after_the_window(
    k8s: Emulator, redis: aioredis.Redis, queue: str, minimum: int
) -> None:
    add_deployment(k8s, replicas=3)
    await enqueue(redis, queue, 300)
    await publish(redis, queue, running=3)
    await add_autoscaler(k8s, queue, minReplicas=minimum)
    await eventually(lambda: status(k8s).get("backlog") == 300, 5, "first poll")

    drained = time.monotonic()
    await drain(redis, queue)
    await publish(redis, queue, due=0, running=0)
    await eventually(lambda: status(k8s).get("backlog") == 0, POLL + SLACK, "drained seen")
    assert replicas(k8s) == 3
    assert condition(k8s, "Ready")["reason"] == "Stabilizing"

    await eventually(
        lambda: replicas(k8s) == minimum, WINDOW + POLL + SLACK, f"scale-down to {minimum}"
    )
    assert time.monotonic() - drained >= WINDOW
    reason = "ScaleToZero" if minimum == 0 else "ScaleDown"
    await eventually(lambda: condition(k8s, "Ready").get("reason") == reason, POLL + SLACK, reason)
    assert condition(k8s, "Active")["status"] == "False"
    await eventually(
        lambda: [e for e in events(k8s) if e["reason"] == "ScaledDown"], SLACK, "ScaledDown event"
    )


@pytest.mark.usefixtures("operator")
async def test_missing_figures_allow_scale_up_but_never_scale_down(
    k8s: Emulator, redis: aioredis.Redis, queue: str
) -> None:
    add_deployment(k8s, replicas=1)
    await enqueue(redis, queue, 250)  # no scheduler hash at all
    await add_autoscaler(k8s, queue)

    await eventually(lambda: replicas(k8s) == 3, POLL + 2 * SLACK, "scale-up from the stream")
    stale = await eventually(lambda: condition(k8s, "Stale"), POLL + SLACK, "Stale condition")
    assert (stale["status"], stale["reason"]) == ("True", "FiguresMissing")

    await drain(redis, queue)
    await eventually(lambda: status(k8s).get("backlog") == 0, POLL + SLACK, "drained seen")
    await asyncio.sleep(WINDOW + POLL)
    assert replicas(k8s) == 3
    assert condition(k8s, "Ready")["reason"] == "StaleHold"


@pytest.mark.usefixtures("operator")
async def test_missing_target_is_a_condition_and_an_event_until_it_appears(
    k8s: Emulator, redis: aioredis.Redis, queue: str
) -> None:
    await enqueue(redis, queue, 200)
    await publish(redis, queue)
    await add_autoscaler(k8s, queue)

    ready = await eventually(lambda: condition(k8s, "Ready"), 5, "Ready condition")
    assert (ready["status"], ready["reason"]) == ("False", "TargetNotFound")
    assert "deployment/worker" in ready["message"]
    warnings = await eventually(
        lambda: [e for e in events(k8s) if e["reason"] == "TargetNotFound"], SLACK, "warning"
    )
    assert [e["type"] for e in warnings] == ["Warning"]

    add_deployment(k8s, replicas=1)
    await eventually(lambda: replicas(k8s) == 2, POLL + SLACK, "scaled once the target exists")
    await eventually(lambda: condition(k8s, "Ready").get("status") == "True", SLACK, "Ready again")
    await eventually(
        lambda: [e for e in events(k8s) if e["reason"] == "Recovered"], SLACK, "Recovered event"
    )
    # One warning for the whole outage, not one per poll.
    assert len([e for e in events(k8s) if e["reason"] == "TargetNotFound"]) == 1


@pytest.mark.usefixtures("operator")
async def test_deleted_target_is_reported(k8s: Emulator, redis: aioredis.Redis, queue: str) -> None:
    add_deployment(k8s, replicas=1)
    await enqueue(redis, queue, 400)
    await publish(redis, queue)
    await add_autoscaler(k8s, queue)
    await eventually(lambda: replicas(k8s) == 4, 5, "scale-up")

    response = await k8s.delete(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/worker")
    assert response.status == 200
    await eventually(
        lambda: condition(k8s, "Ready").get("reason") == "TargetNotFound",
        POLL + SLACK,
        "TargetNotFound after deletion",
    )
    assert condition(k8s, "Ready")["status"] == "False"


@pytest.mark.usefixtures("operator")
async def test_paused_autoscaler_reports_but_does_not_scale(
    k8s: Emulator, redis: aioredis.Redis, queue: str
) -> None:
    add_deployment(k8s, replicas=1)
    await enqueue(redis, queue, 500)
    await publish(redis, queue)
    await add_autoscaler(k8s, queue, paused=True)

    await eventually(lambda: status(k8s).get("desiredReplicas") == 5, 5, "desired while paused")
    assert condition(k8s, "Ready")["reason"] == "Paused"
    await asyncio.sleep(POLL)
    assert (replicas(k8s), scale_patches(k8s)) == (1, [])

    response = await k8s.patch(f"{AUTOSCALERS_URL}/workers", json={"spec": {"paused": False}})
    assert response.status == 200
    await eventually(lambda: replicas(k8s) == 5, POLL + 2 * SLACK, "scaled once resumed")


async def test_unreachable_redis_is_a_condition_not_a_crash(
    k8s: Emulator, kubeconfig: Path, metrics: Metrics, registry: CollectorRegistry
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{probe.getsockname()[1]}/0"
    add_deployment(k8s, replicas=2)
    async with running_operator(dead, metrics):
        await add_autoscaler(k8s, "default")
        ready = await eventually(lambda: condition(k8s, "Ready"), 5, "Ready condition")
        assert (ready["status"], ready["reason"]) == ("False", "RedisUnavailable")
        await eventually(
            lambda: [e for e in events(k8s) if e["reason"] == "RedisUnavailable"], SLACK, "event"
        )
        await asyncio.sleep(POLL)  # still polling, still not crashing, still not scaling
    assert (replicas(k8s), scale_patches(k8s)) == (2, [])
    errors = registry.get_sample_value(
        "taskforge_operator_errors_total", {"reason": "RedisUnavailable"}
    )
    assert errors is not None and errors >= 2


@pytest.mark.usefixtures("operator")
async def test_deleting_the_autoscaler_stops_it_and_releases_its_finalizer(
    k8s: Emulator, redis: aioredis.Redis, queue: str, registry: CollectorRegistry
) -> None:
    add_deployment(k8s, replicas=1)
    await publish(redis, queue)
    await add_autoscaler(k8s, queue)
    await eventually(lambda: status(k8s).get("conditions"), 5, "first poll")
    assert k8s.objects[AUTOSCALERS, NAMESPACE, "workers"].raw["metadata"]["finalizers"]

    response = await k8s.delete(f"{AUTOSCALERS_URL}/workers")
    assert response.status == 200
    await eventually(
        lambda: k8s.objects[AUTOSCALERS, NAMESPACE, "workers"].deleted, 5, "finalizer released"
    )
    labels = {"autoscaler": "workers", "namespace": NAMESPACE}
    await eventually(
        lambda: registry.get_sample_value("taskforge_operator_backlog", labels) is None,
        2,
        "metrics forgotten",
    )
