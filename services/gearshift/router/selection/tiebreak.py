"""The small model settles close selections (a LlamaIndex-style single selector).

The embedding selector ranks options in well under a millisecond, but two descriptions
can score almost alike for a question that plainly belongs to one of them. When the
best options all reach the threshold and lie within `window` of the best score, the
small model reads their descriptions and the question and answers which one fits, as
JSON `{"choice": N, "reason": "..."}`. The answer is validated (a JSON object, `choice`
an integer naming one of the numbered options); a malformed answer, a backend error, no
usable small model or the deadline (`timeout_s`, short: the request waits for it) all
keep the embedding choice. Either way the outcome is written into the selection's
reason, so it reaches the RouteDecision, `gearshift route explain` and the span.

Off by default (router setting `selection_tiebreak`): it adds a model call to every
close selection (about a second for the 135M model on a CPU), and its accuracy over the
embedding choice depends on the small model; turn it on where the small model runs on a
GPU and the options' descriptions are close.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import grpc
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gearshift.router.selection.selector import Candidate, Option, Selection
from gearshift.router.table.routing_table import RoutingTable, Snapshot
from gearshift.v1 import common_pb2, inference_pb2

MAX_CHOICES = 4
SYSTEM = (
    "You choose the source of information that best answers a question. The choices are "
    "numbered; each says what its source is for. Answer with JSON only, in the form "
    '{"choice": <number>, "reason": "<a few words>"}.'
)
# One worked example (not from any evaluation set) shows the small model the format.
EXAMPLE_QUESTION = (
    "Choices:\n(1) Recipes of the kitchen team: cooking times, ingredients, menus\n"
    "(2) Car repair manual: tyres, brakes, engine faults\n\n"
    "Question: How do I change a flat tyre?"
)
EXAMPLE_ANSWER = '{"choice": 2, "reason": "tyres are car repair"}'
_JSON_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)


class Answer(BaseModel):
    """The small model's answer, as it must be."""

    model_config = ConfigDict(extra="ignore")

    choice: int = Field(ge=1, le=MAX_CHOICES)
    reason: str = ""


@dataclass(frozen=True)
class Verdict:
    """What the tie-break decided: the chosen candidate (None: keep the embedding choice)."""

    chosen: Candidate | None
    note: str


def close_candidates(selection: Selection, threshold: float, window: float) -> list[Candidate]:
    """The options the small model should choose among: every one that reaches the
    threshold, is not excluded, and scores within `window` of the best (at most
    MAX_CHOICES); fewer than two means there is nothing to break. A best option that
    matches its excludes ends the selection with "no option fits", tie-break or not."""
    if not selection.candidates or selection.candidates[0].excluded:
        return []
    ranked = [c for c in selection.candidates if c.score >= threshold and not c.excluded]
    if not ranked:
        return []
    top = ranked[0].score
    return [c for c in ranked if top - c.score <= window][:MAX_CHOICES]


def prompt(question: str, descriptions: Sequence[str]) -> list[common_pb2.ChatMessage]:
    choices = "\n".join(f"({i}) {d}" for i, d in enumerate(descriptions, 1))
    return [
        common_pb2.ChatMessage(role="system", content=SYSTEM),
        common_pb2.ChatMessage(role="user", content=EXAMPLE_QUESTION),
        common_pb2.ChatMessage(role="assistant", content=EXAMPLE_ANSWER),
        common_pb2.ChatMessage(role="user", content=f"Choices:\n{choices}\n\nQuestion: {question}"),
    ]


def parse(text: str, n: int) -> Answer:
    """The validated answer; raises ValueError naming what was wrong."""
    match = _JSON_OBJECT.search(text)
    if match is None:
        raise ValueError("no JSON object in the answer")
    try:
        data = json.loads(match.group(0))
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON ({exc.msg})") from exc
    try:
        answer = Answer.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"bad answer ({exc.errors()[0]['msg']})") from exc
    if answer.choice > n:
        raise ValueError(f"choice {answer.choice} is not one of 1..{n}")
    return answer


class SmallModelTieBreak:
    """Asks the first usable small-model route to choose among close options."""

    def __init__(
        self, table: RoutingTable, window: float, timeout_s: float, max_tokens: int = 40
    ) -> None:
        self.table = table
        self.window = window
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens

    async def settle(
        self,
        selection: Selection,
        question: str,
        options: Sequence[Option],
        snapshot: Snapshot,
        threshold: float,
        time_remaining: float,
    ) -> Selection:
        """The selection, settled by the small model when its best options are close."""
        close = close_candidates(selection, threshold, self.window)
        if len(close) < 2 or not question:
            return selection
        names = ", ".join(c.name for c in close)
        verdict = await self._ask(question, close, options, snapshot, time_remaining)
        if verdict.chosen is None:
            kept = selection.chosen.name if selection.chosen else "no option"
            reason = f"{selection.reason}; tie-break among {names}: {verdict.note}, kept {kept}"
            return replace(selection, reason=reason)
        chosen = verdict.chosen
        reason = (
            f"selected {chosen.kind} {chosen.name}: small-model tie-break among {names} "
            f"({verdict.note}; embedding scores {', '.join(f'{c.score:.3f}' for c in close)})"
        )
        return replace(selection, chosen=chosen, reason=reason)

    async def _ask(
        self,
        question: str,
        close: list[Candidate],
        options: Sequence[Option],
        snapshot: Snapshot,
        time_remaining: float,
    ) -> Verdict:
        route = next((r for r in snapshot.tier("slm") if self.table.route_usable(r)), None)
        if route is None:
            return Verdict(None, "no usable small model")
        described = {o.name: (o.positives[0] if o.positives else o.name) for o in options}
        request = inference_pb2.GenerateRequest(
            model=route.model,
            messages=prompt(question, [described.get(c.name, c.name) for c in close]),
            sampling=common_pb2.SamplingParams(temperature=0.0, max_tokens=self.max_tokens),
        )
        endpoint = self.table.pick_endpoint(route)
        timeout = max(0.001, min(self.timeout_s, time_remaining))
        started = time.perf_counter()
        try:
            with self.table.lease(endpoint):
                response = await self.table.pool.stub(endpoint).Generate(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return Verdict(None, f"no answer within {timeout:g}s")
            return Verdict(None, f"{route.name} failed ({exc.code().name})")
        took = (time.perf_counter() - started) * 1000
        try:
            answer = parse(response.text, len(close))
        except ValueError as exc:
            return Verdict(None, f"{route.name} answered {response.text[:60]!r}: {exc}")
        chosen = close[answer.choice - 1]
        why = f": {answer.reason[:60]}" if answer.reason else ""
        return Verdict(chosen, f"{route.name} chose ({answer.choice}) in {took:.0f} ms{why}")
