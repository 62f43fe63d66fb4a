"""``redis://``: each run's events in a Redis Stream, so that a client connected to any API
process sees a run executing on any worker.

- One stream per run, ``<prefix>:<run id>``; its entries hold the event name (``e``), its
  data as JSON text (``d``) and the stream mode that produced it (``m``). Entry ids are
  Redis's own (``<ms>-<seq>``) and serve as SSE ids.
- Bounded: ``XADD ... MAXLEN ~ maxlen`` keeps about the newest ``maxlen`` entries, and every
  append sets the key to expire ``ttl_s`` seconds later.
- Readers block in ``XREAD BLOCK`` on a client of their own, whose connections have no
  socket timeout (the block itself bounds the wait; a call is abandoned a few seconds after
  its block should have ended); appends use a client with short timeouts.
- Redis errors become ``BackendUnavailable("events")``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from lg_deploy.core.errors import BackendUnavailable
from lg_deploy.core.events.base import START, Event, NewEvent, parse_event_id

_TIMEOUT_S = 5.0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisEventLog:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "lg-deploy:events",
        maxlen: int = 10_000,
        ttl_s: float = 3600,
    ) -> None:
        self.prefix = prefix
        self.maxlen = maxlen
        self.ttl_s = ttl_s
        self._client: Redis = Redis.from_url(
            url, socket_timeout=_TIMEOUT_S, socket_connect_timeout=_TIMEOUT_S
        )
        self._reader: Redis = Redis.from_url(url, socket_connect_timeout=_TIMEOUT_S)

    def key(self, run_id: uuid.UUID) -> str:
        return f"{self.prefix}:{run_id}"

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise BackendUnavailable("events", str(exc)) from exc

    async def close(self) -> None:
        await self._client.aclose()
        await self._reader.aclose()

    async def append(self, run_id: uuid.UUID, events: Sequence[NewEvent]) -> list[str]:
        key = self.key(run_id)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for new in events:
                    fields = {"e": new.event, "d": new.data, "m": new.mode}
                    pipe.xadd(key, fields, maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
                pipe.expire(key, max(int(self.ttl_s), 1))
                replies = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise BackendUnavailable("events", str(exc)) from exc
        return [_text(reply) for reply in replies[: len(events)]]

    async def read(
        self, run_id: uuid.UUID, *, after: str = START, block_s: float = 0, limit: int = 500
    ) -> list[Event]:
        parse_event_id(after)  # InvalidEventId before Redis sees it
        key = self.key(run_id)
        try:
            if block_s > 0:
                replies = await asyncio.wait_for(
                    self._reader.xread({key: after}, count=limit, block=int(block_s * 1000)),
                    block_s + _TIMEOUT_S,
                )
            else:
                replies = await self._client.xread({key: after}, count=limit)
        except (RedisError, OSError, TimeoutError) as exc:
            raise BackendUnavailable("events", str(exc) or "timed out") from exc
        found = []
        for _stream, entries in replies or ():
            for entry_id, fields in entries:
                values = {_text(k): _text(v) for k, v in fields.items()}
                found.append(
                    Event(
                        _text(entry_id),
                        values.get("e", ""),
                        values.get("d", "null"),
                        values.get("m", ""),
                    )
                )
        return found

    async def last_id(self, run_id: uuid.UUID) -> str:
        try:
            newest = await self._client.xrevrange(self.key(run_id), count=1)
        except (RedisError, OSError) as exc:
            raise BackendUnavailable("events", str(exc)) from exc
        return _text(newest[0][0]) if newest else START

    async def delete(self, run_id: uuid.UUID) -> None:
        try:
            await self._client.delete(self.key(run_id))
        except (RedisError, OSError) as exc:
            raise BackendUnavailable("events", str(exc)) from exc
