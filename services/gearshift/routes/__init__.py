"""The `ModelRoute` resource as Python objects, shared by the router and the operator."""

from gearshift.routes.model_route import (
    Autoscaling,
    Condition,
    DifficultyBand,
    Engine,
    ModelRef,
    ModelRoute,
    ModelRouteSpec,
    ModelRouteStatus,
    Replicas,
    Resources,
    Routing,
    SecretKeyRef,
    Upstream,
    load_routes,
    load_routes_file,
)

__all__ = [
    "Autoscaling",
    "Condition",
    "DifficultyBand",
    "Engine",
    "ModelRef",
    "ModelRoute",
    "ModelRouteSpec",
    "ModelRouteStatus",
    "Replicas",
    "Resources",
    "Routing",
    "SecretKeyRef",
    "Upstream",
    "load_routes",
    "load_routes_file",
]
