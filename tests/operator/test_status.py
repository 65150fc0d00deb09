"""Conditions follow the Deployment: Progressing -> Ready, and Degraded when replicas fail."""

from __future__ import annotations

from typing import Any

from gearshift_operator.status import deployment_status, merge_conditions


def _dep(desired: int, ready: int, updated: int, reason: str, ok: str = "True") -> dict[str, Any]:
    return {
        "metadata": {"generation": 2},
        "spec": {"replicas": desired},
        "status": {
            "observedGeneration": 2,
            "replicas": desired,
            "readyReplicas": ready,
            "updatedReplicas": updated,
            "conditions": [{"type": "Progressing", "status": ok, "reason": reason}],
        },
    }


def _by_type(conds: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in conds}


def test_lifecycle() -> None:
    _, conds = deployment_status(None, 1)
    assert _by_type(conds)["Progressing"] == ("True", "Deploying")
    _, conds = deployment_status(_dep(2, 0, 2, "ReplicaSetUpdated"), 1)
    c = _by_type(conds)
    assert c["Progressing"][0] == "True" and c["Ready"] == ("False", "NoReplicasReady")
    counts, conds = deployment_status(_dep(2, 2, 2, "NewReplicaSetAvailable"), 1)
    c = _by_type(conds)
    assert c == {
        "Ready": ("True", "AllReplicasReady"),
        "Progressing": ("False", "RolloutComplete"),
        "Degraded": ("False", "AsExpected"),
    }
    assert counts["readyReplicas"] == 2
    _, conds = deployment_status(_dep(2, 1, 2, "NewReplicaSetAvailable"), 1)
    c = _by_type(conds)
    assert c["Degraded"] == ("True", "ReplicasUnavailable")
    assert c["Ready"] == ("True", "SomeReplicasReady")
    _, conds = deployment_status(_dep(2, 0, 1, "ProgressDeadlineExceeded", ok="False"), 1)
    c = _by_type(conds)
    assert c["Degraded"] == ("True", "ProgressDeadlineExceeded")
    assert c["Ready"][0] == "False"


def test_transition_time_kept_while_status_holds() -> None:
    old = [{"type": "Ready", "status": "True", "lastTransitionTime": "T1"}]
    new = merge_conditions(old, [{"type": "Ready", "status": "True"}], "T2")
    assert new[0]["lastTransitionTime"] == "T1"
    new = merge_conditions(old, [{"type": "Ready", "status": "False"}], "T3")
    assert new[0]["lastTransitionTime"] == "T3"
