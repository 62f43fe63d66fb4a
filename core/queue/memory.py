"""``memory://``: an asyncio.Queue in this process, for one-process development.

Enqueueing an id that already waits is a no-op, so re-enqueueing is always safe.

Its contents die with the process; the worker's start-up reconciliation re-enqueues
whatever the store still holds as QUEUED.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence

from lg_deploy.core.queue.base import Handler, Topic


class MemoryQueue:
    def __init__(self) -> None:
        self._items: asyncio.Queue[uuid.UUID] = asyncio.Queue()
        self._subscribers: dict[Topic, set[asyncio.Queue[uuid.UUID]]] = defaultdict(set)
        self._timers: set[asyncio.TimerHandle] = set()
        self._waiting: set[uuid.UUID] = set()

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    async def held(self, jobs: Sequence[tuple[uuid.UUID, int]]) -> set[uuid.UUID]:
        return {execution_id for execution_id, _ in jobs if execution_id in self._waiting}

    async def enqueue(
        self, execution_id: uuid.UUID, *, attempt: int = 0, delay_s: float = 0
    ) -> None:
        if execution_id in self._waiting:
            return
        self._waiting.add(execution_id)
        if delay_s <= 0:
            self._items.put_nowait(execution_id)
            return
        loop = asyncio.get_running_loop()

        def put() -> None:
            self._timers.discard(timer)
            self._items.put_nowait(execution_id)

        timer = loop.call_later(delay_s, put)
        self._timers.add(timer)

    async def depth(self) -> int:
        return self._items.qsize()

    async def publish(self, topic: Topic, execution_id: uuid.UUID) -> None:
        for subscriber in self._subscribers[topic]:
            subscriber.put_nowait(execution_id)

    @contextlib.asynccontextmanager
    async def subscribe(self, topic: Topic) -> AsyncIterator[AsyncIterator[uuid.UUID]]:
        inbox: asyncio.Queue[uuid.UUID] = asyncio.Queue()
        self._subscribers[topic].add(inbox)

        async def notices() -> AsyncIterator[uuid.UUID]:
            while True:
                yield await inbox.get()

        try:
            yield notices()
        finally:
            self._subscribers[topic].discard(inbox)

    async def serve(self, handler: Handler, *, concurrency: int, stop: asyncio.Event) -> None:
        slots = asyncio.Semaphore(concurrency)
        running: set[asyncio.Task[None]] = set()
        stopping = asyncio.ensure_future(stop.wait())

        async def run(execution_id: uuid.UUID) -> None:
            try:
                await handler(execution_id)
            finally:
                slots.release()

        try:
            while not stop.is_set():
                await slots.acquire()
                if stop.is_set():
                    slots.release()
                    break
                getting = asyncio.ensure_future(self._items.get())
                await asyncio.wait({getting, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if stop.is_set():
                    getting.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await getting
                    if not getting.cancelled():  # taken just as we stopped: put it back
                        self._items.put_nowait(getting.result())
                    slots.release()
                    break
                execution_id = getting.result()
                self._waiting.discard(execution_id)
                task = asyncio.create_task(run(execution_id))
                running.add(task)
                task.add_done_callback(running.discard)
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        finally:
            stopping.cancel()
