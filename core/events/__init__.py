"""The stream event log, chosen by URL here and only here."""

from __future__ import annotations

from lg_deploy.core.errors import UnknownBackend
from lg_deploy.core.events.base import (
    ATTEMPT_END,
    CANCELLED,
    CONTROL,
    METADATA,
    START,
    Event,
    EventLog,
    InvalidEventId,
    NewEvent,
    parse_event_id,
)

SCHEMES = ("memory://", "redis://host:port/db", "rediss://host:port/db")

__all__ = [
    "ATTEMPT_END",
    "CANCELLED",
    "CONTROL",
    "METADATA",
    "SCHEMES",
    "START",
    "Event",
    "EventLog",
    "InvalidEventId",
    "NewEvent",
    "open_event_log",
    "parse_event_id",
]


def open_event_log(
    url: str, *, prefix: str = "lg-deploy:events", maxlen: int = 10_000, ttl_s: float = 3600.0
) -> EventLog:
    """The event log for ``url``; the caller closes it. Nothing connects before first use."""
    if url.startswith("memory://"):
        from lg_deploy.core.events.memory import MemoryEventLog

        return MemoryEventLog(maxlen=maxlen, ttl_s=ttl_s)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from lg_deploy.core.events.redis import RedisEventLog

        return RedisEventLog(url, prefix=prefix, maxlen=maxlen, ttl_s=ttl_s)
    raise UnknownBackend(url, SCHEMES)
