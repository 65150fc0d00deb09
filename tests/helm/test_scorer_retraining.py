"""The chart's outcome store, hot-reloaded scorer weights and retraining CronJob.

Off by default; when on, the router and the CronJob share one weights volume and one
outcome store Secret, and the CronJob runs the same `gearshift scorer train` command.
"""

from __future__ import annotations

import pytest

from tests.helm.chart import (
    Manifest,
    by_kind,
    ci_values,
    component_name,
    env_of,
    find,
    objects,
    objects_of,
    render,
)


def router_container(objs: list[Manifest]) -> Manifest:
    deployment = find(objs, "Deployment", component_name("router"))
    container: Manifest = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def test_off_by_default_with_a_writable_outcomes_dir() -> None:
    objs = objects_of("default")
    assert by_kind(objs, "CronJob") == []
    container = router_container(objs)
    env = env_of(container)
    assert env["GEARSHIFT_ROUTER_OUTCOMES_DIR"].startswith("/tmp/")  # the writable emptyDir
    assert "GEARSHIFT_ROUTER_SCORER_WEIGHTS" not in env
    assert "GEARSHIFT_ROUTER_OUTCOMES_POSTGRES_URL" not in {e["name"] for e in container["env"]}


def test_router_and_cronjob_share_the_store_and_the_weights_volume() -> None:
    objs = objects_of("full-values.yaml")
    container = router_container(objs)
    items = {e["name"]: e for e in container["env"]}
    secret = {"name": "gearshift-pg", "key": "url"}
    assert items["GEARSHIFT_ROUTER_OUTCOMES_POSTGRES_URL"]["valueFrom"]["secretKeyRef"] == secret
    weights = items["GEARSHIFT_ROUTER_SCORER_WEIGHTS"]["value"]
    assert weights == "/etc/gearshift/scorer/weights.npz"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "scorer-weights")
    assert mount["readOnly"] is True and weights.startswith(mount["mountPath"])
    (cron,) = by_kind(objs, "CronJob")
    assert cron["spec"]["schedule"] == "17 3 * * *"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    job = pod["containers"][0]
    assert job["args"][:2] == ["scorer", "train"]
    assert job["args"][job["args"].index("--out") + 1] == weights
    assert job["args"][-2:] == ["--outcome-weight", "5"]
    job_env = {e["name"]: e for e in job["env"]}
    assert job_env["GEARSHIFT_ROUTER_OUTCOMES_POSTGRES_URL"]["valueFrom"]["secretKeyRef"] == secret
    claims = {v["name"]: v for v in pod["volumes"]}
    assert claims["scorer-weights"]["persistentVolumeClaim"]["claimName"] == "gearshift-scorer"


def test_weights_from_a_configmap() -> None:
    values = ci_values("default")
    values["router"] = {"scorerWeights": {"configMap": "my-weights", "key": "w.npz"}}
    objs = objects(render(values))
    container = router_container(objs)
    assert env_of(container)["GEARSHIFT_ROUTER_SCORER_WEIGHTS"] == "/etc/gearshift/scorer/w.npz"
    volumes = find(objs, "Deployment", component_name("router"))["spec"]["template"]["spec"][
        "volumes"
    ]
    cm = next(v for v in volumes if v["name"] == "scorer-weights")["configMap"]
    assert cm == {"name": "my-weights", "items": [{"key": "w.npz", "path": "w.npz"}]}


@pytest.mark.parametrize(
    ("router", "message"),
    [
        ({"retrain": {"enabled": True}}, "outcomesStore"),
        (
            {"retrain": {"enabled": True}, "outcomesStore": {"existingSecret": "pg"}},
            "persistentVolumeClaim",
        ),
    ],
)
def test_retraining_without_a_store_or_volume_fails_the_render(
    router: Manifest, message: str
) -> None:
    with pytest.raises(Exception, match=message):
        render({"router": router})
