"""The embedded default routes `gearshift up` writes for the local mesh."""

from __future__ import annotations

from typing import Any

from gearshift.routes.model_route import API_VERSION, KIND

LOCAL_SLM_ROUTE = "local-slm"
LOCAL_LLM_ROUTE = "local-llm"


def local_default_routes(
    slm_address: str, slm_model: str, proxy_address: str, llm_model: str
) -> list[dict[str, Any]]:
    """Two ModelRoute documents: the embedded SLM, escalating to the LLM behind the proxy.

    Both use `routing.endpoint` (backends already running locally), so neither needs an
    engine or upstream block; the large tier gets at most 30% of traffic.
    """
    return [
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": LOCAL_SLM_ROUTE},
            "spec": {
                "tier": "slm",
                "model": {"servedName": slm_model},
                "routing": {
                    "difficulty": {"min": 0.0, "max": 1.0},
                    "priority": 0,
                    "fallback": LOCAL_LLM_ROUTE,
                    "endpoint": slm_address,
                },
            },
        },
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": LOCAL_LLM_ROUTE},
            "spec": {
                "tier": "llm",
                "model": {"servedName": llm_model},
                "routing": {
                    "difficulty": {"min": 0.0, "max": 1.0},
                    "priority": 0,
                    "maxShare": 0.3,
                    "endpoint": proxy_address,
                },
            },
        },
    ]
