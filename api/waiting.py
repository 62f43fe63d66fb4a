"""Long polls that hold no database connection while they wait.

Every ``GET /executions/{id}/wait`` of one API process registers its id here and sleeps
on a future. One watcher per process checks all waited-for ids in a single short query,
at once when the queue says an execution settled (a worker recorded a result, anywhere
in the fleet) and every ``interval_s`` in case that notice was lost. A thousand waiters
cost one query per interval, not a thousand connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict

from lg_deploy.core.errors import BackendUnavailable
from lg_deploy.core.queue import Queue
from lg_deploy.core.states import TERMINAL, Status
from lg_deploy.core.store import Store

log = logging.getLogger("lg_deploy.api")

# Where a long poll ends: a result, or a pause for a person.
SETTLED = TERMINAL | {Status.INTERRUPTED}


class Waiters:
    def __init__(self, store: Store, queue: Queue, *, interval_s: float = 0.5) -> None:
        self.store = store
        self.queue = queue
        self.interval_s = interval_s
        self._waiting: dict[uuid.UUID, set[asyncio.Future[None]]] = defaultdict(set)
        self._nudge = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        subscribed = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._watch()),
            asyncio.create_task(self._listen(subscribed)),
        ]
        await subscribed.wait()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def wait(self, execution_id: uuid.UUID, timeout_s: float) -> None:
        """Return once ``execution_id`` settled (terminal or interrupted) or after
        ``timeout_s``, whichever comes first."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[execution_id].add(future)
        self._nudge.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(future), timeout_s)
        finally:
            futures = self._waiting.get(execution_id)
            if futures is not None:
                futures.discard(future)
                if not futures:
                    del self._waiting[execution_id]

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudge.wait(), self.interval_s)
            self._nudge.clear()
            if not self._waiting:
                continue
            try:
                settled = await self.store.with_status(list(self._waiting), SETTLED)
            except BackendUnavailable as exc:
                log.warning("long polls: cannot read the executions: %s", exc)
                continue
            for execution_id in settled:
                for future in self._waiting.pop(execution_id, ()):
                    if not future.done():
                        future.set_result(None)

    async def _listen(self, subscribed: asyncio.Event) -> None:
        while True:
            try:
                async with self.queue.subscribe("settled") as notices:
                    subscribed.set()
                    async for execution_id in notices:
                        if execution_id in self._waiting:
                            self._nudge.set()
            except BackendUnavailable as exc:
                subscribed.set()  # the periodic check carries on alone
                log.warning("long polls: no settle notices: %s", exc)
                await asyncio.sleep(1)
