"""The execution state machine: the one place that says which moves are allowed."""

from __future__ import annotations

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

# Where an execution waits for a person or a worker and has not finished yet.
ACTIVE: frozenset[Status] = frozenset({Status.QUEUED, Status.RUNNING})

TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset({Status.RUNNING, Status.CANCELLED}),
    # RUNNING -> QUEUED: a retry, a lease that expired, or a worker handing work back.
    Status.RUNNING: frozenset(
        {
            Status.COMPLETED,
            Status.FAILED,
            Status.CANCELLED,
            Status.INTERRUPTED,
            Status.QUEUED,
        }
    ),
    # INTERRUPTED -> QUEUED on resume; a paused execution may also be cancelled.
    Status.INTERRUPTED: frozenset({Status.QUEUED, Status.CANCELLED}),
    Status.COMPLETED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELLED: frozenset(),
}


def sources_of(wanted: Status) -> frozenset[Status]:
    """The statuses from which ``wanted`` may be reached."""
    return frozenset(s for s, targets in TRANSITIONS.items() if wanted in targets)


def check_transition(current: Status, wanted: Status) -> None:
    """Raise ``InvalidTransition`` unless ``current -> wanted`` is allowed."""
    if wanted not in TRANSITIONS[current]:
        raise InvalidTransition(current, wanted)
