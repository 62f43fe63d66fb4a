"""Request and response bodies of the REST API.

Requests are validated strictly: what a store, LangGraph or a later reader would refuse
is a 422 at submit, with nothing written (``core/jsonable.py``), and numbers are not
coerced from strings or booleans.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lg_deploy.core.jsonable import find_unstorable
from lg_deploy.core.models import Execution
from lg_deploy.core.states import Status

MAX_TIMEOUT_S = 7 * 24 * 3600
# Ten years: past that, ask for the server's "for ever" (no retention) instead.
MAX_RETENTION_S = 10 * 366 * 24 * 3600
RESERVED_CONFIGURABLE = frozenset(
    {"thread_id", "checkpoint_id", "checkpoint_ns", "checkpoint_map", "checkpoint_during"}
)
# RunnableConfig keys a client may not send: they are objects of the worker's process, or
# chosen by lg-deploy for each attempt.
REFUSED_CONFIG = {
    "callbacks": "callbacks are objects of the worker's process; set them in the graph",
    "run_id": "lg-deploy gives each attempt a run id of its own",
}


def _no_unstorable(value: Any) -> Any:
    if problem := find_unstorable(value):
        raise ValueError(problem)
    return value


class RunConfig(BaseModel):
    """The parts of a LangGraph RunnableConfig a request may set."""

    model_config = ConfigDict(extra="forbid", strict=True)

    configurable: dict[str, Any] | None = Field(
        default=None, description="Values the graph reads from config['configurable']."
    )
    metadata: dict[str, Any] | None = Field(default=None, description="Tracing metadata.")
    tags: list[str] | None = Field(default=None, description="Tracing tags.")
    run_name: str | None = Field(default=None, max_length=200)
    recursion_limit: int | None = Field(default=None, ge=1, le=100_000)
    max_concurrency: int | None = Field(default=None, ge=1, le=10_000)

    @model_validator(mode="before")
    @classmethod
    def _refused_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, why in REFUSED_CONFIG.items():
                if key in data:
                    raise ValueError(f"config.{key} may not be set: {why}")
        return data

    @field_validator("configurable")
    @classmethod
    def _no_reserved_configurable(cls, configurable: dict[str, Any] | None) -> Any:
        """The thread and the checkpoints are lg-deploy's to choose: a caller's choice
        would break resuming after a crash."""
        reserved = sorted(
            k for k in configurable or {} if k in RESERVED_CONFIGURABLE or k.startswith("__")
        )
        if reserved:
            raise ValueError(
                f"config.configurable may not set {', '.join(reserved)}: lg-deploy manages "
                "threads and checkpoints (use thread_id)"
            )
        return configurable


class ExecuteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    graph_id: str = Field(min_length=1, max_length=200, description="A graph of langgraph.json.")
    input: Any = Field(default=None, description="The graph's input (JSON).")
    config: RunConfig | None = Field(
        default=None, description="A LangGraph RunnableConfig: configurable, tags, ..."
    )
    thread_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Continue this conversation thread; a new thread when omitted.",
    )
    metadata: dict[str, Any] | None = Field(default=None, description="Free-form, kept as is.")
    timeout_s: float | None = Field(
        default=None,
        gt=0,
        le=MAX_TIMEOUT_S,
        strict=True,
        description="Time limit of each attempt in seconds (default: the server's).",
    )
    max_attempts: int | None = Field(
        default=None,
        ge=1,
        le=100,
        strict=True,
        description="Attempts for a retryable failure, the first included (default: the server's).",
    )
    durability: Literal["sync", "async", "exit"] | None = Field(
        default=None,
        description="LangGraph's durability for this execution (default: its graph's, or the "
        "server's): sync, async or exit (docs/architecture.md, Durability).",
    )
    retention_s: float | None = Field(
        default=None,
        ge=0,
        le=MAX_RETENTION_S,
        strict=True,
        allow_inf_nan=False,
        description="Seconds this execution is kept once COMPLETED, FAILED or CANCELLED "
        "(default: its graph's, or the server's); its idempotency key goes with it.",
    )
    interrupted_retention_s: float | None = Field(
        default=None,
        ge=0,
        le=MAX_RETENTION_S,
        strict=True,
        allow_inf_nan=False,
        description="Seconds this execution is kept while INTERRUPTED, waiting for a "
        "person (default: its graph's, or the server's).",
    )
    multitask_strategy: Literal["enqueue", "reject"] = Field(
        default="enqueue",
        description="When the thread already has a queued or running execution: wait behind "
        "it (enqueue) or answer 409 thread_busy (reject).",
    )

    @field_validator("graph_id", "thread_id")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        return _no_unstorable(value)

    @field_validator("input", "metadata")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        return _no_unstorable(value)

    @field_validator("config")
    @classmethod
    def _storable_config(cls, config: RunConfig | None) -> RunConfig | None:
        if config is not None:
            _no_unstorable(config.model_dump(exclude_none=True))
        return config

    def run_config(self) -> dict[str, Any]:
        """The config as stored: only what the request set."""
        return {} if self.config is None else self.config.model_dump(exclude_none=True)


class ResumeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resume: Any = Field(description="The value the paused interrupt() returns.")

    @field_validator("resume")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        return _no_unstorable(value)


class ExecutionError(BaseModel):
    type: str = Field(description='The exception type, or "timeout".')
    message: str


class Interrupt(BaseModel):
    id: str
    value: Any


class AttemptError(BaseModel):
    attempt: int
    type: str
    message: str
    at: datetime


class ExecutionSummary(BaseModel):
    """An execution as lists show it: without its input and result unless asked for."""

    execution_id: uuid.UUID
    graph_id: str
    thread_id: str
    status: Status
    error: ExecutionError | None = None
    config: dict[str, Any]
    metadata: dict[str, Any]
    attempts: int = Field(
        description="Attempts used: starts by a worker, not counting hand-backs at shutdown."
    )
    max_attempts: int
    attempt_errors: list[AttemptError] = Field(description="The error of each failed attempt.")
    timeout_s: float | None
    durability: str | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    delete_after: datetime | None = Field(
        default=None,
        description="When it may be pruned, with its idempotency key (set once it finished "
        "or paused, from its retention; null: kept).",
    )
    request_id: str | None = Field(
        default=None, description="The X-Request-ID of the submission that created it."
    )
    unreadable: str | None = Field(
        default=None,
        description="Set when the stored record cannot be shown in full (written by an older "
        "version, or damaged): what failed. The other fields are then left out.",
    )


class ExecutionOut(ExecutionSummary):
    input: Any = None
    output: Any = None
    interrupts: list[Interrupt] | None = Field(
        default=None, description="What the graph asked for, while INTERRUPTED."
    )

    @classmethod
    def of(
        cls, execution: Execution, *, with_input: bool = True, with_result: bool = True
    ) -> ExecutionOut:
        return cls(
            execution_id=execution.execution_id,
            graph_id=execution.graph_id,
            thread_id=execution.thread_id,
            status=execution.status,
            input=execution.input if with_input else None,
            output=execution.output if with_result else None,
            error=ExecutionError.model_validate(execution.error) if execution.error else None,
            # Kept after a resume (they say which interrupts the value answers), shown
            # only while the execution waits for an answer.
            interrupts=[Interrupt.model_validate(i) for i in execution.interrupts]
            if with_result
            and execution.interrupts is not None
            and execution.status is Status.INTERRUPTED
            else None,
            config=execution.config,
            metadata=execution.meta,
            attempts=execution.attempts_used,
            max_attempts=execution.max_attempts,
            attempt_errors=[AttemptError.model_validate(e) for e in execution.attempt_errors],
            timeout_s=execution.timeout_s,
            durability=execution.durability,
            created_at=execution.created_at,
            updated_at=execution.updated_at,
            started_at=execution.started_at,
            finished_at=execution.finished_at,
            delete_after=execution.delete_after,
            request_id=execution.request_id,
        )


class ExecutionPage(BaseModel):
    items: list[ExecutionOut] = Field(
        description="Without input, output and interrupts unless ?include= asks for them."
    )
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page.")


class GraphOut(BaseModel):
    graph_id: str
    description: str | None
    input_schema: dict[str, Any] | None
    output_schema: dict[str, Any] | None


class Health(BaseModel):
    status: Literal["ok", "degraded", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    code: str = Field(description="Machine-readable, e.g. not_found, validation_error.")
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorBody
