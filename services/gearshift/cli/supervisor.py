"""Runs a set of service processes in order and stops them cleanly.

Used by `gearshift up`: each process starts only after the ones before it are
ready (a ready file for Gearshift services, an HTTP health URL for a vLLM
upstream), its output goes to a log file, and Ctrl-C stops everything in reverse
order: SIGTERM first (services drain in-flight calls), SIGKILL after the grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


@dataclass
class ProcessSpec:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready_file: Path | None = None
    health_url: str = ""
    start_timeout_s: float = 300.0
    description: str = ""


@dataclass
class RunningProcess:
    spec: ProcessSpec
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]


class StartupFailed(RuntimeError):
    pass


class Supervisor:
    def __init__(self, log_dir: Path, grace_s: float = 30.0) -> None:
        self.log_dir = log_dir
        self.grace_s = grace_s
        self.running: list[RunningProcess] = []

    def start_all(self, specs: Sequence[ProcessSpec], echo: bool = True) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for spec in specs:
            if echo:
                print(f"starting {spec.name:<9} {spec.description}", flush=True)
            started = time.monotonic()
            proc = self._spawn(spec)
            self._wait_ready(proc)
            if echo:
                print(f"  ready in {time.monotonic() - started:.0f} s", flush=True)

    def _spawn(self, spec: ProcessSpec) -> RunningProcess:
        if spec.ready_file is not None:
            spec.ready_file.unlink(missing_ok=True)
        log_path = self.log_dir / f"{spec.name}.log"
        log_file = log_path.open("ab")
        popen = subprocess.Popen(
            spec.argv,
            env={**os.environ, **spec.env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches only the supervisor, which stops in order
        )
        proc = RunningProcess(spec, popen, log_path, log_file)
        self.running.append(proc)
        return proc

    def _wait_ready(self, proc: RunningProcess) -> None:
        deadline = time.monotonic() + proc.spec.start_timeout_s
        while time.monotonic() < deadline:
            code = proc.popen.poll()
            if code is not None:
                raise StartupFailed(
                    f"{proc.spec.name} exited with code {code} while starting; "
                    f"last lines of {proc.log_path}:\n{tail(proc.log_path)}"
                )
            if self._is_ready(proc.spec):
                return
            time.sleep(0.25)
        raise StartupFailed(
            f"{proc.spec.name} was not ready after {proc.spec.start_timeout_s:.0f} s; "
            f"see {proc.log_path}:\n{tail(proc.log_path)}"
        )

    @staticmethod
    def _is_ready(spec: ProcessSpec) -> bool:
        if spec.ready_file is not None:
            return spec.ready_file.is_file()
        if spec.health_url:
            try:
                with urllib.request.urlopen(spec.health_url, timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False
        return True

    def first_exited(self) -> RunningProcess | None:
        for proc in self.running:
            if proc.popen.poll() is not None:
                return proc
        return None

    def stop_all(self) -> None:
        """SIGTERM everything, wait out the grace period, SIGKILL what is left.

        A second Ctrl-C (or SIGTERM) while waiting means "stop now": the remaining
        process groups get SIGKILL at once instead of a traceback that would skip
        the waits and leave children and log files behind.
        """
        for proc in reversed(self.running):
            self._signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        try:
            for proc in reversed(self.running):
                try:
                    proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self._signal(proc, signal.SIGKILL)
        except KeyboardInterrupt:
            print("stopping now (SIGKILL)…", flush=True)
            for proc in self.running:
                self._signal(proc, signal.SIGKILL)
        for proc in self.running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=10)
            proc.log_file.close()
        self.running.clear()

    @staticmethod
    def _signal(proc: RunningProcess, signum: signal.Signals) -> None:
        """Signals the process's whole group, even after its leader exited.

        vLLM's engine core is a grandchild that can outlive the process we started.
        """
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.popen.pid, signum)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
