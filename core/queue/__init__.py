"""The queue, chosen by URL here and only here."""

from __future__ import annotations

from lg_deploy.core.errors import UnknownBackend
from lg_deploy.core.queue.base import Handler, Queue, Topic

SCHEMES = ("memory://", "redis://host:port/db", "rediss://host:port/db")

__all__ = ["SCHEMES", "Handler", "Queue", "Topic", "open_queue"]


def open_queue(
    url: str,
    *,
    name: str = "lg-deploy:queue",
    poll_delay_s: float = 1.0,
    read_limit: int = 1000,
) -> Queue:
    """The queue for ``url``; the caller closes it. Nothing connects before first use."""
    if url.startswith("memory://"):
        from lg_deploy.core.queue.memory import MemoryQueue

        return MemoryQueue()
    if url.startswith(("redis://", "rediss://", "unix://")):
        from lg_deploy.core.queue.redis import RedisQueue

        return RedisQueue(
            url, queue_name=name, poll_delay_s=poll_delay_s, queue_read_limit=read_limit
        )
    raise UnknownBackend(url, SCHEMES)
