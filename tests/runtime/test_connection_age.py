"""A bounded connection age on a real gRPC server over loopback.

Clients hold one HTTP/2 connection per address; without an age limit a router pinned to
one model-server pod stays pinned after the autoscaler adds pods. With the limit the
server sends GOAWAY and the client's channel reconnects (through DNS or its pod list);
a call running when the age passes still finishes.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from gearshift.runtime.server import GrpcServiceHost, server_options
from gearshift.runtime.settings import ServiceSettings
from gearshift.v1 import common_pb2, inference_pb2, inference_pb2_grpc
from tests.runtime.echo_service import EchoApp


def _request(delay_ms: int = 0) -> inference_pb2.GenerateRequest:
    sampling = common_pb2.SamplingParams(seed=delay_ms) if delay_ms else None
    return inference_pb2.GenerateRequest(
        messages=[common_pb2.ChatMessage(role="user", content="hi")], sampling=sampling
    )


async def _state_after_idle(settings: ServiceSettings, idle_s: float) -> tuple[str, str]:
    """(text of a call that outlives the age, channel state after `idle_s` without calls)."""
    host = GrpcServiceHost(EchoApp(), settings)
    port = await host.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            await stub.Generate(_request(), timeout=10)
            assert channel.get_state() == grpc.ChannelConnectivity.READY
            # Longer than the age: GOAWAY must not cut a call in flight.
            reply = await stub.Generate(_request(delay_ms=1200), timeout=10)
            await asyncio.sleep(idle_s)
            return reply.text, channel.get_state().name
    finally:
        await host.stop(0)


def test_server_options_carry_the_age_only_when_set() -> None:
    plain = dict(server_options(ServiceSettings()))
    assert "grpc.max_connection_age_ms" not in plain
    aged = dict(server_options(ServiceSettings(max_connection_age_s=300)))
    assert aged["grpc.max_connection_age_ms"] == 300_000
    assert "grpc.max_connection_age_grace_ms" not in aged  # unbounded: generations finish
    graced = dict(
        server_options(ServiceSettings(max_connection_age_s=1, max_connection_age_grace_s=2))
    )
    assert graced["grpc.max_connection_age_grace_ms"] == 2000


@pytest.mark.parametrize(("age_s", "expected"), [(0.5, "IDLE"), (0.0, "READY")])
def test_server_closes_connections_past_their_age(age_s: float, expected: str) -> None:
    settings = ServiceSettings(grpc_port=0, metrics_port=-1, max_connection_age_s=age_s)
    text, state = asyncio.run(_state_after_idle(settings, idle_s=0.5))
    assert text == "hi"
    # After GOAWAY an idle channel drops to IDLE (its next call reconnects, possibly to a
    # different pod); without an age it keeps the same connection.
    assert state == expected
