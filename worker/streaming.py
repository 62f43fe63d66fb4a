"""A platform run's stream: what LangGraph yields, as the platform's SSE events, appended
to the run's event log (``core/events/``) for the API processes to serve.

- Each LangGraph chunk becomes one event named after its stream mode (``values``,
  ``updates``, ``custom``, ``debug``, ``tasks``, ``checkpoints``), with ``|<namespace>``
  added for a subgraph's chunks (``stream_subgraphs``). ``messages-tuple`` is the event
  ``messages`` with ``[message, metadata]``; the ``messages`` mode is the platform's
  ``messages/metadata`` (once per message), ``messages/partial`` (the message so far) and
  ``messages/complete``. ``events`` are LangChain's ``astream_events`` (v2) events.
- Only the modes the run asked for are appended; each event records its mode so that
  ``join_stream`` can ask for a subset.
- A later attempt (the worker died, or the run was retried) starts with a ``metadata``
  event carrying its attempt number. When it continues from the run's own checkpoint,
  LangGraph first repeats that checkpoint's ``values`` (and its ``checkpoints`` and
  ``debug`` checkpoint event); each is dropped when the stream already carried it
  (docs/compat.md, "Streaming").
- The stream is best effort: when the event log cannot be reached the run goes on, and
  its result is recorded as always. Its events are dropped while the log is down; appends
  are tried again after a backoff (``RETRY_AFTER_S``, doubling up to ``RETRY_MAX_S``), and
  publishing resumes once one succeeds. Each outage is logged once, and its end.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from langchain_core.messages import BaseMessage, BaseMessageChunk

from lg_deploy.core.errors import BackendUnavailable
from lg_deploy.core.events import ATTEMPT_END, METADATA, START, EventLog, NewEvent
from lg_deploy.core.jsonable import to_jsonable

log = logging.getLogger("lg_deploy.worker")

NS_SEP = "|"
# Once the event log failed, appends are skipped (their events dropped) for this long
# before one is tried again, doubling while it stays down: an outage costs one failed
# call per backoff, not one per event (each of which could wait for a timeout).
RETRY_AFTER_S = 0.5
RETRY_MAX_S = 10.0
# LangGraph's stream mode for each of the platform's ("events" is astream_events).
LANGGRAPH_MODE = {
    "values": "values",
    "updates": "updates",
    "messages": "messages",
    "messages-tuple": "messages",
    "custom": "custom",
    "debug": "debug",
    "tasks": "tasks",
    "checkpoints": "checkpoints",
}


# The modes whose first chunk LangGraph repeats when it continues from a checkpoint, and
# which chunk that is.
REPEATED: dict[str, Any] = {
    "values": lambda chunk: True,
    "checkpoints": lambda chunk: True,
    "debug": lambda chunk: isinstance(chunk, dict) and chunk.get("type") == "checkpoint",
}


def _comparable(mode: str, data: str) -> str:
    """A debug event's time differs between the first sending and its repeat."""
    if mode != "debug":
        return data
    parsed = json.loads(data)
    if isinstance(parsed, dict):
        parsed.pop("timestamp", None)
    return json.dumps(parsed, sort_keys=True)


def dumps(value: Any) -> str:
    return json.dumps(to_jsonable(value), separators=(",", ":"), ensure_ascii=False)


class RunStream:
    """The events of one attempt of one run."""

    def __init__(
        self,
        events: EventLog | None,
        run_id: uuid.UUID,
        attempt: int,
        modes: list[str],
        *,
        held: Callable[[], bool],
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        """``held``: whether the attempt still holds its lease; once it does not, nothing
        more is appended (another worker may have taken the run over: its stream is the
        new attempt's). ``now``: the clock of the backoff after a failed append."""
        self.events = events
        self.run_id = run_id
        self.attempt = attempt
        self.modes = set(modes)
        self.held = held
        self._fenced = False
        self._partial: dict[str, BaseMessageChunk] = {}
        self._announced: set[str] = set()
        # While a later attempt has not yet passed the checkpoint it continues from: what
        # the stream carried so far, per mode whose first chunk LangGraph repeats.
        self._streamed: dict[str, set[str]] = {}
        self.now = now
        # While the event log is down: since when, when to try again, the current
        # backoff, and how many events were dropped.
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._backoff_s = RETRY_AFTER_S
        self._dropped = 0

    def langgraph_modes(self) -> list[str]:
        """What to ask LangGraph for: the run's modes, and the values and updates the
        worker itself reads."""
        wanted = {"values", "updates"} | {
            LANGGRAPH_MODE[m] for m in self.modes if m in LANGGRAPH_MODE
        }
        return sorted(wanted)

    async def _append(self, *events: NewEvent) -> None:
        if self.events is None or self._fenced:
            return
        if not self.held():
            self._fenced = True
            log.warning(
                "run %s attempt %d: lease lost; its stream ends here", self.run_id, self.attempt
            )
            return
        now = self.now()
        if self._down_since is not None and now < self._retry_at:
            self._dropped += len(events)
            return
        try:
            await self.events.append(self.run_id, events)
        except BackendUnavailable as exc:
            self._failed(now, len(events), exc)
            return
        if self._down_since is not None:
            log.info(
                "run %s: its stream events are published again after %.1f s (%d dropped)",
                self.run_id,
                now - self._down_since,
                self._dropped,
            )
            self._down_since, self._dropped = None, 0

    def _failed(self, now: float, count: int, exc: BackendUnavailable) -> None:
        self._dropped += count
        if self._down_since is None:
            self._down_since, self._backoff_s = now, RETRY_AFTER_S
            log.warning(
                "run %s: its stream events cannot be published (%s); dropped until the event "
                "log answers again",
                self.run_id,
                exc,
            )
        else:
            self._backoff_s = min(self._backoff_s * 2, RETRY_MAX_S)
        self._retry_at = now + self._backoff_s

    async def begin(self, *, continuing: bool) -> None:
        """A later attempt says so first; one that continues from the run's checkpoint
        learns which values the lost attempt streamed last."""
        if self.attempt > 1:
            data = dumps({"run_id": str(self.run_id), "attempt": self.attempt})
            await self._append(NewEvent(METADATA, data))
        if continuing and self.modes & set(REPEATED):
            self._streamed = await self._so_far()

    async def _so_far(self) -> dict[str, set[str]]:
        """What the stream carried so far, in the modes LangGraph repeats, by mode."""
        found: dict[str, set[str]] = {mode: set() for mode in REPEATED if mode in self.modes}
        if self.events is None:
            return {}
        after = START
        try:
            while batch := await self.events.read(self.run_id, after=after):
                for event in batch:
                    if event.event in found:
                        found[event.event].add(_comparable(event.event, event.data))
                after = batch[-1].id
        except BackendUnavailable:
            return {}
        return found

    async def end(self) -> None:
        await self._append(NewEvent(ATTEMPT_END, dumps({"attempt": self.attempt})))

    async def chunk(self, namespace: tuple[str, ...], mode: str, chunk: Any) -> None:
        """One item of ``graph.astream``."""
        suffix = "".join(NS_SEP + part for part in namespace)
        if mode == "messages":
            await self._messages(suffix, chunk)
            return
        if mode not in self.modes:
            return
        data = dumps(chunk)
        if not namespace and mode in self._streamed and REPEATED[mode](chunk):
            streamed = self._streamed.pop(mode)
            if _comparable(mode, data) in streamed:  # repeated by LangGraph: sent already
                return
        await self._append(NewEvent(mode + suffix, data, mode))

    async def _messages(self, suffix: str, chunk: Any) -> None:
        message, metadata = chunk
        if "messages-tuple" in self.modes:
            await self._append(
                NewEvent("messages" + suffix, dumps([message, metadata]), "messages-tuple")
            )
        if "messages" not in self.modes or not isinstance(message, BaseMessage):
            return
        events = []
        key = str(message.id)
        if key not in self._announced:
            self._announced.add(key)
            events.append(
                NewEvent(
                    "messages/metadata" + suffix, dumps({key: {"metadata": metadata}}), "messages"
                )
            )
        if isinstance(message, BaseMessageChunk):
            so_far = self._partial.get(key)
            self._partial[key] = message if so_far is None else so_far + message
            events.append(
                NewEvent("messages/partial" + suffix, dumps([self._partial[key]]), "messages")
            )
        else:
            events.append(NewEvent("messages/complete" + suffix, dumps([message]), "messages"))
        await self._append(*events)

    async def callback_event(self, event: dict[str, Any]) -> None:
        """One event of ``astream_events`` (the ``events`` mode)."""
        if "events" in self.modes:
            await self._append(NewEvent("events", dumps(event), "events"))
