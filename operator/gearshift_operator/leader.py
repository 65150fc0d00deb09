"""Leader election on a `coordination.k8s.io/v1` Lease, the way client-go's leaderelection does.

Only the holder of the Lease runs kopf (handlers, timers, the autoscaler); every other
replica waits in `acquire()` and touches nothing but the Lease. The algorithm follows
client-go (`tools/leaderelection`), so its timings mean what Kubernetes users expect:

- a candidate takes the Lease when it is free, when it holds it already (its own pod
  restarted), or when the holder has not changed the record for `lease_duration_s`,
  measured on the candidate's own clock from when *it* last saw the record change (never
  from `renewTime`, so clock skew between nodes does not matter);
- every write is an update conditioned on the `resourceVersion` that was read: when two
  candidates race, the API server answers one of them 409 and that one stays a standby;
- the leader renews every `retry_period_s`; when it cannot renew within `renew_deadline_s`
  of its last renewal (or finds another holder) it has lost the lead and must stop acting
  at once. `renew_deadline_s < lease_duration_s`, so it stops before anyone else may start;
- on a clean stop the leader releases the Lease (empty holder, 1 s duration), so a standby
  takes over after one retry period instead of a whole lease duration.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from gearshift_operator.kube import KubeClient, KubeError, path_for

LOG = logging.getLogger("gearshift.operator.leader")
JITTER = 0.2  # retries wait retry_period_s * (1 + up to JITTER), so candidates do not align


@dataclass(frozen=True)
class LeaseConfig:
    """Where the Lease lives, who we are, and the election's timings (seconds)."""

    name: str
    namespace: str
    identity: str
    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0

    def __post_init__(self) -> None:
        if not self.name or not self.namespace or not self.identity:
            raise ValueError("leader election needs a lease name, a namespace and an identity")
        if not self.lease_duration_s > self.renew_deadline_s:
            raise ValueError("lease duration must be greater than the renew deadline")
        if not self.renew_deadline_s > (1 + JITTER) * self.retry_period_s:
            raise ValueError(f"renew deadline must be greater than {1 + JITTER} x the retry period")


def micro_time(at: float) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds, UTC)."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Acquires, renews and releases one Lease through the operator's own API client."""

    def __init__(
        self,
        config: LeaseConfig,
        api: KubeClient,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.api = api
        self.clock = clock
        self.path = path_for("coordination.k8s.io/v1", "Lease", config.namespace, config.name)
        self._observed: dict[str, Any] | None = None  # the last Lease spec we saw
        self._observed_at = 0.0  # our clock when that spec last changed
        self._renewed_at = 0.0  # our clock at our last successful write
        self.holder = ""  # who holds the Lease, as last seen

    @property
    def is_leader(self) -> bool:
        return self.holder == self.config.identity

    async def try_acquire_or_renew(self) -> bool:
        """One attempt (client-go's tryAcquireOrRenew); True when we hold the Lease now."""
        now, wall = self.clock(), time.time()
        identity = self.config.identity
        live = await self.api.get(self.path)
        if live is None:
            spec = self._spec(wall, acquire=wall, transitions=0)
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.config.name, "namespace": self.config.namespace},
                "spec": spec,
            }
            try:
                await self.api.create(self.path.rsplit("/", 1)[0], body)
            except KubeError as err:
                if err.status == 409:  # another candidate created it first
                    return False
                raise
            self._saw(spec, now)
            self._renewed_at = now
            return True
        spec = live.get("spec") or {}
        if spec != self._observed:
            self._saw(spec, now)
        holder = str(spec.get("holderIdentity") or "")
        duration = float(spec.get("leaseDurationSeconds") or self.config.lease_duration_s)
        if holder and holder != identity and now < self._observed_at + duration:
            return False  # held by a live leader
        if holder == identity:
            acquire = spec.get("acquireTime") or micro_time(wall)
            transitions = int(spec.get("leaseTransitions") or 0)
        else:
            acquire, transitions = micro_time(wall), int(spec.get("leaseTransitions") or 0) + 1
        new_spec = self._spec(wall, acquire=acquire, transitions=transitions)
        body = {**live, "spec": new_spec}
        try:
            await self.api.replace(self.path, body)  # conditioned on live's resourceVersion
        except KubeError as err:
            if err.status == 409:  # someone wrote the Lease after we read it
                return False
            raise
        if holder != identity:
            LOG.info("acquired lease %s (was %s)", self.path, holder or "free")
        self._saw(new_spec, now)
        self._renewed_at = now
        return True

    async def acquire(self) -> None:
        """Waits (as a standby: reads of the Lease only) until this candidate holds it."""
        while True:
            if await self._attempt(self.config.retry_period_s):
                return
            await asyncio.sleep(self._retry_wait())

    async def hold(self) -> None:
        """Renews until it cannot; returns when the lead is lost (the caller stops at once)."""
        while True:
            await asyncio.sleep(self._retry_wait())
            deadline = self._renewed_at + self.config.renew_deadline_s
            while True:
                left = deadline - self.clock()
                if left <= 0:
                    LOG.error("could not renew lease %s within the deadline", self.path)
                    return
                if await self._attempt(left):
                    break
                if self.holder and not self.is_leader:
                    LOG.error("lease %s is now held by %s", self.path, self.holder)
                    return
                await asyncio.sleep(min(self.config.retry_period_s, max(0.0, left)))

    async def release(self) -> None:
        """Frees the Lease if we hold it, so a standby need not wait out its duration."""
        try:
            live = await asyncio.wait_for(self.api.get(self.path), self.config.retry_period_s)
            spec = (live or {}).get("spec") or {}
            if live is None or spec.get("holderIdentity") != self.config.identity:
                return
            wall = time.time()
            freed = {
                **spec,
                "holderIdentity": "",
                "leaseDurationSeconds": 1,
                "renewTime": micro_time(wall),
                "acquireTime": micro_time(wall),
            }
            await asyncio.wait_for(
                self.api.replace(self.path, {**live, "spec": freed}), self.config.retry_period_s
            )
            self.holder = ""
            LOG.info("released lease %s", self.path)
        except (KubeError, httpx.HTTPError, TimeoutError) as err:
            LOG.warning("could not release lease %s: %r", self.path, err)

    async def _attempt(self, timeout_s: float) -> bool:
        """One bounded attempt; an API error or a timeout counts as not holding the Lease."""
        try:
            return await asyncio.wait_for(self.try_acquire_or_renew(), timeout_s)
        except (KubeError, httpx.HTTPError, TimeoutError) as err:
            LOG.warning("lease %s: %r", self.path, err)
            return False

    def _saw(self, spec: dict[str, Any], now: float) -> None:
        self._observed, self._observed_at = spec, now
        self.holder = str(spec.get("holderIdentity") or "")

    def _spec(self, wall: float, acquire: str | float, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.config.identity,
            "leaseDurationSeconds": max(1, round(self.config.lease_duration_s)),
            "acquireTime": acquire if isinstance(acquire, str) else micro_time(acquire),
            "renewTime": micro_time(wall),
            "leaseTransitions": transitions,
        }

    def _retry_wait(self) -> float:
        return self.config.retry_period_s * (1 + random.uniform(0, JITTER))
