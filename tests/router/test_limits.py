"""Hostile input at both front doors: refused before any work, in the right shape, quietly.

A real router (real aiohttp and gRPC servers over loopback) whose routes point nowhere:
every request here must be refused by the limits before it could reach a backend, so no
model is needed, and an answer other than the expected 4xx would show up as a 503/504.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from gearshift.routes.local import local_default_routes
from gearshift.v1 import common_pb2, router_pb2
from tests.router.conftest import KEY_A, RunningRouter, dead_address, start_router, stop_router

AUTH = {"authorization": f"Bearer {KEY_A}", "content-type": "application/json"}


@pytest.fixture(scope="module")
async def limited_router(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningRouter]:
    routes = local_default_routes(dead_address(), "slm", dead_address(), "llm")
    running = await start_router(
        tmp_path_factory.mktemp("router-limits"),
        routes,
        max_body_bytes=64 * 1024,
        max_messages=8,
        max_message_chars=1000,
    )
    try:
        yield running
    finally:
        await stop_router(running)


def _chat(content: Any = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": content}], **extra}


async def _post(
    router: RunningRouter, data: bytes | str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{router.http_base}/chat/completions",
            data=data,
            headers=AUTH if headers is None else headers,
            timeout=aiohttp.ClientTimeout(total=30),
        ) as resp,
    ):
        text = await resp.text()
        try:
            body = json.loads(text)
        except ValueError:
            body = {}
        return resp.status, body, resp.headers.get("content-type", "")


HOSTILE: list[tuple[str, bytes | str, int, str]] = [
    ("lone surrogate", json.dumps(_chat("\ud800")), 400, "surrogate"),
    ("max_tokens 2**64", json.dumps(_chat(max_tokens=2**64)), 400, "max_tokens"),
    ("max_tokens above limit", json.dumps(_chat(max_tokens=10**6)), 400, "max_tokens_limit"),
    ("seed 2**70", json.dumps(_chat(seed=2**70)), 400, "seed"),
    ("temperature 1e400", '{"messages":[{"role":"user","content":"x"}],"temperature":1'
     + "0" * 400 + "}", 400, "temperature"),
    ("top_logprobs 2**70", json.dumps(_chat(logprobs=True, top_logprobs=2**70)), 400,
     "top_logprobs"),
    ("n 2**70", json.dumps(_chat(n=2**70)), 400, "n"),
    ("JSON 30,000 deep", "[" * 30_000 + "]" * 30_000, 400, "max_json_depth"),
    ("JSON 40 deep", json.dumps(_chat(metadata=json.loads("[" * 40 + "]" * 40))), 400,
     "max_json_depth"),
    ("too many messages", json.dumps({"messages": [{"role": "user", "content": "x"}] * 9}), 413,
     "max_messages"),
    ("message too long", json.dumps(_chat("x" * 1001)), 413, "max_message_chars"),
    ("text parts too long", json.dumps(_chat([{"type": "text", "text": "x" * 600}] * 2)), 413,
     "max_message_chars"),
    ("body too large", json.dumps(_chat("x" * 100_000)), 413, "max_body_bytes"),
    ("not JSON", "{", 400, "JSON"),
    ("a JSON list", "[]", 400, "object"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "data", "status", "named"), HOSTILE, ids=[case[0] for case in HOSTILE]
)
async def test_hostile_body_is_a_clear_4xx_without_a_traceback(
    limited_router: RunningRouter,
    caplog: pytest.LogCaptureFixture,
    name: str,
    data: bytes | str,
    status: int,
    named: str,
) -> None:
    caplog.set_level(logging.INFO)
    got, body, content_type = await _post(limited_router, data)
    assert got == status, (name, got, body)
    assert content_type.startswith("application/json")
    error = body["error"]
    assert named in error["message"] + str(error.get("param")), error
    assert error["type"] == "invalid_request_error"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]


@pytest.mark.parametrize(
    ("content_type", "status"),
    [("text/plain", 415), ("application/x-www-form-urlencoded", 415), ("", 415)],
)
async def test_a_body_not_declared_as_json_is_415(
    limited_router: RunningRouter, content_type: str, status: int
) -> None:
    headers = {"authorization": f"Bearer {KEY_A}", "content-type": content_type}
    got, body, _ = await _post(limited_router, json.dumps(_chat()), headers)
    assert got == status, body
    assert "application/json" in body["error"]["message"]


async def test_a_10_mb_body_is_refused_from_its_length_without_being_read(
    limited_router: RunningRouter,
) -> None:
    started = time.perf_counter()
    got, body, _ = await _post(limited_router, b"x" * (10 * 1024 * 1024))
    assert got == 413 and "max_body_bytes" in body["error"]["message"], body
    assert time.perf_counter() - started < 5.0


async def test_a_chunked_body_past_the_limit_is_413(limited_router: RunningRouter) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(200):
            yield b"x" * 1024  # 200 KB without a Content-Length

    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{limited_router.http_base}/chat/completions",
            data=chunks(),
            headers=AUTH,
            timeout=aiohttp.ClientTimeout(total=30),
        ) as resp,
    ):
        body = await resp.json()
    assert resp.status == 413 and "max_body_bytes" in body["error"]["message"], body


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ({"x-big": "a" * 65536}, "max_header_bytes"),
        ({f"x-h{i}": "a" * 1024 for i in range(200)}, "max_headers"),
    ],
    ids=["one 64 KB header", "200 headers of 1 KB"],
)
async def test_oversized_headers_get_the_openai_error_shape_and_no_traceback(
    limited_router: RunningRouter,
    caplog: pytest.LogCaptureFixture,
    headers: dict[str, str],
    named: str,
) -> None:
    caplog.set_level(logging.INFO)
    assert limited_router.app.http is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", limited_router.app.http.port)
    body = json.dumps(_chat()).encode()
    lines = [
        "POST /v1/chat/completions HTTP/1.1",
        "host: localhost",
        "content-type: application/json",
        f"content-length: {len(body)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400", head
    error = json.loads(payload)["error"]
    assert named in error["message"], error
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]


async def test_grpc_front_door_names_the_limit(limited_router: RunningRouter) -> None:
    metadata = (("authorization", f"Bearer {KEY_A}"),)
    too_many = router_pb2.ChatRequest(
        messages=[common_pb2.ChatMessage(role="user", content="x")] * 9
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await limited_router.stub.Chat(too_many, metadata=metadata, timeout=10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_messages" in (caught.value.details() or "")

    long = router_pb2.ChatRequest(
        messages=[common_pb2.ChatMessage(role="user", content="x" * 1001)]
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await limited_router.stub.Chat(long, metadata=metadata, timeout=10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_message_chars" in (caught.value.details() or "")

    greedy = router_pb2.ChatRequest(
        messages=[common_pb2.ChatMessage(role="user", content="x")],
        sampling=common_pb2.SamplingParams(max_tokens=10**6),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await limited_router.stub.Chat(greedy, metadata=metadata, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_tokens_limit" in (caught.value.details() or "")


def test_limits_are_documented_with_their_defaults() -> None:
    from gearshift.router.app import Settings

    doc = (Path(__file__).resolve().parents[2] / "docs" / "router.md").read_text()
    for name in ("max_body_bytes", "max_messages", "max_message_chars", "max_json_depth",
                 "max_tokens_limit", "max_header_bytes", "max_headers"):  # fmt: skip
        default = Settings.model_fields[name].default
        assert f"| `{name}` | {default:,} |" in doc, name
