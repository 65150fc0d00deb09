"""Per-object periodic work (the autoscaler, DataSource counts) without finalizers.

kopf's timers make kopf put its finalizer on every object a timer runs for, so that it
can stop the timer before the object goes. With the operator uninstalled (or scaled to
zero) nobody removes that finalizer: deleting the route, and so its whole namespace,
hangs until someone strips it by hand. These tasks are started and stopped from watch
events instead (event handlers need no finalizer): a task runs while its object exists
and asks for it, and ends when a DELETED event (or the object's absence) says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

log = logging.getLogger("gearshift.operator.periodic")

Tick = Callable[[str, str], Awaitable[bool]]


class Periodic:
    """One asyncio task per (namespace, name); `tick` returns False to end its task."""

    def __init__(self, what: str, interval_s: float, tick: Tick) -> None:
        self.what = what
        self.interval_s = interval_s
        self.tick = tick
        self.tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    def follow(self, event: Mapping[str, Any], wanted: bool) -> None:
        """Starts or stops the object's task from one watch event."""
        obj = event.get("object") or {}
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        if not key[1]:
            return
        gone = event.get("type") == "DELETED" or bool(meta.get("deletionTimestamp"))
        if gone or not wanted:
            self.cancel(key)
        elif key not in self.tasks or self.tasks[key].done():
            self.tasks[key] = asyncio.create_task(self._run(*key), name=f"{self.what} {key}")

    def cancel(self, key: tuple[str, str]) -> None:
        task = self.tasks.pop(key, None)
        if task is not None:
            task.cancel()

    async def _run(self, namespace: str, name: str) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                if not await self.tick(namespace, name):
                    break
            except asyncio.CancelledError:
                raise
            except Exception:  # the next tick tries again; a failure never ends the loop
                log.exception("%s %s/%s failed", self.what, namespace, name)
        self.tasks.pop((namespace, name), None)

    async def stop(self) -> None:
        tasks, self.tasks = list(self.tasks.values()), {}
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
