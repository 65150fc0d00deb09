"""Weights staged before GPU pods start: a Job that fills the route's cache claim.

An hf:// route with `model.cacheClaim` gets a Job (no GPU) running the same fetch as the
pods' `fetch-weights` init container, into the claim. The route's Deployment stays at zero
replicas until that Job has completed, so no GPU is held while weights download, and a
download that fails (wrong repo, gated model, too large for the claim) fails in the Job,
not in a pod holding GPUs. The init container stays in the pod as a check: it finds the
fetch's marker for the revision in the claim and starts at once.

The Job's name carries a digest of its pod template (Job templates are immutable): a new
source, revision, token or image makes a new Job and the route's older Jobs are deleted.
A finished Job is kept (its success is what lets the GPU pods start); deleting it by hand
re-runs the fetch, which the marker makes quick when the claim is warm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gearshift.routes.model_route import ModelRoute
from gearshift_operator import children
from gearshift_operator.settings import Settings

COMPONENT = "weights"
Manifest = dict[str, Any]


def staged(route: ModelRoute) -> bool:
    """True when the route's weights are staged by a Job (hf:// into a cache claim)."""
    model = route.spec.model
    return (
        route.spec.engine is not None
        and model.source.startswith("hf://")
        and model.cache_claim is not None
    )


def job_labels(route: ModelRoute) -> dict[str, str]:
    """Managed and route labels, but never the route's pod selector labels: a staging pod
    must not join the route's Service, PDB or autoscaler."""
    return {
        "app.kubernetes.io/component": COMPONENT,
        "app.kubernetes.io/part-of": "gearshift",
        "app.kubernetes.io/managed-by": children.MANAGED_BY,
        children.ROUTE_LABEL: route.name,
    }


def job_selector(route: ModelRoute) -> str:
    """Label selector of the route's staging Jobs and their pods."""
    return f"{children.ROUTE_LABEL}={route.name},app.kubernetes.io/component={COMPONENT}"


def weights_job(route: ModelRoute, settings: Settings) -> Manifest | None:
    """The staging Job for a staged route; None for any other route."""
    if not staged(route):
        return None
    pod = children.deployment(route, settings)["spec"]["template"]["spec"]
    inits = pod.get("initContainers") or []
    fetch = next(c for c in inits if c["name"] == children.FETCH_CONTAINER)
    mounted = {m["name"] for m in fetch["volumeMounts"]}
    spec: Manifest = {
        "restartPolicy": "Never",
        "containers": [fetch],
        "volumes": [v for v in pod["volumes"] if v["name"] in mounted],
        "securityContext": dict(pod["securityContext"]),
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
    }
    # From the pod template (podTemplate may add them): the same image needs the same
    # pull credentials. Node placement is not copied: staging needs no GPU node.
    for key in ("serviceAccountName", "imagePullSecrets"):
        if pod.get(key):
            spec[key] = pod[key]
    template: Manifest = {"metadata": {"labels": job_labels(route)}, "spec": spec}
    digest = children.template_hash(template)[:8]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"{route.name[:45].rstrip('-')}-weights-{digest}",
            "namespace": route.namespace,
            "labels": job_labels(route),
            "annotations": {"gearshift.dev/source": route.spec.model.source},
        },
        "spec": {
            "backoffLimit": settings.weights_job_backoff_limit,
            "activeDeadlineSeconds": settings.weights_job_deadline_s,
            "template": template,
        },
    }


@dataclass(frozen=True)
class JobState:
    """Where a staging Job stands: done, failed (with the Job's message) or running."""

    done: bool
    failed: bool
    message: str


def job_state(job: Manifest | None) -> JobState:
    """The Job controller's verdict (its Complete / Failed conditions, else the counters)."""
    if job is None:
        return JobState(False, False, "staging Job not created yet")
    st = job.get("status") or {}
    for cond in st.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            return JobState(True, False, "weights staged")
        if cond.get("type") == "Failed":
            reason = cond.get("reason") or "Failed"
            return JobState(False, True, f"{reason}: {cond.get('message') or 'the Job failed'}")
    if int(st.get("succeeded") or 0) > 0:
        return JobState(True, False, "weights staged")
    return JobState(False, False, f"{int(st.get('active') or 0)} staging pod(s) running")
