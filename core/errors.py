"""The errors lg-deploy raises, one small hierarchy.

``LgDeployError`` is the root. Each exception carries the data that explains it, so
callers can act on it and the API can turn it into a precise HTTP answer:

- ``NotFound(kind, id)``: no such execution or graph (HTTP 404).
- ``InvalidTransition(current, wanted)``: the state machine forbids the move (HTTP 409).
- ``IdempotencyConflict(key)``: an Idempotency-Key re-used with another body (HTTP 409).
- ``ThreadBusy(thread_id)``: the thread already runs an execution (HTTP 409).
- ``ExecutionActive(execution_id, status)``: only a finished execution may be deleted
  (HTTP 409).
- ``QueueFull(depth, limit)``: backpressure, the queue is past its limit (HTTP 429).
- ``BackendUnavailable(name, reason)``: the store or the queue cannot be reached (HTTP 503).
- ``BackendRefused(name, reason)``: it answered and refused us (a wrong role, password or
  database name): a configuration to fix, not worth retrying (HTTP 503).
- ``BackendBusy(name, reason)``: it answers, but this process has no free connection to it
  in time (HTTP 503 ``backend_busy``): overload, not an outage.
- ``UnknownBackend(url, schemes)``: a backend URL with a scheme nobody serves.
- ``GraphConfigError(path, graph_id, reason)``: a broken ``langgraph.json`` entry.
- ``LeaseLost(execution_id, attempt)``: a worker's claim was taken over or cancelled.

Library exceptions (SQLAlchemy, asyncpg, sqlite, redis) are translated into these at the
backend boundary; only ``lg_deploy.api`` turns them into HTTP.
"""

from __future__ import annotations

from collections.abc import Iterable

from lg_deploy.core.urls import mask_url


class LgDeployError(Exception):
    """Root of every error lg-deploy raises on purpose."""


class NotFound(LgDeployError):
    def __init__(self, kind: str, id: str) -> None:
        self.kind = kind
        self.id = id
        super().__init__(f"{kind} {id!r} not found")


class InvalidTransition(LgDeployError):
    def __init__(self, current: str, wanted: str) -> None:
        self.current = current
        self.wanted = wanted
        super().__init__(f"cannot move an execution from {current} to {wanted}")


class IdempotencyConflict(LgDeployError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"Idempotency-Key {key!r} was already used with a different request")


class ThreadBusy(LgDeployError):
    def __init__(self, thread_id: str) -> None:
        self.thread_id = thread_id
        super().__init__(f"thread {thread_id!r} already has an execution in progress")


class ExecutionActive(LgDeployError):
    def __init__(self, execution_id: str, status: str, *, stopping: bool = False) -> None:
        self.execution_id = execution_id
        self.status = status
        if stopping:
            message = (
                f"execution {execution_id} is {status} but its graph is still stopping: "
                "it may be deleted once its worker has let go of it (seconds, at most a lease)"
            )
        else:
            message = (
                f"execution {execution_id} is {status}: only a finished execution may be "
                "deleted (cancel it first)"
            )
        super().__init__(message)


class QueueFull(LgDeployError):
    def __init__(self, depth: int, limit: int) -> None:
        self.depth = depth
        self.limit = limit
        super().__init__(f"the queue holds {depth} executions, over its limit of {limit}")


class BackendUnavailable(LgDeployError):
    def __init__(self, name: str, reason: str = "") -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"{name} is unavailable" + (f": {reason}" if reason else ""))


class BackendRefused(BackendUnavailable):
    def __init__(self, name: str, reason: str = "") -> None:
        super().__init__(name, reason)
        self.args = (f"{name} refused the connection" + (f": {reason}" if reason else ""),)


class BackendBusy(BackendUnavailable):
    def __init__(self, name: str, reason: str = "") -> None:
        super().__init__(name, reason)
        self.args = (f"{name} is busy" + (f": {reason}" if reason else ""),)


class UnknownBackend(LgDeployError):
    def __init__(self, url: str, schemes: Iterable[str]) -> None:
        self.url = mask_url(url)  # URLs carry passwords: this one may end up in a log
        self.schemes = tuple(schemes)
        super().__init__(f"no backend serves {self.url!r}; use one of: {', '.join(self.schemes)}")


class GraphConfigError(LgDeployError):
    def __init__(self, path: str, graph_id: str | None, reason: str) -> None:
        self.path = path
        self.graph_id = graph_id
        self.reason = reason
        where = f"{path}: graph {graph_id!r}" if graph_id else path
        super().__init__(f"{where}: {reason}")


class LeaseLost(LgDeployError):
    def __init__(self, execution_id: str, attempt: int) -> None:
        self.execution_id = execution_id
        self.attempt = attempt
        super().__init__(f"execution {execution_id} attempt {attempt} no longer holds its lease")
