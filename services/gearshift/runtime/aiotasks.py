"""Stopping a background task so that shutdown cannot hang on it.

One `task.cancel()` can be lost. On Python 3.11, `asyncio.wait_for` swallows a cancellation
that arrives as the awaited thing completes, and a loop that catches `Exception` around a
gRPC call can see a cancelled call as an error to log and carry on from. Either way the
task runs on and `await task` after one cancel waits forever: a router's stop hung like
this in a test session's teardown on a busy machine. So the task is cancelled again until
it ends, within a bound.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 5.0
RETRY_S = 0.1


async def cancel_and_wait(
    task: asyncio.Task[Any] | None, timeout_s: float = STOP_TIMEOUT_S
) -> None:
    """Cancels `task` (again, if a cancel was lost) until it ends, for up to `timeout_s`.

    An exception the task ended with (other than its cancellation) is raised here, as
    `await task` would; a task still running after `timeout_s` is left with a warning.
    """
    if task is None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not task.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            log.warning("background task %s did not stop within %.1f s", task.get_name(), timeout_s)
            return
        task.cancel()
        await asyncio.wait({task}, timeout=min(RETRY_S, remaining))
    if not task.cancelled():
        task.result()
