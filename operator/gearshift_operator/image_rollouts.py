"""Image upgrades roll a few routes at a time, not every model server at once.

A chart upgrade that bumps the image changes every route's pod template together; without
pacing every Deployment would roll at once: every model reloads its weights at the same
time (minutes of reduced capacity everywhere) and, with `maxSurge: 1`, every route asks
for a spare set of GPUs together. Here a route whose Deployment differs from what the
operator would build *only by the image* moves to the new image when fewer than
`image_rollout_concurrency` such rollouts are running in this operator; otherwise it keeps
its current image and its handler retries later. Any other change (the route's spec, the
operator's other settings) rolls as before.
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


def rollout_complete(live: Manifest) -> bool:
    """The Deployment controller has rolled every replica to the current template."""
    spec, status = live.get("spec") or {}, live.get("status") or {}
    replicas = int(spec.get("replicas", 1))
    if int(status.get("observedGeneration", 0)) < int(live["metadata"].get("generation", 1)):
        return False
    return replicas == 0 or (
        int(status.get("updatedReplicas", 0)) >= replicas
        and int(status.get("availableReplicas", 0)) >= replicas
    )


class ImageRollouts:
    """The image rollouts this operator has started and not yet seen finish."""

    def __init__(self, concurrency: int, deadline_s: float = 1800.0) -> None:
        self.concurrency = concurrency
        self.deadline_s = deadline_s  # a rollout stuck longer (no GPUs) stops holding others
        self.running: dict[str, float] = {}
        self.lock = asyncio.Lock()

    def finished(self, key: str) -> None:
        self.running.pop(key, None)

    def may_start(self, key: str, now: float | None = None) -> bool:
        """Claims a slot for `key` (idempotent); False when all slots are taken."""
        now = time.monotonic() if now is None else now
        for other, started in list(self.running.items()):
            if now - started > self.deadline_s:
                del self.running[other]
        if key in self.running:
            return True
        if self.concurrency > 0 and len(self.running) >= self.concurrency:
            return False
        self.running[key] = now
        return True
