"""Route status from its pods' states, the failed-load back-off, and staging Jobs, as
pure functions over what the kubelet, scheduler and Job controller report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gearshift.routes import ModelRoute, load_routes_file
from gearshift_operator import autoscaler, children, failed_load, pod_health, status
from gearshift_operator import weights_staging as staging
from gearshift_operator.settings import Settings
from tests.operator import pod_failures as kubelet

EXAMPLES = Path(__file__).resolve().parents[2] / "examples/modelroutes"


def _route(**model: Any) -> ModelRoute:
    doc = load_routes_file(EXAMPLES / "small.yaml")[0].to_dict()
    doc["metadata"]["uid"] = "uid-1"
    doc["spec"]["model"].update(model)
    return ModelRoute.model_validate(doc)


def _pod(state: dict[str, Any], name: str = "smollm2-small-5d9c7f8b4-x2x7q") -> dict[str, Any]:
    dep = children.deployment(_route(), Settings())
    pod = kubelet.pod_for(dep, name)
    pod["status"] = state
    return pod


def _worst(*states: dict[str, Any]) -> pod_health.Problem:
    health = pod_health.assess([_pod(s, f"p{i}") for i, s in enumerate(states)])
    assert health.worst is not None
    return health.worst


def test_a_crashlooping_fetch_names_the_init_container_and_the_fetch_error() -> None:
    worst = _worst(kubelet.fetch_crashloop(restarts=2))
    assert worst.reason == "CrashLoopBackOff"
    assert worst.container == "fetch-weights"
    assert "init container fetch-weights" in worst.message
    assert "exit code 1 (Error)" in worst.message
    assert "Cannot access gated repo" in worst.message  # the termination message
    assert "tokenSecretRef" in worst.message  # what to do about it


def test_an_oom_killed_engine_says_so_and_what_to_raise() -> None:
    worst = _worst(kubelet.engine_oom())
    assert (worst.reason, worst.container) == ("OOMKilled", "slm")
    assert "memory limit" in worst.message and "resources.memory" in worst.message


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "ErrImagePull"])
def test_an_image_that_cannot_be_pulled_is_named(reason: str) -> None:
    worst = _worst(kubelet.image_pull_backoff(reason))
    assert worst.reason == reason
    assert kubelet.IMAGE in worst.message and "not found" in worst.message


def test_an_unschedulable_pod_quotes_the_scheduler() -> None:
    worst = _worst(kubelet.unschedulable())
    assert worst.reason == "Unschedulable"
    assert kubelet.UNSCHEDULABLE in worst.message


def test_a_failing_readiness_probe_is_told_apart_from_loading() -> None:
    assert _worst(kubelet.readiness_failing()).reason == "ReadinessProbeFailing"
    health = pod_health.assess([_pod(kubelet.loading()), _pod(kubelet.ready(), "b")])
    assert (health.problems, health.loading, health.ready) == ([], 1, 1)


def test_the_worst_problem_leads_and_the_others_are_counted() -> None:
    health = pod_health.assess(
        [_pod(kubelet.unschedulable(), "a"), _pod(kubelet.engine_oom(), "b")]
    )
    reason, message = pod_health.summary(health)
    assert reason == "OOMKilled" and "1 more problem" in message


def test_failed_starts_count_restarts_of_unready_pods_of_the_current_template() -> None:
    crashing = _pod(kubelet.fetch_crashloop(restarts=2), "a")
    serving = _pod(kubelet.ready(), "b")
    serving["status"]["containerStatuses"][0]["restartCount"] = 7  # healthy now: not counted
    old = _pod(kubelet.engine_oom(restarts=5), "c")
    old["metadata"]["annotations"][children.TEMPLATE_HASH] = "old-template"
    going = _pod(kubelet.engine_oom(restarts=9), "d")
    going["metadata"]["deletionTimestamp"] = kubelet.T1
    current = crashing["metadata"]["annotations"][children.TEMPLATE_HASH]
    health = pod_health.assess([crashing, serving, old, going], current)
    assert health.failed_starts == 2
    assert health.pods == 3  # the pod being deleted is gone already


def test_pod_problems_make_the_route_degraded_with_their_reason() -> None:
    dep = children.deployment(_route(), Settings())
    dep["status"] = {"replicas": 1, "updatedReplicas": 1, "observedGeneration": 1}
    dep["metadata"]["generation"] = 1
    _counts, conds = status.deployment_status(dep, 2)
    assert {c["type"]: c["reason"] for c in conds}["Degraded"] == "AsExpected"
    health = pod_health.assess([_pod(kubelet.fetch_crashloop())])
    by_type = {c["type"]: c for c in status.with_pod_health(conds, health, 2)}
    assert by_type["Degraded"]["status"] == "True"
    assert by_type["Degraded"]["reason"] == "CrashLoopBackOff"
    assert by_type["Ready"]["reason"] == "CrashLoopBackOff"
    assert by_type["PodsHealthy"]["status"] == "False"
    assert "fetch-weights" in by_type["PodsHealthy"]["message"]


LIMITS = {"limit": 3, "base_s": 300.0, "max_s": 1000.0}


def test_failed_starts_block_the_route_with_a_bounded_exponential_back_off() -> None:
    now = 1_000_000.0
    verdict = failed_load.decide(None, "h1", 2, False, now, **LIMITS)
    assert verdict == failed_load.Verdict(False, None)
    verdict = failed_load.decide(None, "h1", 3, False, now, **LIMITS, why="OOMKilled")
    assert verdict.blocked and verdict.record is not None
    assert (verdict.record.attempt, verdict.record.blockedUntil) == (1, now + 300)
    # Survives a round trip through the route's annotation (not the operator's memory).
    record = failed_load.parse({failed_load.ANNOTATION: verdict.record.to_annotation()})
    assert record == verdict.record
    assert failed_load.decide(record, "h1", 0, False, now + 299, **LIMITS).blocked
    # Back-off over: one more attempt, the record kept for the next back-off.
    retry = failed_load.decide(record, "h1", 0, False, now + 300, **LIMITS)
    assert not retry.blocked and retry.record is not None and retry.record.blockedUntil is None
    again = failed_load.decide(retry.record, "h1", 3, False, now + 400, **LIMITS)
    assert again.record is not None and again.record.attempt == 2
    assert again.record.blockedUntil == now + 400 + 600
    assert failed_load.backoff_s(5, 300, 1000) == 1000  # bounded
    # Serving again clears it.
    assert failed_load.decide(retry.record, "h1", 0, True, now + 301, **LIMITS).record is None


def test_a_new_pod_template_retries_a_blocked_route_at_once() -> None:
    blocked = failed_load.FailedLoad("h1", 3, 2_000_000.0, "OOMKilled")
    verdict = failed_load.decide(blocked, "h2", 0, False, 1_000_000.0, **LIMITS)
    assert verdict == failed_load.Verdict(False, None)
    assert failed_load.parse({failed_load.ANNOTATION: "not json"}) is None


def test_loading_and_failing_replicas_hold_scale_ups() -> None:
    policy = autoscaler.Policy(1, 8, 5.0, 300.0)
    state = autoscaler.ScaleState()
    assert autoscaler.decide(policy, 2, 40.0, 0.0, state, starting=1).replicas == 2
    assert autoscaler.decide(policy, 2, 40.0, 1.0, state, failing=1).reason == "ReplicasFailing"
    assert autoscaler.decide(policy, 2, 40.0, 2.0, state).replicas == 4


def test_hub_revisions_are_pinned_in_the_fetch_and_the_engine() -> None:
    route = _route(source="hf://HuggingFaceTB/SmolLM2-1.7B-Instruct@a1b2c3d")
    pod = children.deployment(route, Settings())["spec"]["template"]["spec"]
    fetch = pod["initContainers"][0]
    assert fetch["args"][2:5] == ["HuggingFaceTB/SmolLM2-1.7B-Instruct", "--revision", "a1b2c3d"]
    assert fetch["terminationMessagePolicy"] == "FallbackToLogsOnError"
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["GEARSHIFT_SLM_MODEL"] == "HuggingFaceTB/SmolLM2-1.7B-Instruct"
    assert '"revision": "a1b2c3d"' in env["GEARSHIFT_SLM_EXTRA_ENGINE_ARGS"]
    with pytest.raises(ValueError, match="source"):
        _route(source="hf://org/model@")


def test_a_cache_claim_is_filled_by_a_job_without_gpus_or_the_route_selector() -> None:
    assert staging.weights_job(_route(), Settings()) is None  # no claim: the init container
    route = _route(cacheClaim="hf-cache", source="hf://HuggingFaceTB/SmolLM2-1.7B-Instruct@v2")
    job = staging.weights_job(route, Settings())
    assert job is not None and job["kind"] == "Job"
    pod = job["spec"]["template"]["spec"]
    (fetch,) = pod["containers"]
    assert pod["restartPolicy"] == "Never"
    assert "--revision" in fetch["args"] and "nvidia.com/gpu" not in str(fetch["resources"])
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == ["hf-cache"]
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert not set(children.selector_labels(route).items()) & set(labels.items())
    assert "nodeSelector" not in pod and "tolerations" not in pod  # no GPU node needed
    secret = _route(cacheClaim="hf-cache")
    secret.spec.pod_template = {"spec": {"imagePullSecrets": [{"name": "regcred"}]}}
    pulled = staging.weights_job(secret, Settings())
    assert pulled is not None
    assert pulled["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    other = staging.weights_job(_route(cacheClaim="hf-cache"), Settings())
    assert other is not None and other["metadata"]["name"] != job["metadata"]["name"]
    assert len(job["metadata"]["name"]) <= 63
    assert staging.job_state(None).done is False
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}}
    assert staging.job_state(done).done
    failed = {
        "status": {
            "failed": 3,
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                }
            ],
        }
    }
    assert staging.job_state(failed).failed
    assert "BackoffLimitExceeded" in staging.job_state(failed).message


def test_a_failing_surge_pod_of_a_serving_route_is_named_but_not_degrading() -> None:
    dep = children.deployment(_route(), Settings())
    dep["metadata"]["generation"] = 2
    dep["status"] = {
        "replicas": 2,
        "readyReplicas": 1,
        "updatedReplicas": 1,
        "observedGeneration": 2,
        "conditions": [
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
        ],
    }
    _counts, conds = status.deployment_status(dep, 3)
    health = pod_health.assess([_pod(kubelet.ready(), "a"), _pod(kubelet.engine_oom(), "b")])
    by_type = {c["type"]: c for c in status.with_pod_health(conds, health, 3)}
    assert by_type["Ready"]["reason"] == "AllReplicasReady"
    assert by_type["Degraded"]["status"] == "False"
    assert by_type["PodsHealthy"]["reason"] == "OOMKilled"


@pytest.mark.parametrize(
    ("source", "ok"),
    [
        ("hf://HuggingFaceTB/SmolLM2-1.7B-Instruct@0123abc", True),
        ("hf://org/model@refs/pr/1", True),
        ("hf://org/model@v1.0", True),
        ("hf://org/model@", False),
        ("hf://org/model@a b", False),
        ("hf://org/model@/x", False),
    ],
)
def test_the_crd_and_the_model_agree_on_pinned_revisions(source: str, ok: bool) -> None:
    from tests.operator.crd_check import validate

    doc = load_routes_file(EXAMPLES / "small.yaml")[0].to_dict()
    doc["spec"]["model"]["source"] = source
    assert (validate(doc) == []) is ok, validate(doc)
    if ok:
        assert ModelRoute.model_validate(doc).spec.model.source == source
    else:
        with pytest.raises(ValueError, match="source"):
            ModelRoute.model_validate(doc)
