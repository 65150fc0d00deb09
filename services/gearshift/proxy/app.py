"""`gearshift serve proxy`: settings and the ServiceApp of the LLM proxy."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from gearshift.proxy.config import ProxyConfig, load_config
from gearshift.proxy.keys import RedactingFilter
from gearshift.proxy.servicer import ProxyServicer
from gearshift.proxy.shared_limits import SharedUsage
from gearshift.runtime.settings import MultiWorkerSettings
from gearshift.v1 import inference_pb2_grpc

log = logging.getLogger(__name__)

_SCRUBBED_LOGGERS = ("gearshift.proxy", "aiohttp")


class Settings(MultiWorkerSettings):
    """LLM proxy settings; the model/upstream structure lives in the YAML `config_file`."""

    model_config = SettingsConfigDict(env_prefix="GEARSHIFT_PROXY_", extra="ignore")

    grpc_port: int = Field(50054, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    service_name: str = Field("gearshift-proxy", description="OpenTelemetry service.name.")
    config_file: str = Field(
        "", description="YAML file: served models, their upstreams, prices and rate limits."
    )
    rate_limit_postgres_url: str = Field(
        "",
        description="PostgreSQL (libpq URL) where replicas share their rate-limit usage, so "
        "a tenant's budget holds across all of them; empty: each replica limits alone.",
    )
    rate_limit_sync_s: float = Field(
        0.5, gt=0, description="How often replicas exchange rate-limit usage."
    )
    rate_limit_timeout_s: float = Field(
        1.0, gt=0, description="Deadline of one exchange with the rate-limit store."
    )


class ProxyApp:
    """Hosts the proxy servicer; `config` may be given directly (tests, `gearshift up`)."""

    name = "proxy"

    def __init__(self, settings: Settings, config: ProxyConfig | None = None) -> None:
        if config is None:
            if not settings.config_file:
                raise ValueError("the proxy needs --config-file (GEARSHIFT_PROXY_CONFIG_FILE)")
            config = load_config(settings.config_file)
        self.settings = settings
        self.config = config
        self.servicer = ProxyServicer(config)
        self.shared_usage = (
            SharedUsage(
                self.servicer.limiter,
                settings.rate_limit_postgres_url,
                timeout_s=settings.rate_limit_timeout_s,
            )
            if settings.rate_limit_postgres_url
            else None
        )
        self._sync_task: asyncio.Task[None] | None = None

    def register(self, server: grpc.aio.Server) -> list[str]:
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(self.servicer, server)
        return ["gearshift.v1.InferenceService"]

    async def start(self) -> None:
        """Nothing to warm: upstream health is learnt from traffic by the breakers."""
        redacting = RedactingFilter()
        for name in _SCRUBBED_LOGGERS:
            logger = logging.getLogger(name)
            if not any(isinstance(f, RedactingFilter) for f in logger.filters):
                logger.addFilter(redacting)
        for handler in logging.getLogger().handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(redacting)
        for model in self.config.models:
            log.info(
                "serving model %s via %s",
                model.name,
                ", ".join(f"{u.name} (priority {u.priority})" for u in model.upstreams),
            )
        if self.shared_usage is not None:
            self._sync_task = asyncio.create_task(
                self.shared_usage.run(self.settings.rate_limit_sync_s)
            )
            log.info("rate limits shared by all replicas (replica %s)", self.shared_usage.replica)
        self.servicer.ready = True

    async def stop(self) -> None:
        self.servicer.ready = False
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
        if self.shared_usage is not None:
            await self.shared_usage.close()
        await self.servicer.aclose()


def build_app(settings: Settings) -> ProxyApp:
    return ProxyApp(settings)
