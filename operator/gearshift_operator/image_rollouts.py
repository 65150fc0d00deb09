"""Image upgrades roll a few routes at a time, not every model server at once.

A chart upgrade that bumps the image changes every route's pod template together; without
pacing every Deployment would roll at once: every model reloads its weights at the same
time (minutes of reduced capacity everywhere) and, with `maxSurge: 1`, every route asks
for a spare set of GPUs together. Here a route whose Deployment differs from what the
operator would build *only by the image* moves to the new image when fewer than
`image_rollout_concurrency` other rollouts are under way; otherwise it keeps its current
image and its handler retries later. Any other change (the route's spec, the operator's
other settings) rolls as before, and holds a slot while it rolls.

The slots are read from the live Deployments, not kept in memory: a slot is held by every
operator-made Deployment whose rollout is not complete, so a restarted operator (or a new
leader) sees the same rollouts under way as the one before it. Only the moment between
granting a slot and the Deployment showing its new image is bridged in memory (a claim).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

Manifest = dict[str, Any]


def container_image(deployment: Manifest) -> str:
    """The model server's image (the first container's)."""
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return str(containers[0].get("image", ""))


def template_hash(deployment: Manifest) -> str:
    annotations = deployment["spec"]["template"].get("metadata", {}).get("annotations") or {}
    return str(annotations.get("gearshift.dev/template-hash", ""))


def rolling(live: Manifest) -> bool:
    """The Deployment controller is still replacing pods: a rollout that holds a slot.

    Pods on an older template remain, or the controller has not seen the last change. A
    rollout past its progress deadline (`ProgressDeadlineExceeded`, e.g. no GPUs free)
    stops holding others back. Pods that are merely not ready yet (a scale-up) do not count.
    """
    spec, status = live.get("spec") or {}, live.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return False
    if int(status.get("observedGeneration", 0)) < int(live["metadata"].get("generation", 1)):
        return True
    updated = int(status.get("updatedReplicas", 0))
    return updated < int(spec.get("replicas", 1)) or int(status.get("replicas", 0)) > updated


def route_key(live: Manifest) -> str:
    meta = live.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


class ImageRollouts:
    """Grants image-rollout slots from the live Deployments (plus claims not yet visible)."""

    def __init__(self, concurrency: int, claim_ttl_s: float = 60.0) -> None:
        self.concurrency = concurrency
        self.claim_ttl_s = claim_ttl_s  # a claim whose patch never landed stops holding
        self.claims: dict[str, float] = {}
        self.lock = asyncio.Lock()

    def landed(self, key: str) -> None:
        """The route's Deployment shows its new image: from now on it holds its slot itself."""
        self.claims.pop(key, None)

    def may_start(self, key: str, deployments: list[Manifest], now: float | None = None) -> bool:
        """Claims a slot for `key` (idempotent); False when rollouts fill every slot.

        `deployments` are the operator's live Deployments; call under `lock`, so two routes
        cannot both see the last free slot.
        """
        now = time.monotonic() if now is None else now
        for other, claimed in list(self.claims.items()):
            if now - claimed > self.claim_ttl_s:
                del self.claims[other]
        if key in self.claims or self.concurrency <= 0:
            return True
        busy = {route_key(d) for d in deployments if rolling(d)} | set(self.claims)
        busy.discard(key)
        if len(busy) >= self.concurrency:
            return False
        self.claims[key] = now
        return True
