"""``memory://``: the event logs in this process, for ``lg-deploy dev`` (its API and its
worker share them). Bounded like the Redis backend: a log keeps its newest ``maxlen``
events and is dropped ``ttl_s`` seconds after its last event."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from lg_deploy.core.events.base import (
    START,
    Event,
    NewEvent,
    format_event_id,
    parse_event_id,
)


@dataclass
class _Log:
    events: deque[Event]
    last: tuple[int, int] = (0, 0)
    touched: float = field(default_factory=time.monotonic)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class MemoryEventLog:
    def __init__(self, *, maxlen: int = 10_000, ttl_s: float = 3600.0) -> None:
        self.maxlen = maxlen
        self.ttl_s = ttl_s
        self._logs: dict[uuid.UUID, _Log] = {}
        self._swept = time.monotonic()

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._logs.clear()

    def _sweep(self) -> None:
        now = time.monotonic()
        if now - self._swept < min(self.ttl_s, 60.0):
            return
        self._swept = now
        for run_id in [r for r, log in self._logs.items() if now - log.touched > self.ttl_s]:
            del self._logs[run_id]

    def _log(self, run_id: uuid.UUID) -> _Log:
        self._sweep()
        log = self._logs.get(run_id)
        if log is None:
            log = self._logs[run_id] = _Log(deque(maxlen=self.maxlen))
        return log

    async def append(self, run_id: uuid.UUID, events: Sequence[NewEvent]) -> list[str]:
        log = self._log(run_id)
        ids = []
        for new in events:
            ms = int(time.time() * 1000)
            last_ms, last_seq = log.last
            log.last = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
            event_id = format_event_id(*log.last)
            log.events.append(Event(event_id, new.event, new.data, new.mode))
            ids.append(event_id)
        log.touched = time.monotonic()
        changed, log.changed = log.changed, asyncio.Event()
        changed.set()
        return ids

    def _after(self, log: _Log, after: tuple[int, int], limit: int) -> list[Event]:
        found = []
        for event in log.events:
            if parse_event_id(event.id) > after:
                found.append(event)
                if len(found) >= limit:
                    break
        return found

    async def read(
        self, run_id: uuid.UUID, *, after: str = START, block_s: float = 0, limit: int = 500
    ) -> list[Event]:
        position = parse_event_id(after)
        log = self._log(run_id)
        found = self._after(log, position, limit)
        if found or block_s <= 0:
            return found
        changed = log.changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), block_s)
        return self._after(self._log(run_id), position, limit)

    async def last_id(self, run_id: uuid.UUID) -> str:
        log = self._logs.get(run_id)
        return format_event_id(*log.last) if log is not None and log.events else START

    async def delete(self, run_id: uuid.UUID) -> None:
        self._logs.pop(run_id, None)
