"""Request and response bodies of the REST API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lg_deploy.core.jsonable import find_unstorable
from lg_deploy.core.models import Execution
from lg_deploy.core.states import Status

MAX_TIMEOUT_S = 7 * 24 * 3600
RESERVED_CONFIGURABLE = frozenset(
    {"thread_id", "checkpoint_id", "checkpoint_ns", "checkpoint_map", "checkpoint_during"}
)


class ExecuteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    graph_id: str = Field(min_length=1, max_length=200, description="A graph of langgraph.json.")
    input: Any = Field(default=None, description="The graph's input (JSON).")
    config: dict[str, Any] | None = Field(
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
        description="Time limit of each attempt in seconds (default: the server's).",
    )
    max_attempts: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="Attempts for a retryable failure, the first included (default: the server's).",
    )
    multitask_strategy: Literal["enqueue", "reject"] = Field(
        default="enqueue",
        description="When the thread already has a queued or running execution: wait behind "
        "it (enqueue) or answer 409 thread_busy (reject).",
    )

    @field_validator("graph_id", "thread_id")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain a NUL character")
        return value

    @field_validator("input", "config", "metadata")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        if problem := find_unstorable(value):
            raise ValueError(problem)
        return value

    @field_validator("config")
    @classmethod
    def _no_reserved_config(cls, config: dict[str, Any] | None) -> dict[str, Any] | None:
        """The thread and the checkpoints are lg-deploy's to choose: a caller's choice
        would break resuming after a crash."""
        if config is None:
            return None
        for key in ("configurable", "metadata"):
            if key in config and not isinstance(config[key], dict):
                raise ValueError(f"config.{key} must be an object")
        configurable = config.get("configurable") or {}
        reserved = sorted(
            k for k in configurable if k in RESERVED_CONFIGURABLE or k.startswith("__")
        )
        if reserved:
            raise ValueError(
                f"config.configurable may not set {', '.join(reserved)}: lg-deploy manages "
                "threads and checkpoints (use thread_id)"
            )
        return config


class ResumeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resume: Any = Field(description="The value the paused interrupt() returns.")

    @field_validator("resume")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        if problem := find_unstorable(value):
            raise ValueError(problem)
        return value


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


class ExecutionOut(BaseModel):
    execution_id: uuid.UUID
    graph_id: str
    thread_id: str
    status: Status
    input: Any
    output: Any = None
    error: ExecutionError | None = None
    interrupts: list[Interrupt] | None = Field(
        default=None, description="What the graph asked for, while INTERRUPTED."
    )
    config: dict[str, Any]
    metadata: dict[str, Any]
    attempts: int = Field(
        description="Attempts used: starts by a worker, not counting hand-backs at shutdown."
    )
    max_attempts: int
    attempt_errors: list[AttemptError] = Field(description="The error of each failed attempt.")
    timeout_s: float | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, execution: Execution) -> ExecutionOut:
        return cls(
            execution_id=execution.execution_id,
            graph_id=execution.graph_id,
            thread_id=execution.thread_id,
            status=execution.status,
            input=execution.input,
            output=execution.output,
            error=ExecutionError.model_validate(execution.error) if execution.error else None,
            # Kept after a resume (they say which interrupts the value answers), shown
            # only while the execution waits for an answer.
            interrupts=[Interrupt.model_validate(i) for i in execution.interrupts]
            if execution.interrupts is not None and execution.status is Status.INTERRUPTED
            else None,
            config=execution.config,
            metadata=execution.meta,
            attempts=execution.attempts_used,
            max_attempts=execution.max_attempts,
            attempt_errors=[AttemptError.model_validate(e) for e in execution.attempt_errors],
            timeout_s=execution.timeout_s,
            created_at=execution.created_at,
            updated_at=execution.updated_at,
            started_at=execution.started_at,
            finished_at=execution.finished_at,
        )


class ExecutionPage(BaseModel):
    items: list[ExecutionOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page.")


class GraphOut(BaseModel):
    graph_id: str
    description: str | None
    input_schema: dict[str, Any] | None
    output_schema: dict[str, Any] | None


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    code: str = Field(description="Machine-readable, e.g. not_found, validation_error.")
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorBody
