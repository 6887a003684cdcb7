"""Talking to the Kubernetes API: a Deployment's ``/scale`` and the autoscaler's ``/status``.

The operator logs in once, through kopf's login activity (service account in a pod, kubeconfig
elsewhere); :class:`Credentials` keeps what that login returned so the requests here go to the
same server with the same token and CA as kopf's own watches, and follow it on re-login.
Events are not posted here: kopf's ``kopf.event`` queues and posts them with retries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import kopf

from taskforge.operator.resource import GROUP, PLURAL, VERSION

REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=10.0)
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


class KubeError(Exception):
    """The Kubernetes API refused or failed a request."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


class NotFound(KubeError):
    """The object (or its resource) does not exist."""


@dataclass(frozen=True)
class Scale:
    """A Deployment's scale subresource: what is asked (spec) and what runs (status)."""

    replicas: int
    ready: int | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Scale:
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        ready = status.get("readyReplicas", status.get("replicas"))
        return cls(
            replicas=int(spec.get("replicas") or 0),
            ready=int(ready) if isinstance(ready, int) else None,
        )


class Credentials:
    """The connection kopf logged in with; replaced on every (re-)login."""

    def __init__(self) -> None:
        self._info: kopf.ConnectionInfo | None = None
        self._ready = asyncio.Event()

    def update(self, info: kopf.ConnectionInfo) -> None:
        self._info = info
        self._ready.set()

    async def wait(self) -> kopf.ConnectionInfo:
        await self._ready.wait()
        assert self._info is not None
        return self._info


class KubeClient:
    """The few API calls the operator makes besides kopf's own (watching, events, finalizers)."""

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials
        self._session: aiohttp.ClientSession | None = None
        self._session_info: kopf.ConnectionInfo | None = None
        self._lock = asyncio.Lock()

    async def _current(self) -> tuple[aiohttp.ClientSession, str]:
        info = await self._credentials.wait()
        async with self._lock:
            if self._session is None or self._session_info is not info:
                if self._session is not None:
                    await self._session.close()
                connector = aiohttp.TCPConnector(ssl=info.as_ssl_context())
                self._session = aiohttp.ClientSession(
                    connector=connector,
                    headers=info.as_http_headers(),
                    timeout=REQUEST_TIMEOUT,
                    trust_env=info.trust_env,
                )
                self._session_info = info
            return self._session, info.server.rstrip("/")

    async def _request(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        session, server = await self._current()
        headers = MERGE_PATCH if method == "PATCH" else None
        try:
            async with session.request(method, server + path, json=body, headers=headers) as resp:
                if resp.status == 404:
                    raise NotFound(404, f"{method} {path}: not found")
                if resp.status >= 400:
                    raise KubeError(resp.status, f"{method} {path}: {await _message(resp)}")
                data: dict[str, Any] = await resp.json(content_type=None)
                return data
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeError(0, f"{method} {path}: {type(exc).__name__}: {exc}") from exc

    async def get_scale(self, namespace: str, deployment: str) -> Scale:
        """The Deployment's scale; :class:`NotFound` when the Deployment does not exist."""
        return Scale.from_body(await self._request("GET", _scale_path(namespace, deployment)))

    async def set_replicas(self, namespace: str, deployment: str, replicas: int) -> Scale:
        """Patch ``spec.replicas`` through ``/scale`` (what ``kubectl scale`` does)."""
        body = {"spec": {"replicas": replicas}}
        return Scale.from_body(
            await self._request("PATCH", _scale_path(namespace, deployment), body)
        )

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge ``status`` into the WorkerAutoscaler's status subresource."""
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}/status"
        await self._request("PATCH", path, {"status": dict(status)})

    async def close(self) -> None:
        async with self._lock:
            if self._session is not None:
                await self._session.close()
                self._session = None


def _scale_path(namespace: str, deployment: str) -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/deployments/{deployment}/scale"


async def _message(resp: aiohttp.ClientResponse) -> str:
    try:
        data = await resp.json(content_type=None)
    except ValueError:
        return (await resp.text())[:200]
    if isinstance(data, Mapping) and isinstance(data.get("message"), str):
        return str(data["message"])
    return str(data)[:200]
