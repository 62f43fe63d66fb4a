"""Checkpoint writes fenced on the lease, so a zombie worker cannot move a thread back.

A worker paused past its lease (SIGSTOP, a long GC, a frozen VM) may wake up in the middle
of a step and write a checkpoint after another worker finished the execution; that stale
checkpoint would become the thread's newest. Before every checkpoint write, the attempt's
lease is checked against the local clock: past the last renewal plus the lease length,
another worker may own the execution, and the write is refused with ``LeaseLost``.
"""

from __future__ import annotations

import copy
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from langgraph.checkpoint.base import BaseCheckpointSaver

from lg_deploy.core.errors import LeaseLost

S = TypeVar("S", bound=BaseCheckpointSaver)


class LeaseClock:
    """When the current attempt's lease ends, by this process's monotonic clock."""

    def __init__(self, execution_id: str, attempt: int, lease_s: float) -> None:
        self.execution_id = execution_id
        self.attempt = attempt
        self.lease_s = lease_s
        self.renewed_at = time.monotonic()
        self.lost = False

    def renewed(self) -> None:
        self.renewed_at = time.monotonic()

    def held(self) -> bool:
        return not self.lost and time.monotonic() - self.renewed_at < self.lease_s

    def check(self) -> None:
        if not self.held():
            raise LeaseLost(self.execution_id, self.attempt)


def fenced(saver: S, clock: LeaseClock) -> S:
    """A view of ``saver`` (sharing its connections) whose writes first check ``clock``."""
    view = copy.copy(saver)
    for name in ("aput", "aput_writes", "put", "put_writes"):
        setattr(view, name, _guarded(getattr(saver, name), clock))
    return view


def _guarded(method: Callable[..., Any], clock: LeaseClock) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(method):

        async def guarded_async(*args: Any, **kwargs: Any) -> Any:
            clock.check()
            result: Awaitable[Any] = method(*args, **kwargs)
            return await result

        return guarded_async

    def guarded(*args: Any, **kwargs: Any) -> Any:
        clock.check()
        return method(*args, **kwargs)

    return guarded
