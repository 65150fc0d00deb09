"""HTTP to one OpenAI-compatible upstream: a pooled aiohttp client, SSE parsing, error taxonomy.

Every failure becomes an `UpstreamError` that says what the dispatcher may do next:
retry the same upstream (connection errors, 429, 502/503/504), fail over to another
(other 5xx, timeouts, garbage, auth failures of *our* key), or give up because the
request itself is bad (400/422). Messages name the upstream, never the key, and any
upstream text quoted in them is passed through the redactor.

Why aiohttp and not httpx: measured here (docs/proxy.md), httpx's connection pool costs
1.7 ms of CPU per request at 32 in flight against 0.08 ms for aiohttp, which would make the
proxy, not the model, the bottleneck under load.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import aiohttp

from gearshift.proxy.config import UpstreamConfig
from gearshift.proxy.keys import REDACTOR, KeySource
from gearshift.proxy.openai_map import completion_as_event

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
CLIENT_ERROR_STATUS = frozenset({400, 413, 422})
_EXCERPT_CHARS = 200
_READ_BUFSIZE = 1 << 20  # longest SSE line accepted (events with many logprobs are long)


class UpstreamError(Exception):
    """One failed attempt at one upstream."""

    def __init__(
        self,
        upstream: str,
        outcome: str,
        message: str,
        *,
        retryable: bool = False,
        client_error: bool = False,
        status: int = 0,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(REDACTOR.redact(message))
        self.upstream = upstream
        self.outcome = outcome
        self.retryable = retryable
        self.client_error = client_error
        self.status = status
        self.retry_after_s = retry_after_s

    @property
    def message(self) -> str:
        return str(self.args[0])


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After in seconds (delta or HTTP date), or OpenAI's retry-after-ms.

    `headers` must be case-insensitive (aiohttp's CIMultiDict).
    """
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _excerpt(body: bytes) -> str:
    text = body[:_EXCERPT_CHARS].decode("utf-8", "replace").replace("\n", " ").strip()
    return text + ("..." if len(body) > _EXCERPT_CHARS else "")


class UpstreamClient:
    """One upstream's connection pool (created lazily on the serving loop) and request logic."""

    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self.name = config.name
        self.keys = KeySource(config.api_key_file, config.api_key_env)
        self._url = config.base_url.rstrip("/") + "/chat/completions"
        self._http: aiohttp.ClientSession | None = None
        self._no_deadline_timeout: aiohttp.ClientTimeout | None = None
        self._headers_for: tuple[str, dict[str, str]] | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self.config.max_connections, keepalive_timeout=30.0
                ),
                headers=self.config.headers,
                read_bufsize=_READ_BUFSIZE,
                max_line_size=_READ_BUFSIZE,
                max_field_size=_READ_BUFSIZE,
            )
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()

    def _timeout(self, remaining_s: float | None) -> aiohttp.ClientTimeout:
        if remaining_s is None:  # no deadline: the same bounds every time, built once
            if self._no_deadline_timeout is None:
                c, r = self.config.connect_timeout_s, self.config.read_timeout_s
                self._no_deadline_timeout = aiohttp.ClientTimeout(
                    total=None, connect=c, sock_connect=c, sock_read=r
                )
            return self._no_deadline_timeout
        c, r = self.config.connect_timeout_s, self.config.read_timeout_s
        if remaining_s is not None:
            c, r = min(c, remaining_s), min(r, remaining_s)
        # total bounds the whole exchange (a stream included) by the call's deadline
        return aiohttp.ClientTimeout(total=remaining_s, connect=c, sock_connect=c, sock_read=r)

    def _headers(self) -> dict[str, str]:
        try:
            key = self.keys.get()
        except Exception as exc:  # MissingKey or unreadable file: fail over, never crash
            raise UpstreamError(
                self.name, "missing_key", f"upstream {self.name!r}: {exc}"
            ) from None
        if self._headers_for is not None and self._headers_for[0] == key:
            return self._headers_for[1]  # aiohttp copies headers; this dict is never changed
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._headers_for = (key, headers)
        return headers

    def _http_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
        return UpstreamError(
            self.name,
            f"http_{status}",
            f"upstream {self.name!r} answered HTTP {status}: {_excerpt(body)}",
            retryable=status in RETRYABLE_STATUS,
            client_error=status in CLIENT_ERROR_STATUS,
            status=status,
            retry_after_s=parse_retry_after(headers) if status in RETRYABLE_STATUS else None,
        )

    def _transport_error(self, exc: BaseException, phase: str) -> UpstreamError:
        kind = type(exc).__name__
        if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
            return UpstreamError(
                self.name,
                "connect_error",
                f"upstream {self.name!r} could not be reached ({kind})",
                retryable=True,
            )
        if isinstance(exc, TimeoutError):
            return UpstreamError(
                self.name, "timeout", f"upstream {self.name!r} timed out {phase} ({kind})"
            )
        if phase == "while streaming":
            return UpstreamError(
                self.name, "truncated", f"upstream {self.name!r} broke the stream off ({kind})"
            )
        # reset / disconnected before any answer: nothing was processed, safe to repeat
        return UpstreamError(
            self.name,
            "connect_error",
            f"upstream {self.name!r} failed {phase} ({kind})",
            retryable=True,
        )

    def _stalled(self) -> UpstreamError:
        return UpstreamError(
            self.name,
            "first_byte_timeout",
            f"upstream {self.name!r} did not start answering within "
            f"{self.config.first_byte_timeout_s:g} s (first_byte_timeout_s)",
        )

    def _first_byte_budget(self, remaining_s: float | None) -> float:
        budget = self.config.first_byte_timeout_s
        return budget if remaining_s is None else min(budget, remaining_s)

    async def stream(
        self, body: dict[str, Any], remaining_s: float | None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """POST with stream=true; yields each SSE event's JSON until `data: [DONE]`.

        Raises `UpstreamError("truncated")` if the stream ends without [DONE]. Closing the
        generator (client cancel) closes the HTTP connection, which aborts the upstream.
        An upstream that answers with anything but `text/event-stream` is taken to ignore
        `stream` and send one JSON completion: that is yielded as a single event.
        """
        headers = {**self._headers(), "Accept": "text/event-stream"}
        first_byte = self._first_byte_budget(remaining_s)
        loop = asyncio.get_running_loop()
        first_byte_at = loop.time() + first_byte
        try:
            async with asyncio.timeout_at(first_byte_at):
                resp = await self._session().post(
                    self._url,
                    data=json.dumps(body).encode(),
                    headers=headers,
                    timeout=self._timeout(remaining_s),
                    allow_redirects=False,
                )
        except TimeoutError as exc:
            if first_byte < (remaining_s or float("inf")):
                raise self._stalled() from None
            raise self._transport_error(exc, "before answering") from None
        except aiohttp.ClientError as exc:
            raise self._transport_error(exc, "before answering") from None
        done = False
        try:
            if resp.status != 200:
                try:
                    content = await resp.read()
                except (aiohttp.ClientError, TimeoutError):
                    content = b""
                raise self._http_error(resp.status, content, resp.headers)
            if resp.content_type != "text/event-stream":
                # An upstream that does not stream answers with the whole completion.
                yield await self._whole_answer(resp)
                done = True
                return
            events = _sse_data(_lines(resp.content))
            try:
                # The first event is bounded by the same first-byte deadline: an upstream
                # that sent headers and froze is a stall, not a slow stream.
                try:
                    async with asyncio.timeout_at(first_byte_at):
                        data = await anext(events, None)
                except TimeoutError:
                    if first_byte < (remaining_s or float("inf")):
                        raise self._stalled() from None
                    raise
                while data is not None:
                    if data == "[DONE]":
                        done = True
                        return
                    yield self._event(data)
                    data = await anext(events, None)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                raise self._transport_error(exc, "while streaming") from None
            raise UpstreamError(
                self.name, "truncated", f"upstream {self.name!r} ended the stream without [DONE]"
            )
        finally:
            if done:
                resp.release()  # keep the connection for the next request
            else:
                resp.close()  # unfinished: drop the connection so the upstream stops

    async def _whole_answer(self, resp: aiohttp.ClientResponse) -> dict[str, Any]:
        """A non-streamed completion, as the one stream event that carries all of it."""
        try:
            content = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._transport_error(exc, "while answering") from None
        try:
            data = json.loads(content)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise UpstreamError(
                self.name,
                "malformed",
                f"upstream {self.name!r} sent malformed JSON: {_excerpt(content)}",
            )
        return completion_as_event(data)

    def _event(self, data: str) -> dict[str, Any]:
        try:
            event = json.loads(data)
        except ValueError:
            raise UpstreamError(
                self.name,
                "malformed",
                f"upstream {self.name!r} sent a malformed stream event: {_excerpt(data.encode())}",
            ) from None
        if not isinstance(event, dict):
            raise UpstreamError(
                self.name, "malformed", f"upstream {self.name!r} sent a non-object event"
            )
        if "error" in event:
            raise UpstreamError(
                self.name,
                "stream_error",
                f"upstream {self.name!r} reported an error mid-stream: "
                f"{_excerpt(json.dumps(event['error']).encode())}",
            )
        return event


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[str]:
    """Decoded lines without their line ending; a last line without one is unfinished."""
    async for raw in content:
        if not raw.endswith(b"\n"):
            return  # cut off mid-line: drop it (an unfinished event is never used)
        yield raw.decode("utf-8").rstrip("\r\n")


async def _sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """Server-sent events: joins `data:` lines up to a blank line; drops an unfinished event."""
    buf: list[str] = []
    async for line in lines:
        if not line:
            if buf:
                yield "\n".join(buf)
                buf = []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            buf.append(value[1:] if value.startswith(" ") else value)
