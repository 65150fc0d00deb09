"""The settings every service has in common.

Each service subclasses `ServiceSettings` with its own `env_prefix`
(`GEARSHIFT_ROUTER_`, `GEARSHIFT_SLM_`, ...). Field names are the same in env vars
(upper case, with the prefix), CLI flags (`--grpc-port`) and the Helm chart's
values (`router.settings.grpc_port`), so one name finds a setting everywhere.
"""

from __future__ import annotations

import argparse
from typing import Any, Literal, Self, get_args, get_origin

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Network, shutdown and telemetry settings shared by all services."""

    model_config = SettingsConfigDict(env_prefix="GEARSHIFT_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the gRPC server binds to.")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    metrics_port: int = Field(
        0, ge=-1, le=65535, description="Prometheus /metrics port; 0 picks a free one, -1 disables."
    )
    grace_period_s: float = Field(
        30.0, ge=0, description="On SIGTERM, how long in-flight calls may take to finish."
    )
    otlp_endpoint: str = Field(
        "", description="OTLP/gRPC collector address (host:port); empty disables export."
    )
    otlp_protocol: Literal["grpc", "http/protobuf"] = Field(
        "grpc",
        description="OTLP transport: grpc (endpoint host:port, usually 4317) or "
        "http/protobuf (endpoint http://host:4318; costs less CPU per exported span).",
    )
    trace_sample_ratio: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Share of new traces recorded when exporting; a caller's sampled flag "
        "decides for traces it continues.",
    )
    service_name: str = Field("gearshift", description="OpenTelemetry service.name.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = Field("json", description="Log line format.")
    ready_file: str = Field(
        "", description="When set, the bound addresses are written here as JSON once serving."
    )

    max_connection_age_s: float = Field(
        0.0,
        ge=0,
        description="Close each client connection after about this long (gRPC sends GOAWAY, "
        "±10% jitter; the client reconnects, through DNS or its pod list), so long-lived "
        "HTTP/2 connections rebalance over new replicas; 0 keeps connections forever.",
    )
    max_connection_age_grace_s: float = Field(
        0.0,
        ge=0,
        description="After GOAWAY, how long calls still running on an aged connection may "
        "take; 0 lets them finish however long (a generation must not be cut).",
    )
    reuse_port: bool = Field(
        False,
        description="Bind with SO_REUSEPORT so several processes share the ports (the "
        "workers of one service set it; off, a port in use is an error).",
    )

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Adds one `--flag` per field; flags override env vars."""
        for name, field in cls.model_fields.items():
            flag = "--" + name.replace("_", "-")
            annotation = field.annotation
            kwargs: dict[str, Any] = {"dest": name, "default": None, "help": field.description}
            if annotation is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            elif get_origin(annotation) is Literal:
                kwargs["choices"] = list(get_args(annotation))
            parser.add_argument(flag, **kwargs)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Self:
        """Env vars first, then any flag given on the command line."""
        overrides = {
            name: value
            for name in cls.model_fields
            if (value := getattr(args, name, None)) is not None
        }
        return cls(**overrides)


class MultiWorkerSettings(ServiceSettings):
    """Settings of a service that can run several worker processes on the same ports."""

    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Worker processes sharing the ports (SO_REUSEPORT); one per core to use.",
    )
