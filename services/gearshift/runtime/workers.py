"""Several worker processes of one service sharing its ports (`workers` > 1).

A Python process serves from one core (one event loop, one GIL), so a pod with more
CPU runs N copies of the service that all bind the same gRPC (and HTTP) port with
SO_REUSEPORT; the kernel spreads new connections over them. This parent process does
no serving itself:

- it picks the ports (a port of 0 is resolved once here, by binding a SO_REUSEPORT
  socket that it keeps, not listening, so the port stays reserved for the workers);
- it starts the workers (`gearshift serve NAME ... --workers 1 --reuse-port`) and waits
  until every one is ready before writing the ready file;
- metrics: the workers write their samples to a shared directory (prometheus-client's
  multiprocess mode) and the parent serves the sum on `metrics_port`, so one scrape
  sees the whole pod (gauges carry a `pid` label);
- on SIGTERM or SIGINT it forwards SIGTERM to every worker and waits while they drain
  (each one refuses new calls and finishes its in-flight ones within `grace_period_s`);
- if a worker dies on its own, the others are drained and the parent exits non-zero,
  so the orchestrator restarts the pod whole rather than leaving it at partial capacity.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from gearshift.runtime.logs import setup_logging
from gearshift.runtime.settings import ServiceSettings

log = logging.getLogger(__name__)

SHARED_PORT_FIELDS = ("grpc_port", "http_port")
READY_TIMEOUT_S = 600.0
POLL_S = 0.1


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound, non-listening SO_REUSEPORT socket holding `port` (0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class WorkerGroup:
    """Starts, watches and drains the worker processes of one service."""

    def __init__(self, name: str, argv: Sequence[str], settings: ServiceSettings) -> None:
        self.name = name
        self.argv = list(argv)
        self.settings = settings
        self.count = int(getattr(settings, "workers", 1))
        self.workers: list[subprocess.Popen[bytes]] = []
        self.ports: dict[str, int] = {}
        self._reserved: list[socket.socket] = []
        self._stop_requested = False
        self._dir = Path(tempfile.mkdtemp(prefix=f"gearshift-{name}-workers-"))
        self.metrics_dir = self._dir / "metrics"
        self.metrics_dir.mkdir()
        self.metrics_port: int | None = None

    def _resolve_ports(self) -> None:
        for field in SHARED_PORT_FIELDS:
            port = getattr(self.settings, field, None)
            if port is None or port < 0:
                continue
            sock = reserve_port(self.settings.host, int(port))
            self._reserved.append(sock)
            self.ports[field] = int(sock.getsockname()[1])

    def _worker_argv(self, index: int) -> list[str]:
        extra = ["--workers", "1", "--reuse-port", "--metrics-port", "-1"]
        for field, port in self.ports.items():
            extra += ["--" + field.replace("_", "-"), str(port)]
        extra += ["--ready-file", str(self._ready_path(index))]
        return [sys.executable, "-m", "gearshift.cli.main", "serve", self.name, *self.argv, *extra]

    def _ready_path(self, index: int) -> Path:
        return self._dir / f"worker-{index}.ready"

    def _start_worker(self, index: int) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
            "GEARSHIFT_WORKER_INDEX": str(index),
        }
        return subprocess.Popen(self._worker_argv(index), env=env)

    def _serve_metrics(self) -> None:
        port = self.settings.metrics_port
        if port < 0:
            return
        from prometheus_client import CollectorRegistry, multiprocess, start_http_server

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(self.metrics_dir))  # type: ignore[no-untyped-call]
        server, _thread = start_http_server(port, addr=self.settings.host, registry=registry)
        self.metrics_port = int(server.server_port)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop_requested = True

    def _write_ready_file(self) -> None:
        if not self.settings.ready_file:
            return
        path = Path(self.settings.ready_file)
        tmp = path.with_suffix(".tmp")
        info = {**self.ports, "metrics_port": self.metrics_port, "workers": self.count}
        tmp.write_text(json.dumps(info))
        tmp.replace(path)

    def _all_ready(self) -> bool:
        return all(self._ready_path(i).exists() for i in range(self.count))

    def _exited(self) -> list[subprocess.Popen[bytes]]:
        return [w for w in self.workers if w.poll() is not None]

    def run(self) -> int:
        """Runs until a signal or a worker's death; returns the process exit code."""
        setup_logging(self.name, self.settings.log_level, self.settings.log_format)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        try:
            self._resolve_ports()
            self._serve_metrics()
            self.workers = [self._start_worker(i) for i in range(self.count)]
            log.info("%s: %d workers sharing %s", self.name, self.count, self.ports)
            return self._supervise()
        finally:
            self._drain()
            for sock in self._reserved:
                sock.close()
            shutil.rmtree(self._dir, ignore_errors=True)

    def _supervise(self) -> int:
        ready = False
        started = time.monotonic()
        while not self._stop_requested:
            dead = self._exited()
            if dead:
                log.error(
                    "%s worker (pid %d) exited with %s; draining the others",
                    self.name,
                    dead[0].pid,
                    dead[0].returncode,
                )
                return 1
            if not ready and self._all_ready():
                ready = True
                self._write_ready_file()
                log.info("%s: all %d workers serving", self.name, self.count)
            if not ready and time.monotonic() - started > READY_TIMEOUT_S:
                log.error("%s workers not ready after %.0f s", self.name, READY_TIMEOUT_S)
                return 1
            time.sleep(POLL_S)
        return 0

    def _drain(self) -> None:
        """SIGTERM to every live worker, then waits out their grace period (plus slack)."""
        live = [w for w in self.workers if w.poll() is None]
        for worker in live:
            worker.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.grace_period_s + 15
        for worker in live:
            try:
                worker.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("%s worker (pid %d) did not drain in time", self.name, worker.pid)
                worker.kill()
                worker.wait()
        from prometheus_client import multiprocess

        for worker in self.workers:
            multiprocess.mark_process_dead(worker.pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]


def run_workers(name: str, argv: Sequence[str], settings: ServiceSettings) -> int:
    """`gearshift serve NAME --workers N`: N processes on the same ports."""
    return WorkerGroup(name, argv, settings).run()
