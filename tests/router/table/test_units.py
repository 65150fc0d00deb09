"""Fast checks of the routing table's pure parts: replica choice, the local routes."""

from __future__ import annotations

from gearshift.router.table.backends import BackendPool
from gearshift.router.table.routing_table import Route, RoutingTable, routes_from_objects
from gearshift.routes import ModelRoute
from gearshift.routes.local import local_default_routes


def test_least_loaded_replica() -> None:
    table = RoutingTable(BackendPool())
    route = Route("r", "slm", "m", ("a:1", "b:1", "c:1"))
    table.state("a:1").load = 5
    table.state("b:1").load = 1
    table.state("c:1").healthy = False
    assert table.pick_endpoint(route) == "b:1"
    with table.lease("b:1"), table.lease("b:1"), table.lease("b:1"), table.lease("b:1"):
        table.state("b:1").load = 2
        assert table.pick_endpoint(route) == "a:1"


def test_local_default_routes_are_valid_model_routes() -> None:
    docs = local_default_routes("127.0.0.1:1", "small", "127.0.0.1:2", "large")
    routes = routes_from_objects(ModelRoute.model_validate(d) for d in docs)
    by_tier = {r.tier: r for r in routes}
    assert by_tier["slm"].endpoints == ("127.0.0.1:1",) and by_tier["slm"].model == "small"
    assert by_tier["slm"].fallback == by_tier["llm"].name
    assert by_tier["llm"].max_share == 0.3
