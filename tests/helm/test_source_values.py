"""The chart's values for data sources: the router's selection knobs and retriever keys."""

from __future__ import annotations

from typing import Any

import pytest

from gearshift.router.app import Settings as RouterSettings
from tests.helm.chart import component_name, env_of, find, objects, objects_of, render

KNOBS = (
    "selection_threshold",
    "selection_margin",
    "source_timeout_s",
    "source_context_chars",
    "source_support_min",
    "selection_tiebreak_window",
    "selection_tiebreak_timeout_s",
)


def _router_env(objs: list[dict[str, Any]]) -> dict[str, str]:
    dep = find(objs, "Deployment", component_name("router"))
    return env_of(dep["spec"]["template"]["spec"]["containers"][0])


def test_the_selection_knobs_render_with_the_routers_own_defaults() -> None:
    env = _router_env(objects_of("default"))
    defaults = RouterSettings.model_fields
    for knob in KNOBS:
        raw = env[f"GEARSHIFT_ROUTER_{knob.upper()}"]
        assert float(raw) == float(defaults[knob].default), knob
    assert env["GEARSHIFT_ROUTER_SELECTION_TIEBREAK"] == "false"
    assert defaults["selection_tiebreak"].default is False
    assert env["GEARSHIFT_ROUTER_SOURCE_ANSWER"] == defaults["source_answer"].default


def test_the_selection_knobs_can_be_set() -> None:
    values = {
        "router": {
            "settings": {
                "selection_threshold": 0.3,
                "selection_margin": 0.05,
                "source_timeout_s": 0.5,
                "source_context_chars": 6000,
                "source_answer": "verify",
            }
        }
    }
    env = _router_env(objects(render(values)))
    assert env["GEARSHIFT_ROUTER_SELECTION_THRESHOLD"] == "0.3"
    assert env["GEARSHIFT_ROUTER_SELECTION_MARGIN"] == "0.05"
    assert env["GEARSHIFT_ROUTER_SOURCE_TIMEOUT_S"] == "0.5"
    assert env["GEARSHIFT_ROUTER_SOURCE_CONTEXT_CHARS"] == "6000"
    assert env["GEARSHIFT_ROUTER_SOURCE_ANSWER"] == "verify"


def _secret_env(container: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((e for e in container["env"] if e["name"] == name), None)


def test_retriever_keys_come_from_a_secret_and_reach_router_and_operator() -> None:
    values = {
        "retriever": {
            "enabled": True,
            "apiKeys": {"existingSecret": "retriever-keys", "clientKey": "svc"},
        }
    }
    objs = objects(render(values))
    retriever = find(objs, "Deployment", component_name("retriever"))
    pod = retriever["spec"]["template"]["spec"]
    container = pod["containers"][0]
    keys_file = env_of(container)["GEARSHIFT_RETRIEVER_API_KEYS_FILE"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "api-keys")
    assert keys_file == f"{mount['mountPath']}/api-keys.yaml" and mount["readOnly"]
    volume = next(v for v in pod["volumes"] if v["name"] == "api-keys")
    assert volume["secret"]["secretName"] == "retriever-keys"
    for component in ("router", "operator"):
        dep = find(objs, "Deployment", component_name(component))
        env = _secret_env(
            dep["spec"]["template"]["spec"]["containers"][0],
            f"GEARSHIFT_{component.upper()}_RETRIEVER_API_KEY",
        )
        assert env is not None, component
        assert env["valueFrom"]["secretKeyRef"] == {"name": "retriever-keys", "key": "svc"}


@pytest.mark.parametrize("value_set", ["default", "retriever-values.yaml"])
def test_without_a_keys_secret_nothing_sends_or_checks_keys(value_set: str) -> None:
    objs = objects_of(value_set)
    for dep in (o for o in objs if o["kind"] == "Deployment"):
        for e in dep["spec"]["template"]["spec"]["containers"][0].get("env", []):
            assert not e["name"].endswith(("_RETRIEVER_API_KEY", "RETRIEVER_API_KEYS_FILE"))
