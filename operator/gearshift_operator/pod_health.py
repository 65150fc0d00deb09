"""Pure functions: what the route's pods say about themselves, as the kubelet reports it.

The Deployment controller only counts replicas: a pod whose `fetch-weights` init container
crashloops on a wrong repo, an engine killed for memory, an image that cannot be pulled
or a pod no node can take all look like "rollout in progress" to it until the 1800 s
progress deadline. The kubelet and the scheduler say exactly what is wrong, in the pod's
status; this module reads it (container states, last terminations, PodScheduled and
Ready conditions) into problems a person can act on, and counts the failed starts that
make the operator release the route's GPUs (failed_load.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gearshift_operator import children

Pod = dict[str, Any]
# Image references the kubelet cannot pull (or may not pull): nothing retries into success.
PULL_FAILURES = frozenset(
    {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"}
)
# The container cannot even be created: a missing Secret or ConfigMap key, a bad mount.
CONFIG_FAILURES = frozenset(
    {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
)
# Most pressing first: the condition's reason is the first kind found.
PRIORITY = (
    "OOMKilled",
    "CrashLoopBackOff",
    "ContainerFailed",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "Unschedulable",
    "ReadinessProbeFailing",
)
MAX_DETAIL = 300


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one pod, with what to do about it."""

    reason: str
    pod: str
    container: str | None
    message: str


@dataclass
class Health:
    """The route's pods summed up."""

    problems: list[Problem] = field(default_factory=list)
    ready: int = 0
    loading: int = 0  # not Ready yet and nothing wrong: scheduled, pulling or loading
    failed_starts: int = 0  # container restarts in pods that are not Ready
    pods: int = 0

    @property
    def worst(self) -> Problem | None:
        if not self.problems:
            return None
        return min(self.problems, key=lambda p: _rank(p.reason))


def _rank(reason: str) -> int:
    return PRIORITY.index(reason) if reason in PRIORITY else len(PRIORITY)


def _condition(pod: Pod, type_: str) -> dict[str, Any]:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def _short(text: Any) -> str:
    line = " ".join(str(text or "").split())
    return line if len(line) <= MAX_DETAIL else line[: MAX_DETAIL - 3] + "..."


def _which(name: str, init: bool) -> str:
    return f"init container {name}" if init else f"container {name}"


def _hint(name: str, init: bool) -> str:
    if init and name == children.FETCH_CONTAINER:
        return (
            "the weights download fails: check spec.model.source (repo and revision exist), "
            "spec.model.tokenSecretRef for a gated model, and the cache size"
        )
    return "see `kubectl logs --previous` for the engine's error"


def _terminated_detail(term: dict[str, Any]) -> str:
    code = term.get("exitCode")
    detail = f"exit code {code} ({term.get('reason') or 'Error'})"
    message = _short(term.get("message"))
    return f"{detail}: {message}" if message else detail


def _container_problem(pod_name: str, cs: dict[str, Any], init: bool) -> Problem | None:
    """A container's state as the kubelet reports it, when it is a failure."""
    name = str(cs.get("name") or "?")
    state = cs.get("state") or {}
    waiting = state.get("waiting") or {}
    terminated = state.get("terminated") or {}
    last = (cs.get("lastState") or {}).get("terminated") or {}
    restarts = int(cs.get("restartCount") or 0)
    reason = waiting.get("reason") or ""
    who = _which(name, init)
    if reason in PULL_FAILURES:
        image = cs.get("image") or "its image"
        return Problem(
            reason,
            pod_name,
            name,
            f"pod {pod_name}: {who} cannot pull {image}: {_short(waiting.get('message'))}; "
            "check the image name and tag, the registry's reachability and imagePullSecrets",
        )
    if reason in CONFIG_FAILURES:
        return Problem(
            reason,
            pod_name,
            name,
            f"pod {pod_name}: {who} cannot be created: {_short(waiting.get('message'))}; "
            "check that the Secrets and claims the route names exist",
        )
    oom = terminated.get("reason") == "OOMKilled" or (
        reason == "CrashLoopBackOff" and last.get("reason") == "OOMKilled"
    )
    if oom:
        return Problem(
            "OOMKilled",
            pod_name,
            name,
            f"pod {pod_name}: {who} was killed for exceeding its memory limit (OOMKilled, "
            f"{restarts} restarts); raise spec.resources.memory or pick a larger sizeClass, "
            "or lower engine.maxModelLen",
        )
    if reason == "CrashLoopBackOff":
        detail = _terminated_detail(last) if last else "it exits soon after starting"
        return Problem(
            "CrashLoopBackOff",
            pod_name,
            name,
            f"pod {pod_name}: {who} keeps failing ({restarts} restarts), last {detail}; "
            + _hint(name, init),
        )
    if terminated and terminated.get("exitCode") not in (0, None):
        return Problem(
            "ContainerFailed",
            pod_name,
            name,
            f"pod {pod_name}: {who} failed with {_terminated_detail(terminated)}; "
            + _hint(name, init),
        )
    return None


def _statuses(pod: Pod) -> Iterable[tuple[dict[str, Any], bool]]:
    st = pod.get("status") or {}
    for cs in st.get("initContainerStatuses") or []:
        yield cs, True
    for cs in st.get("containerStatuses") or []:
        yield cs, False


def _readiness_problem(pod: Pod, name: str) -> Problem | None:
    """Running, past its startup probe, and still not Ready: the readiness probe fails."""
    if (pod.get("status") or {}).get("phase") != "Running":
        return None
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        running = bool((cs.get("state") or {}).get("running"))
        if running and cs.get("started") is True and cs.get("ready") is False:
            cond = _condition(pod, "ContainersReady") or _condition(pod, "Ready")
            return Problem(
                "ReadinessProbeFailing",
                name,
                str(cs.get("name")),
                f"pod {name}: container {cs.get('name')} is running and past its startup "
                f"probe but fails its readiness probe ({_short(cond.get('message'))}); the "
                "engine is up but its gRPC health check does not answer SERVING",
            )
    return None


def _pod_problems(pod: Pod) -> list[Problem]:
    name = str((pod.get("metadata") or {}).get("name") or "?")
    scheduled = _condition(pod, "PodScheduled")
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return [
            Problem(
                "Unschedulable",
                name,
                None,
                f"pod {name} cannot be scheduled: {_short(scheduled.get('message'))}; no "
                "node has the GPUs, labels or taints the sizeClass asks for (a cluster "
                "autoscaler may still be adding one)",
            )
        ]
    found = [p for cs, init in _statuses(pod) if (p := _container_problem(name, cs, init))]
    if not found and (readiness := _readiness_problem(pod, name)) is not None:
        found.append(readiness)
    return found


def assess(pods: Sequence[Pod], template_hash: str | None = None) -> Health:
    """The health of a route's serving pods (pods being deleted are left out).

    Failed starts are container restarts (init and main) in pods that are not Ready, of
    the pod template `template_hash` when given: a pod that serves does not count, nor
    does an old ReplicaSet's pod after the spec changed.
    """
    health = Health()
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        health.pods += 1
        if _condition(pod, "Ready").get("status") == "True":
            health.ready += 1
            continue
        problems = _pod_problems(pod)
        health.problems += problems
        if not problems:
            health.loading += 1
        pod_hash = (meta.get("annotations") or {}).get(children.TEMPLATE_HASH)
        if template_hash is None or pod_hash in (None, template_hash):
            restarts = (int(cs.get("restartCount") or 0) for cs, _ in _statuses(pod))
            health.failed_starts += sum(restarts)
    return health


def summary(health: Health) -> tuple[str, str]:
    """(reason, message) of the worst problem, naming how many more there are."""
    worst = health.worst
    if worst is None:
        return "", ""
    others = len(health.problems) - 1
    more = f" (and {others} more problem(s) in the route's pods)" if others else ""
    return worst.reason, worst.message + more
