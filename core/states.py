"""The execution state machine: the one place that says which moves exist.

Every change of an execution's status is one of the named ``Move``s below. The store
applies a move as a single conditional UPDATE whose WHERE clause names the move's source
statuses, taken from ``MOVES`` (see ``core/store/sql.py``); nothing else decides where a
move may start. ``TRANSITIONS`` (status -> statuses it may become) is derived from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from lg_deploy.core.errors import InvalidTransition


class Status(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    INTERRUPTED = "INTERRUPTED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TERMINAL: frozenset[Status] = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})

# The thread is busy: an execution waits for a worker or runs. (An INTERRUPTED execution
# waits for a person, and its thread is free for other executions meanwhile.)
ACTIVE: frozenset[Status] = frozenset({Status.QUEUED, Status.RUNNING})


class Move(StrEnum):
    CLAIM = "claim"  # a worker takes the execution with a lease
    FINISH = "finish"  # the attempt's result: done, failed, or paused by interrupt()
    RETRY = "retry"  # a retryable failure waits for its next attempt
    HAND_BACK = "hand_back"  # shutdown or a database outage: back without using an attempt
    RECOVER = "recover"  # the reconciler takes back an attempt whose lease expired
    ABANDON = "abandon"  # the reconciler gives up after too many lost workers
    RESUME = "resume"  # a person answered the interrupt
    CANCEL = "cancel"  # a client cancelled it


@dataclass(frozen=True)
class Transition:
    sources: frozenset[Status]
    targets: frozenset[Status]


def _t(sources: set[Status], targets: set[Status]) -> Transition:
    return Transition(frozenset(sources), frozenset(targets))


QUEUED, RUNNING, INTERRUPTED = Status.QUEUED, Status.RUNNING, Status.INTERRUPTED

MOVES: Mapping[Move, Transition] = {
    Move.CLAIM: _t({QUEUED}, {RUNNING}),
    Move.FINISH: _t({RUNNING}, {Status.COMPLETED, Status.FAILED, INTERRUPTED}),
    Move.RETRY: _t({RUNNING}, {QUEUED}),
    Move.HAND_BACK: _t({RUNNING}, {QUEUED}),
    Move.RECOVER: _t({RUNNING}, {QUEUED}),
    Move.ABANDON: _t({RUNNING}, {Status.FAILED}),
    Move.RESUME: _t({INTERRUPTED}, {QUEUED}),
    # A paused execution may be cancelled too, so that an abandoned approval can be closed.
    Move.CANCEL: _t({QUEUED, RUNNING, INTERRUPTED}, {Status.CANCELLED}),
}

TRANSITIONS: Mapping[Status, frozenset[Status]] = {
    status: frozenset().union(*(t.targets for t in MOVES.values() if status in t.sources))
    for status in Status
}


def sources_of(move: Move, wanted: Status) -> frozenset[Status]:
    """The statuses ``move`` may start from to reach ``wanted``; ``ValueError`` when the
    move never leads there (a programming error, not a refused request)."""
    transition = MOVES[move]
    if wanted not in transition.targets:
        raise ValueError(f"{move} never leads to {wanted}")
    return transition.sources


def check_transition(current: Status, wanted: Status) -> None:
    """Raise ``InvalidTransition`` unless ``current -> wanted`` is allowed."""
    if wanted not in TRANSITIONS[current]:
        raise InvalidTransition(current, wanted)
