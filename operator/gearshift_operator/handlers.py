"""kopf handlers: reconcile each `ModelRoute` into its children, status and replica count.

Every handler ends in the same idempotent `reconcile()`: build the desired children
(children.py), create the missing ones, update the ones that drifted (a three-way apply
that removes what the operator stopped setting and keeps what others set, apply.py),
then write status from the Deployment's real state. Events on the owned objects (a hand
edit, a deletion, the Deployment controller's status updates) call it too, so a child
deleted by hand comes back and conditions follow the pods. Routes, children and pods are
read from kopf's watch caches (indices.py), not from the API server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
import kopf
from prometheus_client import start_http_server

from gearshift.routes.model_route import GROUP, PLURAL, VERSION, ModelRoute
from gearshift_operator import (
    apply,
    autoscaler,
    children,
    failed_load,
    holds,
    image_rollouts,
    indices,
    metrics,
    periodic,
    pod_health,
    status,
)
from gearshift_operator.indices import CACHES
from gearshift_operator.kube import (
    KubeClient,
    KubeError,
    authorization,
    client,
    close_client,
    configure_rate,
    load_configuration,
    object_path,
    path_for,
    reset_client,
)
from gearshift_operator.settings import Settings

SETTINGS = Settings()
LOG = logging.getLogger("gearshift.operator")
MANAGED = indices.MANAGED
MANAGED_SELECTOR = indices.MANAGED_SELECTOR
# (group, plural) of every kind the operator creates per route.
CHILD_RESOURCES = (
    ("apps", "deployments"),
    ("v1", "services"),
    ("policy", "poddisruptionbudgets"),
    ("v1", "configmaps"),
)
# Watched only to refresh route status and holds (pod states, staging Jobs).
WATCHED_FOR_HEALTH = (("v1", "pods"), ("batch", "jobs"))
# Answers to a create or patch that retrying cannot fix: the object as built is refused
# (validation 422, bad request 400, an admission policy or quota 403).
REJECTED = frozenset({400, 403, 422})
_locks: dict[str, asyncio.Lock] = {}
ROLLOUTS = image_rollouts.ImageRollouts(SETTINGS.image_rollout_concurrency)


class WaitingForImageRollout(Exception):
    """The route keeps its current image until an image-rollout slot frees."""


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **kwargs: Any) -> None:
    """State lives in annotations: the CRD's structural schema would prune status.kopf."""
    settings.persistence.finalizer = "gearshift.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="gearshift.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="gearshift.dev", key="last-handled-configuration"
    )
    # One leader through a Lease (leader.py, __main__.py): kopf itself runs standalone.
    settings.peering.standalone = True
    settings.posting.level = logging.INFO
    # The API server ends each watch after server_timeout; the client gives up 30 s later,
    # so a silently dead connection (a known kopf failure: the operator stops seeing
    # changes) is noticed and re-established instead of waited on forever.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # Children are watched through a server-side label selector: the API server sends only
    # the operator's own objects, not every Deployment, Service and ConfigMap it can see.
    for group_plural in CHILD_RESOURCES:
        settings.watching.label_selectors[group_plural] = MANAGED_SELECTOR
    # Pods and staging Jobs likewise (both carry the managed-by label); the model-server
    # pods the autoscaler reads are a subset of them (indices.pod_index).
    for group_plural in WATCHED_FOR_HEALTH:
        settings.watching.label_selectors[group_plural] = MANAGED_SELECTOR
    _pod_seen.clear()
    # kopf hands its indices (the watch caches) to startup handlers: keep them for reads.
    CACHES.bind(kwargs)
    # Locks and the HTTP client belong to the previous run's event loop when the operator
    # is restarted in the same process (tests): start both afresh.
    _locks.clear()
    _status_written.clear()
    SCALE_STATES.clear()
    ROLLOUTS.claims.clear()
    ROLLOUTS.concurrency = SETTINGS.image_rollout_concurrency
    ROLLOUTS.lock = asyncio.Lock()
    configure_rate(SETTINGS.kube_qps, SETTINGS.kube_burst)
    reset_client()
    if SETTINGS.operator_metrics_port >= 0:
        start_http_server(SETTINGS.operator_metrics_port)
    client()


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """The same credentials as our own client (in-cluster, else KUBECONFIG read now)."""
    cfg = load_configuration()
    token = authorization(cfg)
    scheme, _sep, secret = token.partition(" ")
    return kopf.ConnectionInfo(
        server=str(cfg.host),
        ca_path=cfg.ssl_ca_cert or None,
        insecure=not cfg.verify_ssl,
        scheme=scheme or None,
        token=secret or None,
        certificate_path=cfg.cert_file or None,
        private_key_path=cfg.key_file or None,
        default_namespace=SETTINGS.namespace or None,
    )


@kopf.on.cleanup()
async def close(**_: Any) -> None:
    await AUTOSCALING.stop()
    await FAILED_LOADS.stop()
    await datasources.REFRESHING.stop()
    await close_client()


@kopf.on.probe(id="routes")
def probe_routes(**_: Any) -> int:
    """Liveness detail: how many routes this process has reconciled."""
    return metrics.ROUTE_RUNS.count


def is_subset(desired: Any, live: Any) -> bool:
    """True when every field we set is present with the same value (server defaults may add)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            k in live and is_subset(v, live[k]) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(desired) == len(live)
            and all(is_subset(d, v) for d, v in zip(desired, live, strict=True))
        )
    if isinstance(desired, (int, float)) and isinstance(live, (int, float)):
        return desired == live
    return bool(desired == live) or str(desired) == str(live)


class OwnershipConflict(RuntimeError):
    """An object with the child's name exists and is not this route's: never take it over."""


class ChildRejected(RuntimeError):
    """The API server refused a child as built (its message says why)."""


def controlled_by(live: dict[str, Any], uid: str | None) -> bool:
    """True when `live`'s controller owner reference is the route with this uid."""
    owners = (live.get("metadata") or {}).get("ownerReferences") or []
    return uid is not None and any(o.get("uid") == uid and o.get("controller") for o in owners)


def _check_owner(live: dict[str, Any], child: dict[str, Any], owner: Any) -> None:
    if controlled_by(live, owner["metadata"].get("uid")):
        return
    owners = (live.get("metadata") or {}).get("ownerReferences") or []
    held_by = ", ".join(f"{o.get('kind')} {o.get('name')}" for o in owners) or "no owner"
    raise OwnershipConflict(
        f"{child['kind']} {child['metadata']['name']} already exists and belongs to "
        f"{held_by}; rename the route or remove that object (the operator never takes "
        "over objects it did not create)"
    )


async def apply_child(child: dict[str, Any], owner: Any, logger: Any) -> tuple[str, dict[str, Any]]:
    """Create or update one child; returns (created / updated / recreated / unchanged, object).

    An existing object of the same name is updated only if this route controls it
    (OwnershipConflict otherwise: an update would take it over, and garbage collection
    would later delete it with the route). A refusal by the API server is ChildRejected.
    """
    kopf.adopt(child, owner=owner)
    api = client()
    path = object_path(child)
    try:
        return await _apply(api, path, child, owner)
    except KubeError as err:
        if err.status in REJECTED:
            raise ChildRejected(
                f"the API server refused {child['kind']} {child['metadata']['name']}: {err}"
            ) from err
        raise


async def _apply(
    api: KubeClient, path: str, child: dict[str, Any], owner: Any
) -> tuple[str, dict[str, Any]]:
    meta = child["metadata"]
    live = CACHES.child(child["kind"], meta["namespace"], meta["name"])
    if live is not None and controlled_by(live, owner["metadata"].get("uid")):
        if needs_recreate(child, live):
            # clusterIP cannot change in place (headless <-> virtual IP): replace the Service.
            await api.delete(path)
            created = await api.create(path.rsplit("/", 1)[0], apply.for_create(child))
            CACHES.wrote(child["kind"], meta["namespace"], meta["name"], created)
            return "recreated", created
    outcome, written = await apply.apply(
        api, path, child, live, lambda obj: _check_owner(obj, child, owner)
    )
    if written is not live:
        CACHES.wrote(child["kind"], meta["namespace"], meta["name"], written)
    return outcome, written


def needs_recreate(child: dict[str, Any], live: dict[str, Any]) -> bool:
    """True when a Service must switch between headless and a virtual IP (immutable)."""
    if child.get("kind") != "Service":
        return False
    want_headless = (child.get("spec") or {}).get("clusterIP") == "None"
    live_ip: str | None = (live.get("spec") or {}).get("clusterIP")
    if live_ip is None:  # not assigned yet: nothing to compare
        return False
    return want_headless != (live_ip == "None")


def _route(body: Any) -> ModelRoute:
    return ModelRoute.model_validate(dict(body))


# (namespace/name) -> (the route's resourceVersion a status write was based on, the status
# the API server answered with). Until the watch cache holds a newer version of the route,
# that answer is the status, not the stale copy (a first start's child events would
# otherwise each write the same status again).
_status_written: dict[str, tuple[str | None, dict[str, Any]]] = {}


def _known_status(route_body: Any) -> dict[str, Any]:
    meta = route_body["metadata"]
    key = f"{meta['namespace']}/{meta['name']}"
    remembered = _status_written.get(key)
    if remembered is not None and remembered[0] == meta.get("resourceVersion"):
        return remembered[1]
    _status_written.pop(key, None)
    return dict(route_body.get("status") or {})


async def write_status(route_body: Any, fields: dict[str, Any], conds: status.Conditions) -> None:
    meta = route_body["metadata"]
    current = _known_status(route_body)
    old = current.get("conditions") or []
    merged = status.merge_conditions(old, conds, status.now_rfc3339())
    patch = {"status": {**fields, "conditions": merged}}
    if is_subset(patch["status"], current):
        return  # unchanged: no write, no watch event
    base = path_for(f"{GROUP}/{VERSION}", "ModelRoute", meta["namespace"], meta["name"])
    try:
        written = await client().merge_patch(base + "/status", patch)
    except KubeError as err:
        if err.status != 404:
            raise
        return  # deleted meanwhile (routes carry no finalizer): nothing left to report on
    answered = written.get("status") if isinstance(written, dict) else None
    _status_written[f"{meta['namespace']}/{meta['name']}"] = (
        meta.get("resourceVersion"),
        dict(answered) if isinstance(answered, dict) else {**current, **patch["status"]},
    )


async def reconcile(body: Any, logger: Any, reason: str) -> bool:
    """Make the children match the route, then report their real state in status.

    Route handlers and child events for one route run one at a time (no create races).
    """
    meta = body["metadata"]
    lock = _locks.setdefault(f"{meta['namespace']}/{meta['name']}", asyncio.Lock())
    async with lock:
        return await _reconcile(body, logger, reason)


async def _paced(route: ModelRoute, desired: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The children with the Deployment's current image kept, when an image-only change
    must wait for a rollout slot; None when the children may be applied as built."""
    key = f"{route.namespace}/{route.name}"
    wanted = next((c for c in desired if c["kind"] == "Deployment"), None)
    if wanted is None:
        return None
    live = CACHES.child("Deployment", route.namespace, route.name)
    if live is None:
        return None
    current = image_rollouts.container_image(live)
    if current == image_rollouts.container_image(wanted):
        ROLLOUTS.landed(key)
        return None
    kept = SETTINGS.model_copy(update={"image": current, "proxy_image": current})
    held = children.build_children(route, kept)
    held_deployment = next(c for c in held if c["kind"] == "Deployment")
    if image_rollouts.template_hash(held_deployment) != image_rollouts.template_hash(live):
        return None  # more than the image changed: roll as usual
    async with ROLLOUTS.lock:
        if ROLLOUTS.may_start(key, await _operator_deployments()):
            return None
    return held


async def _operator_deployments() -> list[dict[str, Any]]:
    """Every Deployment this operator made, in the namespaces it watches (rollout slots)."""
    if SETTINGS.namespace:
        return await client().list(
            path_for("apps/v1", "Deployment", SETTINGS.namespace), MANAGED_SELECTOR
        )
    return await client().list("/apis/apps/v1/deployments", MANAGED_SELECTOR)


async def _reconcile(body: Any, logger: Any, reason: str) -> bool:
    """Returns True when an image change is held back (waiting for a rollout slot)."""
    generation = body["metadata"].get("generation")
    waiting = False
    try:
        route = _route(body)
        desired = children.build_children(route, SETTINGS)
        held = await _paced(route, desired)
        if held is not None:
            desired, waiting = held, True
    except (ValueError, children.SpecError) as err:
        metrics.RECONCILES.labels(result="invalid").inc()
        kopf.warn(body, reason="InvalidSpec", message=str(err)[:1000])
        await write_status(
            body,
            {"observedGeneration": generation},
            status.conditions_for_error("InvalidSpec", str(err)[:1000], generation),
        )
        return False
    base = {
        "observedGeneration": generation,
        "endpoint": children.endpoint(route, SETTINGS),
        "selector": children.selector_string(route),
    }
    fallback = await _fallback_condition(route, generation)
    if not desired:
        await write_status(body, base, status.conditions_for_external(generation) + fallback)
        return False
    try:
        hold = await holds.assess(client(), body, route, desired, SETTINGS, generation)
    except (KubeError, httpx.HTTPError) as err:
        raise kopf.TemporaryError(f"reading the route's pods failed: {err}", delay=10) from err
    changes: list[str] = []
    deployment: dict[str, Any] | None = None
    try:
        for child in desired:
            outcome, written = await apply_child(child, body, logger)
            if child["kind"] == "Deployment":
                deployment = written
            if outcome != "unchanged":
                changes.append(f"{child['kind']} {outcome}")
    except (OwnershipConflict, ChildRejected) as err:
        cause = "OwnershipConflict" if isinstance(err, OwnershipConflict) else "InvalidSpec"
        metrics.RECONCILES.labels(result="invalid").inc()
        kopf.warn(body, reason=cause, message=str(err)[:1000])
        await write_status(
            body,
            {"observedGeneration": generation},
            status.conditions_for_error(cause, str(err)[:1000], generation),
        )
        return False
    except (KubeError, httpx.HTTPError) as err:
        # A conflict, throttling, a server error or a lost connection: try again soon.
        raise kopf.TemporaryError(f"applying children failed: {err}", delay=10) from err
    if changes:
        metrics.RECONCILES.labels(result="changed").inc()
        kopf.info(body, reason="Reconciled", message=f"{reason}: " + ", ".join(changes))
    else:
        metrics.RECONCILES.labels(result="unchanged").inc()
    old_conds = (body.get("status") or {}).get("conditions") or []
    try:
        await holds.prune_jobs(client(), route, hold.job, old_conds)
    except (KubeError, httpx.HTTPError) as err:  # a leftover Job is harmless: next time
        logger.warning("could not delete superseded staging Jobs: %s", err)
    counts, conds = status.deployment_status(deployment, generation)
    await write_status(body, {**base, **counts}, hold.conditions(conds, generation) + fallback)
    return waiting


async def _fallback_condition(route: ModelRoute, generation: int | None) -> status.Conditions:
    """FallbackResolved: whether spec.routing.fallback names a route that exists.

    CEL cannot see other objects, so the operator checks it and says so in status; the
    route is deployed either way (its own traffic does not depend on the fallback).
    """
    name = route.spec.routing.fallback
    if not name:
        return []
    live = CACHES.route(route.namespace, name)
    # A route being deleted (finalizer pending) counts as gone.
    found = live is not None and not live["metadata"].get("deletionTimestamp")
    return [status.fallback_condition(name, route.namespace, found, generation)]


async def reconcile_dependents(namespace: str, name: str, logger: Any) -> None:
    """Routes whose fallback is `name` re-check it (it was just created or deleted).

    From the fallback index: the routes naming `name`, not a list of every route.
    """
    for other in CACHES.dependents(namespace, name):
        meta = other["metadata"]
        if meta["name"] != name and not meta.get("deletionTimestamp"):
            await reconcile(other, logger, f"fallback route {name} changed")


ROUTES = (GROUP, VERSION, PLURAL)


@kopf.on.resume(*ROUTES)
@kopf.on.create(*ROUTES)
@kopf.on.update(*ROUTES)
async def route_changed(
    body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, reason: Any, **_: Any
) -> None:
    metrics.ROUTE_RUNS.inc()
    waiting = await reconcile(body, logger, f"route {reason}")
    pin_desired_replicas(body, patch)
    wake_if_demanded(body, patch)
    # On resume every route re-checks its own fallback: only a new route tells others.
    if reason == "create":
        meta = body["metadata"]
        await reconcile_dependents(meta["namespace"], meta["name"], logger)
    if waiting:
        raise kopf.TemporaryError(
            "new model-server image waits for a rollout slot "
            f"(image_rollout_concurrency {SETTINGS.image_rollout_concurrency})",
            delay=SETTINGS.image_rollout_retry_s,
        )


def pin_desired_replicas(body: kopf.Body, patch: kopf.Patch) -> None:
    """Writes spec.replicas.desired when unset (as `min`), so the scale subresource works.

    The API server answers GET .../scale with an error while the specReplicasPath field is
    missing, and an HPA or KEDA then cannot drive the route. None of the examples set it,
    and the CRD cannot default it from `min`, so the operator fills it in once; what it
    writes is what the Deployment runs anyway (unset `desired` means `min`).
    """
    try:
        route = _route(body)
    except ValueError:
        return
    if route.spec.replicas.desired is not None or route.spec.backend == "external":
        return
    patch.spec["replicas"] = {"desired": children.target_replicas(route)}


def wake_if_demanded(body: kopf.Body, patch: kopf.Patch) -> None:
    """A cold scaleToZero route the router asks for gets one replica now, not at the next tick."""
    try:
        route = _route(body)
    except ValueError:
        return
    auto = route.spec.autoscaling
    if auto is None or not auto.scale_to_zero or children.target_replicas(route) > 0:
        return
    now = time.time()
    annotations = route.metadata.annotations
    if autoscaler.demand_pending(annotations, SETTINGS.demand_annotation, now - 600, now):
        patch.spec["replicas"] = {"desired": 1}
        patch.status["lastScaleTime"] = status.now_rfc3339()
        metrics.SCALES.labels(direction="up").inc()
        kopf.info(body, reason="Scaled", message="0 -> 1 replicas (DemandWhileCold)")


CHILD_KINDS = (
    ("policy/v1", "PodDisruptionBudget"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("v1", "ConfigMap"),
)


@kopf.on.delete(*ROUTES, optional=True)
async def route_deleted(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    """Deletes the children at once when the operator sees the deletion (best effort).

    Optional, so it adds no finalizer: a route must never outlive the operator (a
    namespace being deleted after the operator was uninstalled would hang on it). The
    cluster's garbage collector removes the children through their owner references
    either way. Goes by name and owner uid, not by the spec, so objects the route does
    not own are left alone.
    """
    meta = body["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta.get("uid")
    for api_version, kind in CHILD_KINDS:
        path = path_for(api_version, kind, namespace, name)
        live = CACHES.child(kind, namespace, name)
        owners = ((live or {}).get("metadata") or {}).get("ownerReferences") or []
        if live is not None and any(o.get("uid") == uid for o in owners):
            await client().delete(path)
    logger.info("children of %s/%s deleted", namespace, name)


@kopf.on.event(*ROUTES)
async def route_event(event: kopf.RawEvent, logger: kopf.Logger, **_: Any) -> None:
    """Starts/stops the route's autoscaler; a deleted route's state goes and the routes
    falling back to it re-check the fallback.

    An event handler, so it needs no finalizer and runs for every route, listed or changed.
    """
    spec = (event.get("object") or {}).get("spec") or {}
    AUTOSCALING.follow(event, _autoscaled(spec))
    annotations = ((event.get("object") or {}).get("metadata") or {}).get("annotations") or {}
    FAILED_LOADS.follow(event, failed_load.ANNOTATION in annotations)
    if event.get("type") != "DELETED":
        return
    meta = (event.get("object") or {}).get("metadata") or {}
    namespace, name = meta.get("namespace"), meta.get("name")
    if not namespace or not name:
        return
    metrics.DESIRED.remove_route(namespace, name)
    _locks.pop(f"{namespace}/{name}", None)
    _status_written.pop(f"{namespace}/{name}", None)
    CACHES.forget(namespace, name)
    SCALE_STATES.pop(f"{namespace}/{name}", None)
    await reconcile_dependents(namespace, name, logger)


async def _owned_event(event: kopf.RawEvent, logger: kopf.Logger) -> None:
    """A child changed or vanished: reconcile its route (puts it back, refreshes status)."""
    obj = event.get("object") or {}
    meta = obj.get("metadata") or {}
    name = (meta.get("labels") or {}).get(children.ROUTE_LABEL)
    namespace = meta.get("namespace")
    if not name or not namespace:
        return
    route = CACHES.route(namespace, name)
    if route is None or route["metadata"].get("deletionTimestamp"):
        return
    what = "deleted" if event.get("type") == "DELETED" else "changed"
    await reconcile(route, logger, f"{obj.get('kind', 'child')} {meta.get('name')} {what}")


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def deployment_event(event: kopf.RawEvent, logger: kopf.Logger, **_: Any) -> None:
    await _owned_event(event, logger)


@kopf.on.event("v1", "services", labels=MANAGED)
async def service_event(event: kopf.RawEvent, logger: kopf.Logger, **_: Any) -> None:
    await _owned_event(event, logger)


@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=MANAGED)
async def pdb_event(event: kopf.RawEvent, logger: kopf.Logger, **_: Any) -> None:
    await _owned_event(event, logger)


@kopf.on.event("v1", "configmaps", labels=MANAGED)
async def configmap_event(event: kopf.RawEvent, logger: kopf.Logger, **_: Any) -> None:
    await _owned_event(event, logger)


_pod_seen: dict[str, tuple[Any, ...]] = {}


def _pod_signature(pod: dict[str, Any]) -> tuple[Any, ...]:
    """What of a pod's status can change the route's status or holds."""
    st = pod.get("status") or {}
    conds = tuple(
        (c.get("type"), c.get("status"), c.get("reason")) for c in st.get("conditions") or []
    )
    containers = tuple(
        (
            cs.get("name"),
            cs.get("ready"),
            cs.get("started"),
            cs.get("restartCount"),
            tuple(sorted((cs.get("state") or {}).keys())),
            ((cs.get("state") or {}).get("waiting") or {}).get("reason"),
        )
        for key in ("initContainerStatuses", "containerStatuses")
        for cs in st.get(key) or []
    )
    meta = pod.get("metadata") or {}
    return (st.get("phase"), bool(meta.get("deletionTimestamp")), conds, containers)


@kopf.on.event("v1", "pods", labels=MANAGED)
async def pod_event(event: kopf.RawEvent, logger: kopf.Logger, **_: Any) -> None:
    """A route's pod changed state: refresh the route's status (and its holds) now.

    Pods change often (every probe result); only changes of what pod_health reads
    reconcile the route, and a pod deletion always does.
    """
    obj = event.get("object") or {}
    uid = str((obj.get("metadata") or {}).get("uid") or "")
    if event.get("type") == "DELETED":
        _pod_seen.pop(uid, None)
    else:
        signature = _pod_signature(dict(obj))
        if _pod_seen.get(uid) == signature:
            return
        _pod_seen[uid] = signature
    await _owned_event(event, logger)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
async def job_event(event: kopf.RawEvent, logger: kopf.Logger, **_: Any) -> None:
    """A staging Job progressed (or completed): the GPU pods may start."""
    await _owned_event(event, logger)


async def retry_failed_load(namespace: str, name: str) -> bool:
    """Reconciles a blocked route once its back-off has ended; False once unblocked."""
    path = path_for(f"{GROUP}/{VERSION}", "ModelRoute", namespace, name)
    try:
        body = await client().get(path)
    except (httpx.HTTPError, KubeError) as err:
        LOG.warning("cannot read route %s/%s: %r", namespace, name, err)
        return True
    if body is None or body["metadata"].get("deletionTimestamp"):
        return False
    record = failed_load.parse(body["metadata"].get("annotations"))
    if record is None:
        return False
    if record.blockedUntil is not None and not record.blocked(time.time()):
        await reconcile(body, LOG, "failed-load back-off ended")
    return True


FAILED_LOADS = periodic.Periodic(
    "failed-load retry", SETTINGS.failed_start_recheck_s, retry_failed_load
)


def _autoscaled(spec: Any, **_: Any) -> bool:
    return bool(spec.get("autoscaling")) and not (spec.get("routing") or {}).get("endpoint")


async def autoscale(namespace: str, name: str) -> bool:
    """Reads the replicas' live load and moves spec.replicas.desired (the scale subresource).

    Runs every `autoscale_interval_s` per autoscaled route (`periodic.Periodic`, no
    finalizer); returns False once the route is gone or no longer autoscaled.
    """
    base = path_for(f"{GROUP}/{VERSION}", "ModelRoute", namespace, name)
    try:
        body = CACHES.route(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return False
        if not _autoscaled(body.get("spec") or {}):
            return False
        patch = kopf.Patch()
        await _autoscale(body, patch, SCALE_STATES)
        if patch.get("spec"):
            await client().merge_patch(base, {"spec": dict(patch["spec"])})
        if patch.get("status"):
            await client().merge_patch(base + "/status", {"status": dict(patch["status"])})
    except (httpx.HTTPError, KubeError) as err:
        # The next tick retries; a failed read must never move replicas.
        LOG.warning("autoscaler could not read the cluster for %s/%s: %r", namespace, name, err)
    return True


SCALE_STATES: dict[str, autoscaler.ScaleState] = {}
AUTOSCALING = periodic.Periodic("autoscale", SETTINGS.autoscale_interval_s, autoscale)


async def _autoscale(
    body: Any, patch: kopf.Patch, states: dict[str, autoscaler.ScaleState]
) -> None:
    route = _route(body)
    policy = autoscaler.Policy.for_route(route, SETTINGS)
    key, now = f"{route.namespace}/{route.name}", time.time()
    stored = body.get("status") or {}
    if key not in states:  # a new leader or a restart picks up where the last one was
        restored = autoscaler.state_from_status(stored, SETTINGS.scale_state_resolution_s, now)
        states[key] = restored or autoscaler.ScaleState()
    state = states[key]
    current = children.target_replicas(route)
    pods = CACHES.pods(route.namespace, route.name)
    targets = autoscaler.pod_targets(pods, SETTINGS.grpc_port)
    health = pod_health.assess(pods)
    assert route.spec.autoscaling is not None
    load, answered = await autoscaler.read_load(
        targets, route.spec.autoscaling.metric, SETTINGS.load_timeout_s
    )
    demand = autoscaler.demand_pending(
        route.metadata.annotations, SETTINGS.demand_annotation, since=now - 600, now=now
    )
    decision = autoscaler.decide(
        policy,
        current,
        load,
        now,
        state,
        demand=demand,
        starting=health.loading,
        failing=len({p.pod for p in health.problems}),
    )
    metrics.DESIRED.labels(namespace=route.namespace, route=route.name).set(decision.replicas)
    if autoscaler.needs_write(state, stored, policy, SETTINGS.scale_state_resolution_s):
        patch.status[autoscaler.STATE_FIELD] = autoscaler.state_to_status(state, policy)
    if decision.replicas == current:
        return
    patch.spec["replicas"] = {"desired": decision.replicas}
    patch.status["lastScaleTime"] = status.now_rfc3339()
    direction = "up" if decision.replicas > current else "down"
    metrics.SCALES.labels(direction=direction).inc()
    kopf.info(
        body,
        reason="Scaled",
        message=f"{current} -> {decision.replicas} replicas ({decision.reason}; "
        f"load {load} from {answered}/{len(targets)} replicas)",
    )


# DataSource handlers live in their own module; importing it registers them.
from gearshift_operator import datasources as datasources  # noqa: E402
