"""Request bodies of the LangGraph Platform API, as ``langgraph-sdk`` sends them.

Fields the platform ignores, or that this implementation does not use, are accepted and
ignored (the SDK sends some on every call); what a store or LangGraph could not take back
is refused with 422, as on the rest of the API (``core/jsonable.py``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from fastapi import Path, Query
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from lg_deploy.core.jsonable import find_unstorable
from lg_deploy.core.platform.runs import STREAM_MODES

Json = dict[str, Any]
SortOrder = Literal["asc", "desc"]
ThreadStatusIn = Literal["idle", "busy", "interrupted", "error"]
# The length of the id and name columns (core/models.py).
ID_LENGTH = 200
# A checkpoint namespace names the subgraphs down to it: "<node>:<task id>|...".
NAMESPACE_LENGTH = 1000
WEBHOOK_LENGTH = 2000
DESCRIPTION_LENGTH = 10_000


def _storable(value: Any) -> Any:
    if problem := find_unstorable(value):
        raise ValueError(problem)
    return value


# An id as the store keeps it: 1 to 200 characters, none of them NUL (PostgreSQL's text
# refuses NUL, and a longer id does not fit its column).
Id = Annotated[
    str, StringConstraints(min_length=1, max_length=ID_LENGTH), AfterValidator(_storable)
]
Text = Annotated[str, AfterValidator(_storable)]
ThreadIdPath = Annotated[
    str,
    Path(min_length=1, max_length=ID_LENGTH, description="A thread id."),
    AfterValidator(_storable),
]
CheckpointIdQuery = Annotated[
    str,
    Query(min_length=1, max_length=ID_LENGTH, description="A checkpoint id."),
    AfterValidator(_storable),
]
CheckpointIdPath = Annotated[
    str,
    Path(min_length=1, max_length=ID_LENGTH, description="A checkpoint id."),
    AfterValidator(_storable),
]


def _checkpoint(value: Json) -> Json:
    """A checkpoint as the SDK sends it: ``thread_id``, ``checkpoint_ns``,
    ``checkpoint_id`` (text) and ``checkpoint_map`` (namespace -> checkpoint id)."""
    limits = {"thread_id": ID_LENGTH, "checkpoint_id": ID_LENGTH, "checkpoint_ns": NAMESPACE_LENGTH}
    for key, limit in limits.items():
        found = value.get(key)
        if found is None:
            continue
        if not isinstance(found, str):
            raise ValueError(f"{key} must be a string")
        if len(found) > limit:
            raise ValueError(f"{key} must have at most {limit} characters")
    found_map = value.get("checkpoint_map")
    if found_map is not None and not (
        isinstance(found_map, dict) and all(isinstance(v, str) for v in found_map.values())
    ):
        raise ValueError("checkpoint_map must map namespaces to checkpoint ids")
    return _storable(value)


Checkpoint = Annotated[Json, AfterValidator(_checkpoint)]


class Body(BaseModel):
    """Every request body: unknown fields are ignored, and nothing in it may hold what a
    store cannot take back (a NUL character, a lone surrogate, ...: core/jsonable.py)."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="after")
    def _all_storable(self) -> Self:
        _storable(self.model_dump())
        return self


class AssistantCreate(Body):
    graph_id: Id
    assistant_id: Id | None = None
    config: Json = Field(default_factory=dict)
    context: Json = Field(default_factory=dict)
    metadata: Json = Field(default_factory=dict)
    if_exists: Literal["raise", "do_nothing"] = "raise"
    name: Text | None = Field(default=None, max_length=ID_LENGTH)
    description: Text | None = Field(default=None, max_length=DESCRIPTION_LENGTH)

    _check = field_validator("config", "context", "metadata")(_storable)


class AssistantPatch(Body):
    graph_id: Id | None = None
    config: Json | None = None
    context: Json | None = None
    metadata: Json | None = None
    name: Text | None = Field(default=None, max_length=ID_LENGTH)
    description: Text | None = Field(default=None, max_length=DESCRIPTION_LENGTH)

    _check = field_validator("config", "context", "metadata")(_storable)


class AssistantCount(Body):
    metadata: Json | None = None
    graph_id: Id | None = None
    name: Text | None = Field(default=None, max_length=ID_LENGTH)


class AssistantSearch(AssistantCount):
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)
    sort_by: Literal["assistant_id", "created_at", "updated_at", "name", "graph_id"] | None = None
    sort_order: SortOrder | None = None
    select: list[str] | None = None


class AssistantVersionsSearch(Body):
    metadata: Json | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)


class AssistantLatest(Body):
    version: int = Field(ge=1)


class StateUpdateIn(Body):
    values: Any = None
    command: Json | None = None
    as_node: str | None = None

    _check = field_validator("values", "command", "as_node")(_storable)


class Superstep(Body):
    updates: list[StateUpdateIn] = Field(min_length=1)


class ThreadCreate(Body):
    thread_id: Id | None = None
    metadata: Json = Field(default_factory=dict)
    if_exists: Literal["raise", "do_nothing"] = "raise"
    supersteps: list[Superstep] | None = None

    _check = field_validator("metadata")(_storable)


class ThreadCount(Body):
    metadata: Json | None = None
    status: ThreadStatusIn | None = None


class ThreadSearch(ThreadCount):
    ids: list[Id] | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)
    sort_by: Literal["thread_id", "status", "created_at", "updated_at"] | None = None
    sort_order: SortOrder | None = None
    select: list[str] | None = None


class ThreadPatch(Body):
    metadata: Json = Field(default_factory=dict)

    _check = field_validator("metadata")(_storable)


class ThreadStateUpdate(Body):
    values: Any = None
    checkpoint: Checkpoint | None = None
    checkpoint_id: Id | None = None
    as_node: Text | None = Field(default=None, max_length=ID_LENGTH)

    _check = field_validator("values")(_storable)


class ThreadStateAt(Body):
    checkpoint: Checkpoint
    subgraphs: bool = False


class HistorySearch(Body):
    limit: int = Field(default=10, ge=1, le=1000)
    before: Id | Checkpoint | None = None
    metadata: Json | None = None
    checkpoint: Checkpoint | None = None


class SendIn(Body):
    """A ``goto`` that sends input to a node (LangGraph's ``Send``)."""

    node: str = Field(min_length=1, max_length=200)
    input: Any = None


GotoTarget = Annotated[str, Field(min_length=1, max_length=200)] | SendIn


class CommandIn(Body):
    update: Any = None
    resume: Any = None
    goto: GotoTarget | list[GotoTarget] | None = None


class RunConfigIn(Body):
    """The keys of a run's ``config`` that the run uses, checked as ``/execute`` checks
    them (``api/schemas.py``); the others are ignored, and the thread and checkpoint keys
    of ``configurable`` are dropped (``api/platform/run_ops.py``)."""

    configurable: Json | None = None
    metadata: Json | None = None
    tags: list[str] | None = None
    recursion_limit: int | None = Field(default=None, ge=1, le=100_000)
    max_concurrency: int | None = Field(default=None, ge=1, le=10_000)
    run_name: str | None = Field(default=None, max_length=200)


class RunCreate(Body):
    """``RunCreateStateful`` and ``RunCreateStateless`` with their streaming variants."""

    assistant_id: Id
    input: Any = None
    command: CommandIn | None = None
    metadata: Json | None = None
    config: RunConfigIn | None = None
    context: Json | None = None
    checkpoint: Checkpoint | None = None
    checkpoint_id: Id | None = None
    stream_mode: str | list[str] = "values"
    stream_subgraphs: bool = False
    stream_resumable: bool = False
    interrupt_before: Literal["*"] | list[str] | None = None
    interrupt_after: Literal["*"] | list[str] | None = None
    webhook: Text | None = Field(default=None, max_length=WEBHOOK_LENGTH)
    feedback_keys: list[str] | None = None
    multitask_strategy: Literal["reject", "rollback", "interrupt", "enqueue"] | None = None
    if_not_exists: Literal["create", "reject"] | None = None
    after_seconds: float | None = Field(default=None, ge=0, le=7 * 24 * 3600)
    durability: Literal["sync", "async", "exit"] | None = None
    checkpoint_during: bool | None = None
    on_disconnect: Literal["cancel", "continue"] = "continue"
    on_completion: Literal["delete", "keep"] | None = None

    _check = field_validator("input", "metadata", "context")(_storable)

    @field_validator("config")
    @classmethod
    def _storable_config(cls, value: RunConfigIn | None) -> RunConfigIn | None:
        if value is not None:
            _storable(value.model_dump(exclude_none=True))
        return value

    def run_config(self) -> Json:
        """The config as given, the keys a run uses only."""
        return {} if self.config is None else self.config.model_dump(exclude_none=True)

    @field_validator("stream_mode")
    @classmethod
    def _known_modes(cls, value: str | list[str]) -> list[str]:
        modes = [value] if isinstance(value, str) else list(value)
        unknown = [m for m in modes if m not in STREAM_MODES]
        if unknown:
            raise ValueError(
                f"unknown stream mode {unknown[0]!r}; known: {', '.join(STREAM_MODES)}"
            )
        return modes or ["values"]

    @field_validator("command")
    @classmethod
    def _storable_command(cls, value: CommandIn | None) -> CommandIn | None:
        if value is not None:
            _storable(value.model_dump())
        return value


class RunsCancel(Body):
    """Which runs ``POST /runs/cancel`` stops: those with a status (of one thread, with
    ``thread_id``), or some runs of a thread. Never every run by default."""

    status: Literal["pending", "running", "all"] | None = None
    thread_id: Id | None = None
    run_ids: list[Id] | None = None

    @model_validator(mode="after")
    def _says_which(self) -> Self:
        if self.run_ids is not None and self.thread_id is None:
            raise ValueError("run_ids need the thread_id of the runs to cancel")
        if self.status is None and self.run_ids is None:
            raise ValueError(
                "say which runs to cancel: a status (pending, running or all), or a "
                "thread_id and its run_ids"
            )
        return self
