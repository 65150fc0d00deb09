"""Settings of the SLM server (env prefix `GEARSHIFT_SLM_`, flags `--model` etc.).

The same names are used by the Helm chart (`slm.settings.<name>`) and `gearshift up`.
Kept free of vLLM imports so `gearshift serve slm --help` answers instantly.
"""

from __future__ import annotations

import json
import re
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from gearshift.runtime.settings import ServiceSettings


class Settings(ServiceSettings):
    """What to serve and how to size the engine."""

    model_config = SettingsConfigDict(env_prefix="GEARSHIFT_SLM_", extra="ignore")

    grpc_port: int = Field(50053, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    service_name: str = Field("gearshift-slm", description="OpenTelemetry service.name.")
    model: str = Field(
        "",
        description="Model folder or Hugging Face id; empty serves the embedded default "
        "(SmolLM2-135M-Instruct, prepared on first use).",
    )
    served_model_name: str = Field(
        "",
        description="Name clients ask for; empty: smollm2-135m-instruct for the default "
        "model, else the folder name or the id's last part.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Weights dtype; auto is float32 on CPU and vLLM's auto on GPU (the "
        "checkpoint's dtype, float16 where the GPU lacks bfloat16, e.g. T4/V100).",
    )
    max_model_len: int = Field(2048, ge=16, description="Largest prompt plus answer in tokens.")
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="Share of GPU memory vLLM may use (GPU only)."
    )
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one replica spans.")
    kv_cache_space_gib: float = Field(
        1.0, gt=0, description="KV-cache size on CPU in GiB (sets VLLM_CPU_KVCACHE_SPACE)."
    )
    enforce_eager: bool | None = Field(
        None,
        description="Skip graph capture/compilation; unset: true on CPU (the compile "
        "warm-up costs minutes there), false on GPU.",
    )
    extra_engine_args: str = Field(
        "{}",
        description='JSON object of further vllm AsyncEngineArgs, e.g. {"max_num_seqs": 64}.',
    )
    warmup: bool = Field(True, description="Run one tiny generation before reporting SERVING.")
    engine_stall_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Calls in flight while the engine takes no step for this long mean a "
        "wedged engine: health turns NOT_SERVING and the process exits to be replaced.",
    )
    max_tokens_default: int = Field(
        0,
        ge=0,
        description="Answer length when a request leaves max_tokens unset; 0: as many as "
        "fit in the context (the contract's default).",
    )

    tool_parser: str = Field(
        "",
        description="vLLM tool parser for the served model's tool-call format (e.g. hermes, "
        "llama3_json); empty: only forced tool calls (tool_choice required or a named "
        "function) are served. The operator sets it from the route's capabilities.toolParser.",
    )

    @field_validator("tool_parser")
    @classmethod
    def _known_parser(cls, value: str) -> str:
        if value and not re.match(r"^[a-z0-9_.-]+$", value):
            raise ValueError(f"tool_parser {value!r} is not a vLLM tool parser name")
        return value

    @field_validator("extra_engine_args")
    @classmethod
    def _json_object(cls, value: str) -> str:
        parsed = json.loads(value or "{}")
        if not isinstance(parsed, dict):
            raise ValueError("extra_engine_args must be a JSON object")
        return value or "{}"

    def extra_args(self) -> dict[str, object]:
        parsed: dict[str, object] = json.loads(self.extra_engine_args or "{}")
        return parsed
