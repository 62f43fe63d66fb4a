"""Serving a run's stream over SSE, and a run's final values to those who wait for them.

An SSE stream reads the run's event log (``core/events/``) from a position: the start
(the stream that created the run), after a client's ``Last-Event-ID`` (a reconnect), or
from now (``join_stream`` without one). Every event goes out with its log id as the SSE
``id``; ``: heartbeat`` comments keep an idle connection open. The stream ends when the
store says the run is over, after the last events have been sent: cleanly on success,
with an ``error`` event when the run failed. The store is asked when a worker's attempt
ends (a control event in the log), when the run is cancelled, and when the API's long-poll
watcher (``api/waiting.py``) sees the run settle.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from lg_deploy.api.waiting import Waiters
from lg_deploy.core.errors import BackendUnavailable, NotFound
from lg_deploy.core.events import CONTROL, START, Event, EventLog, parse_event_id
from lg_deploy.core.jsonable import to_jsonable
from lg_deploy.core.models import Execution
from lg_deploy.core.platform.statuses import is_active
from lg_deploy.core.states import Status
from lg_deploy.core.store.platform_base import PlatformStore

log = logging.getLogger("lg_deploy.api")

HEARTBEAT = b": heartbeat\n\n"
# How long a reader blocks on the log before it looks around (heartbeat, settle).
READ_BLOCK_S = 1.0
# Once an attempt ended, how long to wait for its result to be recorded before reading on
# (a retry or a recovery continues the stream).
SETTLE_WAIT_S = 2.0
LONG_S = 24 * 3600.0

_background: set[asyncio.Task[Any]] = set()


def in_background(work: Awaitable[Any]) -> None:
    """Run ``work`` to its end even though the request that asked for it is gone."""

    async def run() -> None:
        try:
            await work
        except Exception:
            log.exception("background work of a finished request failed")

    task = asyncio.get_running_loop().create_task(run())
    _background.add(task)
    task.add_done_callback(_background.discard)


def frame(event: str, data: str, event_id: str | None = None) -> bytes:
    lines = [f"event: {event}", f"data: {data}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    return ("\n".join(lines) + "\n\n").encode()


def error_frame(execution: Execution) -> bytes:
    error = execution.error or {}
    data = {"error": error.get("type", "Error"), "message": error.get("message", "")}
    return frame("error", json.dumps(data, ensure_ascii=False))


def finished(execution: Execution) -> bool:
    """Ended, and (when cancelled) its graph has stopped: its worker has let go of it."""
    return not is_active(execution.status) and execution.lease_owner is None


@dataclass
class Streams:
    store: PlatformStore
    events: EventLog
    waiters: Waiters
    heartbeat_s: float

    async def start_of(self, run_id: uuid.UUID, last_event_id: str | None, *, live: bool) -> str:
        """Where a reader starts: after ``last_event_id``, else at the start of the log, or
        at its current end for a ``live`` reader (``join_stream``). An id that is none
        raises ``InvalidEventId`` (422) here, before the response starts: a stream that
        had already answered 200 could only break on its first read."""
        if last_event_id and last_event_id.strip():
            after = last_event_id.strip()
            parse_event_id(after)
            return after
        if not live:
            return START
        try:
            return await self.events.last_id(run_id)
        except BackendUnavailable:
            return START

    async def sse(
        self, run_id: uuid.UUID, *, after: str, modes: set[str] | None
    ) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        settled = asyncio.ensure_future(self.waiters.wait(run_id, LONG_S))
        cursor, quiet_since = after, loop.time()
        try:
            while True:
                batch = await self._read(run_id, cursor, READ_BLOCK_S)
                ask_store = False
                for event in batch:
                    cursor = event.id
                    if event.event in CONTROL:
                        ask_store = True
                    elif modes is None or not event.mode or event.mode in modes:
                        quiet_since = loop.time()
                        yield frame(event.event, event.data, event.id)
                if ask_store:
                    await asyncio.wait({settled}, timeout=SETTLE_WAIT_S)
                if ask_store or settled.done():
                    try:
                        execution: Execution | None = await self.store.get(run_id)
                    except NotFound:
                        execution = None  # rolled back, or its thread deleted
                    if execution is None or finished(execution):
                        async for chunk in self._rest(run_id, cursor, modes):
                            yield chunk
                        if execution is not None and execution.status is Status.FAILED:
                            yield error_frame(execution)
                        return
                    if settled.done():
                        settled = asyncio.ensure_future(self.waiters.wait(run_id, LONG_S))
                if loop.time() - quiet_since >= self.heartbeat_s:
                    quiet_since = loop.time()
                    yield HEARTBEAT
        finally:
            settled.cancel()

    async def _read(self, run_id: uuid.UUID, after: str, block_s: float) -> list[Event]:
        try:
            return await self.events.read(run_id, after=after, block_s=block_s)
        except BackendUnavailable as exc:
            log.warning("run %s: cannot read its events: %s", run_id, exc)
            await asyncio.sleep(block_s)
            return []

    async def _rest(
        self, run_id: uuid.UUID, after: str, modes: set[str] | None
    ) -> AsyncIterator[bytes]:
        while batch := await self._read(run_id, after, 0):
            for event in batch:
                after = event.id
                if event.event not in CONTROL and (
                    modes is None or not event.mode or event.mode in modes
                ):
                    yield frame(event.event, event.data, event.id)

    async def over(self, run_id: uuid.UUID) -> bool:
        """The run has ended (or is gone)."""
        try:
            return finished(await self.store.get(run_id))
        except NotFound:
            return True

    async def final_body(self, run_id: uuid.UUID, thread_id: str) -> bytes:
        """What ``wait`` and ``join`` answer once the run is over."""
        try:
            execution: Execution | None = await self.store.get(run_id)
        except NotFound:
            execution = None
        return json.dumps(
            to_jsonable(await final_values(self.store, execution, thread_id)), ensure_ascii=False
        ).encode()

    async def wait_body(self, run_id: uuid.UUID, thread_id: str) -> AsyncIterator[bytes]:
        """A newline every heartbeat while the run goes on (leading whitespace is still
        valid JSON, and keeps proxies from closing the connection), then its result."""
        waited = False
        while not await self.over(run_id):
            if waited:
                yield b"\n"
            waited = True
            await self.waiters.wait(run_id, self.heartbeat_s)
        yield await self.final_body(run_id, thread_id)


async def final_values(store: PlatformStore, execution: Execution | None, thread_id: str) -> Any:
    """A finished run's result as the platform gives it: its last values (with
    ``__interrupt__`` when it paused), ``{"__error__": ...}`` when it failed, and for a
    run that left no values (cancelled, rolled back) the thread's."""
    if execution is not None and execution.status is Status.FAILED:
        error = execution.error or {}
        return {
            "__error__": {"error": error.get("type", "Error"), "message": error.get("message", "")}
        }
    if execution is not None and execution.status in (Status.COMPLETED, Status.INTERRUPTED):
        values = execution.output
        if execution.interrupts:
            interrupts = [
                {"value": i.get("value"), "id": i.get("id")} for i in execution.interrupts
            ]
            values = {**(values if isinstance(values, dict) else {}), "__interrupt__": interrupts}
        return values
    try:
        thread = await store.get_thread(thread_id)
    except NotFound:
        return {}
    values = thread.state_values if thread.state_values is not None else {}
    pending = [i for interrupts in (thread.interrupts or {}).values() for i in interrupts]
    if pending and isinstance(values, dict):
        values = {**values, "__interrupt__": pending}
    return values


class RunStreamResponse(StreamingResponse):
    """A streaming answer that knows whether its body was sent to the end: when the client
    went away before that, ``on_disconnect`` runs (in the background: the request is over)."""

    def __init__(
        self,
        content: AsyncIterator[bytes],
        *,
        media_type: str,
        headers: dict[str, str] | None = None,
        on_disconnect: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.completed = False
        self.on_disconnect = on_disconnect
        self._content = content
        super().__init__(self._track(), media_type=media_type, headers=headers)

    async def _track(self) -> AsyncIterator[bytes]:
        async for chunk in self._content:
            yield chunk
        self.completed = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if not self.completed:
                with contextlib.suppress(Exception):
                    await asyncio.shield(aclose(self._content))
                if self.on_disconnect is not None:
                    in_background(self.on_disconnect())


async def aclose(content: AsyncIterator[bytes]) -> None:
    close = getattr(content, "aclose", None)
    if close is not None:
        await close()
