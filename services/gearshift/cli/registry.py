"""Which services `gearshift serve` knows, and where each one lives.

Each service module exports `Settings` (a `ServiceSettings` subclass) and
`build_app(settings) -> ServiceApp`. Modules are imported lazily so that, for
example, the router image never imports vLLM.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class ServiceEntry:
    name: str
    module: str
    summary: str


SERVICES: dict[str, ServiceEntry] = {
    entry.name: entry
    for entry in (
        ServiceEntry("router", "gearshift.router.app", "front door: auth, cache, routing"),
        ServiceEntry("cache", "gearshift.cache.app", "semantic cache"),
        ServiceEntry("slm", "gearshift.slm.app", "small model on vLLM"),
        ServiceEntry("proxy", "gearshift.proxy.app", "LLM proxy to OpenAI-compatible upstreams"),
        ServiceEntry("retriever", "gearshift.retriever.app", "document sources: hybrid search"),
    )
}


class ServiceNotAvailable(RuntimeError):
    """The service's module is missing (not built yet, or its extra not installed)."""


def load_service(name: str) -> ModuleType:
    entry = SERVICES.get(name)
    if entry is None:
        raise ServiceNotAvailable(f"unknown service {name!r}; choose one of {', '.join(SERVICES)}")
    try:
        return importlib.import_module(entry.module)
    except ModuleNotFoundError as exc:
        if exc.name and (entry.module.startswith(exc.name) or exc.name == entry.module):
            raise ServiceNotAvailable(f"service {name!r} is not available in this build") from exc
        raise ServiceNotAvailable(
            f"service {name!r} needs the Python package {exc.name!r}; install the matching extra"
        ) from exc


def available_services() -> list[str]:
    """Services whose module can be found (without importing heavy dependencies)."""
    out = []
    for name, entry in SERVICES.items():
        if importlib.util.find_spec(entry.module.rsplit(".", 1)[0]) is not None:
            out.append(name)
    return out
