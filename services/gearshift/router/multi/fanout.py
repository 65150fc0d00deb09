"""Parallel fan-out: every branch at once, each under its own deadline.

A branch is the executor's single-route run of the branch's child plan, so a branch
escalates along its routes as a single request does, and cancelling it cancels the
backend call (the generation stops on vLLM). A branch past its deadline is cancelled and
reported `late`; a failing one `failed`. Neither fails the request while
`min_successful` branches can still answer; once they cannot, the rest are cancelled at
once (`cancelled`) instead of spending tokens on an answer nobody will get. Once
`min_successful` branches have answered, the others get the policy's `grace_s` more
and are then cancelled too (`cancelled`, not needed): enough is enough, and the caller
should not wait for a slow branch it did not require.
"""

from __future__ import annotations

import asyncio
import logging
import time

from opentelemetry import trace

from gearshift.router.core.executor import Executor
from gearshift.router.multi.branches import Branch, MultiPlan
from gearshift.runtime.errors import DeadlineExceeded, GearshiftError, Unavailable
from gearshift.v1 import common_pb2

log = logging.getLogger(__name__)
NOT_NEEDED = "not needed: min_successful reached"
CANNOT_REACH = "cancelled: min_successful can no longer be reached"
tracer = trace.get_tracer(__name__)


def branch_deadline(
    request_deadline: float, now: float, branch_timeout_s: float, reserve_s: float
) -> float:
    """When a branch must have answered (monotonic seconds).

    Within its own timeout, and early enough to leave `reserve_s` of the request's time
    for the combining call (synthesize, best) but never more than half of what is left:
    a branch with no time cannot answer, a combination with no time cannot either.
    """
    left = max(0.0, request_deadline - now)
    return min(request_deadline - min(reserve_s, left / 2), now + branch_timeout_s)


async def fan_out(executor: Executor, plan: MultiPlan, reserve_s: float = 0.0) -> None:
    """Runs the branches in parallel until enough answered (then the grace) or too few can.

    `reserve_s`: time kept at the end of the request for the combining model call.
    """
    runnable = [b for b in plan.branches if b.status == "planned"]
    now = time.monotonic()
    for branch in runnable:
        branch.plan.deadline = branch_deadline(
            plan.base.deadline, now, plan.policy.branch_timeout_s, reserve_s
        )
        # Always streamed from the backend, whatever the caller asked: one code path for
        # every branch. A cancel reaches vLLM either way (unary calls too since the
        # tracing interceptor passes it on: tests/runtime/test_client_cancel.py).
        branch.plan.stream = True
    tasks = {asyncio.create_task(run_branch(executor, b)): b for b in runnable}
    pending = set(tasks)
    policy = plan.policy
    try:
        while pending:
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            ok = sum(b.ok for b in plan.branches)
            if ok >= policy.min_successful:
                if pending and policy.grace_s > 0:
                    _, pending = await asyncio.wait(pending, timeout=policy.grace_s)
                reason = NOT_NEEDED
            elif ok + len(pending) < policy.min_successful:
                reason = CANNOT_REACH
            else:
                continue
            for task in pending:
                tasks[task].error = reason
            break
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


async def run_branch(executor: Executor, branch: Branch) -> None:
    """One branch to its end: its text, usage and status are written into `branch`."""
    started = time.monotonic()
    timeout = branch.plan.deadline - started
    with tracer.start_as_current_span("router.multi.branch") as span:
        span.set_attribute("gearshift.branch", branch.name)
        span.set_attribute("gearshift.branch.kind", branch.kind)
        parts: list[str] = []
        try:
            async with asyncio.timeout_at(branch.plan.deadline):
                async for chunk in executor.run(branch.plan):
                    parts.append(chunk.text_delta)
                    if chunk.HasField("usage"):
                        branch.usage.CopyFrom(chunk.usage)
                    if chunk.finish_reason:
                        branch.finish = chunk.finish_reason
            branch.text = "".join(parts).strip()
            if branch.finish == common_pb2.FINISH_REASON_ERROR or not branch.text:
                branch.status, branch.error = "failed", "the model returned no answer"
            else:
                branch.status = "ok"
        except (TimeoutError, DeadlineExceeded):
            branch.status = "late"
            branch.error = f"past its deadline of {timeout:.3g} s: cancelled"
        except asyncio.CancelledError:
            branch.status = "cancelled"
            branch.error = branch.error or "cancelled: the request ended"
            raise
        except GearshiftError as exc:
            branch.status, branch.error = "failed", exc.message
        except Exception as exc:  # one broken branch must not take the others down
            log.exception("branch %s of %s failed", branch.name, branch.plan.request_id)
            branch.status, branch.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            branch.latency_ms = (time.monotonic() - started) * 1000
            branch.larger = branch.plan.decision.tier == common_pb2.TIER_LLM
            span.set_attribute("gearshift.branch.status", branch.status)
            span.set_attribute("gearshift.branch.route", branch.plan.decision.route)
            if branch.error:
                span.set_attribute("gearshift.branch.error", branch.error)


def not_enough(plan: MultiPlan) -> GearshiftError:
    """The error for a plan whose answers fell short of `min_successful`, naming why."""
    ok = sum(b.ok for b in plan.branches)
    failed = [b for b in plan.branches if not b.ok]
    names = "; ".join(f"{b.name} {b.status} ({b.error})" for b in failed)
    message = (
        f"only {ok} of {len(plan.branches)} branches answered and min_successful is "
        f"{plan.policy.min_successful}: {names or 'no branch fits the question'}"
    )
    error: GearshiftError
    if plan.base.remaining() <= 0:
        error = DeadlineExceeded(message)
    else:
        error = Unavailable(message, reason="MIN_SUCCESSFUL_NOT_REACHED")
    error.metadata["failed_branches"] = ",".join(b.name for b in failed)
    return error
