"""The router's multi-routing settings reach its container from the chart's values."""

from __future__ import annotations

from gearshift.router.app import Settings
from tests.helm.chart import component_name, env_of, find, objects, render


def _router_env(values: dict[str, object]) -> dict[str, str]:
    deployment = find(objects(render(values)), "Deployment", component_name("router"))
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return env_of(container)


def test_multi_routing_defaults_and_overrides_render_into_router_settings() -> None:
    env = _router_env({})
    assert env["GEARSHIFT_ROUTER_MULTI_MAX_ROUTES"] == "1"  # single route unless asked
    assert env["GEARSHIFT_ROUTER_MULTI_COMBINE"] == "concat"
    assert float(env["GEARSHIFT_ROUTER_MULTI_GRACE_S"]) == 0.0  # cancel at once when enough
    overrides = {
        "multi_max_routes": 3,
        "multi_combine": "synthesize",
        "multi_min_successful": 2,
        "multi_branch_timeout_s": 7.5,
        "multi_grace_s": 1.5,
        "multi_judge_tier": "slm",
        "multi_combine_reserve_s": 2.5,
    }
    env = _router_env({"router": {"settings": overrides}})
    multi = {k: v for k, v in env.items() if k.startswith("GEARSHIFT_ROUTER_MULTI_")}
    names = {k.removeprefix("GEARSHIFT_ROUTER_").lower(): v for k, v in multi.items()}
    settings = Settings(**names)
    policy = settings.multi_config().limits.default
    assert (policy.max_routes, policy.combine, policy.min_successful) == (3, "synthesize", 2)
    assert (policy.branch_timeout_s, policy.grace_s) == (7.5, 1.5)
    assert settings.multi_config().judge_tier == "slm"
    assert settings.multi_config().combine_reserve_s == 2.5
