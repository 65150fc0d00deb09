"""An aiohttp runner whose parser-level refusals speak the OpenAI error shape.

aiohttp refuses requests it cannot parse (a 64 KB header, 200 headers, a request line
too long) before any handler runs, with a plain-text 400 and a traceback logged at
ERROR: any client could fill the logs. Here the same refusals are an OpenAI-shaped JSON
error naming the router setting, logged as one WARNING line.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

log = logging.getLogger(__name__)


def _describe(exc: HttpProcessingError) -> tuple[str, str]:
    """What was wrong, without echoing the offending bytes, and the setting to raise."""
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else "?"
        return (
            f"a header field or the request line is longer than {limit} bytes",
            "max_header_bytes",
        )
    text = str(exc.message or "").strip()
    if "too many headers" in text.lower():
        return "the request has too many header fields", "max_headers"
    return (text[:200] or "malformed HTTP request"), ""


class _OpenAIErrorRequestHandler(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError) or not 400 <= status < 500:
            return super().handle_error(request, status, exc, message)
        detail, limit = _describe(exc)
        log.warning("refused a malformed HTTP request from %s: %s", request.remote, detail)
        hint = f" (router setting {limit})" if limit else ""
        body = {
            "error": {
                "message": f"malformed or oversized HTTP request: {detail}{hint}",
                "type": "invalid_request_error",
                "param": None,
                "code": "request_header_too_large" if limit else "bad_http_request",
            }
        }
        response = web.Response(
            status=status, text=json.dumps(body), content_type="application/json"
        )
        response.force_close()
        return response


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _OpenAIErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class OpenAIErrorAppRunner(web.AppRunner):
    """`web.AppRunner` with the handler above; takes aiohttp's parser limits as kwargs."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _Server  # same layout; only the handler factory differs
        return server


def runner(app: web.Application, **kwargs: Any) -> web.AppRunner:
    return OpenAIErrorAppRunner(app, **kwargs)
