"""API calls per route with many routes: an operator restart and one route edit.

50 routes by default (GEARSHIFT_TEST_ROUTES to change it): with 150 or 500, the
in-process kmock emulator (which scans every stored object per request) falls behind
during the first start on two cores and requests time out; the figures asserted here do
not depend on the number of routes (a restart makes no call per route).

The operator reads routes, children and pods from its watch caches (kopf indices), so a
restart costs kopf's lists and watches plus nothing per unchanged route, and an edit
costs the writes of that one route, not a read of every route. The emulator counts every
request it serves (`ApiServer.calls`); docs/operator.md ("API calls per route") states
the figures this test measures.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from pathlib import Path
from typing import Any

import pytest
from kopf.testing import KopfRunner

from tests.operator.apiserver import ApiServer
from tests.operator.test_operator import (
    DEPLOYMENTS,
    NS,
    ROUTES,
    _eventually,
    _example,
    _send,
    _stop,
)

pytestmark = pytest.mark.timeout(600)
ROUTE_COUNT = int(os.environ.get("GEARSHIFT_TEST_ROUTES", "50"))


def _route(i: int) -> dict[str, Any]:
    route = _example("small")
    name = f"route-{i:03d}"
    route["metadata"]["name"] = name
    route["spec"]["model"]["servedName"] = name
    route["spec"].pop("autoscaling")
    route["spec"]["routing"].pop("fallback")
    route["spec"]["replicas"] = {"min": 1, "max": 4, "desired": 1}
    return route


async def _list(api: ApiServer, path: str) -> list[dict[str, Any]]:
    async with api.get(path) as resp:
        items: list[dict[str, Any]] = (await resp.json())["items"]
        return items


async def _converged(api: ApiServer) -> bool:
    routes = await _list(api, ROUTES)
    deployments = await _list(api, DEPLOYMENTS)
    done = [
        r
        for r in routes
        if (r.get("status") or {}).get("observedGeneration") == r["metadata"]["generation"]
        and "gearshift.dev/last-handled-configuration" in r["metadata"].get("annotations", {})
    ]
    return len(done) == len(deployments) == ROUTE_COUNT


async def _quiet(api: ApiServer, for_s: float = 1.5) -> None:
    """Until no request has been served for `for_s` (watches stay open: not counted)."""
    last, since = -1, time.monotonic()
    while time.monotonic() - since < for_s:
        total = sum(n for (kind, _p, _s), n in api.calls.items() if kind != "WATCH")
        if total != last:
            last, since = total, time.monotonic()
        await asyncio.sleep(0.1)


def _table(calls: collections.Counter[tuple[str, str, str]]) -> dict[str, int]:
    return {f"{m} {p}{'/' + s if s else ''}": n for (m, p, s), n in sorted(calls.items())}


async def _post(api: ApiServer, path: str, body: Any) -> dict[str, Any]:
    async with api.request("POST", path, json=body) as resp:
        assert resp.status < 300, await resp.text()
        created: dict[str, Any] = await resp.json()
        return created


async def _seed(api: ApiServer) -> None:
    """The routes and their children as the operator creates them (no operator run: a
    first start of kopf creating them all would take much longer)."""
    import kopf

    from gearshift.routes.model_route import ModelRoute
    from gearshift_operator import apply, children, handlers
    from gearshift_operator.kube import path_for

    for i in range(ROUTE_COUNT):
        route = await _post(api, ROUTES, _route(i))
        for child in children.build_children(ModelRoute.model_validate(route), handlers.SETTINGS):
            kopf.adopt(child, owner=route)
            collection = path_for(child["apiVersion"], child["kind"], NS)
            await _post(api, collection, apply.for_create(child))


async def _until(check: Any, what: str, limit_s: float = 300.0) -> None:
    """Polls once a second: listing 500 routes more often would load the emulator."""
    deadline = time.monotonic() + limit_s
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(1.0)


def _quiet_runner() -> KopfRunner:
    """kopf without --verbose: debug logs of 500 bodies would dominate the run."""
    return KopfRunner(
        ["run", "--standalone", "-A", "-m", "gearshift_operator.handlers"], timeout=60
    )


async def test_api_calls_per_route_for_a_restart_and_one_edit(
    apiserver: ApiServer, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gearshift_operator import metrics

    started = time.monotonic()
    await _seed(apiserver)
    # The operator's first start over them: kopf's annotations and each route's status.
    runner = _quiet_runner()
    await asyncio.to_thread(runner.__enter__)
    try:
        await _until(lambda: _converged(apiserver), "every route reported")
        await _quiet(apiserver)
    finally:
        await _stop(runner)
    seeded_s = time.monotonic() - started
    first = collections.Counter(apiserver.calls)
    # A first start writes each route's status about once, not once per child event that
    # reconciles before the watch cache holds the last write (about 4.3 per route before).
    assert first[("PATCH", "modelroutes", "status")] <= 2 * ROUTE_COUNT, _table(first)

    # An operator restart: every route is resumed and found unchanged.
    apiserver.calls.clear()
    started = time.monotonic()
    runner = _quiet_runner()
    await asyncio.to_thread(runner.__enter__)
    try:
        runs = metrics.ROUTE_RUNS.count

        async def resumed() -> bool:
            return metrics.ROUTE_RUNS.count - runs >= ROUTE_COUNT

        await _until(resumed, "every route resumed")
        await _quiet(apiserver)
        restart_s = time.monotonic() - started
        restart = collections.Counter(apiserver.calls)

        # One route edit: its Deployment rolls; nothing else is read or written.
        apiserver.calls.clear()
        patch = {"spec": {"lifecycle": {"drainSeconds": 45}}}
        await _send(apiserver, "PATCH", f"{ROUTES}/route-007", patch)

        polls = 0

        async def rolled() -> bool:
            nonlocal polls
            polls += 1
            async with apiserver.get(f"{DEPLOYMENTS}/route-007") as resp:
                dep = await resp.json()
            env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
            return {"name": "GEARSHIFT_SLM_GRACE_PERIOD_S", "value": "45"} in env

        await _eventually(rolled, "edited route rolled")
        await _quiet(apiserver)
        edit = collections.Counter(apiserver.calls)
        edit[("PATCH", "modelroutes", "")] -= 1  # the test's own edit...
        edit[("GET", "deployments", "")] -= polls  # ...and its reads
    finally:
        await _stop(runner)

    per_route = {k: round(v / ROUTE_COUNT, 3) for k, v in _table(restart).items()}
    with capsys.disabled():
        print(f"\nseeding + first start, {ROUTE_COUNT} routes: {seeded_s:.1f} s")
        print(f"first start calls: {_table(first)}")
        print(f"restart: {restart_s:.1f} s; calls: {_table(restart)}")
        print(f"restart calls per route: {per_route}")
        print(f"one edit: {_table(+edit)}")

    # The restart: kopf's own list+watch per resource, and no read of a child or a route
    # per route, no write to an unchanged child, no status write for an unchanged status.
    reads = {k: n for k, n in restart.items() if k[0] == "GET"}
    child_writes = {
        k: n
        for k, n in restart.items()
        if k[0] in ("POST", "PUT", "PATCH", "DELETE")
        and k[1] in ("deployments", "services", "poddisruptionbudgets", "configmaps")
    }
    assert sum(reads.values()) <= 30, reads  # kopf's lists and discovery, not per route
    assert not child_writes, child_writes
    route_writes = sum(n for (m, p, _s), n in restart.items() if p == "modelroutes" and m != "GET")
    assert route_writes <= ROUTE_COUNT * 0.02, _table(restart)  # no write per route
    # One edit: independent of the number of routes.
    assert sum((+edit).values()) <= 12, _table(+edit)
    assert edit[("PUT", "deployments", "")] == 1, _table(+edit)
