"""A minimal service on the shared runtime, run as its own process by the runtime tests.

It implements the inference contract by echoing the last user message after an
optional delay (`sampling.seed` milliseconds), which lets a test hold a call in
flight while it sends SIGTERM. It exercises exactly the bootstrap `gearshift serve`
uses (`run_service`), not a replacement for any real backend.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import grpc

from gearshift.runtime.errors import grpc_errors
from gearshift.runtime.server import run_service
from gearshift.runtime.settings import ServiceSettings
from gearshift.runtime.validation import require_valid_chat
from gearshift.v1 import common_pb2, inference_pb2, inference_pb2_grpc


class EchoServicer(inference_pb2_grpc.InferenceServiceServicer):
    @grpc_errors
    async def Generate(
        self, request: inference_pb2.GenerateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> inference_pb2.GenerateResponse:
        require_valid_chat(request.messages, request.sampling)
        if request.sampling.HasField("seed"):
            await asyncio.sleep(request.sampling.seed / 1000)
        return inference_pb2.GenerateResponse(
            request_id=request.request_id,
            model="echo",
            text=request.messages[-1].content,
            finish_reason=common_pb2.FINISH_REASON_STOP,
        )


class EchoApp:
    name = "echo"

    def register(self, server: grpc.aio.Server) -> list[str]:
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(EchoServicer(), server)
        return [inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name]

    async def start(self) -> None:
        await asyncio.sleep(0)

    async def stop(self) -> None:
        await asyncio.sleep(0)

    async def watch(self) -> str:
        """Reports a failure once the file named by ECHO_FAIL_FILE appears (a dead engine)."""
        fail_file = os.environ.get("ECHO_FAIL_FILE", "")
        while True:
            await asyncio.sleep(0.05)
            if fail_file and os.path.exists(fail_file):  # noqa: ASYNC240 (a test hook)
                return "the test said so"


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    ServiceSettings.add_arguments(parser)
    settings = ServiceSettings.from_args(parser.parse_args(sys.argv[1:]))
    sys.exit(asyncio.run(run_service(EchoApp(), settings)))
