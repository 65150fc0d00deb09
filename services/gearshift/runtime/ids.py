"""Request ids: unique across processes and replicas, cheap to make.

A random 64-bit prefix drawn once per process and a counter (32 hex digits, like a
uuid4's hex), instead of a `uuid4()` per request, which reads the OS random source on
every call.
"""

from __future__ import annotations

import itertools
import os

_PREFIX = os.urandom(8).hex()
_counter = itertools.count(1)


def new_request_id() -> str:
    """32 hex digits: this process's random prefix, then a per-process sequence number."""
    return f"{_PREFIX}{next(_counter) & 0xFFFF_FFFF_FFFF_FFFF:016x}"
