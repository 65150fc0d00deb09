"""The event loop every service runs on: uvloop, where it is installed.

grpc.aio and aiohttp both run on uvloop; its loop and transports are written in C, and
on the front door's hot path (one HTTP request in, one gRPC call out) it took about a
third off the CPU time per request that the default loop cost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on a uvloop loop (the default loop when uvloop is missing)."""
    try:
        import uvloop
    except ImportError:  # e.g. Windows: uvloop has no build there
        return asyncio.run(main)
    return uvloop.run(main)
