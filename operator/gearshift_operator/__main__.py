"""`python -m gearshift_operator`: one leader runs kopf; other replicas wait as standbys.

With `leader_election` on (the default) the process first takes the Lease (leader.py),
answering the liveness probe meanwhile, and only then starts kopf, standalone (no kopf
peering): a standby has no watch, no handler, no timer and no autoscaler, so it cannot
write anything. When the leader can no longer renew the Lease it stops kopf and exits 1,
so the kubelet restarts it as a standby (what controller-runtime's managers do); on a
clean stop (SIGTERM) it releases the Lease first, so a standby takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import kopf
from aiohttp import web

from gearshift_operator import handlers, leader
from gearshift_operator.kube import KubeClient
from gearshift_operator.settings import Settings

LOG = logging.getLogger("gearshift.operator")
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
STOP_GRACE_S = 1.0  # after losing the lead, how long kopf may take to stop before we exit


def lease_config(settings: Settings) -> leader.LeaseConfig:
    """The Lease's place and timings from the settings (the namespace as documented)."""
    namespace = settings.lease_namespace or settings.namespace
    if not namespace and SERVICE_ACCOUNT_NAMESPACE.is_file():
        namespace = SERVICE_ACCOUNT_NAMESPACE.read_text(encoding="utf-8").strip()
    identity = settings.pod_name or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"
    return leader.LeaseConfig(
        name=settings.lease_name,
        namespace=namespace or "default",
        identity=identity,
        lease_duration_s=settings.lease_duration_seconds,
        renew_deadline_s=settings.renew_deadline_seconds,
        retry_period_s=settings.retry_period_seconds,
    )


@contextlib.asynccontextmanager
async def standby_probe(endpoint: str, elector: leader.LeaderElector) -> AsyncIterator[None]:
    """Answers the liveness URL while waiting for the Lease (kopf's own takes over later)."""
    if not endpoint:
        yield
        return
    url = urlsplit(endpoint)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"standby": True, "leader": elector.holder})

    app = web.Application()
    app.router.add_get(url.path or "/", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, url.hostname or "0.0.0.0", url.port or 80).start()
    try:
        yield
    finally:
        await runner.cleanup()  # frees the port for kopf's liveness endpoint


async def run_operator(settings: Settings, stop: asyncio.Event | None = None) -> None:
    await kopf.operator(
        clusterwide=not settings.namespace,
        namespaces=[settings.namespace] if settings.namespace else [],
        standalone=True,
        liveness_endpoint=settings.liveness_endpoint or None,
        stop_flag=stop,
    )


async def run(settings: Settings) -> int:
    """The process's life: standby, then leader until stopped (0) or the lead is lost (1)."""
    if not settings.leader_election:
        await run_operator(settings)
        return 0
    config = lease_config(settings)
    api = KubeClient(timeout_s=config.retry_period_s)
    elector = leader.LeaderElector(config, api)
    loop = asyncio.get_running_loop()
    waiting = asyncio.current_task()
    assert waiting is not None
    for sig in (signal.SIGTERM, signal.SIGINT):  # a standby stops at once when asked to
        loop.add_signal_handler(sig, waiting.cancel)
    try:
        LOG.info("waiting for lease %s/%s as %s", config.namespace, config.name, config.identity)
        async with standby_probe(settings.liveness_endpoint, elector):
            await elector.acquire()
    except asyncio.CancelledError:
        await api.aclose()
        return 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    LOG.info("leading as %s: starting the operator", config.identity)
    operator = asyncio.create_task(run_operator(settings), name="kopf")
    renewing = asyncio.create_task(elector.hold(), name="lease renewal")
    await asyncio.wait({operator, renewing}, return_when=asyncio.FIRST_COMPLETED)
    if renewing.done():
        LOG.error("lost the lease: stopping the operator (exit 1, restart as a standby)")
        operator.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(operator, STOP_GRACE_S)
        await api.aclose()
        return 1
    renewing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await renewing
    await elector.release()
    await api.aclose()
    failed = not operator.cancelled() and operator.exception() is not None
    return 1 if failed else 0


def main() -> None:
    settings = handlers.SETTINGS
    logging.basicConfig(level=settings.log_level.upper())
    code = asyncio.run(run(settings))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # kopf's executor threads must not delay a lost leader's exit


if __name__ == "__main__":
    main()
