"""Shadow judging: the large tier grades a share of the small model's answers.

After an answer from the slm tier has been sent, a configured share of them is, in a
background task, (1) answered again by an llm route and (2) graded by the same route
with the MT-Bench single-answer prompt against that reference. The grade is stored as
a `judge` outcome of the answer, so retraining learns where the small model falls short
without any user feedback.

It never touches the user's answer (it starts after it), runs at most `concurrency`
judgments at once (answers arriving while all slots are busy are skipped, not queued),
puts a deadline on every call and stops for the day when the token budget is spent.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
import uuid

import grpc

from gearshift.router.core.events import AnsweredEvent
from gearshift.router.outcomes import metrics
from gearshift.router.outcomes.feedback import OutcomeService
from gearshift.router.outcomes.judge_prompt import judge_messages, parse_rating, rating_to_score
from gearshift.router.outcomes.records import SOURCE_JUDGE, Outcome
from gearshift.router.table.routing_table import Route, RoutingTable
from gearshift.v1 import common_pb2, inference_pb2

log = logging.getLogger(__name__)

JUDGE_MAX_TOKENS = 384


class DailyBudget:
    """Tokens that may be spent per UTC day."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.day = datetime.datetime.now(datetime.UTC).date()
        self.spent = 0
        metrics.SHADOW_BUDGET_LEFT.set(tokens)

    def _roll(self) -> None:
        today = datetime.datetime.now(datetime.UTC).date()
        if today != self.day:
            self.day, self.spent = today, 0

    def left(self) -> int:
        self._roll()
        return max(0, self.tokens - self.spent)

    def spend(self, tokens: int) -> None:
        self._roll()
        self.spent += tokens
        metrics.SHADOW_TOKENS.inc(tokens)
        metrics.SHADOW_BUDGET_LEFT.set(self.left())


class ShadowJudge:
    """Schedules and runs background judgments of small-model answers."""

    def __init__(
        self,
        table: RoutingTable,
        outcomes: OutcomeService,
        *,
        share: float,
        daily_token_budget: int,
        concurrency: int = 2,
        timeout_s: float = 60.0,
        max_tokens: int = 512,
        rng: random.Random | None = None,
    ) -> None:
        self.table = table
        self.outcomes = outcomes
        self.share = share
        self.budget = DailyBudget(daily_token_budget)
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens
        self.rng = rng or random.Random()
        self._tasks: set[asyncio.Task[float | None]] = set()

    def answered(self, event: AnsweredEvent) -> None:
        """Starts a judgment for a sampled slm answer (returns at once)."""
        if event.tier != "slm" or not event.answer:
            return
        if event.finish_reason != common_pb2.FINISH_REASON_STOP:
            return
        if self.rng.random() >= self.share:
            return
        if self.budget.left() <= 0:
            metrics.SHADOW_JUDGMENTS.labels("budget_spent").inc()
            return
        if len(self._tasks) >= self.concurrency:
            metrics.SHADOW_JUDGMENTS.labels("busy").inc()
            return
        task = asyncio.get_running_loop().create_task(
            self.judge(event), name=f"shadow-judge-{event.response_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _llm_route(self) -> Route | None:
        for route in self.table.snapshot.tier("llm"):
            if self.table.route_usable(route):
                return route
        return None

    async def _generate(
        self, route: Route, event: AnsweredEvent, messages: list[common_pb2.ChatMessage], cap: int
    ) -> str:
        endpoint = self.table.pick_endpoint(route)
        request = inference_pb2.GenerateRequest(
            request_id=f"shadow-{uuid.uuid4().hex[:12]}",
            tenant=event.tenant,
            model=route.model,
            messages=messages,
            sampling=common_pb2.SamplingParams(max_tokens=cap, temperature=0.0),
        )
        with self.table.lease(endpoint):
            response = await self.table.pool.stub(endpoint).Generate(
                request, timeout=self.timeout_s
            )
        self.budget.spend(response.usage.total_tokens)
        return response.text

    async def judge(self, event: AnsweredEvent) -> float | None:
        """Reference answer, then the grade; stores it and returns the score (or None)."""
        route = self._llm_route()
        if route is None:
            metrics.SHADOW_JUDGMENTS.labels("no_llm_route").inc()
            return None
        try:
            reference = await self._generate(route, event, list(event.messages), self.max_tokens)
            if self.budget.left() <= 0:
                metrics.SHADOW_JUDGMENTS.labels("budget_spent").inc()
                return None
            judgment = await self._generate(
                route,
                event,
                judge_messages(event.question, reference, event.answer),
                JUDGE_MAX_TOKENS,
            )
        except (grpc.aio.AioRpcError, TimeoutError) as exc:
            metrics.SHADOW_JUDGMENTS.labels("failed").inc()
            log.info("shadow judgment of %s failed: %r", event.response_id, exc)
            return None
        rating = parse_rating(judgment)
        if rating is None:
            metrics.SHADOW_JUDGMENTS.labels("unparsed").inc()
            log.info("shadow judge gave no rating for %s", event.response_id)
            return None
        score = rating_to_score(rating)
        try:
            await self.outcomes.decision(event.tenant, event.response_id)
            await self.outcomes.add(
                Outcome(
                    tenant=event.tenant,
                    response_id=event.response_id,
                    source=SOURCE_JUDGE,
                    score=score,
                    comment=f"shadow judge {route.name}: rating {rating:g}/10",
                )
            )
        except Exception as exc:  # the decision may have been dropped or the store be down
            metrics.SHADOW_JUDGMENTS.labels("failed").inc()
            log.warning("shadow grade for %s not stored: %r", event.response_id, exc)
            return None
        metrics.SHADOW_JUDGMENTS.labels("graded").inc()
        return score

    async def stop(self) -> None:
        """Cancels judgments still running (they are background work, never answers)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
