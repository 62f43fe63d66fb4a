"""The stream event log: what each run streamed, kept for a while so that any API process
can serve it, and a client that lost its connection can resume after the last event it got.

Workers append the events of the runs they execute; API processes read them, blocking until
the next one arrives. Each run has a log of its own, bounded in length (the oldest events
go first) and in time (it expires a while after its last event). Event ids increase within
a run's log and have the form ``<milliseconds>-<sequence>`` on every backend, so that an
SSE ``Last-Event-ID`` is one on any of them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from lg_deploy.core.errors import LgDeployError

# Before every event: read a log from its start.
START = "0-0"
# The first event of every run's stream (and of every later attempt): its id and attempt.
METADATA = "metadata"
# Control events, never sent to clients: a worker's attempt ended (its result is being
# recorded), or the run was cancelled. A reader then asks the store whether the run is over.
ATTEMPT_END = "lg_deploy/attempt_end"
CANCELLED = "lg_deploy/cancelled"
CONTROL = frozenset({ATTEMPT_END, CANCELLED})
_ID = re.compile(r"(\d{1,20})(?:-(\d{1,20}))?")
MAX_ID_PART = 2**64 - 1


@dataclass(frozen=True)
class NewEvent:
    """An event to append: the SSE event name, its data as JSON text, and the stream mode
    that produced it ("" for events every reader gets, such as ``metadata``)."""

    event: str
    data: str
    mode: str = ""


@dataclass(frozen=True)
class Event:
    id: str
    event: str
    data: str
    mode: str = ""


class InvalidEventId(LgDeployError):
    def __init__(self, value: str) -> None:
        self.value = value
        super().__init__(f"{value!r} is not an event id (expected <milliseconds>-<sequence>)")


def parse_event_id(value: str) -> tuple[int, int]:
    """``"<ms>-<seq>"`` (or ``"<ms>"``) as a pair that orders like the ids. Both parts are
    64-bit unsigned, as in Redis, which refuses larger ones."""
    match = _ID.fullmatch(value.strip())
    if match is None:
        raise InvalidEventId(value)
    ms, seq = int(match.group(1)), int(match.group(2) or 0)
    if ms > MAX_ID_PART or seq > MAX_ID_PART:
        raise InvalidEventId(value)
    return ms, seq


def format_event_id(ms: int, seq: int) -> str:
    return f"{ms}-{seq}"


class EventLog(Protocol):
    async def ping(self) -> None:
        """Raise ``BackendUnavailable`` unless the backend answers."""

    async def close(self) -> None: ...

    async def append(self, run_id: uuid.UUID, events: Sequence[NewEvent]) -> list[str]:
        """Append ``events`` to the run's log, in order; returns their ids. The log is
        trimmed to its bound and its expiry starts again."""

    async def read(
        self, run_id: uuid.UUID, *, after: str = START, block_s: float = 0, limit: int = 500
    ) -> list[Event]:
        """Up to ``limit`` events after the id ``after``; when there are none, wait up to
        ``block_s`` seconds for the next ones (an empty list after that)."""

    async def last_id(self, run_id: uuid.UUID) -> str:
        """The id of the run's newest event (``START`` when there is none): reading after
        it gets only what comes next."""

    async def delete(self, run_id: uuid.UUID) -> None: ...
