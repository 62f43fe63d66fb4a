"""The store's queries of the LangGraph Platform API (core/store/platform_sql.py) and the
one status mapping (core/platform/statuses.py), on SQLite and PostgreSQL alike."""

from __future__ import annotations

import uuid
from typing import Any, cast

import pytest

from lg_deploy.core.errors import NotFound
from lg_deploy.core.ids import new_execution_id
from lg_deploy.core.models import Assistant, Execution, Thread
from lg_deploy.core.platform.assistants import resolve_assistant_id, system_assistant_id
from lg_deploy.core.platform.errors import AlreadyExists, InvalidAssistant
from lg_deploy.core.platform.statuses import execution_statuses, run_status
from lg_deploy.core.states import Status
from lg_deploy.core.store import Outcome, Store
from lg_deploy.core.store.platform_base import AssistantQuery, PlatformStore, ThreadQuery


@pytest.fixture
def platform(store: Store) -> PlatformStore:
    return cast(PlatformStore, store)


def assistant(graph_id: str = "steps", **fields: Any) -> Assistant:
    return Assistant(
        assistant_id=fields.pop("assistant_id", uuid.uuid4()),
        graph_id=graph_id,
        name=fields.pop("name", graph_id),
        **fields,
    )


def run_on(thread_id: str) -> Execution:
    return Execution(
        execution_id=new_execution_id(),
        graph_id="steps",
        thread_id=thread_id,
        assistant_id=system_assistant_id("steps"),
        platform={"kwargs": {}},
    )


def test_the_status_mapping_covers_every_status() -> None:
    """Every execution status has a run status; a FAILED run is a timeout only when its
    error type says so, and each run status filters back to its execution statuses."""
    assert {s: run_status(s, None) for s in Status if s is not Status.FAILED} == {
        Status.QUEUED: "pending",
        Status.RUNNING: "running",
        Status.COMPLETED: "success",
        Status.INTERRUPTED: "success",
        Status.CANCELLED: "interrupted",
    }
    assert run_status(Status.FAILED, {"type": "timeout"}) == "timeout"
    assert run_status(Status.FAILED, {"type": "ValueError"}) == "error"
    assert execution_statuses("success") == (
        frozenset({Status.COMPLETED, Status.INTERRUPTED}),
        None,
    )
    assert execution_statuses("timeout") == (frozenset({Status.FAILED}), True)


def test_graph_ids_resolve_to_their_system_assistant() -> None:
    """A graph id means its system assistant (the platform's uuid5); a UUID is itself;
    anything else is an InvalidAssistant."""
    assert resolve_assistant_id("steps", {"steps"}) == uuid.uuid5(
        uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8"), "steps"
    )
    some = uuid.uuid4()
    assert resolve_assistant_id(str(some), {"steps"}) == some
    with pytest.raises(InvalidAssistant):
        resolve_assistant_id("nope", {"steps"})


async def test_assistants_are_versioned(platform: PlatformStore) -> None:
    """Create (once; a second create raises or returns the first), update into new
    versions, list them newest first, go back to one, search and delete."""
    tag = uuid.uuid4().hex
    made = await platform.create_assistant(assistant(meta={"tag": tag}), "raise")
    with pytest.raises(AlreadyExists):
        await platform.create_assistant(assistant(assistant_id=made.assistant_id), "raise")
    same = await platform.create_assistant(
        assistant(assistant_id=made.assistant_id, name="other"), "do_nothing"
    )
    assert same.name == "steps"
    second = await platform.update_assistant(made.assistant_id, {"name": "v2"})
    third = await platform.update_assistant(made.assistant_id, {"config": {"tags": ["x"]}})
    assert (second.version, third.version, third.name) == (2, 3, "v2")
    versions = await platform.assistant_versions(
        made.assistant_id, metadata=None, limit=10, offset=0
    )
    assert [v.version for v in versions] == [3, 2, 1]
    back = await platform.set_assistant_version(made.assistant_id, 1)
    assert (back.version, back.name, back.config) == (1, "steps", {})
    found = await platform.search_assistants(
        AssistantQuery(metadata={"tag": tag}),
        limit=10,
        offset=0,
        sort_by="created_at",
        order="desc",
    )
    assert [a.assistant_id for a in found.items] == [made.assistant_id] and found.total == 1
    await platform.delete_assistant(made.assistant_id)
    with pytest.raises(NotFound):
        await platform.get_assistant(made.assistant_id)


async def test_system_assistants_are_made_once(platform: PlatformStore) -> None:
    """ensure_assistants inserts what is missing and leaves existing ones as they are."""
    system = assistant("approval", assistant_id=system_assistant_id("approval"))
    await platform.ensure_assistants([system])
    await platform.update_assistant(system.assistant_id, {"name": "renamed"})
    await platform.ensure_assistants([system])
    assert (await platform.get_assistant(system.assistant_id)).name == "renamed"


async def test_a_thread_is_busy_while_a_run_is_active(platform: PlatformStore) -> None:
    """A thread's status is busy while one of its executions is queued or running, and
    otherwise the status its last run recorded; searches filter on that status."""
    tid = f"t-{uuid.uuid4().hex}"
    await platform.create_thread(Thread(thread_id=tid, meta={"k": tid}), "raise")
    assert (await platform.get_thread(tid)).status == "idle"
    run = run_on(tid)
    await platform.create(run)
    assert (await platform.get_thread(tid)).status == "busy"

    async def search(status: str) -> list[str]:
        found = await platform.search_threads(
            ThreadQuery(metadata={"k": tid}, status=status),
            limit=10,
            offset=0,
            sort_by="created_at",
            order="desc",
        )
        return [t.thread_id for t in found.items]

    assert await search("busy") == [tid] and await search("idle") == []
    claimed = await platform.claim(run.execution_id, "w", 30)
    assert claimed is not None
    recorded = await platform.record_thread_state(
        tid,
        status="interrupted",
        values={"a": 1},
        interrupts={"task": []},
        fenced_on=(run.execution_id, claimed.attempt),
    )
    assert recorded
    stale = await platform.record_thread_state(
        tid, status="error", values=None, interrupts=None, fenced_on=(run.execution_id, 99)
    )
    assert not stale
    await platform.finish(run.execution_id, claimed.attempt, Outcome(Status.COMPLETED))
    thread = await platform.get_thread(tid)
    assert (thread.status, thread.state_values) == ("interrupted", {"a": 1})
    assert await search("interrupted") == [tid]


async def test_runs_of_a_thread_newest_first_and_deleted_with_it(platform: PlatformStore) -> None:
    """A thread's runs come newest first, filtered by status (timeouts apart from other
    failures); deleting the thread deletes its finished runs."""
    tid = f"t-{uuid.uuid4().hex}"
    await platform.create_thread(Thread(thread_id=tid), "raise")
    runs = [run_on(tid) for _ in range(3)]
    for run in runs:
        await platform.create(run)
    for run, error in zip(runs[:2], ("timeout", "ValueError"), strict=True):
        claimed = await platform.claim(run.execution_id, "w", 30)
        assert claimed is not None
        await platform.finish(
            run.execution_id,
            claimed.attempt,
            Outcome(Status.FAILED, error={"type": error, "message": "m"}),
        )
    listed = await platform.runs_of_thread(tid)
    assert [r.execution_id for r in listed] == [r.execution_id for r in reversed(runs)]
    timeouts = await platform.runs_of_thread(tid, statuses=[Status.FAILED], timeout=True)
    errors = await platform.runs_of_thread(tid, statuses=[Status.FAILED], timeout=False)
    assert [r.execution_id for r in timeouts] == [runs[0].execution_id]
    assert [r.execution_id for r in errors] == [runs[1].execution_id]
    assert [r.execution_id for r in await platform.active_runs(thread_id=tid)] == [
        runs[2].execution_id
    ]
    await platform.cancel(runs[2].execution_id)
    await platform.delete_thread(tid)
    with pytest.raises(NotFound):
        await platform.get(runs[0].execution_id)
    with pytest.raises(NotFound):
        await platform.get_thread(tid)
