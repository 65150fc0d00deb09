"""Routing by capability: a request goes only to routes whose model can do what it asks.

A request that carries tools, asks for JSON output or log-probabilities, or is long, needs
a route that declares it (`ModelRoute.spec.capabilities`). The planner drops every other
route before it chooses among the rest as usual (difficulty, selection, health), so a
request is never silently answered by a model that ignores what it asked for. The routes
dropped, and why, are written into the decision (`excluded` and `reasons`).

No route left is FAILED_PRECONDITION (HTTP 400), naming the missing capability: the
request itself is well formed, and the same request succeeds once a route that can serve
it is configured, which is what FAILED_PRECONDITION means ("the system is not in the
state the operation needs") and INVALID_ARGUMENT ("the request is wrong whatever the
system's state") does not.
"""

from __future__ import annotations

from dataclasses import dataclass

from gearshift.router.table.routing_table import Route, Snapshot
from gearshift.routes.model_route import Capabilities
from gearshift.runtime.errors import FailedPrecondition
from gearshift.v1 import router_pb2

# A rough, usually generous characters-per-token figure for English text; the estimate only
# drops routes whose declared context clearly cannot hold the request.
CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class Needs:
    """What a request needs of the model that answers it."""

    tools: bool = False
    json_schema: bool = False
    logprobs: bool = False
    context_tokens: int = 0  # estimated prompt plus the answer's max_tokens

    def missing(self, caps: Capabilities) -> list[str]:
        """The capabilities (CRD field names) a route with `caps` lacks for this request."""
        out = []
        if self.tools and not caps.tools:
            out.append("tools")
        if self.json_schema and not caps.json_schema:
            out.append("jsonSchema")
        if self.logprobs and not caps.logprobs:
            out.append("logprobs")
        if caps.context_tokens is not None and self.context_tokens > caps.context_tokens:
            out.append("contextTokens")
        return out

    def describe(self, missing: str) -> str:
        return {
            "tools": "tool calling (the request has tools or tool turns)",
            "jsonSchema": "structured output (response_format json_object / json_schema)",
            "logprobs": "log-probabilities (logprobs)",
            "contextTokens": f"a context of about {self.context_tokens} tokens",
        }[missing]


def uses_tools(request: router_pb2.ChatRequest) -> bool:
    """Tools offered (and not switched off), or tool calls / results in the conversation."""
    offered = bool(request.tools) and request.tool_choice.mode != "none"
    return offered or any(m.tool_calls or m.role == "tool" for m in request.messages)


def needs_of(request: router_pb2.ChatRequest) -> Needs:
    """What the request asks of the model."""
    sampling = request.sampling
    chars = sum(
        len(m.content) + sum(len(c.arguments) for c in m.tool_calls) for m in request.messages
    )
    chars += sum(len(t.parameters_json) + len(t.description) for t in request.tools)
    answer = sampling.max_tokens if sampling.HasField("max_tokens") else 1
    return Needs(
        tools=uses_tools(request),
        json_schema=sampling.response_format.type in ("json_object", "json_schema"),
        logprobs=sampling.logprobs,
        context_tokens=chars // CHARS_PER_TOKEN + answer,
    )


def require(route: Route, needs: Needs) -> None:
    """A pinned route must have every capability: pinning never downgrades the request."""
    missing = needs.missing(route.capabilities)
    if missing:
        wants = "; ".join(needs.describe(m) for m in missing)
        raise FailedPrecondition(
            f"route {route.name!r} cannot serve this request: it needs {wants}, and the "
            f"route does not declare capabilities {', '.join(missing)}",
            reason="CAPABILITY_MISSING",
        )


def capable_snapshot(
    snapshot: Snapshot, needs: Needs, decision: router_pb2.RouteDecision
) -> Snapshot:
    """The snapshot without the routes that cannot serve `needs` (recorded in `decision`).

    Raises FAILED_PRECONDITION when routes exist and none can serve the request.
    """
    if needs == Needs(context_tokens=needs.context_tokens) and not any(
        r.capabilities.context_tokens is not None for r in snapshot.routes
    ):
        return snapshot  # a plain request: nothing to check
    kept: list[Route] = []
    lacking: dict[str, list[str]] = {}
    for route in snapshot.routes:
        missing = needs.missing(route.capabilities)
        if missing:
            lacking[route.name] = missing
            decision.excluded.add(route=route.name, missing=missing)
            decision.reasons.append(f"excluded {route.name}: lacks {', '.join(missing)}")
        else:
            kept.append(route)
    if not lacking:
        return snapshot
    if not kept and snapshot.routes:
        wanted = sorted({m for ms in lacking.values() for m in ms})
        routes = "; ".join(f"{name} lacks {', '.join(ms)}" for name, ms in lacking.items())
        raise FailedPrecondition(
            "no route can serve this request: it needs "
            + "; ".join(needs.describe(m) for m in wanted)
            + f" ({routes}). Declare the capability on a ModelRoute whose model has it "
            "(spec.capabilities), or leave the option out of the request",
            reason="CAPABILITY_MISSING",
        )
    return Snapshot.of(kept, snapshot.version, snapshot.sources)
