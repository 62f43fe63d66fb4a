"""The queue, chosen by URL here and only here."""

from __future__ import annotations

from lg_deploy.core.errors import UnknownBackend
from lg_deploy.core.queue.base import Handler, Queue

SCHEMES = ("memory://", "redis://host:port/db", "rediss://host:port/db")

__all__ = ["SCHEMES", "Handler", "Queue", "open_queue"]


def open_queue(url: str) -> Queue:
    """The queue for ``url``; the caller closes it."""
    if url.startswith("memory://"):
        from lg_deploy.core.queue.memory import MemoryQueue

        return MemoryQueue()
    raise UnknownBackend(url, SCHEMES[:1])
