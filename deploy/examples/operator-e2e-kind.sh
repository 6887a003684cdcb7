#!/usr/bin/env bash
# The WorkerAutoscaler operator end to end on a kind cluster (`make e2e-kind`; not run in CI).
#
# 1. a kind cluster from deploy/kind/kind-config.yaml (reused when it exists);
# 2. the image from services/Dockerfile, loaded into kind (no registry);
# 3. PostgreSQL, Redis and the dev API token from deploy/dev;
# 4. the chart with worker.autoscaling.mode=operator, minReplicas 0, short windows;
# 5. JOBS `sleep` jobs submitted through the api: the workers must go up to
#    ceil(backlog / target) (bounded by the step), then back to 0 once the queue is drained
#    and the stabilization window has passed. Status, conditions and events are printed.
#
# Needs docker, kind, kubectl, helm and curl. Tear down with `make e2e-kind-down`.
set -euo pipefail
cd "$(dirname "$0")/../.."

KIND=${KIND:-kind}
KIND_CLUSTER=${KIND_CLUSTER:-taskforge}
IMAGE=${IMAGE:-taskforge:e2e}
NAMESPACE=${NAMESPACE:-taskforge}
JOBS=${JOBS:-200}
RELEASE=taskforge
WORKER="$RELEASE-worker"
TARGET=20      # backlog per worker: 200 jobs call for 10 workers
WINDOW=30      # scale-down stabilization, seconds
API_PORT=18080

say() { printf '\n== %s\n' "$*"; }
replicas() { kubectl -n "$NAMESPACE" get deploy "$WORKER" -o jsonpath='{.spec.replicas}'; }
wait_for() {  # wait_for <seconds> <description> <command...>
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@"; do
        if ((SECONDS > deadline)); then
            echo "timed out waiting for: $what" >&2
            kubectl -n "$NAMESPACE" get workerautoscalers -o yaml >&2 || true
            exit 1
        fi
        sleep 2
    done
}

for tool in docker "$KIND" kubectl helm curl; do
    command -v "$tool" >/dev/null || { echo "e2e-kind needs $tool on PATH" >&2; exit 2; }
done

say "cluster"
if ! "$KIND" get clusters | grep -qx "$KIND_CLUSTER"; then
    "$KIND" create cluster --name "$KIND_CLUSTER" --config deploy/kind/kind-config.yaml
fi
kubectl config use-context "kind-$KIND_CLUSTER"

say "image $IMAGE"
docker build -t "$IMAGE" -f services/Dockerfile .
"$KIND" load docker-image "$IMAGE" --name "$KIND_CLUSTER"

say "stores (deploy/dev)"
kubectl apply -f deploy/dev/00-namespace.yaml -f deploy/dev/05-api-tokens.yaml \
    -f deploy/dev/10-postgres.yaml -f deploy/dev/20-redis.yaml
kubectl -n "$NAMESPACE" rollout status deploy --timeout=180s

say "chart (operator mode)"
helm upgrade --install "$RELEASE" charts/taskforge -n "$NAMESPACE" \
    -f deploy/dev/chart-values.yaml \
    --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" \
    --set image.pullPolicy=Never \
    --set worker.autoscaling.mode=operator \
    --set worker.autoscaling.minReplicas=0 \
    --set worker.autoscaling.maxReplicas=10 \
    --set worker.autoscaling.targetBacklogPerReplica=$TARGET \
    --set worker.autoscaling.operator.pollIntervalSeconds=2 \
    --set worker.autoscaling.operator.scaleDownStabilizationSeconds=$WINDOW \
    --wait --timeout 5m
kubectl -n "$NAMESPACE" rollout status "deploy/$RELEASE-operator" --timeout=120s

say "autoscaler reporting"
# Until the scheduler has published figures for the queue, the autoscaler reports Stale=True and
# holds the replicas it found (it never scales down on missing figures).
wait_for 60 "a status on the WorkerAutoscaler" \
    test -n "$(kubectl -n "$NAMESPACE" get workerautoscalers "$WORKER" -o jsonpath='{.status.conditions}')"
kubectl -n "$NAMESPACE" get workerautoscalers

say "submit $JOBS sleep jobs"
kubectl -n "$NAMESPACE" port-forward "svc/$RELEASE-api" "$API_PORT:8080" >/dev/null 2>&1 &
forward=$!
trap 'kill $forward 2>/dev/null || true' EXIT
wait_for 30 "api port-forward" curl -fsS "http://127.0.0.1:$API_PORT/healthz" -o /dev/null
jobs=$(printf '{"type":"sleep","payload":{"seconds":3}},%.0s' $(seq "$JOBS"))
curl -fsS -X POST "http://127.0.0.1:$API_PORT/v1/jobs/batch" \
    -H 'Authorization: Bearer dev-token' -H 'Content-Type: application/json' \
    -d "{\"jobs\":[${jobs%,}]}" -o /dev/null

say "backlog: workers scale up"
wait_for 120 "workers above 0" test "$(replicas)" -gt 0
kubectl -n "$NAMESPACE" get workerautoscalers
wait_for 120 "workers at the step-bounded maximum" test "$(replicas)" -ge 5
kubectl -n "$NAMESPACE" get workerautoscalers

say "drained: workers back to zero after the ${WINDOW}s window"
wait_for 600 "workers back at 0" test "$(replicas)" = 0
kubectl -n "$NAMESPACE" get workerautoscalers "$WORKER" \
    -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}'
kubectl -n "$NAMESPACE" get events --field-selector "involvedObject.kind=WorkerAutoscaler" \
    --sort-by=.lastTimestamp
say "e2e-kind passed"
