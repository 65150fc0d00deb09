"""`gearshift chat` and `gearshift route explain`: talk to a running router.

`gearshift route eval` (offline) lives in `gearshift.cli.route_eval`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import grpc

from gearshift.cli import local_state
from gearshift.router.multi.policy import parse_header
from gearshift.runtime.errors import InvalidArgument
from gearshift.v1 import common_pb2, router_pb2, router_pb2_grpc


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="the question")
    parser.add_argument("--router", default=None, help="router gRPC address (host:port)")
    parser.add_argument(
        "--api-key", default=None, help="key (default: $GEARSHIFT_API_KEY or the local key)"
    )
    parser.add_argument(
        "--model", default="auto", help="'auto', or a route or data source name to pin"
    )
    parser.add_argument("--system", default="", help="system prompt")
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--timeout", type=float, default=120.0, help="deadline in seconds")
    parser.add_argument(
        "--multi",
        default="",
        metavar="POLICY",
        help="send to several routes at once and combine, e.g. 'max=3; combine=synthesize; "
        "min_ok=1' (docs/router.md, Multi-routing)",
    )


def add_chat_parser(sub: Any) -> None:
    chat = sub.add_parser("chat", help="send one query through the router and show how it went")
    _common(chat)
    chat.add_argument("--no-cache", action="store_true", help="bypass the semantic cache")
    chat.add_argument("--stream", action="store_true", help="print the answer as it arrives")
    chat.set_defaults(func=lambda a: asyncio.run(_chat(a)))


def chat_arguments(argv: Sequence[str]) -> argparse.Namespace:
    """`gearshift chat` arguments parsed from a command line.

    `gearshift up` asks its demo question through this, so the demo's request is
    exactly what the user's own `gearshift chat` sends and shares its cache entry.
    """
    parser = argparse.ArgumentParser(prog="gearshift")
    add_chat_parser(parser.add_subparsers())
    return parser.parse_args(["chat", *argv])


def add_route_parser(sub: Any) -> None:
    route = sub.add_parser("route", help="routing decisions")
    rsub = route.add_subparsers(dest="route_command", required=True)
    explain = rsub.add_parser("explain", help="show where a query would go, without generating")
    _common(explain)
    explain.set_defaults(func=lambda a: asyncio.run(_explain(a)))
    from gearshift.cli.route_eval import add_eval_parser

    add_eval_parser(rsub)
    from gearshift.cli.score import add_score_parser

    add_score_parser(rsub)


def _request(args: argparse.Namespace) -> router_pb2.ChatRequest:
    messages = []
    if args.system:
        messages.append(common_pb2.ChatMessage(role="system", content=args.system))
    messages.append(common_pb2.ChatMessage(role="user", content=args.prompt))
    sampling = common_pb2.SamplingParams(temperature=args.temperature)
    if args.max_tokens is not None:
        sampling.max_tokens = args.max_tokens
    policy = (
        router_pb2.CACHE_POLICY_BYPASS
        if getattr(args, "no_cache", False)
        else router_pb2.CACHE_POLICY_UNSPECIFIED
    )
    request = router_pb2.ChatRequest(
        model=args.model, messages=messages, sampling=sampling, cache_policy=policy
    )
    if getattr(args, "multi", ""):
        try:
            request.multi.CopyFrom(parse_header(args.multi))
        except InvalidArgument as exc:
            raise SystemExit(f"error: --multi: {exc.message}") from None
    return request


def _metadata(args: argparse.Namespace) -> list[tuple[str, str]]:
    key = args.api_key or os.environ.get("GEARSHIFT_API_KEY") or local_state.local_api_key()
    return [("authorization", f"Bearer {key}")] if key else []


def _describe(decision: router_pb2.RouteDecision) -> str:
    from gearshift.v1 import common_pb2 as c

    tier = c.Tier.Name(decision.tier).removeprefix("TIER_").lower()
    cache = c.CacheOutcome.Name(decision.cache).removeprefix("CACHE_OUTCOME_").lower()
    lines = [
        f"route:      {decision.route} (tier {tier}, model {decision.model or '-'})",
        f"difficulty: {decision.difficulty:.3f} (threshold {decision.threshold:.3f})",
        f"cache:      {cache}"
        + (f" (similarity {decision.cache_similarity:.3f})" if decision.cache_similarity else ""),
    ]
    if decision.source:
        version = decision.source_content_version
        lines.append(
            f"source:     {decision.source}" + (f" (content {version})" if version else "")
        )
    if decision.selection_reason:
        lines.append(f"selection:  {decision.selection_reason}")
    for cand in decision.candidates:
        note = f"  (excludes {cand.exclude_similarity:.3f})" if cand.exclude_similarity else ""
        lines.append(f"  {cand.kind:<6} {cand.name:<24} score {cand.score:6.3f}{note}")
    if decision.branches:
        lines.append(f"multi:      {len(decision.branches)} branches, combine {decision.combine}")
        for b in decision.branches:
            tier = c.Tier.Name(b.tier).removeprefix("TIER_").lower()
            line = f"  {b.kind:<7} {b.name:<24} {b.status:<9} route {b.route} ({tier})"
            if b.status not in ("planned",):
                line += f" {b.latency_ms:.0f} ms, {b.usage.total_tokens} tokens"
                if b.usage.cost_usd:
                    line += f", ${b.usage.cost_usd:.6f}"
            if b.error:
                line += f": {b.error}"
            lines.append(line)
        if decision.combine_reason:
            lines.append(f"combined:   {decision.combine_reason}")
    if decision.escalated_from:
        lines.append(f"escalated:  from {', '.join(decision.escalated_from)}")
    if decision.reasons:
        lines.append("reasons:    " + "; ".join(decision.reasons))
    return "\n".join(lines)


def describe_citations(citations: Sequence[router_pb2.Citation]) -> str:
    """Numbered like the grounded prompt's passages, so [1] in the answer is line [1]."""
    lines = []
    for i, c in enumerate(citations, start=1):
        title = " > ".join(t for t in (c.document_title, c.chunk_title) if t)
        lines.append(f"  [{i}] {c.source}: {c.document_id} ({title}) score {c.score:.3f}")
    return "\n".join(["citations:", *lines]) if lines else ""


def _fail(exc: grpc.aio.AioRpcError, address: str) -> int:
    print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
    if exc.code() == grpc.StatusCode.UNAVAILABLE:
        print(f"is the mesh running? start it with `gearshift up` ({address})", file=sys.stderr)
    return 1


async def _chat(args: argparse.Namespace) -> int:
    address = args.router or local_state.router_address()
    request = _request(args)
    citations: list[router_pb2.Citation] = []
    start = time.perf_counter()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        try:
            if args.stream:
                decision, trace_id = router_pb2.RouteDecision(), ""
                async for chunk in stub.ChatStream(
                    request, metadata=_metadata(args), timeout=args.timeout
                ):
                    if chunk.HasField("decision"):
                        decision, trace_id = chunk.decision, chunk.trace_id
                    if chunk.HasField("final_decision"):
                        decision = chunk.final_decision
                    citations.extend(chunk.citations)
                    print(chunk.text_delta, end="", flush=True)
                print()
            else:
                response = await stub.Chat(request, metadata=_metadata(args), timeout=args.timeout)
                decision, trace_id = response.decision, response.trace_id
                citations.extend(response.citations)
                print(response.text.strip())
        except grpc.aio.AioRpcError as exc:
            return _fail(exc, address)
    elapsed = (time.perf_counter() - start) * 1000
    print("---")
    print(_describe(decision))
    if citations:
        print(describe_citations(citations))
    print(f"latency:    {elapsed:.0f} ms")
    print(f"trace id:   {trace_id or '-'}")
    return 0


async def _explain(args: argparse.Namespace) -> int:
    address = args.router or local_state.router_address()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        try:
            decision = await stub.Route(
                _request(args), metadata=_metadata(args), timeout=args.timeout
            )
        except grpc.aio.AioRpcError as exc:
            return _fail(exc, address)
    print(_describe(decision))
    return 0
