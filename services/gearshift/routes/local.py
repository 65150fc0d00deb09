"""The embedded default routes `gearshift up` writes for the local mesh."""

from __future__ import annotations

from typing import Any

from gearshift.routes.model_route import API_VERSION, KIND

LOCAL_SLM_ROUTE = "local-slm"
LOCAL_LLM_ROUTE = "local-llm"
# The stand-in upstream (vLLM's OpenAI server) parses Hermes-style tool calls, so the local
# llm route can declare `tools`; `gearshift up` and the tests start it with these flags.
STANDIN_TOOL_FLAGS = ("--enable-auto-tool-choice", "--tool-call-parser", "hermes")
# What each local model can do. The embedded SmolLM2-135M follows JSON schemas (structured
# output forces it) but cannot be trusted to choose a tool, so tool requests go to the
# stand-in upstream (the same small model, whose calls vLLM's server constrains and parses).
LOCAL_SLM_CAPABILITIES = {"tools": False, "jsonSchema": True, "logprobs": True}
LOCAL_LLM_CAPABILITIES = {"tools": True, "jsonSchema": True, "logprobs": True}


def local_default_routes(
    slm_address: str, slm_model: str, proxy_address: str, llm_model: str
) -> list[dict[str, Any]]:
    """Two ModelRoute documents: the embedded SLM, escalating to the LLM behind the proxy.

    Both use `routing.endpoint` (backends already running locally), so neither needs an
    engine or upstream block; the large tier gets at most 30% of traffic. Only the llm
    route declares `tools` (the stand-in upstream runs with STANDIN_TOOL_FLAGS).
    """
    return [
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": LOCAL_SLM_ROUTE},
            "spec": {
                "tier": "slm",
                "model": {"servedName": slm_model},
                "capabilities": dict(LOCAL_SLM_CAPABILITIES),
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
                "capabilities": dict(LOCAL_LLM_CAPABILITIES),
                "routing": {
                    "difficulty": {"min": 0.0, "max": 1.0},
                    "priority": 0,
                    "maxShare": 0.3,
                    "endpoint": proxy_address,
                },
            },
        },
    ]
