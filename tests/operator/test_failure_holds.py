# ruff: noqa: ASYNC109
"""Failing pods surface in route status and release their GPUs; weights are staged by a
Job before GPU pods start. The operator runs (kopf, KopfRunner) against the emulator;
the tests play the ReplicaSet controller, the scheduler, the kubelet and the Job
controller, writing pod and Job status as those do (pod_failures.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from gearshift_operator import failed_load, handlers
from tests.operator import pod_failures as kubelet
from tests.operator.apiserver import ApiServer
from tests.operator.test_operator import (
    DEPLOYMENTS,
    NS,
    ROUTES,
    _eventually,
    _example,
    _get,
    _runner,
    _send,
    _stop,
)

PODS = f"/api/v1/namespaces/{NS}/pods"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"
ROUTE = "smollm2-small"

pytestmark = pytest.mark.timeout(300)


async def _status(api: ApiServer, path: str, status: dict[str, Any]) -> None:
    await _send(api, "PATCH", f"{path}/status", {"status": status})


def _condition(route: dict[str, Any], type_: str) -> dict[str, Any]:
    conds = (route.get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == type_), {})


async def _route_when(api: ApiServer, type_: str, reason: str, timeout: float = 60) -> Any:
    async def check() -> Any:
        route = await _get(api, f"{ROUTES}/{ROUTE}")
        return route if route and _condition(route, type_).get("reason") == reason else None

    return await _eventually(check, f"{type_}={reason}", timeout)


async def _replicas_become(api: ApiServer, n: int, name: str = ROUTE) -> dict[str, Any]:
    async def check() -> Any:
        dep = await _get(api, f"{DEPLOYMENTS}/{name}")
        return dep if dep and dep["spec"]["replicas"] == n else None

    result: dict[str, Any] = await _eventually(check, f"{name} at {n} replicas", 60)
    return result


async def _start_pod(api: ApiServer, name: str) -> None:
    """The ReplicaSet controller creates a pod from the Deployment's current template."""
    dep = await _get(api, f"{DEPLOYMENTS}/{ROUTE}")
    assert dep is not None
    await _send(api, "POST", PODS, kubelet.pod_for(dep, name))


async def test_each_failure_kind_surfaces_within_seconds_then_the_gpus_are_released(
    apiserver: ApiServer, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handlers.SETTINGS, "failed_start_limit", 3)
    monkeypatch.setattr(handlers.SETTINGS, "failed_start_backoff_s", 2.0)
    monkeypatch.setattr(handlers.SETTINGS, "failed_start_backoff_max_s", 3.0)
    monkeypatch.setattr(handlers.FAILED_LOADS, "interval_s", 0.5)
    runner = _runner()
    await asyncio.to_thread(runner.__enter__)
    try:
        await _send(apiserver, "POST", ROUTES, _example("small"))
        await _replicas_become(apiserver, 1)
        pod = f"{ROUTE}-5d9c7f8b4-x2x7q"
        await _start_pod(apiserver, pod)

        # Each failure kind, written as the kubelet/scheduler reports it, becomes the
        # route's reason (pod events reconcile the route: no wait for a timer).
        kinds = [
            (kubelet.unschedulable(), "Unschedulable", kubelet.UNSCHEDULABLE),
            (kubelet.image_pull_backoff(), "ImagePullBackOff", "not found"),
            (kubelet.fetch_crashloop(restarts=1), "CrashLoopBackOff", "Cannot access gated repo"),
            (kubelet.engine_oom(restarts=1), "OOMKilled", "resources.memory"),
            (kubelet.readiness_failing(), "ReadinessProbeFailing", "readiness probe"),
        ]
        for state, reason, detail in kinds:
            started = asyncio.get_running_loop().time()
            await _status(apiserver, f"{PODS}/{pod}", state)
            route = await _route_when(apiserver, "PodsHealthy", reason, timeout=30)
            took = asyncio.get_running_loop().time() - started
            assert took < 30, (reason, took)
            assert detail in _condition(route, "PodsHealthy")["message"]
            assert _condition(route, "Degraded")["status"] == "True"
            assert _condition(route, "Degraded")["reason"] == reason
            assert _condition(route, "Ready") == {
                **_condition(route, "Ready"),
                "status": "False",
                "reason": reason,
            }
        dep = await _get(apiserver, f"{DEPLOYMENTS}/{ROUTE}")
        assert dep is not None and dep["spec"]["replicas"] == 1  # below the limit: kept

        # The third failed start: scaled to zero (GPUs released), Degraded, and the state
        # is in the route's annotation.
        await _status(apiserver, f"{PODS}/{pod}", kubelet.engine_oom(restarts=3))
        await _replicas_become(apiserver, 0)
        route = await _route_when(apiserver, "Degraded", failed_load.REASON)
        degraded = _condition(route, "Degraded")
        assert degraded["status"] == "True"
        assert "OOMKilled" in degraded["message"] and "attempt 1" in degraded["message"]
        assert _condition(route, "Ready")["reason"] == failed_load.REASON
        record = json.loads(route["metadata"]["annotations"][failed_load.ANNOTATION])
        assert record["attempt"] == 1 and record["blockedUntil"] is not None
        # The ReplicaSet controller removes the pod; the back-off (2 s) ends and the
        # route tries again with one replica.
        await _send(apiserver, "DELETE", f"{PODS}/{pod}")
        await _replicas_become(apiserver, 1)

        # It fails again: blocked again, for twice as long (attempt 2).
        await _start_pod(apiserver, f"{pod}-b")
        await _status(apiserver, f"{PODS}/{pod}-b", kubelet.fetch_crashloop(restarts=3))
        await _replicas_become(apiserver, 0)
        route = await _route_when(apiserver, "Degraded", failed_load.REASON)
        record = json.loads(route["metadata"]["annotations"][failed_load.ANNOTATION])
        assert record["attempt"] == 2
        assert "fetch-weights" in _condition(route, "Degraded")["message"]
        await _send(apiserver, "DELETE", f"{PODS}/{pod}-b")

        # A spec change (the usual fix) retries at once and starts from scratch.
        monkeypatch.setattr(handlers.SETTINGS, "failed_start_backoff_s", 600.0)
        monkeypatch.setattr(handlers.SETTINGS, "failed_start_backoff_max_s", 600.0)
        await _start_pod(apiserver, f"{pod}-c")
        await _status(apiserver, f"{PODS}/{pod}-c", kubelet.engine_oom(restarts=3))
        route = await _route_when(apiserver, "Degraded", failed_load.REASON)
        await _replicas_become(apiserver, 0)
        await _send(apiserver, "DELETE", f"{PODS}/{pod}-c")
        patch = {"spec": {"resources": {"memory": "48Gi"}}}
        await _send(apiserver, "PATCH", f"{ROUTES}/{ROUTE}", patch)
        await _replicas_become(apiserver, 1)

        async def cleared() -> Any:
            route = await _get(apiserver, f"{ROUTES}/{ROUTE}")
            annotations = (route or {}).get("metadata", {}).get("annotations") or {}
            return route if failed_load.ANNOTATION not in annotations else None

        await _eventually(cleared, "failed-load record removed")
        # The new pod serves: healthy, Ready.
        await _start_pod(apiserver, f"{pod}-d")
        await _status(apiserver, f"{PODS}/{pod}-d", kubelet.ready())
        await _route_when(apiserver, "PodsHealthy", "AllPodsHealthy")
    finally:
        await _stop(runner)


def _job_status(complete: bool) -> dict[str, Any]:
    if complete:
        return {
            "startTime": kubelet.T0,
            "completionTime": kubelet.T1,
            "succeeded": 1,
            "ready": 0,
            "terminating": 0,
            "uncountedTerminatedPods": {},
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached"},
                {"type": "Complete", "status": "True", "reason": "CompletionsReached"},
            ],
        }
    return {
        "startTime": kubelet.T0,
        "failed": 3,
        "ready": 0,
        "terminating": 0,
        "uncountedTerminatedPods": {},
        "conditions": [
            {
                "type": "FailureTarget",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
            },
            {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
            },
        ],
    }


async def _jobs(api: ApiServer) -> list[dict[str, Any]]:
    listed = await _get(api, JOBS) or {}
    return [j for j in listed.get("items", []) if not j["metadata"].get("deletionTimestamp")]


async def test_weights_are_staged_by_a_job_before_any_gpu_pod_starts(
    apiserver: ApiServer, kubeconfig: Path
) -> None:
    runner = _runner()
    await asyncio.to_thread(runner.__enter__)
    try:
        route = _example("small")
        route["spec"]["model"]["cacheClaim"] = "hf-cache"
        route["spec"]["model"]["source"] = "hf://HuggingFaceTB/SmolLM2-1.7B-Instruct@v1"
        await _send(apiserver, "POST", ROUTES, route)

        async def one_job() -> Any:
            jobs = await _jobs(apiserver)
            return jobs if len(jobs) == 1 else None

        (job,) = await _eventually(one_job, "the staging Job")
        fetch = job["spec"]["template"]["spec"]["containers"][0]
        assert fetch["args"][2:5] == ["HuggingFaceTB/SmolLM2-1.7B-Instruct", "--revision", "v1"]
        assert job["metadata"]["ownerReferences"][0]["name"] == ROUTE
        # No GPU pod while the weights download (the Job is applied before the Deployment).
        await _replicas_become(apiserver, 0)
        staging = await _route_when(apiserver, "Progressing", "StagingWeights")
        dep = await _get(apiserver, f"{DEPLOYMENTS}/{ROUTE}")
        assert dep is not None and dep["spec"]["replicas"] == 0
        assert _condition(staging, "Degraded")["status"] == "False"
        assert _condition(staging, "WeightsStaged")["status"] == "False"

        # The Job controller reports it complete: the GPU pods start.
        await _status(apiserver, f"{JOBS}/{job['metadata']['name']}", _job_status(True))
        await _replicas_become(apiserver, 1)
        await _route_when(apiserver, "WeightsStaged", "JobComplete")

        # A new revision: a new Job, the old one deleted, and the running pods keep
        # serving v1 meanwhile (the Deployment's template waits for the new Job).
        served = await _get(apiserver, f"{DEPLOYMENTS}/{ROUTE}")
        assert served is not None
        patch = {"spec": {"model": {"source": "hf://HuggingFaceTB/SmolLM2-1.7B-Instruct@v2"}}}
        await _send(apiserver, "PATCH", f"{ROUTES}/{ROUTE}", patch)

        async def replaced() -> Any:
            jobs = await _jobs(apiserver)
            names = [j["metadata"]["name"] for j in jobs]
            return jobs if len(jobs) == 1 and names != [job["metadata"]["name"]] else None

        (new_job,) = await _eventually(replaced, "the new revision's Job")
        await _route_when(apiserver, "WeightsStaged", "StagingWeights")
        dep = await _get(apiserver, f"{DEPLOYMENTS}/{ROUTE}")
        assert dep is not None and dep["spec"] == served["spec"]

        # The download fails (gated model): the staging pod's message reaches status.
        staging_pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{new_job['metadata']['name']}-7xk2p",
                "namespace": NS,
                "labels": {
                    **new_job["spec"]["template"]["metadata"]["labels"],
                    "batch.kubernetes.io/job-name": new_job["metadata"]["name"],
                    "job-name": new_job["metadata"]["name"],
                },
            },
            "spec": new_job["spec"]["template"]["spec"],
        }
        await _send(apiserver, "POST", PODS, staging_pod)
        failed_pod = {
            "phase": "Failed",
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [
                {
                    "name": "fetch-weights",
                    "image": kubelet.IMAGE,
                    "ready": False,
                    "started": False,
                    "restartCount": 0,
                    "state": {"terminated": kubelet._terminated("Error", 1, kubelet.FETCH_ERROR)},
                    "lastState": {},
                }
            ],
        }
        await _status(apiserver, f"{PODS}/{staging_pod['metadata']['name']}", failed_pod)
        await _status(apiserver, f"{JOBS}/{new_job['metadata']['name']}", _job_status(False))
        route_now = await _route_when(apiserver, "Degraded", "WeightStagingFailed")
        message = _condition(route_now, "Degraded")["message"]
        assert "BackoffLimitExceeded" in message and "Cannot access gated repo" in message
        dep = await _get(apiserver, f"{DEPLOYMENTS}/{ROUTE}")
        assert dep is not None and dep["spec"] == served["spec"]  # v1 still serves

        # A route created with a failing download never starts a GPU pod.
        other = _example("small")
        other["metadata"]["name"] = "gated"
        other["spec"]["model"]["cacheClaim"] = "hf-cache"
        other["spec"]["routing"].pop("fallback", None)
        await _send(apiserver, "POST", ROUTES, other)

        async def gated_job() -> Any:
            jobs = await _jobs(apiserver)
            mine = [j for j in jobs if j["metadata"]["labels"]["gearshift.dev/route"] == "gated"]
            return mine[0] if mine else None

        gated = await _eventually(gated_job, "the gated route's Job")
        await _status(apiserver, f"{JOBS}/{gated['metadata']['name']}", _job_status(False))

        async def gated_failed() -> Any:
            route = await _get(apiserver, f"{ROUTES}/gated")
            return (
                route
                if _condition(route or {}, "Degraded").get("reason") == ("WeightStagingFailed")
                else None
            )

        failed_route = await _eventually(gated_failed, "gated route failed")
        assert _condition(failed_route, "Ready")["reason"] == "WeightStagingFailed"
        gated_dep = await _get(apiserver, f"{DEPLOYMENTS}/gated")
        assert gated_dep is not None and gated_dep["spec"]["replicas"] == 0
    finally:
        await _stop(runner)
