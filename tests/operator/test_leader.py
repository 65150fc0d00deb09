# ruff: noqa: ASYNC109
"""One leader: the Lease election (leader.py) against the emulator, then two real operator
processes (`python -m gearshift_operator`): the standby writes nothing while the leader
lives, takes over within the Lease's duration when the leader dies, and a leader that
cannot renew stops itself."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gearshift_operator import leader
from gearshift_operator.kube import KubeClient, KubeError
from tests.operator.apiserver import ApiServer
from tests.operator.test_operator import (
    DEPLOYMENTS,
    NS,
    ROUTES,
    _eventually,
    _example,
    _free_port,
    _get,
    _send,
)

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).parents[2]
LEASE = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/gearshift-operator"
# Short timings so the test is quick; the same ratios as client-go's defaults (15/10/2).
DURATION, RENEW, RETRY = 4, 2.5, 0.5


def _config(identity: str) -> leader.LeaseConfig:
    return leader.LeaseConfig(
        name="gearshift-operator",
        namespace=NS,
        identity=identity,
        lease_duration_s=DURATION,
        renew_deadline_s=RENEW,
        retry_period_s=RETRY,
    )


async def _lease(api: ApiServer) -> dict[str, Any]:
    lease = await _get(api, LEASE)
    assert lease is not None
    return lease


async def test_one_candidate_holds_the_lease_and_stale_writes_conflict(
    apiserver: ApiServer, kubeconfig: Path
) -> None:
    a_api, b_api = KubeClient(timeout_s=2), KubeClient(timeout_s=2)
    a = leader.LeaderElector(_config("operator-a"), a_api)
    b = leader.LeaderElector(_config("operator-b"), b_api)
    try:
        assert await a.try_acquire_or_renew() and a.is_leader
        assert not await b.try_acquire_or_renew()  # held, and renewed just now
        assert b.holder == "operator-a"
        lease = await _lease(apiserver)
        spec = lease["spec"]
        assert spec["holderIdentity"] == "operator-a"
        assert spec["leaseDurationSeconds"] == DURATION and spec["leaseTransitions"] == 0
        assert spec["acquireTime"] and spec["renewTime"]

        # A write based on a Lease that changed since it was read is refused (409).
        stale = lease
        assert await a.try_acquire_or_renew()
        stolen = {**stale, "spec": {**stale["spec"], "holderIdentity": "operator-b"}}
        with pytest.raises(KubeError) as err:
            await b_api.replace(LEASE, stolen)
        assert err.value.status == 409
        assert (await _lease(apiserver))["spec"]["holderIdentity"] == "operator-a"
        # Two candidates creating a missing Lease: the second one gets 409, not the lead.
        with pytest.raises(KubeError) as err:
            await b_api.create(LEASE.rsplit("/", 1)[0], {"metadata": lease["metadata"]})
        assert err.value.status == 409

        # Renewals keep the acquire time; a standby takes over only after it saw no renewal
        # for the lease duration, and counts the transition.
        first_acquired = spec["acquireTime"]
        assert (await _lease(apiserver))["spec"]["acquireTime"] == first_acquired
        started = time.monotonic()
        await asyncio.wait_for(b.acquire(), DURATION + 2 * RETRY + 1)
        waited = time.monotonic() - started
        # Never before the lease ran out; the upper bound leaves a busy machine room.
        assert DURATION - RETRY <= waited <= DURATION + 4 * RETRY, waited
        spec = (await _lease(apiserver))["spec"]
        assert spec["holderIdentity"] == "operator-b" and spec["leaseTransitions"] == 1

        # The old leader finds another holder when it tries again, and its renewal loop
        # (its deadline long past) ends at its first check: it has lost the lead.
        assert not await a.try_acquire_or_renew() and a.holder == "operator-b"
        await asyncio.wait_for(a.hold(), 2 * RETRY)

        # A released Lease is free at once (no lease duration to wait out).
        await b.release()
        assert (await _lease(apiserver))["spec"]["holderIdentity"] == ""
        assert await a.try_acquire_or_renew() and a.is_leader
    finally:
        await a_api.aclose()
        await b_api.aclose()


async def test_a_leader_that_cannot_renew_gives_up_before_the_lease_runs_out(
    apiserver: ApiServer, kubeconfig: Path
) -> None:
    api = KubeClient(timeout_s=2)
    elector = leader.LeaderElector(_config("operator-a"), api)
    try:
        await elector.acquire()
        apiserver.deny("leases", 500, "etcd unavailable")
        started = time.monotonic()
        await asyncio.wait_for(elector.hold(), DURATION)
        # Gone within the renew deadline of its last renewal (at most one retry before):
        # before any standby could take the Lease (lease duration after that renewal).
        assert time.monotonic() - started < DURATION
    finally:
        apiserver.allow("leases")
        await api.aclose()


def test_timings_that_would_let_two_leaders_overlap_are_refused() -> None:
    with pytest.raises(ValueError, match="renew deadline"):
        leader.LeaseConfig(
            name="l", namespace="n", identity="i", lease_duration_s=10, renew_deadline_s=10
        )
    from gearshift_operator.settings import Settings

    with pytest.raises(ValueError, match="lease_duration_seconds > renew_deadline_seconds"):
        Settings(lease_duration_seconds=5, renew_deadline_seconds=8)


# --- two operator processes -------------------------------------------------------------


def _kubeconfig(api: ApiServer, path: Path, token: str) -> Path:
    """Each process gets its own token, so the emulator can tell whose request it served."""
    server = str(api.url).rstrip("/")
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": server}}],
                "users": [{"name": "kmock", "user": {"token": token}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
                "current-context": "kmock",
            }
        )
    )
    return path


class Operator:
    """`python -m gearshift_operator` in its own process, as a pod would run it."""

    def __init__(self, api: ApiServer, tmp: Path, name: str) -> None:
        self.name = name
        self.token = f"token-{name}"
        self.liveness = f"http://127.0.0.1:{_free_port()}/healthz"
        self.log = tmp / f"{name}.log"
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("services", "operator", ".")),
            "KUBECONFIG": str(_kubeconfig(api, tmp / f"{name}.kubeconfig", self.token)),
            "GEARSHIFT_OPERATOR_POD_NAME": name,
            "GEARSHIFT_OPERATOR_LEASE_NAMESPACE": NS,
            "GEARSHIFT_OPERATOR_LEASE_DURATION_SECONDS": str(DURATION),
            "GEARSHIFT_OPERATOR_RENEW_DEADLINE_SECONDS": str(RENEW),
            "GEARSHIFT_OPERATOR_RETRY_PERIOD_SECONDS": str(RETRY),
            "GEARSHIFT_OPERATOR_LIVENESS_ENDPOINT": self.liveness,
            "GEARSHIFT_OPERATOR_OPERATOR_METRICS_PORT": "-1",
            "GEARSHIFT_OPERATOR_AUTOSCALE_INTERVAL_S": "1",
        }
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("wb") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gearshift_operator", env=self.env, stdout=out, stderr=out
            )

    async def exit_code(self, timeout: float) -> int:
        assert self.process is not None
        code = await asyncio.wait_for(self.process.wait(), timeout)
        return code

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def requests(self, api: ApiServer) -> list[Any]:
        mine = f"Bearer {self.token}"
        return [
            r
            for r in api.served()
            if {k.lower(): v for k, v in r.headers.items()}.get("authorization") == mine
        ]


WRITES = {"POST", "PUT", "PATCH", "DELETE"}


async def _holder(api: ApiServer) -> str:
    lease = await _get(api, LEASE)
    return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")


async def _probe(url: str) -> dict[str, Any] | None:
    """The liveness endpoint's answer; None while nothing listens yet."""
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            response = await http.get(url)
    except httpx.TransportError:
        return None
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data


async def test_two_operator_processes_one_acts_the_other_waits_and_takes_over(
    apiserver: ApiServer, tmp_path: Path
) -> None:
    a, b = Operator(apiserver, tmp_path, "operator-a"), Operator(apiserver, tmp_path, "operator-b")
    try:
        await a.start()
        await _eventually(lambda: _holder(apiserver), "operator-a leading", timeout=60)
        assert await _holder(apiserver) == "operator-a"
        await b.start()
        await _eventually(lambda: _probe(b.liveness), "the standby's liveness probe", timeout=60)
        assert (await _probe(b.liveness) or {}).get("standby") is True

        # The leader does the work: a route becomes a Deployment; the operator's writes.
        await _send(apiserver, "POST", ROUTES, _example("small"))
        await _eventually(lambda: _get(apiserver, f"{DEPLOYMENTS}/smollm2-small"), "deployment")
        await asyncio.sleep(2 * DURATION)  # the standby polls the Lease all this while
        assert any(r.method.value in WRITES for r in a.requests(apiserver))
        standby = b.requests(apiserver)
        assert standby, b.output()  # it is alive and polling...
        # ...and reads nothing but the Lease: no watch, no handler, no autoscaler, no write.
        assert {(r.method.value, r.url.path) for r in standby} == {("GET", LEASE)}, b.output()
        assert len(standby) >= DURATION / RETRY, len(standby)

        # The leader dies (no release): the standby takes over within the Lease's duration
        # (plus one jittered retry), counts the transition, and acts.
        assert a.process is not None
        a.process.send_signal(signal.SIGKILL)
        await a.exit_code(10)
        killed = time.monotonic()

        async def b_leads() -> bool:
            return await _holder(apiserver) == "operator-b"

        await _eventually(b_leads, "operator-b taking over", timeout=3 * DURATION)
        takeover = time.monotonic() - killed
        # The lease duration plus a poll or two (measured 4.1-4.6 s); the rest is room for a
        # loaded CI machine, where both processes compete with the other tests.
        assert takeover <= DURATION + 4 * RETRY, takeover
        lease = await _lease(apiserver)
        assert lease["spec"]["leaseTransitions"] == 1
        print(f"takeover {takeover:.2f} s after the kill (lease duration {DURATION} s)")

        # The new leader reconciles: a hand-deleted Deployment comes back.
        await _send(apiserver, "DELETE", f"{DEPLOYMENTS}/smollm2-small")
        await _eventually(
            lambda: _get(apiserver, f"{DEPLOYMENTS}/smollm2-small"), "restored", timeout=60
        )
        assert any(
            r.method.value in WRITES and "deployments" in r.url.path for r in b.requests(apiserver)
        )

        # It cannot renew any more (the API server refuses): it stops, exit 1, before the
        # Lease runs out for the next standby.
        apiserver.deny("leases", 500, "etcd unavailable")
        denied = time.monotonic()
        assert await b.exit_code(RENEW + 5) == 1, b.output()
        assert time.monotonic() - denied < DURATION + 1, b.output()
        assert "lost the lease" in b.output()
    finally:
        apiserver.allow("leases")
        await a.stop()
        await b.stop()


async def test_a_stopped_leader_releases_the_lease_so_the_standby_starts_at_once(
    apiserver: ApiServer, tmp_path: Path
) -> None:
    a, b = Operator(apiserver, tmp_path, "operator-a"), Operator(apiserver, tmp_path, "operator-b")
    try:
        await a.start()
        await _eventually(lambda: _holder(apiserver), "operator-a leading", timeout=60)
        await b.start()
        await _eventually(lambda: _probe(b.liveness), "the standby's liveness probe", timeout=60)
        assert a.process is not None
        a.process.send_signal(signal.SIGTERM)  # what the kubelet sends on a rollout
        stopped = time.monotonic()
        assert await a.exit_code(30) == 0, a.output()

        async def b_leads() -> bool:
            return await _holder(apiserver) == "operator-b"

        await _eventually(b_leads, "operator-b taking over", timeout=3 * DURATION)
        # Well within a lease duration: the released Lease is free at once.
        assert time.monotonic() - stopped < DURATION, a.output()
    finally:
        await a.stop()
        await b.stop()
