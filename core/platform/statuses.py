"""The one mapping from an execution's lifecycle to the platform's run and thread statuses
(docs/compat.md, "Statuses").

| execution                       | run status    |
|---------------------------------|---------------|
| QUEUED                          | pending       |
| RUNNING                         | running       |
| COMPLETED (an interrupt() too)  | success       |
| INTERRUPTED (an /execute pause) | success       |
| FAILED, error type "timeout"    | timeout       |
| FAILED, any other error         | error         |
| CANCELLED                       | interrupted   |

A platform run that pauses in ``interrupt()`` ends as COMPLETED with its interrupts kept
(the platform ends it with status success, and its thread is interrupted); it is resumed
by a new run with ``Command(resume=...)``. A thread is busy while one of its executions is
QUEUED or RUNNING, otherwise what its last run or state update left: interrupted (the
state has next nodes), error (the last run failed) or idle.
"""

from __future__ import annotations

from typing import Any, Literal

from lg_deploy.core.states import ACTIVE, Status

RunStatus = Literal["pending", "running", "success", "error", "timeout", "interrupted"]
ThreadStatus = Literal["idle", "busy", "interrupted", "error"]

RUN_STATUSES: tuple[RunStatus, ...] = (
    "pending",
    "running",
    "success",
    "error",
    "timeout",
    "interrupted",
)
TIMEOUT = "timeout"  # the error type of an execution that ran past its time limit

_SIMPLE: dict[Status, RunStatus] = {
    Status.QUEUED: "pending",
    Status.RUNNING: "running",
    Status.COMPLETED: "success",
    Status.INTERRUPTED: "success",
    Status.CANCELLED: "interrupted",
}


def run_status(status: Status, error: dict[str, Any] | None) -> RunStatus:
    if status is Status.FAILED:
        return "timeout" if (error or {}).get("type") == TIMEOUT else "error"
    return _SIMPLE[status]


def execution_statuses(run: RunStatus) -> tuple[frozenset[Status], bool | None]:
    """The execution statuses a run status covers, and for FAILED whether the error must be
    a timeout (True), must not be (False), or either (None)."""
    if run == "error":
        return frozenset({Status.FAILED}), False
    if run == "timeout":
        return frozenset({Status.FAILED}), True
    return frozenset(s for s, r in _SIMPLE.items() if r == run), None


def is_active(status: Status) -> bool:
    """The run waits for a worker or runs: its thread is busy."""
    return status in ACTIVE


def settled_status(failed: bool, has_next: bool) -> ThreadStatus:
    """What a thread rests as once no run is active: ``error`` after a failed run,
    ``interrupted`` while its state has next nodes (an interrupt() or a breakpoint),
    ``idle`` otherwise."""
    if failed:
        return "error"
    return "interrupted" if has_next else "idle"
