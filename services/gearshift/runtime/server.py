"""The gRPC server bootstrap every service runs on.

It adds what a platform team expects from any gRPC workload: the standard health
service (NOT_SERVING until the service says it is warm), server reflection,
Prometheus metrics, OpenTelemetry context propagation, and a graceful SIGTERM:
health flips to NOT_SERVING, new calls are refused (UNAVAILABLE with a retry hint, on
ports that stay open), in-flight calls get the grace period to finish, then the
process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gearshift.runtime.drain import Drain, DrainInterceptor
from gearshift.runtime.logs import setup_logging
from gearshift.runtime.metrics import PrometheusServerInterceptor, start_metrics_server
from gearshift.runtime.settings import ServiceSettings
from gearshift.runtime.telemetry import server_interceptors, setup_telemetry, shutdown_telemetry

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
EXIT_SERVICE_FAILED = 3  # the process exits with this when its app can no longer serve
FAILED_GRACE_S = 2.0  # drain of a failed service: its calls are failing anyway
DRAIN_VISIBLE_S = 1.0  # shortest drain, so health checks see NOT_SERVING before the port closes


class ServiceApp(Protocol):
    """What a service plugs into the bootstrap."""

    name: str

    def register(self, server: grpc.aio.Server) -> list[str]:
        """Adds servicers to `server`; returns their full service names."""
        ...

    async def start(self) -> None:
        """Loads models, opens pools, warms up. Health turns SERVING after it returns."""
        ...

    async def stop(self) -> None:
        """Releases resources after in-flight calls have finished."""
        ...


@runtime_checkable
class DrainAware(Protocol):
    """An app with front doors of its own (the router's HTTP API) joins the host's drain.

    `use_drain` is called once, before `start`; the app counts its own calls on the
    `Drain` and refuses new ones while it drains, so the host waits for them too and
    closes nothing before they are done.
    """

    def use_drain(self, drain: Drain) -> None: ...


def server_options(settings: ServiceSettings) -> list[tuple[str, int]]:
    """gRPC core options of every service's server.

    A bounded connection age makes clients that hold one HTTP/2 connection (a router
    behind a Service's virtual IP, or round robin over a headless Service's DNS) reconnect
    now and then, so replicas added by the autoscaler get their share of calls.
    """
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        # Off unless this is one of several workers sharing the port on purpose.
        ("grpc.so_reuseport", int(settings.reuse_port)),
    ]
    if settings.max_connection_age_s > 0:
        options.append(("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)))
        if settings.max_connection_age_grace_s > 0:
            grace_ms = int(settings.max_connection_age_grace_s * 1000)
            options.append(("grpc.max_connection_age_grace_ms", grace_ms))
    return options


class GrpcServiceHost:
    """Hosts one `ServiceApp` on a grpc.aio server."""

    def __init__(self, app: ServiceApp, settings: ServiceSettings) -> None:
        self.app = app
        self.settings = settings
        self.drain = Drain(app.name)
        if isinstance(app, DrainAware):
            app.use_drain(self.drain)
        self.server = grpc.aio.server(
            interceptors=[
                *server_interceptors(),
                PrometheusServerInterceptor(),
                DrainInterceptor(self.drain),
            ],
            options=server_options(settings),
        )
        self.health = health.aio.HealthServicer()
        self.service_names: list[str] = []
        self.port = 0
        self.metrics_port: int | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> int:
        """Binds, starts serving health (NOT_SERVING), warms the app, then SERVING."""
        self.service_names = self.app.register(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        address = f"{self.settings.host}:{self.settings.grpc_port}"
        self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise RuntimeError(f"could not bind gRPC address {address}")
        await self._set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        self.metrics_port = start_metrics_server(self.settings.host, self.settings.metrics_port)
        log.info("%s listening on port %d; warming up", self.app.name, self.port)
        await self.app.start()
        await self._set_status(health_pb2.HealthCheckResponse.SERVING)
        self._write_ready_file()
        log.info("%s serving on port %d (metrics %s)", self.app.name, self.port, self.metrics_port)
        return self.port

    async def _set_status(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        for name in ["", *self.service_names]:
            await self.health.set(name, status)

    def _write_ready_file(self) -> None:
        if not self.settings.ready_file:
            return
        path = Path(self.settings.ready_file)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"grpc_port": self.port, "metrics_port": self.metrics_port}))
        tmp.replace(path)

    async def stop(self, grace: float | None = None) -> None:
        """Drains: NOT_SERVING, refuse new calls, let in-flight calls finish within grace.

        Every port stays open meanwhile (at least `DRAIN_VISIBLE_S`, so a probe reads
        NOT_SERVING, not "connection refused"); new calls get UNAVAILABLE (HTTP: 503).
        The servers are stopped only at the end: `server.stop()` and the app's `stop()`
        close the listening sockets at once, so calling them earlier would refuse
        connections while calls on the other front door still run.
        """
        if self._stopping.is_set():
            return
        self._stopping.set()
        grace = self.settings.grace_period_s if grace is None else grace
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        log.info("%s draining (grace %.1fs)", self.app.name, grace)
        await self.health.enter_graceful_shutdown()
        self.drain.start()
        await asyncio.sleep(min(grace, DRAIN_VISIBLE_S))
        if not await self.drain.wait_idle(deadline - loop.time()):
            log.warning("%s: %d calls still running after the grace period; cancelling them",
                        self.app.name, self.drain.in_flight)  # fmt: skip
        await self.server.stop(max(0.0, deadline - loop.time()))
        await self.app.stop()
        log.info("%s stopped", self.app.name)

    async def wait_for_termination(self) -> None:
        await self.server.wait_for_termination()


def setup_process_telemetry(settings: ServiceSettings) -> None:
    """Decides once whether this process traces; call it before the app builds channels.

    Tracing interceptors are fixed when a channel is made, so an app that opens its
    channels in its constructor (the router's cache client) must see tracing already set
    up, or its calls would start traces of their own. Later calls are no-ops.
    """
    setup_telemetry(
        settings.service_name,
        settings.otlp_endpoint,
        sample_ratio=settings.trace_sample_ratio,
        protocol=settings.otlp_protocol,
    )


async def run_service(app: ServiceApp, settings: ServiceSettings) -> int:
    """Runs a service until SIGTERM or SIGINT, then drains; returns the exit code.

    An app may have a `watch()` coroutine that returns a reason once the app can no
    longer serve (the SLM server's engine died): health turns NOT_SERVING at once, the
    service drains briefly and exits with EXIT_SERVICE_FAILED, so that `gearshift up`'s
    supervisor or the kubelet replaces the process instead of it reporting healthy.
    """
    setup_logging(app.name, settings.log_level, settings.log_format)
    setup_process_telemetry(settings)
    host = GrpcServiceHost(app, settings)
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    try:
        start = asyncio.ensure_future(host.start())
        waiter = asyncio.ensure_future(stop_requested.wait())
        done, _ = await asyncio.wait({start, waiter}, return_when=asyncio.FIRST_COMPLETED)
        failure: str | None = None
        if start in done:
            start.result()
            failure = await _serve_until_stopped_or_failed(app, waiter)
        else:
            start.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await start
        if failure is not None:
            log.error("%s can no longer serve: %s; exiting to be restarted", app.name, failure)
            await host.stop(min(settings.grace_period_s, FAILED_GRACE_S))
            return EXIT_SERVICE_FAILED
        await host.stop()
        return 0
    finally:
        shutdown_telemetry()


async def _serve_until_stopped_or_failed(app: ServiceApp, stop: asyncio.Future[Any]) -> str | None:
    """None once a stop was requested; the reason if the app's `watch()` reported one first."""
    watch = getattr(app, "watch", None)
    if watch is None:
        await stop
        return None
    watcher: asyncio.Future[str] = asyncio.ensure_future(watch())
    done, _ = await asyncio.wait({stop, watcher}, return_when=asyncio.FIRST_COMPLETED)
    if watcher in done:
        return watcher.result()
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    return None
