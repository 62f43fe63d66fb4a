"""The checkpointer as one attempt sees it: writes fenced on the lease, and failures of
its database told apart from the graph's own.

A worker paused past its lease (SIGSTOP, a long GC, a frozen VM) may wake up in the middle
of a step and write a checkpoint after another worker finished the execution; that stale
checkpoint would become the thread's newest. Before every checkpoint write, the attempt's
lease is checked against the local clock: past the last renewal plus the lease length,
another worker may own the execution, and the write is refused with ``LeaseLost``.

A connection failure inside the saver becomes ``BackendUnavailable``: the attempt is
handed back, not failed. The same exception types raised by the graph's own code (its own
database) stay the graph's failure.

A worker makes one fenced view of its checkpointer (``fenced``), and so one graph per
langgraph.json entry for all its executions; each attempt runs under ``fence``, which
binds its lease clock to the attempt's context. LangGraph runs every checkpoint write in
a task it creates from that context, so a write always finds the attempt it belongs to,
and a write outside any attempt is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from langgraph.checkpoint.base import BaseCheckpointSaver

from lg_deploy.core.database_errors import is_database_outage
from lg_deploy.core.errors import BackendUnavailable, LeaseLost

S = TypeVar("S", bound=BaseCheckpointSaver)


class LeaseClock:
    """When the current attempt's lease ends, by this process's monotonic clock."""

    def __init__(self, execution_id: str, attempt: int, lease_s: float, claimed_at: float) -> None:
        self.execution_id = execution_id
        self.attempt = attempt
        self.lease_s = lease_s
        self.renewed_at = claimed_at
        self.lost = False

    def renewed(self, asked_at: float) -> None:
        """The store renewed the lease in a call made at ``asked_at`` (monotonic): the
        lease counts from when the call left, not from when it came back."""
        self.renewed_at = asked_at

    def held(self) -> bool:
        return not self.lost and time.monotonic() - self.renewed_at < self.lease_s

    def check(self) -> None:
        if not self.held():
            raise LeaseLost(self.execution_id, self.attempt)


WRITES = ("aput", "aput_writes", "adelete_thread", "adelete_for_runs", "acopy_thread", "aprune")
READS = ("aget", "aget_tuple", "aget_delta_channel_history")


@dataclass(frozen=True)
class _Fence:
    clock: LeaseClock
    on_failure: Callable[[BaseException], None]


_FENCE: ContextVar[_Fence | None] = ContextVar("lg_deploy_fence", default=None)


class OutsideAnAttempt(RuntimeError):
    """A checkpoint write from code that runs under no attempt's lease."""


@contextlib.contextmanager
def fence(
    clock: LeaseClock, on_write_failure: Callable[[BaseException], None] = lambda exc: None
) -> Iterator[None]:
    """Fence the checkpoint writes made in this block (and in the tasks it starts) on
    ``clock``. ``on_write_failure`` hears of every refused or failed write at once: under
    LangGraph's "async" durability a write runs beside the next step, and its failure
    would otherwise surface only when the graph ends."""
    token = _FENCE.set(_Fence(clock, on_write_failure))
    try:
        yield
    finally:
        _FENCE.reset(token)


def fenced(saver: S) -> S:
    """A view of ``saver`` (sharing its connections) whose writes are fenced on the lease
    of the attempt they are made under (``fence``)."""
    view = copy.copy(saver)
    for name in WRITES + READS:
        method = getattr(saver, name, None)
        if method is not None and inspect.iscoroutinefunction(method):
            setattr(view, name, _guarded_write(method) if name in WRITES else _guarded(method))
    setattr(view, "alist", _guarded_list(saver.alist))  # noqa: B010 (an async generator)
    return view


def _guarded(method: Callable[..., Awaitable[Any]]) -> Any:
    async def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        except Exception as exc:
            if (translated := _translated(exc)) is exc:
                raise
            raise translated from exc

    return guarded


def _guarded_write(method: Callable[..., Awaitable[Any]]) -> Any:
    call = _guarded(method)

    async def guarded(*args: Any, **kwargs: Any) -> Any:
        if (attempt := _FENCE.get()) is None:
            raise OutsideAnAttempt(f"checkpoint write {method.__name__} outside any attempt")
        try:
            attempt.clock.check()
            # A write, once started, finishes even when the attempt is stopped: the SQLite
            # saver cancelled between its INSERT and its COMMIT would keep the database's
            # write lock, and every other writer would wait on it.
            write = asyncio.ensure_future(call(*args, **kwargs))
            try:
                return await asyncio.shield(write)
            except asyncio.CancelledError:
                # ... and the attempt counts as stopped only once the write is over: a
                # cancelled execution's thread may run its next one as soon as its worker
                # lets go, and that one must not see this checkpoint land after it began.
                await asyncio.wait([write])
                if not write.cancelled():
                    write.exception()  # retrieved: the attempt is stopping either way
                raise
        except Exception as exc:
            attempt.on_failure(exc)
            raise

    return guarded


def _guarded_list(method: Callable[..., AsyncIterator[Any]]) -> Any:
    async def guarded(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        try:
            async for item in method(*args, **kwargs):
                yield item
        except Exception as exc:
            if (translated := _translated(exc)) is exc:
                raise
            raise translated from exc

    return guarded


def _translated(exc: Exception) -> Exception:
    if is_database_outage(exc) or isinstance(exc, sqlite3.OperationalError | OSError):
        return BackendUnavailable("database", str(exc).splitlines()[0][:200] if str(exc) else "")
    return exc
