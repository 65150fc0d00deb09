"""`gearshift serve proxy`: settings and the ServiceApp of the LLM proxy."""

from __future__ import annotations

import logging

import grpc
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from gearshift.proxy.config import ProxyConfig, load_config
from gearshift.proxy.keys import RedactingFilter
from gearshift.proxy.servicer import ProxyServicer
from gearshift.runtime.settings import ServiceSettings
from gearshift.v1 import inference_pb2_grpc

log = logging.getLogger(__name__)

_SCRUBBED_LOGGERS = ("gearshift.proxy", "aiohttp")


class Settings(ServiceSettings):
    """LLM proxy settings; the model/upstream structure lives in the YAML `config_file`."""

    model_config = SettingsConfigDict(env_prefix="GEARSHIFT_PROXY_", extra="ignore")

    grpc_port: int = Field(50054, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    service_name: str = Field("gearshift-proxy", description="OpenTelemetry service.name.")
    config_file: str = Field(
        "", description="YAML file: served models, their upstreams, prices and rate limits."
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
        self.servicer.ready = True

    async def stop(self) -> None:
        self.servicer.ready = False
        await self.servicer.aclose()


def build_app(settings: Settings) -> ProxyApp:
    return ProxyApp(settings)
