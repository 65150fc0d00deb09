"""A test-controlled OpenAI-compatible HTTP server on loopback that misbehaves on cue.

Each test queues behaviours (`server.script.append(...)`); every request to
/v1/chat/completions pops the next one (an empty script answers normally). The server
records what it received so tests can check headers, bodies and timing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Behaviour = Callable[["FaultServer", web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]

USAGE = {"prompt_tokens": 50, "completion_tokens": 50, "total_tokens": 100}
PIECES = ["Hel", "lo ", "wor", "ld"]


@dataclass
class Received:
    at: float
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FaultServer:
    name: str = "fault"
    script: list[Behaviour] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=0.5, handler_cancellation=True
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received.append(Received(time.monotonic(), dict(request.headers), body))
        behaviour = self.script.pop(0) if self.script else ok()
        return await behaviour(self, request, body)


def completion(text: str = "".join(PIECES)) -> dict[str, Any]:
    return {
        "id": "cmpl-1",
        "object": "chat.completion",
        "model": "fault-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    }


def _event(obj: Any) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


def _delta(content: str | None, finish: str | None = None) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


async def _sse(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    return resp


def ok(text: str = "".join(PIECES)) -> Behaviour:
    """A normal answer: JSON, or SSE pieces + finish + usage + [DONE] when streaming."""

    async def run(
        srv: FaultServer, request: web.Request, body: dict[str, Any]
    ) -> web.StreamResponse:
        if not body.get("stream"):
            return web.json_response(completion(text))
        return await _stream_answer(request, 0.0)

    return run


async def _stream_answer(request: web.Request, interval_s: float) -> web.StreamResponse:
    """SSE: role, the pieces (`interval_s` apart), finish, usage, [DONE]."""
    resp = await _sse(request)
    await resp.write(_event({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}))
    for piece in PIECES:
        await resp.write(_event(_delta(piece)))
        if interval_s:
            await asyncio.sleep(interval_s)
    await resp.write(_event(_delta("", "stop")))
    await resp.write(_event({"choices": [], "usage": USAGE}))
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


def paced(interval_s: float) -> Behaviour:
    """A normal streamed answer whose pieces come `interval_s` apart (a long generation)."""

    async def run(srv: FaultServer, request: web.Request, _: dict[str, Any]) -> web.StreamResponse:
        return await _stream_answer(request, interval_s)

    return run


def never_streams() -> Behaviour:
    """An upstream without streaming: the whole completion as JSON, whatever was asked."""

    async def run(srv: FaultServer, request: web.Request, _: dict[str, Any]) -> web.StreamResponse:
        return web.json_response(completion())

    return run


def status(
    code: int, body: str = "upstream trouble", headers: dict[str, str] | None = None
) -> Behaviour:
    async def run(srv: FaultServer, request: web.Request, _: dict[str, Any]) -> web.StreamResponse:
        return web.Response(status=code, text=body, headers=headers or {})

    return run


def garbage() -> Behaviour:
    async def run(srv: FaultServer, request: web.Request, _: dict[str, Any]) -> web.StreamResponse:
        return web.Response(
            status=200, text='{"choices": [ this is not json', content_type="application/json"
        )

    return run


def slow(delay_s: float, then: Behaviour | None = None) -> Behaviour:
    async def run(
        srv: FaultServer, request: web.Request, body: dict[str, Any]
    ) -> web.StreamResponse:
        try:
            await asyncio.sleep(delay_s)
        except asyncio.CancelledError:
            srv.disconnected.set()
            raise
        return await (then or ok())(srv, request, body)

    return run


def truncated_stream(pieces: int = 2, abrupt: bool = False) -> Behaviour:
    """Sends a few content events, then ends (cleanly or by dropping the socket) without [DONE]."""

    async def run(srv: FaultServer, request: web.Request, _: dict[str, Any]) -> web.StreamResponse:
        resp = await _sse(request)
        for piece in PIECES[:pieces]:
            await resp.write(_event(_delta(piece)))
        await resp.write(b'data: {"choices": [{"delta": {"content": "wo')  # half an event
        if abrupt:
            assert request.transport is not None
            request.transport.close()
            return resp
        await resp.write_eof()
        return resp

    return run


def endless_stream() -> Behaviour:
    """Streams a piece every 50 ms until the client goes away; records the disconnect."""

    async def run(srv: FaultServer, request: web.Request, _: dict[str, Any]) -> web.StreamResponse:
        resp = await _sse(request)
        try:
            for _i in range(2000):
                await resp.write(_event(_delta("la ")))
                await asyncio.sleep(0.05)
        except (ConnectionResetError, asyncio.CancelledError, RuntimeError):
            srv.disconnected.set()
            raise
        return resp

    return run
