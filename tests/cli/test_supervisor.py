"""How `gearshift up` stops and restarts: Ctrl-C drains, a second Ctrl-C kills at once,
a service that dies is restarted with backoff while the others keep serving.

The supervisor runs in its own process (as `gearshift up` does) with `up`'s signal
handlers, over a child that ignores SIGTERM the way a stuck service would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from gearshift.cli.supervisor import ProcessSpec, RestartPolicy, Supervisor

REPO = Path(__file__).resolve().parents[2]

STUBBORN_CHILD = """
import signal, sys, time
from pathlib import Path
signal.signal(signal.SIGTERM, signal.SIG_IGN)
Path(sys.argv[1]).write_text("ok")
time.sleep(300)
"""

SUPERVISOR = """
import signal, sys, time
from pathlib import Path
from gearshift.cli.supervisor import ProcessSpec, Supervisor
from gearshift.cli.up import _interrupt

signal.signal(signal.SIGINT, _interrupt)
signal.signal(signal.SIGTERM, _interrupt)
work = Path(sys.argv[1])
supervisor = Supervisor(work / "logs", grace_s=float(sys.argv[2]))
child = ProcessSpec(
    "stubborn", [sys.executable, "-c", sys.argv[3], str(work / "ready")],
    ready_file=work / "ready", start_timeout_s=60,
)
supervisor.start_all([child], echo=False)
try:
    # Printed inside the try: the test's Ctrl-C may arrive the moment this line is out.
    print("child", supervisor.running[0].popen.pid, flush=True)
    while True:
        time.sleep(0.1)
except KeyboardInterrupt:
    print("stopping", flush=True)
finally:
    supervisor.stop_all()
    print("stopped", flush=True)
"""


@contextlib.contextmanager
def supervisor_process(
    tmp_path: Path, grace_s: float
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """The supervisor process and its child's pid; both are killed if a test fails early."""
    popen = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, str(tmp_path), str(grace_s), STUBBORN_CHILD],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    child = 0
    try:
        assert popen.stdout is not None
        line = popen.stdout.readline()
        assert line.startswith("child "), line + (popen.stderr.read() if popen.stderr else "")
        child = int(line.split()[1])
        yield popen, child
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait()
        if child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)


def _wait_for_line(popen: subprocess.Popen[str], text: str) -> None:
    assert popen.stdout is not None
    for line in popen.stdout:
        if text in line:
            return
    raise AssertionError(f"{text!r} never printed")


def _gone(pid: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _finish(popen: subprocess.Popen[str]) -> tuple[int, str, str]:
    """Exit code, rest of stdout and stderr, within 30 s (far below any grace period here)."""
    code = popen.wait(timeout=30)
    out, err = popen.communicate()
    return code, out, err


def test_second_ctrl_c_kills_what_is_left_without_a_traceback(tmp_path: Path) -> None:
    with supervisor_process(tmp_path, grace_s=120) as (popen, child):
        popen.send_signal(signal.SIGINT)
        _wait_for_line(popen, "stopping")
        time.sleep(0.3)  # now inside stop_all, waiting out the child's grace period
        popen.send_signal(signal.SIGINT)
        code, out, err = _finish(popen)
        # Checked before the context's own clean-up would kill a survivor.
        assert _gone(child), "the child survived the second Ctrl-C"
    assert code == 0, err
    assert "Traceback" not in err, err
    assert "stopping now (SIGKILL)" in out and "stopped" in out, out


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    with supervisor_process(tmp_path, grace_s=1) as (popen, child):
        popen.send_signal(signal.SIGTERM)  # `kill` stops the mesh like Ctrl-C
        code, out, err = _finish(popen)
        assert _gone(child), "the child outlived the grace period"
    assert code == 0, err
    assert "Traceback" not in err, err
    assert "stopped" in out, out


# --- restarts: one dead service never takes the others down ---------------------------

STEADY_CHILD = """
import sys, time
from pathlib import Path
Path(sys.argv[1]).write_text("ok")
time.sleep(300)
"""

CRASHING_CHILD = """
import os, sys, time
from pathlib import Path
with open(sys.argv[1], "a") as starts:  # appended: a read never sees a half-written file
    starts.write("x")
print("about to fail: database is on fire", flush=True)
sys.exit(3)
"""


def _supervise_until(
    supervisor: Supervisor, done: Callable[[], bool], within_s: float = 20.0
) -> None:
    deadline = time.monotonic() + within_s
    while not done():
        assert time.monotonic() < deadline, "condition not reached in time"
        supervisor.supervise()
        time.sleep(0.02)


def test_a_killed_service_is_restarted_and_the_others_keep_running(tmp_path: Path) -> None:
    reports: list[str] = []
    supervisor = Supervisor(
        tmp_path / "logs",
        grace_s=1,
        restart=RestartPolicy(initial_s=0.2, max_s=1.0, stable_s=60),
        report=reports.append,
    )
    specs = [
        ProcessSpec(
            name,
            [sys.executable, "-c", STEADY_CHILD, str(tmp_path / f"{name}.ready")],
            ready_file=tmp_path / f"{name}.ready",
            start_timeout_s=30,
        )
        for name in ("cache", "slm")
    ]
    try:
        supervisor.start_all(specs, echo=False)
        cache, slm = supervisor.running
        cache_pid, slm_pid = cache.popen.pid, slm.popen.pid
        os.kill(slm_pid, signal.SIGKILL)
        _supervise_until(supervisor, lambda: slm.restarts == 1)
        _supervise_until(supervisor, lambda: (tmp_path / "slm.ready").is_file())
        assert slm.popen.pid != slm_pid and slm.popen.poll() is None
        assert cache.popen.pid == cache_pid and cache.popen.poll() is None, "cache was disturbed"
        assert any("slm was killed by SIGKILL" in r and "restarting in 0.2 s" in r for r in reports)
    finally:
        supervisor.stop_all()


def test_a_crash_loop_backs_off_exponentially_and_is_reported(tmp_path: Path) -> None:
    reports: list[str] = []
    policy = RestartPolicy(initial_s=0.1, max_s=0.4, stable_s=60, crash_loop_after=3)
    supervisor = Supervisor(tmp_path / "logs", grace_s=1, restart=policy, report=reports.append)
    supervisor._spawn(
        ProcessSpec("cache", [sys.executable, "-c", CRASHING_CHILD, str(tmp_path / "starts")])
    )
    try:
        proc = supervisor.running[0]
        _supervise_until(supervisor, lambda: proc.restarts >= 4)
        crashes = [r for r in reports if "exited with code 3" in r]
        delays = [float(r.split("restarting in ")[1].split(" s")[0]) for r in crashes]
        assert delays[:4] == [0.1, 0.2, 0.4, 0.4], reports  # doubled, then capped
        assert "CRASH LOOP" not in crashes[1] and "CRASH LOOP" in crashes[2], crashes
        assert "database is on fire" in crashes[0], "the report must show why it died"
        assert (tmp_path / "starts").read_text().count("x") >= 4
    finally:
        supervisor.stop_all()


HEALTH_CHILD = """
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""


def test_a_wedged_http_service_is_killed_and_restarted(tmp_path: Path) -> None:
    """Alive but not answering its health URL (SIGSTOP): the supervisor replaces it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reports: list[str] = []
    supervisor = Supervisor(
        tmp_path / "logs",
        grace_s=1,
        restart=RestartPolicy(initial_s=0.1, max_s=0.5, stable_s=60),
        report=reports.append,
    )
    spec = ProcessSpec(
        "upstream",
        [sys.executable, "-c", HEALTH_CHILD, str(port)],
        health_url=f"http://127.0.0.1:{port}/health",
        start_timeout_s=30,
        liveness_failures=3,
        liveness_period_s=0.2,
        liveness_timeout_s=0.3,
    )
    try:
        supervisor.start_all([spec], echo=False)
        proc = supervisor.running[0]
        frozen = proc.popen.pid
        os.kill(frozen, signal.SIGSTOP)
        _supervise_until(supervisor, lambda: proc.restarts == 1)
        assert any("stopped answering" in r for r in reports), reports
        _supervise_until(supervisor, lambda: Supervisor._is_ready(spec))
        assert proc.popen.pid != frozen and proc.popen.poll() is None
    finally:
        supervisor.stop_all()


WAITS_FOR_PEER_CHILD = """
import sys, time
from pathlib import Path
Path(sys.argv[1]).write_text("started")
peer = Path(sys.argv[2])
while not peer.exists():
    time.sleep(0.02)
Path(sys.argv[3]).write_text("ready")
time.sleep(300)
"""


def test_services_start_side_by_side_not_one_after_another(tmp_path: Path) -> None:
    """Each child becomes ready only once the other has started: a supervisor that waited
    for one before starting the next would never see the first ready (gearshift up's
    first answer comes after the slowest start, not after the sum of them)."""
    supervisor = Supervisor(tmp_path / "logs", grace_s=1)
    names = ("slm", "upstream")
    specs = [
        ProcessSpec(
            name,
            [
                sys.executable,
                "-c",
                WAITS_FOR_PEER_CHILD,
                str(tmp_path / f"{name}.started"),
                str(tmp_path / f"{peer}.started"),
                str(tmp_path / f"{name}.ready"),
            ],
            ready_file=tmp_path / f"{name}.ready",
            start_timeout_s=30,
        )
        for name, peer in zip(names, reversed(names), strict=True)
    ]
    try:
        supervisor.start_all(specs, echo=False)
        assert [p.spec.name for p in supervisor.running] == list(names)
        assert all(p.was_ready and p.popen.poll() is None for p in supervisor.running)
    finally:
        supervisor.stop_all()
