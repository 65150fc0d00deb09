"""Pod objects and statuses exactly as the ReplicaSet controller, scheduler and kubelet
write them, for each way a model-server pod fails (the tests play those components).

Field by field what a real cluster reports (`kubectl get pod -o yaml`): the scheduler's
PodScheduled=False/Unschedulable with its "0/3 nodes are available" message; the kubelet's
containerStatuses / initContainerStatuses with state.waiting (CrashLoopBackOff,
ImagePullBackOff, ErrImagePull, PodInitializing), lastState.terminated (reason OOMKilled or
Error, exitCode, and the termination message), restartCount, started and ready, and the
Initialized / ContainersReady / Ready conditions that follow from them.
"""

from __future__ import annotations

import copy
from typing import Any

T0 = "2026-12-08T03:00:00Z"
T1 = "2026-12-08T03:00:40Z"
IMAGE = "ghcr.io/gearshift-dev/gearshift:0.1.0"
FETCH_ERROR = (
    "2026-12-08 03:00:39 gearshift.fetch could not fetch HuggingFaceTB/SmolLM2-1.7B-Instruct: "
    "401 Client Error. Cannot access gated repo for url https://huggingface.co/api/models/"
    "HuggingFaceTB/SmolLM2-1.7B-Instruct/revision/main."
)
UNSCHEDULABLE = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
NOT_INIT = "containers with incomplete status: [fetch-weights]"
UNREADY = "containers with unready status: [slm]"


def pod_for(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    """The pod the ReplicaSet controller creates from the Deployment's template."""
    template = copy.deepcopy(deployment["spec"]["template"])
    meta = template["metadata"]
    meta["labels"]["pod-template-hash"] = "5d9c7f8b4"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": deployment["metadata"]["namespace"],
            "labels": meta["labels"],
            "annotations": meta.get("annotations", {}),
        },
        "spec": template["spec"],
    }


def _cond(type_: str, ok: bool, reason: str = "", message: str = "") -> dict[str, Any]:
    cond: dict[str, Any] = {
        "type": type_,
        "status": "True" if ok else "False",
        "lastProbeTime": None,
        "lastTransitionTime": T0,
    }
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def _waiting(name: str, reason: str, message: str = "", restarts: int = 0) -> dict[str, Any]:
    waiting: dict[str, Any] = {"reason": reason}
    if message:
        waiting["message"] = message
    return {
        "name": name,
        "image": IMAGE,
        "imageID": "",
        "ready": False,
        "started": False,
        "restartCount": restarts,
        "state": {"waiting": waiting},
        "lastState": {},
    }


def _terminated(reason: str, code: int, message: str = "") -> dict[str, Any]:
    term: dict[str, Any] = {
        "reason": reason,
        "exitCode": code,
        "startedAt": T0,
        "finishedAt": T1,
        "containerID": "containerd://4f0c1e",
    }
    if message:
        term["message"] = message
    return term


def _crashloop(name: str, restarts: int, last: dict[str, Any]) -> dict[str, Any]:
    status = _waiting(
        name,
        "CrashLoopBackOff",
        f"back-off 40s restarting failed container={name} pod=x_default(9d1c)",
        restarts,
    )
    status["imageID"] = f"{IMAGE}@sha256:" + "b" * 64
    status["lastState"] = {"terminated": last}
    return status


def _pending_base(pod_ip: bool = True) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": "Pending",
        "hostIP": "10.0.3.17",
        "startTime": T0,
        "qosClass": "Burstable",
    }
    if pod_ip:
        status["podIP"] = "10.244.1.23"
        status["podIPs"] = [{"ip": "10.244.1.23"}]
    return status


def fetch_crashloop(restarts: int = 1) -> dict[str, Any]:
    """fetch-weights exits 1 on a gated repo; the kubelet backs off restarting it."""
    status = _pending_base()
    status["conditions"] = [
        _cond("PodReadyToStartContainers", True),
        _cond("Initialized", False, "ContainersNotInitialized", NOT_INIT),
        _cond("Ready", False, "ContainersNotReady", UNREADY),
        _cond("ContainersReady", False, "ContainersNotReady", UNREADY),
        _cond("PodScheduled", True),
    ]
    status["initContainerStatuses"] = [
        _crashloop("fetch-weights", restarts, _terminated("Error", 1, FETCH_ERROR))
    ]
    status["containerStatuses"] = [_waiting("slm", "PodInitializing")]
    return status


def _running_main(restarts: int, state: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "slm",
        "image": IMAGE,
        "imageID": f"{IMAGE}@sha256:" + "b" * 64,
        "containerID": "containerd://77aa",
        "ready": False,
        "started": False,
        "restartCount": restarts,
        "state": state,
        "lastState": {"terminated": last} if last else {},
    }


def _initialized_base() -> dict[str, Any]:
    status = _pending_base()
    status["phase"] = "Running"
    status["initContainerStatuses"] = [
        {
            "name": "fetch-weights",
            "image": IMAGE,
            "imageID": f"{IMAGE}@sha256:" + "b" * 64,
            "ready": True,
            "started": False,
            "restartCount": 0,
            "state": {"terminated": _terminated("Completed", 0)},
            "lastState": {},
        }
    ]
    return status


def engine_oom(restarts: int = 1) -> dict[str, Any]:
    """The engine is OOMKilled while loading; CrashLoopBackOff with lastState OOMKilled."""
    status = _initialized_base()
    status["conditions"] = [
        _cond("PodReadyToStartContainers", True),
        _cond("Initialized", True),
        _cond("Ready", False, "ContainersNotReady", UNREADY),
        _cond("ContainersReady", False, "ContainersNotReady", UNREADY),
        _cond("PodScheduled", True),
    ]
    waiting = {
        "waiting": {
            "reason": "CrashLoopBackOff",
            "message": "back-off 20s restarting failed container=slm pod=x_default(9d1c)",
        }
    }
    status["containerStatuses"] = [_running_main(restarts, waiting, _terminated("OOMKilled", 137))]
    return status


def image_pull_backoff(reason: str = "ImagePullBackOff") -> dict[str, Any]:
    """The model-server image cannot be pulled (wrong tag or registry credentials)."""
    status = _pending_base()
    message = (
        f'Back-off pulling image "{IMAGE}": ErrImagePull: failed to pull and unpack image '
        f'"{IMAGE}": failed to resolve reference "{IMAGE}": {IMAGE}: not found'
    )
    status["conditions"] = [
        _cond("PodReadyToStartContainers", True),
        _cond("Initialized", False, "ContainersNotInitialized", NOT_INIT),
        _cond("Ready", False, "ContainersNotReady", UNREADY),
        _cond("ContainersReady", False, "ContainersNotReady", UNREADY),
        _cond("PodScheduled", True),
    ]
    status["initContainerStatuses"] = [_waiting("fetch-weights", reason, message)]
    status["containerStatuses"] = [_waiting("slm", "PodInitializing")]
    return status


def unschedulable() -> dict[str, Any]:
    """No node has a free GPU: the scheduler's verdict, nothing from a kubelet yet."""
    return {
        "phase": "Pending",
        "qosClass": "Burstable",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "lastProbeTime": None,
                "lastTransitionTime": T0,
                "reason": "Unschedulable",
                "message": UNSCHEDULABLE,
            }
        ],
    }


def readiness_failing() -> dict[str, Any]:
    """Running and past the startup probe, but the readiness probe fails."""
    status = _initialized_base()
    status["conditions"] = [
        _cond("PodReadyToStartContainers", True),
        _cond("Initialized", True),
        _cond("Ready", False, "ContainersNotReady", UNREADY),
        _cond("ContainersReady", False, "ContainersNotReady", UNREADY),
        _cond("PodScheduled", True),
    ]
    main = _running_main(0, {"running": {"startedAt": T0}}, {})
    main["started"] = True
    status["containerStatuses"] = [main]
    return status


def loading() -> dict[str, Any]:
    """The engine is loading the model: running, its startup probe not passed yet."""
    status = readiness_failing()
    status["containerStatuses"][0]["started"] = False
    return status


def ready() -> dict[str, Any]:
    """Serving: every container ready, the pod Ready."""
    status = _initialized_base()
    status["conditions"] = [
        _cond("PodReadyToStartContainers", True),
        _cond("Initialized", True),
        _cond("Ready", True),
        _cond("ContainersReady", True),
        _cond("PodScheduled", True),
    ]
    main = _running_main(0, {"running": {"startedAt": T0}}, {})
    main["started"] = main["ready"] = True
    status["containerStatuses"] = [main]
    return status
