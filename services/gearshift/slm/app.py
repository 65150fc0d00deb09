"""`gearshift serve slm`: one small model on vLLM's in-process async engine.

`start()` loads the engine (off the event loop, so health answers NOT_SERVING
meanwhile) and runs one tiny generation when `warmup` is on; the host turns health
SERVING only after it returns. `stop()` runs after the host drained in-flight calls
and shuts the engine down, unless the engine was handed in by the caller (tests and
benchmarks share one engine between several hosts).
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from gearshift.models.prepare import DEFAULT_MODEL_NAME
from gearshift.slm.engine import SlmEngine
from gearshift.slm.servicer import InferenceServicer
from gearshift.slm.settings import Settings
from gearshift.v1 import inference_pb2, inference_pb2_grpc

__all__ = ["Settings", "SlmApp", "build_app"]

log = logging.getLogger(__name__)

ENGINE_CHECK_INTERVAL_S = 0.5


class SlmApp:
    """The SLM server as a `ServiceApp`."""

    name = "slm"

    def __init__(self, settings: Settings, engine: SlmEngine | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self._owns_engine = engine is None
        self.servicer = InferenceServicer(
            lambda: self.engine,
            self._served_name,
            settings.max_tokens_default,
            tool_parser=settings.tool_parser,
        )

    def _served_name(self) -> str:
        if self.engine is not None:
            return self.engine.served_name
        return self.settings.served_model_name or (
            DEFAULT_MODEL_NAME if not self.settings.model else self.settings.model
        )

    def register(self, server: grpc.aio.Server) -> list[str]:
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(self.servicer, server)
        return [inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name]

    async def start(self) -> None:
        if self.engine is None:
            self.engine = await SlmEngine.create(self.settings)
        if not self.engine.warm:
            if self.settings.warmup:
                await self.engine.warmup()
            self.engine.warm = True
        log.info(
            "serving %s (context %d tokens)", self.engine.served_name, self.engine.max_model_len
        )

    async def watch(self) -> str:
        """Returns once the engine has died or wedged, so the host exits and is replaced.

        Until then GetModelInfo and calls already say ENGINE_DEAD / ready=false; this makes
        health (and the kubelet's probes, and `gearshift up`'s supervisor) follow.
        """
        limit = self.settings.engine_stall_timeout_s
        while True:
            await asyncio.sleep(ENGINE_CHECK_INTERVAL_S)
            engine = self.engine
            if engine is None:
                continue
            if engine.dead:
                engine.warm = False
                return "the vLLM engine died (engine-core process gone or its loop failed)"
            stalled = engine.load.stalled_for_s()
            if stalled > limit:
                engine.warm = False
                return (
                    f"the vLLM engine is wedged: calls in flight, no engine step for "
                    f"{stalled:.0f} s (engine_stall_timeout_s {limit:g})"
                )

    async def stop(self) -> None:
        if self.engine is not None and self._owns_engine:
            self.engine.shutdown()
            self.engine = None


def build_app(settings: Settings) -> SlmApp:
    return SlmApp(settings)
