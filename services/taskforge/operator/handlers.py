"""The kopf side: a login handler and one daemon per WorkerAutoscaler, both a few lines.

A daemon rather than a timer because kopf fixes a timer's interval when it is registered,
while ``pollIntervalSeconds`` belongs to each autoscaler and may change at any time (the
daemon re-reads its live ``body`` every poll). Handlers go into a registry of their own, so
importing this module registers nothing globally and tests can run several operators.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf

from taskforge.operator.autoscaler import Runtime, run_autoscaler
from taskforge.operator.kube import Credentials
from taskforge.operator.resource import GROUP, PLURAL, VERSION

FINALIZER = "taskforge.io/operator"
CANCELLATION_TIMEOUT = 5.0
"""A poll holds no state worth saving: cancel the daemon at once when its object goes."""


def login(credentials: Credentials, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """Log in as kubectl would: $KUBECONFIG, else the pod's service account, else ~/.kube.

    The result is kept in ``credentials`` for the operator's own requests (``/scale``,
    ``/status``), so they use the same server, token and CA as kopf's watches.
    """
    info: kopf.ConnectionInfo | None = None
    if os.environ.get("KUBECONFIG"):
        info = kopf.login_with_kubeconfig(**kwargs)
    if info is None:
        info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    if info is not None:
        credentials.update(info)
    return info


def build_registry(runtime: Runtime, credentials: Credentials) -> kopf.OperatorRegistry:
    """A registry holding the operator's handlers, bound to ``runtime``."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def authenticate(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return login(credentials, **kwargs)

    @kopf.daemon(
        GROUP,
        VERSION,
        PLURAL,
        id="autoscale",
        registry=registry,
        cancellation_timeout=CANCELLATION_TIMEOUT,
    )
    async def autoscale(body: kopf.Body, **_: Any) -> None:
        def emit(type_: str, reason: str, message: str) -> None:
            kopf.event(body, type=type_, reason=reason, message=message)

        await run_autoscaler(runtime, body, emit)

    return registry


def operator_settings() -> kopf.OperatorSettings:
    """kopf's settings: standalone (one replica, no peering), events only when we say so."""
    settings = kopf.OperatorSettings()
    settings.peering.standalone = True
    # One namespace, named: no cluster-wide listing of namespaces and CRDs, so the operator
    # needs no ClusterRole. The CRD must exist when the operator starts (the chart's crds/).
    settings.scanning.disabled = True
    settings.persistence.finalizer = FINALIZER
    # kopf turns a handler's INFO logs into Events by default; ours are posted explicitly
    # (a scale, a problem), so only kopf's own warnings and errors become Events.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "taskforge-operator"
    settings.posting.event_name_prefix = "taskforge-operator-"
    return settings
