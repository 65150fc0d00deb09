"""What keeps a route's Deployment at zero replicas for now, read from the cluster.

Two things do, and both exist so that no GPU is held for nothing:
- weights staging (weights_staging.py): the Job filling the cache claim has not
  completed (or failed), so a GPU pod would only wait for the download;
- failed loads (failed_load.py): the pods restarted `failed_start_limit` times without
  becoming Ready, so the route backs off until its spec changes or the back-off ends.

`assess()` reads the route's pods (serving and staging) and its staging Job, records the
failed-load state in the route's annotation, and sets the Deployment's replicas to 0 in
the desired children when something holds it. The caller applies the children and
writes the conditions this returns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from gearshift.routes.model_route import GROUP, VERSION, ModelRoute
from gearshift_operator import children, failed_load, pod_health, status, weights_staging
from gearshift_operator.indices import CACHES
from gearshift_operator.kube import KubeClient, path_for
from gearshift_operator.settings import Settings

Manifest = dict[str, Any]


@dataclass
class Assessment:
    """The pods' health, and the hold (reason empty: none) with its conditions."""

    health: pod_health.Health
    reason: str = ""
    message: str = ""
    failing: bool = False
    extra: status.Conditions = field(default_factory=list)
    job: Manifest | None = None
    # A new revision is being staged while the current pods keep serving the old one.
    staging_failed: str = ""

    def conditions(self, conds: status.Conditions, generation: int | None) -> status.Conditions:
        """The route's conditions: the hold's when held, else the Deployment's corrected
        by the pods' health; plus PodsHealthy and (staged routes) WeightsStaged."""
        if self.reason:
            held = status.held_conditions(self.reason, self.message, self.failing, generation)
            pods = status.pods_healthy_condition(self.health, generation)
            return [*held, pods, *self.extra]
        out = status.with_pod_health(conds, self.health, generation)
        if self.staging_failed:
            out = [
                status.held_conditions(
                    "WeightStagingFailed", self.staging_failed, True, generation
                )[2]
                if c["type"] == "Degraded"
                else c
                for c in out
            ]
        return [*out, *self.extra]


def route_pods(route: ModelRoute) -> list[Manifest]:
    """The route's pods: serving ones and its staging Job's (both carry the route label),
    from the operator's watch cache (no API call per reconcile)."""
    return CACHES.route_pods(route.namespace, route.name)


def _is_staging(pod: Manifest) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return labels.get("app.kubernetes.io/component") == weights_staging.COMPONENT


def _job_name(pod: Manifest) -> str | None:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    name = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
    return str(name) if name else None


def _deployment(desired: list[Manifest]) -> Manifest | None:
    return next((c for c in desired if c["kind"] == "Deployment"), None)


async def assess(
    api: KubeClient,
    body: Any,
    route: ModelRoute,
    desired: list[Manifest],
    settings: Settings,
    generation: int | None,
) -> Assessment:
    """Reads pods and the staging Job; holds the Deployment in `desired` at 0 when needed.

    The staging Job, when the route has one, is inserted into `desired` before the
    Deployment (so it is applied first and owned by the route like the other children).
    """
    deployment = _deployment(desired)
    if deployment is None:
        return Assessment(pod_health.Health())
    template = deployment["spec"]["template"]
    template_hash = (
        (template.get("metadata") or {}).get("annotations", {}).get(children.TEMPLATE_HASH)
    )
    pods = route_pods(route)
    health = pod_health.assess([p for p in pods if not _is_staging(p)], template_hash)
    result = Assessment(health)

    job = weights_staging.weights_job(route, settings)
    if job is not None:
        desired.insert(desired.index(deployment), job)
        result.job = job
        await _staging(api, job, route, [p for p in pods if _is_staging(p)], result, generation)
        if result.reason and _serving(deployment):
            # A new revision (or token, or image) is staging: the current pods keep
            # serving the weights they have until it is there; the Deployment waits.
            desired.remove(deployment)
            if result.failing:
                result.staging_failed = result.message
            result.reason, result.message, result.failing = "", "", False

    want = int(deployment["spec"]["replicas"])
    healthy = want > 0 and health.ready >= want and not health.problems
    record = failed_load.parse(route.metadata.annotations)
    verdict = failed_load.decide(
        record,
        str(template_hash),
        health.failed_starts,
        healthy,
        time.time(),
        limit=settings.failed_start_limit,
        base_s=settings.failed_start_backoff_s,
        max_s=settings.failed_start_backoff_max_s,
        why=pod_health.summary(health)[1],
    )
    await _keep_record(api, body, verdict.record)
    if verdict.blocked and not result.reason and verdict.record is not None:
        result.reason = failed_load.REASON
        result.message = failed_load.message(verdict.record, settings.failed_start_limit)
        result.failing = True
        if deployment not in desired:
            desired.append(deployment)
    if result.reason:
        deployment["spec"]["replicas"] = 0
    return result


def _serving(deployment: Manifest) -> bool:
    """True when the route's live Deployment runs replicas (of an earlier template)."""
    meta = deployment["metadata"]
    live = CACHES.child("Deployment", meta["namespace"], meta["name"])
    return live is not None and int((live.get("spec") or {}).get("replicas") or 0) > 0


async def _staging(
    api: KubeClient,
    job: Manifest,
    route: ModelRoute,
    pods: list[Manifest],
    result: Assessment,
    generation: int | None,
) -> None:
    name = job["metadata"]["name"]
    meta = job["metadata"]
    state = weights_staging.job_state(CACHES.child("Job", meta["namespace"], meta["name"]))
    if state.done:
        result.extra.append(
            status.weights_staged_condition(
                True, "JobComplete", f"Job {name} staged {route.spec.model.source}", generation
            )
        )
        return
    mine = [p for p in pods if _job_name(p) == name]
    _reason, detail = pod_health.summary(pod_health.assess(mine))
    detail = f"; {detail}" if detail else ""
    claim = route.spec.model.cache_claim
    if state.failed:
        result.reason, result.failing = "WeightStagingFailed", True
        result.message = (
            f"Job {name} could not stage {route.spec.model.source} into claim {claim}: "
            f"{state.message}{detail}. Fix spec.model (source, revision, tokenSecretRef) or "
            "delete the Job to try again; no GPU pod starts meanwhile"
        )
    else:
        result.reason = "StagingWeights"
        result.message = (
            f"Job {name} is staging {route.spec.model.source} into claim {claim} "
            f"({state.message}{detail}); GPU pods start once it completes"
        )
    result.extra.append(
        status.weights_staged_condition(False, result.reason, result.message, generation)
    )


async def _keep_record(api: KubeClient, body: Any, record: failed_load.FailedLoad | None) -> None:
    """Writes the failed-load record into the route's annotation when it changed."""
    meta = body["metadata"]
    old = (meta.get("annotations") or {}).get(failed_load.ANNOTATION)
    new = record.to_annotation() if record is not None else None
    if old == new:
        return
    path = path_for(f"{GROUP}/{VERSION}", "ModelRoute", meta["namespace"], meta["name"])
    await api.merge_patch(path, {"metadata": {"annotations": {failed_load.ANNOTATION: new}}})


async def prune_jobs(
    api: KubeClient, route: ModelRoute, keep: Manifest | None, old: status.Conditions
) -> None:
    """Deletes the route's superseded staging Jobs (a new source, revision or image).

    Only for routes that stage now or did at the last status (WeightsStaged present), so
    other routes pay no extra API call.
    """
    staged_before = any(c.get("type") == "WeightsStaged" for c in old or [])
    if keep is None and not staged_before:
        return
    path = path_for("batch/v1", "Job", route.namespace)
    for job in await api.list(path, weights_staging.job_selector(route)):
        name = job["metadata"]["name"]
        owners = job["metadata"].get("ownerReferences") or []
        if not any(o.get("uid") == route.metadata.uid and o.get("controller") for o in owners):
            continue  # not this route's: never delete what the operator did not create
        if keep is None or name != keep["metadata"]["name"]:
            await api.delete(path_for("batch/v1", "Job", route.namespace, name))
