"""Typed configuration of the proxy: served models, their upstreams, prices and limits.

The proxy's settings hold only a path (`config_file`); the structure lives in a YAML
file so that one Helm value or ConfigMap carries it whole. API keys are never in this
file: an upstream names a key *file* (a mounted Kubernetes Secret) or an env var.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UpstreamConfig(_Strict):
    """One OpenAI-compatible endpoint able to answer for a served model."""

    name: str = Field(min_length=1, description="Label in metrics, logs and GetModelInfo.")
    base_url: str = Field(description="Up to and including /v1, e.g. https://api.example.com/v1.")
    model: str = Field(min_length=1, description="The model name the upstream knows.")
    api_key_file: str = Field("", description="File holding the API key (a mounted Secret).")
    api_key_env: str = Field("", description="Name of an env var holding the API key.")
    priority: int = Field(0, description="Lower is tried first.")
    weight: float = Field(1.0, gt=0, description="Traffic share among equal priorities.")
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(120.0, gt=0, description="Longest wait between two bytes.")
    first_byte_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest wait for the answer to start (response headers, then the "
        "stream's first event; unary calls are streamed from the upstream too, so a long "
        "answer is not cut by it). A stall fails the "
        "attempt over to the next upstream and counts as a breaker failure. Keep it well "
        "under the router's backend_timeout_s (60 s).",
    )
    max_connections: int = Field(100, ge=1)
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra non-secret headers (e.g. an API version)."
    )

    @model_validator(mode="after")
    def _one_key_source(self) -> UpstreamConfig:
        if self.api_key_file and self.api_key_env:
            raise ValueError("set at most one of api_key_file and api_key_env")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return self


class PriceConfig(_Strict):
    """US dollars per million tokens."""

    input_per_mtok: float = Field(0.0, ge=0)
    output_per_mtok: float = Field(0.0, ge=0)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok
        ) / 1e6


class ModelConfig(_Strict):
    """A model the proxy serves, under the name clients use."""

    name: str = Field(min_length=1, description="Served name (GenerateRequest.model).")
    upstreams: list[UpstreamConfig] = Field(min_length=1)
    price: PriceConfig = PriceConfig()
    max_context_tokens: int = Field(8192, ge=1)
    description: str = Field("", description="Free text, e.g. 'stand-in for a large model'.")

    @model_validator(mode="after")
    def _unique_upstreams(self) -> ModelConfig:
        names = [u.name for u in self.upstreams]
        if len(set(names)) != len(names):
            raise ValueError(f"upstream names of model {self.name!r} must be unique")
        return self


class RetryConfig(_Strict):
    """Retries on one upstream before failing over to the next."""

    max_attempts: int = Field(3, ge=1, description="Attempts per upstream (1 = no retry).")
    backoff_initial_s: float = Field(0.1, ge=0)
    backoff_max_s: float = Field(2.0, ge=0)
    max_retry_after_s: float = Field(
        10.0, ge=0, description="A longer Retry-After fails over instead of waiting."
    )


class BreakerConfig(_Strict):
    failure_threshold: int = Field(5, ge=1, description="Consecutive failures that open it.")
    cooldown_s: float = Field(30.0, gt=0, description="Open time before a half-open probe.")


class RateLimit(_Strict):
    """Per-minute budgets; 0 means unlimited."""

    requests_per_minute: float = Field(0.0, ge=0)
    tokens_per_minute: float = Field(0.0, ge=0)


class RateLimitConfig(_Strict):
    default: RateLimit = RateLimit()
    tenants: dict[str, RateLimit] = Field(default_factory=dict)

    def for_tenant(self, tenant: str) -> RateLimit:
        return self.tenants.get(tenant, self.default)


class ProxyConfig(_Strict):
    models: list[ModelConfig] = Field(min_length=1)
    retry: RetryConfig = RetryConfig()
    breaker: BreakerConfig = BreakerConfig()
    rate_limits: RateLimitConfig = RateLimitConfig()

    @model_validator(mode="after")
    def _unique_models(self) -> ProxyConfig:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError("model names must be unique")
        return self

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)


def load_config(path: str | Path) -> ProxyConfig:
    """Reads and validates the YAML config file (errors name the bad field)."""
    raw: Any = yaml.safe_load(Path(path).read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return ProxyConfig.model_validate(raw)


def local_standin_config(base_url: str, upstream_model: str, served_model: str) -> dict[str, Any]:
    """Config for `gearshift up`: one model, one local vLLM upstream, no key, no price.

    The small model answers under a large model's served name, so the whole mesh can run
    on a laptop; `description` labels it as a stand-in wherever the config is shown.
    """
    return {
        "models": [
            {
                "name": served_model,
                "description": f"local stand-in: {upstream_model} served by vLLM at {base_url}",
                "max_context_tokens": 2048,
                "upstreams": [
                    {
                        "name": "local-vllm",
                        "base_url": base_url,
                        "model": upstream_model,
                        "connect_timeout_s": 2.0,
                        "read_timeout_s": 30.0,
                        "first_byte_timeout_s": 30.0,
                    }
                ],
            }
        ],
        "retry": {"max_attempts": 2, "backoff_initial_s": 0.2, "backoff_max_s": 2.0},
        "breaker": {"failure_threshold": 5, "cooldown_s": 10.0},
    }
