"""Runs a set of service processes in order, restarts the ones that die, stops them cleanly.

Used by `gearshift up`: each process starts only after the ones before it are
ready (a ready file for Gearshift services, an HTTP health URL for a vLLM
upstream), its output goes to a log file, and Ctrl-C stops everything in reverse
order: SIGTERM first (services drain in-flight calls), SIGKILL after the grace period.

One process dying never stops the others: `supervise()` notices it, says why (exit
code or signal, last log lines), kills what is left of its process group (vLLM's
engine core is a grandchild) and starts it again after an exponential backoff, the way
the kubelet does (CrashLoopBackOff). The others keep serving meanwhile; the router
fails soft (a dead cache is a miss, a dead SLM an escalation).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
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
    # Liveness (health_url only): after it was ready, this many failed checks in a row
    # mean it is wedged (alive but not answering): it is killed and restarted. 0: off.
    liveness_failures: int = 0
    liveness_period_s: float = 5.0
    liveness_timeout_s: float = 2.0


@dataclass(frozen=True)
class RestartPolicy:
    """Backoff between restarts of one process: initial, doubled per crash, capped.

    A process that stayed up for `stable_s` is healthy again: its next crash starts the
    backoff over. `crash_loop_after` crashes in a row are reported as a crash loop.
    """

    initial_s: float = 1.0
    max_s: float = 30.0
    stable_s: float = 60.0
    crash_loop_after: int = 3

    def delay(self, crashes_in_a_row: int) -> float:
        return float(min(self.max_s, self.initial_s * 2.0 ** max(0, crashes_in_a_row - 1)))


@dataclass
class RunningProcess:
    spec: ProcessSpec
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    started_at: float = field(default_factory=time.monotonic)
    crashes_in_a_row: int = 0
    restarts: int = 0
    restart_at: float | None = None  # set while it waits out its backoff
    was_ready: bool = False
    failed_checks: int = 0
    next_check: float = 0.0


class StartupFailed(RuntimeError):
    pass


class Supervisor:
    def __init__(
        self,
        log_dir: Path,
        grace_s: float = 30.0,
        restart: RestartPolicy | None = None,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.grace_s = grace_s
        self.restart = restart or RestartPolicy()
        self.report = report or _print_stderr
        self.running: list[RunningProcess] = []

    def start_all(self, specs: Sequence[ProcessSpec], echo: bool = True) -> None:
        """Starts every process at once and returns when all are ready.

        The services do not need each other to start (each connects lazily and reports
        its peers' health), so nothing waits for another: the two vLLM engines load side
        by side with the light services, and the first answer comes after the slowest
        start, not after the sum of all of them. Processes are kept in the given order,
        which is also the reverse of the order they are stopped in.
        """
        self.log_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        waiting: list[RunningProcess] = []
        for spec in specs:
            if echo:
                print(f"starting {spec.name:<9} {spec.description}", flush=True)
            waiting.append(self._spawn(spec))
        while waiting:
            for proc in list(waiting):
                if self._poll_start(proc, started):
                    waiting.remove(proc)
                    if echo:
                        elapsed = time.monotonic() - started
                        print(f"  {proc.spec.name} ready after {elapsed:.0f} s", flush=True)
            if waiting:
                time.sleep(0.25)

    def _spawn(self, spec: ProcessSpec) -> RunningProcess:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{spec.name}.log"
        log_file = log_path.open("ab")
        proc = RunningProcess(spec, self._popen(spec, log_file), log_path, log_file)
        self.running.append(proc)
        return proc

    @staticmethod
    def _popen(spec: ProcessSpec, log_file: IO[bytes]) -> subprocess.Popen[bytes]:
        if spec.ready_file is not None:
            spec.ready_file.unlink(missing_ok=True)
        return subprocess.Popen(
            spec.argv,
            env={**os.environ, **spec.env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches only the supervisor, which stops in order
        )

    def supervise(self) -> None:
        """One pass: notice processes that died, restart those whose backoff is over.

        Never blocks on a restarted process becoming ready: the others stay supervised
        meanwhile, and the restarted one serves as soon as it is warm.
        """
        now = time.monotonic()
        for proc in self.running:
            if proc.restart_at is None:
                code = proc.popen.poll()
                if code is not None:
                    self._schedule_restart(proc, code, now)
                else:
                    self._check_liveness(proc, now)
            elif now >= proc.restart_at:
                self._signal(proc, signal.SIGKILL)  # leftovers of the old process group
                proc.popen = self._popen(proc.spec, proc.log_file)
                proc.started_at = time.monotonic()
                proc.restart_at = None
                proc.was_ready, proc.failed_checks = False, 0
                proc.restarts += 1
                self.report(
                    f"{proc.spec.name}: restarted (restart {proc.restarts}, pid {proc.popen.pid})"
                )

    def _check_liveness(self, proc: RunningProcess, now: float) -> None:
        """Kills a process that was ready and stopped answering its health URL.

        vLLM's server exits by itself when its engine dies; this catches the wedged case
        (the process alive, nothing answering), which would otherwise last forever.
        """
        spec = proc.spec
        if not spec.health_url or spec.liveness_failures <= 0 or now < proc.next_check:
            return
        proc.next_check = now + spec.liveness_period_s
        if self._is_ready(spec, spec.liveness_timeout_s):
            proc.was_ready, proc.failed_checks = True, 0
            return
        if not proc.was_ready:
            return  # still starting (a restart warms up for a minute)
        proc.failed_checks += 1
        if proc.failed_checks >= spec.liveness_failures:
            self.report(
                f"{spec.name} stopped answering {spec.health_url} "
                f"({proc.failed_checks} checks in a row, every {spec.liveness_period_s:g} s); "
                "killing it to restart it"
            )
            self._signal(proc, signal.SIGKILL)
            proc.failed_checks = 0

    def _schedule_restart(self, proc: RunningProcess, code: int, now: float) -> None:
        if now - proc.started_at >= self.restart.stable_s:
            proc.crashes_in_a_row = 0
        proc.crashes_in_a_row += 1
        delay = self.restart.delay(proc.crashes_in_a_row)
        proc.restart_at = now + delay
        self._signal(proc, signal.SIGKILL)  # e.g. an orphaned vLLM engine core
        up_for = now - proc.started_at
        loop = ""
        if proc.crashes_in_a_row >= self.restart.crash_loop_after:
            loop = f" CRASH LOOP: {proc.crashes_in_a_row} crashes in a row, each within "
            loop += f"{self.restart.stable_s:.0f} s of starting;"
        self.report(
            f"{proc.spec.name} {describe_exit(code)} after {up_for:.1f} s;{loop} "
            f"restarting in {delay:.1f} s. Last lines of {proc.log_path}:\n"
            + _indent(tail(proc.log_path, 10))
        )

    def _poll_start(self, proc: RunningProcess, started: float) -> bool:
        """True once `proc` is ready; raises if it died or ran out of its start time."""
        code = proc.popen.poll()
        if code is not None:
            raise StartupFailed(
                f"{proc.spec.name} exited with code {code} while starting; "
                f"last lines of {proc.log_path}:\n{tail(proc.log_path)}"
            )
        if self._is_ready(proc.spec):
            proc.was_ready = True
            return True
        if time.monotonic() - started > proc.spec.start_timeout_s:
            raise StartupFailed(
                f"{proc.spec.name} was not ready after {proc.spec.start_timeout_s:.0f} s; "
                f"see {proc.log_path}:\n{tail(proc.log_path)}"
            )
        return False

    @staticmethod
    def _is_ready(spec: ProcessSpec, timeout_s: float = 2.0) -> bool:
        if spec.ready_file is not None:
            return spec.ready_file.is_file()
        if spec.health_url:
            try:
                with urllib.request.urlopen(spec.health_url, timeout=timeout_s) as response:
                    return bool(response.status == 200)
            except OSError:
                return False
        return True

    def first_exited(self) -> RunningProcess | None:
        for proc in self.running:
            if proc.popen.poll() is not None:
                return proc
        return None

    def waiting_to_restart(self) -> list[str]:
        return [p.spec.name for p in self.running if p.restart_at is not None]

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


def describe_exit(code: int) -> str:
    """'exited with code 3' or 'was killed by SIGKILL' (Popen's returncode is -signum)."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def _print_stderr(message: str) -> None:
    print(f"gearshift up: {message}", file=sys.stderr, flush=True)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
