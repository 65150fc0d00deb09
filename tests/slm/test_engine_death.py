"""kill -9 of the engine core: health follows the engine and the process exits to be replaced.

A real `gearshift serve slm` process with its own vLLM engine (the session's shared
engine cannot be killed without breaking the other tests): the drill of issue 19.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gearshift.runtime.server import EXIT_SERVICE_FAILED
from gearshift.v1 import inference_pb2, inference_pb2_grpc

pytestmark = pytest.mark.vllm

REPO = Path(__file__).resolve().parents[2]


def _engine_core(pgid: int) -> int:
    """The pid of the VLLM::EngineCore process in the server's process group."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and "EngineCor" in comm:
            return int(stat.parent.name)
    raise AssertionError("no VLLM::EngineCore process found")


def test_killed_engine_turns_health_not_serving_and_the_process_exits(
    tmp_path: Path, default_model_dir: Path
) -> None:
    ready = tmp_path / "slm.ready"
    log = tmp_path / "slm.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [
                sys.executable, "-m", "gearshift.cli.main", "serve", "slm",
                "--grpc-port", "0", "--metrics-port", "-1", "--log-format", "text",
                "--grace-period-s", "10", "--ready-file", str(ready),
                "--model", str(default_model_dir),
            ],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not ready.exists():
            assert popen.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the SLM server did not become ready"
            time.sleep(0.2)
        address = f"127.0.0.1:{json.loads(ready.read_text())['grpc_port']}"
        channel = grpc.insecure_channel(address)
        health = health_pb2_grpc.HealthStub(channel)
        info = inference_pb2_grpc.InferenceServiceStub(channel)
        request = health_pb2.HealthCheckRequest(service="")
        assert health.Check(request, timeout=5).status == health_pb2.HealthCheckResponse.SERVING

        os.kill(_engine_core(popen.pid), signal.SIGKILL)  # kill -9 of VLLM::EngineCore
        killed = time.monotonic()
        not_serving_after: float | None = None  # NOT_SERVING, or the port already closed
        ready_after_kill: list[bool] = []
        while time.monotonic() - killed < 10:
            try:
                status = health.Check(request, timeout=1).status
                ready_after_kill.append(
                    info.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=1).ready
                )
            except grpc.RpcError:
                status = health_pb2.HealthCheckResponse.UNKNOWN  # exiting: the port closed
            if status != health_pb2.HealthCheckResponse.SERVING:
                not_serving_after = time.monotonic() - killed
                break
            time.sleep(0.1)
        channel.close()
        code = popen.wait(timeout=30)
        exited_after = time.monotonic() - killed
        assert not_serving_after is not None and not_serving_after < 5.0, log.read_text()[-3000:]
        assert exited_after < 10.0, f"took {exited_after:.1f} s to exit"
        assert code == EXIT_SERVICE_FAILED, log.read_text()[-3000:]
        assert "can no longer serve" in log.read_text()
    finally:
        if popen.poll() is None:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
        else:  # leftovers of the engine's process group
            try:
                os.killpg(popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
