"""A small async Kubernetes REST client: get, create, replace, merge-patch, delete, list.

Credentials come from the official `kubernetes` package's config loaders (in-cluster
service account, else KUBECONFIG), the same source kopf's own login uses; requests go
through httpx so handlers stay async and every call has a timeout. Calls are paced by a
token bucket (`qps` per second on average, bursts of `burst`), as client-go's rate
limiter paces controllers, so a resync of many routes cannot flood the API server.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from typing import Any

import httpx
import kubernetes

PLURALS: dict[str, str] = {
    "ConfigMap": "configmaps",
    "Deployment": "deployments",
    "Service": "services",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "Pod": "pods",
    "Job": "jobs",
    "ModelRoute": "modelroutes",
    "DataSource": "datasources",
    "Lease": "leases",
}


class KubeError(RuntimeError):
    """A non-2xx answer other than the 404 that `get`/`delete` treat as absent."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def path_for(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    """REST path of a namespaced object (or its collection when `name` is None)."""
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    base = f"{prefix}/namespaces/{namespace}/{PLURALS[kind]}"
    return f"{base}/{name}" if name else base


def object_path(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return path_for(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])


def load_configuration() -> Any:
    """In-cluster service account first, then KUBECONFIG / ~/.kube/config."""
    cfg = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        # KUBECONFIG is read now, not at import time (the package caches it at import).
        kubernetes.config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG") or None, client_configuration=cfg
        )  # type: ignore[no-untyped-call]
    return cfg


def authorization(cfg: Any) -> str:
    """The `Authorization` header value of a loaded configuration ("" when none).

    The kubernetes package's loaders (kubeconfig token, in-cluster service account) store
    the token under the `BearerToken` key; older versions used `authorization`.
    """
    for key in ("BearerToken", "authorization"):
        token = cfg.get_api_key_with_prefix(key)
        if token:
            return str(token)
    return ""


class TokenBucket:
    """At most `burst` calls at once, refilled at `qps` per second; qps <= 0: unbounded.

    Callers wait their turn in order (one lock), so a burst of reconciles is spread out
    instead of failing; the wait is part of each call's time, not unbounded: the bucket
    refills at `qps`.
    """

    def __init__(self, qps: float, burst: int) -> None:
        self.qps = qps
        self.burst = max(1, burst)
        self._tokens = float(self.burst)
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self) -> None:
        if self.qps <= 0:
            return
        async with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.qps)
            self._stamp = now
            if self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) / self.qps)
                self._stamp = time.monotonic()
                self._tokens = 1.0
            self._tokens -= 1


class KubeClient:
    """Async JSON client for the few verbs the operator needs."""

    def __init__(
        self,
        configuration: Any | None = None,
        timeout_s: float = 10.0,
        qps: float = 0.0,
        burst: int = 1,
    ) -> None:
        self.limiter = TokenBucket(qps, burst)
        self._cfg = configuration if configuration is not None else load_configuration()
        verify: ssl.SSLContext | bool = bool(self._cfg.verify_ssl)
        if self._cfg.ssl_ca_cert and self._cfg.verify_ssl:
            verify = ssl.create_default_context(cafile=self._cfg.ssl_ca_cert)
        cert = (self._cfg.cert_file, self._cfg.key_file) if self._cfg.cert_file else None
        if cert is not None and isinstance(verify, ssl.SSLContext):
            verify.load_cert_chain(*cert)
        self._http = httpx.AsyncClient(
            base_url=str(self._cfg.host).rstrip("/"), verify=verify, timeout=timeout_s
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        hook = getattr(self._cfg, "refresh_api_key_hook", None)
        if hook is not None:
            hook(self._cfg)  # rotates projected service-account tokens
        headers = {"Accept": "application/json"}
        token = authorization(self._cfg)
        if token:
            headers["Authorization"] = token
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str | None = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any] | None:
        await self.limiter.take()
        response = await self._http.request(
            method,
            path,
            json=body,
            params=params,
            headers=self._headers(content_type if body is not None else None),
        )
        if response.status_code == 404 and method in ("GET", "DELETE"):
            return None
        if response.status_code >= 400:
            try:
                message = str(response.json().get("message", response.text))
            except ValueError:
                message = response.text
            raise KubeError(response.status_code, message[:500])
        data: dict[str, Any] = response.json() if response.content else {}
        return data

    async def get(self, path: str) -> dict[str, Any] | None:
        return await self._call("GET", path)

    async def list(self, path: str, label_selector: str = "") -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        data = await self._call("GET", path, params=params) or {}
        items: list[dict[str, Any]] = data.get("items") or []
        return items

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call("POST", path, body, "application/json") or {}

    async def replace(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT: the whole object; the API server refuses a stale resourceVersion with 409."""
        return await self._call("PUT", path, body, "application/json") or {}

    async def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call("PATCH", path, body, "application/merge-patch+json") or {}

    async def delete(self, path: str) -> bool:
        """Deletes with background propagation; False if it was already gone."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        return await self._call("DELETE", path, body, "application/json") is not None


# The operator's one API client, shared by its handlers (handlers.py, datasources.py); the
# operator's startup and cleanup handlers reset it, as it belongs to one event loop.
_client: KubeClient | None = None
_rate: tuple[float, int] = (0.0, 1)


def configure_rate(qps: float, burst: int) -> None:
    """The pacing of the shared client made from now on (the operator's settings)."""
    global _rate
    _rate = (qps, burst)


def client() -> KubeClient:
    global _client
    if _client is None:
        _client = KubeClient(qps=_rate[0], burst=_rate[1])
    return _client


def reset_client() -> None:
    """Forgets the shared client (a restarted operator makes a new one on its new loop)."""
    global _client
    _client = None


async def close_client() -> None:
    """Closes and forgets the shared client, if one was made."""
    global _client
    if _client is not None:
        await _client.aclose()
        _client = None
