"""`gearshift scorer ...`: retrain the difficulty scorer from the deployment's outcomes."""

from __future__ import annotations

from typing import Any


def add_parser(sub: Any) -> None:
    from gearshift.learn.outcomes import retrain

    retrain.add_parser(sub)
