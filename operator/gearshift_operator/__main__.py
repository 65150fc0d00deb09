"""`python -m gearshift_operator`: runs the operator with liveness, peering and metrics."""

from __future__ import annotations

import logging
import secrets

import kopf

from gearshift_operator import handlers


def main() -> None:
    settings = handlers.SETTINGS
    logging.basicConfig(level=settings.log_level.upper())
    kopf.run(
        clusterwide=not settings.namespace,
        namespaces=[settings.namespace] if settings.namespace else [],
        # An empty name runs standalone; with a name, replicas get distinct random
        # priorities so exactly one is active and the others wait as hot standbys
        # (kopf pauses every peer when priorities tie).
        peering_name=settings.peering_name or None,
        standalone=not settings.peering_name,
        priority=secrets.randbelow(1_000_000) + 1,
        liveness_endpoint=settings.liveness_endpoint or None,
    )


if __name__ == "__main__":
    main()
