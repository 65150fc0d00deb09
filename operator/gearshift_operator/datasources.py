"""kopf handlers for `DataSource`: report what the retriever holds in the resource's status.

The operator does not ingest documents (a team does, with `gearshift sources ingest`);
it resolves the source's retriever endpoint, asks it for the source's counts (Stats,
under a deadline) and writes documents, chunks, content version and last ingestion
with a Ready condition: Ready, Unreachable (no endpoint, or the retriever did not
answer in time) or NotFound (the retriever has no such source yet). A timer repeats
the check, so status follows ingestions made after the resource was applied.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import grpc
import kopf

from gearshift.routes.model_route import GROUP, VERSION
from gearshift.runtime.api_keys import bearer_metadata
from gearshift.v1 import retriever_pb2, retriever_pb2_grpc
from gearshift_operator import periodic, status
from gearshift_operator.kube import KubeError, client, path_for
from gearshift_operator.settings import Settings

PLURAL = "datasources"
SETTINGS = Settings()
LOG = logging.getLogger("gearshift.operator.datasources")


def resolve_endpoint(spec: dict[str, Any], settings: Settings) -> str:
    """The source's own endpoint, else the chart's retriever ('' when neither is set)."""
    retriever = spec.get("retriever") or {}
    return str(retriever.get("endpoint") or settings.retriever_endpoint)


def _rfc3339(unix_seconds: float) -> str:
    stamp = datetime.fromtimestamp(unix_seconds, UTC).replace(microsecond=0)
    return stamp.isoformat().replace("+00:00", "Z")


def _ready(ok: bool, reason: str, message: str, generation: int | None) -> dict[str, Any]:
    cond: dict[str, Any] = {
        "type": "Ready",
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message[:1000],
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


async def observe(
    name: str, spec: dict[str, Any], generation: int | None, settings: Settings
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Status fields and the Ready condition, from one Stats call (never raises)."""
    endpoint = resolve_endpoint(spec, settings)
    fields: dict[str, Any] = {"endpoint": endpoint, "observedGeneration": generation}
    if not endpoint:
        return fields, _ready(
            False,
            "Unreachable",
            "no retriever endpoint: set spec.retriever.endpoint, or enable the chart's "
            "retriever (retriever.enabled) so the operator knows its Service",
            generation,
        )
    tenant = str((spec.get("retriever") or {}).get("tenant") or "")
    request = retriever_pb2.RetrieverStatsRequest(tenant=tenant, source=name)
    try:
        async with grpc.aio.insecure_channel(endpoint) as channel:
            stub = retriever_pb2_grpc.RetrieverServiceStub(channel)
            response = await stub.Stats(
                request,
                timeout=settings.retriever_timeout_s,
                metadata=bearer_metadata(settings.retriever_api_key),
            )
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return fields, _ready(
                False,
                "NotFound",
                f"retriever {endpoint} has no source {name!r} (tenant {tenant or 'default'!r}); "
                f"ingest documents: gearshift sources ingest --retriever {endpoint} "
                f"--source {name} PATH...",
                generation,
            )
        return fields, _ready(
            False,
            "Unreachable",
            f"retriever {endpoint} did not answer Stats within "
            f"{settings.retriever_timeout_s:g}s: {exc.code().name}: {exc.details()}",
            generation,
        )
    found = [s for s in response.sources if s.source == name]
    if not found:
        return fields, _ready(
            False, "NotFound", f"retriever {endpoint} has no source {name!r}", generation
        )
    source = found[0]
    fields.update(
        documents=source.documents,
        chunks=source.chunks,
        contentVersion=source.content_version,
        lastIngestedAt=_rfc3339(source.last_ingested_at),
    )
    return fields, _ready(
        True,
        "Ready",
        f"{source.documents} documents, {source.chunks} chunks at {endpoint} ({response.backend})",
        generation,
    )


async def reconcile(
    name: str, spec: Any, meta: Any, body: Any, patch: kopf.Patch, **_: Any
) -> None:
    generation = meta.get("generation")
    fields, ready = await observe(name, dict(spec), generation, SETTINGS)
    old = (body.get("status") or {}).get("conditions") or []
    merged = status.merge_conditions(old, [ready], status.now_rfc3339())
    current = dict(body.get("status") or {})
    wanted = {**fields, "conditions": merged}
    if any(current.get(key) != value for key, value in wanted.items()):
        patch.status.update(wanted)
    if ready["status"] != "True":
        LOG.info("DataSource %s not ready: %s", name, ready["message"])


kopf.on.resume(GROUP, VERSION, PLURAL)(reconcile)
kopf.on.create(GROUP, VERSION, PLURAL)(reconcile)
kopf.on.update(GROUP, VERSION, PLURAL, field="spec")(reconcile)


async def refresh(namespace: str, name: str) -> bool:
    """Re-reads one source's counts (every datasource_interval_s); False once it is gone."""
    base = path_for(f"{GROUP}/{VERSION}", "DataSource", namespace, name)
    body = await client().get(base)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return False
    patch = kopf.Patch()
    await reconcile(name, body.get("spec") or {}, body["metadata"], body, patch)
    if patch.get("status"):
        try:
            await client().merge_patch(base + "/status", {"status": dict(patch["status"])})
        except KubeError as err:
            if err.status == 404:
                return False  # deleted meanwhile
            raise
    return True


# Not a kopf timer: that would put a finalizer on every DataSource (see periodic.py).
REFRESHING = periodic.Periodic("datasource refresh", SETTINGS.datasource_interval_s, refresh)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def datasource_event(event: kopf.RawEvent, **_: Any) -> None:
    REFRESHING.follow(event, wanted=True)
