"""How long a stopping model server may drain: long enough for its longest allowed answer.

A rollout or a scale-down sends SIGTERM to a replica that may be in the middle of a
generation. A fixed 30 s cut every answer longer than 30 s of decoding; the drain is
therefore derived from what the route allows: the longest answer (its context window in
tokens, since a one-token prompt leaves nearly all of it for the answer) at the route's
floor speed (the slowest one generation decodes under full load, declared on the route
or the operator's default), plus `drain_seconds` for queueing and prefill. The server
exits as soon as its calls are done, so a long drain costs nothing when answers are
short; it is bounded by `max_drain_seconds` so a typo cannot hold a GPU for a day.
"""

from __future__ import annotations

import math

from gearshift.routes.model_route import ModelRoute
from gearshift.slm.settings import Settings as SlmSettings
from gearshift_operator.settings import Settings

# What the model server uses when the route sets no engine.maxModelLen.
SLM_DEFAULT_CONTEXT = int(SlmSettings.model_fields["max_model_len"].default)


def longest_answer_tokens(route: ModelRoute) -> int | None:
    """The most tokens one answer on this route can have; None when nobody says."""
    engine = route.spec.engine
    declared = route.spec.capabilities.context_tokens
    if engine is not None:
        return engine.max_model_len or declared or SLM_DEFAULT_CONTEXT
    return declared  # an upstream's limit is the provider's, unless the route declares it


def floor_tokens_per_second(route: ModelRoute, settings: Settings) -> float:
    own = route.spec.lifecycle.floor_tokens_per_second
    return settings.floor_tokens_per_second if own is None else own


def drain_seconds(route: ModelRoute, settings: Settings) -> int:
    """The server's grace period: explicit `lifecycle.drainSeconds`, else derived (bounded)."""
    own = route.spec.lifecycle.drain_seconds
    if own is not None:
        return own
    tokens = longest_answer_tokens(route)
    if tokens is None:
        return settings.drain_seconds
    answer_s = math.ceil(tokens / floor_tokens_per_second(route, settings))
    base = settings.drain_seconds
    return min(answer_s + base, max(settings.max_drain_seconds, base))
