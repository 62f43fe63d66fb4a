"""The temporary thread of a threadless run (core/platform/temporary.py): deleted with its
checkpoints on every ending of the run (success, error, timeout, cancelled while running or
while still queued), kept while the run waits for a retry, kept with on_completion=keep,
and swept by the reconciler when it was left behind. The platform API with its worker in
process (as `lg-deploy dev`), on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver

from lg_deploy.core.checkpoint import open_checkpointer
from lg_deploy.core.graphs import GraphRegistry
from lg_deploy.core.models import utcnow
from lg_deploy.core.platform.temporary import sweep_temporary_threads
from lg_deploy.core.states import Status
from lg_deploy.core.store import Outcome, open_store
from lg_deploy.core.store.platform_base import PlatformStore
from lg_deploy.run.wiring import open_backends
from tests.conftest import eventually, make_settings, serve_in_process

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PlatformStore]:
    opened = open_store(database_url)
    yield opened  # type: ignore[misc]
    await opened.close()


@pytest.fixture
async def checkpointer(database_url: str) -> AsyncIterator[BaseCheckpointSaver]:
    async with open_checkpointer(database_url) as saver:
        yield saver


async def start_run(http: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    """A threadless run created with POST /runs."""
    response = await http.post("/runs", json=body)
    assert response.status_code == 200, response.text
    run: dict[str, Any] = response.json()
    return run


async def status_of(http: httpx.AsyncClient, run: dict[str, Any]) -> str:
    response = await http.get(f"/threads/{run['thread_id']}/runs/{run['run_id']}")
    assert response.status_code == 200, response.text  # the run's record stays
    status: str = response.json()["status"]
    return status


async def thread_exists(http: httpx.AsyncClient, thread_id: str) -> bool:
    response = await http.get(f"/threads/{thread_id}")
    assert response.status_code in (200, 404)
    return response.status_code == 200


async def checkpoints_of(checkpointer: BaseCheckpointSaver, thread_id: str) -> int:
    return len([t async for t in checkpointer.alist({"configurable": {"thread_id": thread_id}})])


async def gone_with_its_checkpoints(
    http: httpx.AsyncClient, checkpointer: BaseCheckpointSaver, run: dict[str, Any], status: str
) -> None:
    """The run ended with ``status``, its record stays, its thread and checkpoints do not."""
    tid = run["thread_id"]

    async def ended() -> bool:
        return await status_of(http, run) not in ("pending", "running")

    await eventually(ended, what="the run's end")
    assert await status_of(http, run) == status
    await eventually(lambda: _not(thread_exists(http, tid)), what="the temporary thread deleted")
    assert await checkpoints_of(checkpointer, tid) == 0


async def _not(condition: Any) -> bool:
    return not await condition


ENDINGS = [
    ("success", {"assistant_id": "steps", "input": {"text": "a"}}, {}),
    ("success", {"assistant_id": "approval", "input": {"request": "pause"}}, {}),
    ("error", {"assistant_id": "fail", "input": {"message": "no"}}, {}),
    (
        "timeout",
        {"assistant_id": "slow", "input": {"steps": 100, "sleep_s": 0.05}},
        {"execution_timeout_s": 1.0},
    ),
    (
        "error",
        {"assistant_id": "steps", "input": {"text": "big" * 100}},
        {"max_output_bytes": 100},
    ),
]


@pytest.mark.parametrize(
    ("status", "body", "settings"),
    ENDINGS,
    ids=["success", "paused", "error", "timeout", "output-too-large"],
)
async def test_the_temporary_thread_goes_on_every_ending(
    database_url: str,
    registry: GraphRegistry,
    checkpointer: BaseCheckpointSaver,
    status: str,
    body: dict[str, Any],
    settings: dict[str, Any],
) -> None:
    """A threadless run that succeeds, pauses in interrupt(), fails, runs out of time or
    returns a result over the size limit ends, and its temporary thread and checkpoints
    are deleted (a timeout or an oversized result used to leave them forever)."""
    async with serve_in_process(make_settings(database_url, **settings), registry) as http:
        run = await start_run(http, body)
        await gone_with_its_checkpoints(http, checkpointer, run, status)


async def test_cancelled_while_running_the_thread_goes(
    database_url: str, registry: GraphRegistry, checkpointer: BaseCheckpointSaver
) -> None:
    """A threadless run cancelled while it runs ends interrupted; its worker deletes the
    temporary thread once it has stopped (it used to stay)."""
    async with serve_in_process(make_settings(database_url), registry) as http:
        run = await start_run(
            http, {"assistant_id": "slow", "input": {"steps": 100, "sleep_s": 0.05}}
        )
        tid = run["thread_id"]

        async def started() -> bool:
            return await checkpoints_of(checkpointer, tid) >= 2

        await eventually(started, what="a step done")
        cancel = await http.post(f"/threads/{tid}/runs/{run['run_id']}/cancel")
        assert cancel.status_code == 202
        await gone_with_its_checkpoints(http, checkpointer, run, "interrupted")


@pytest.mark.parametrize("action", ["interrupt", "rollback"])
async def test_cancelled_while_queued_the_api_deletes_the_thread(
    database_url: str, registry: GraphRegistry, action: str
) -> None:
    """A threadless run cancelled before any worker claimed it (it waits for its
    after_seconds) will never be seen by a worker: the API deletes its temporary thread
    itself, before it answers."""
    async with serve_in_process(make_settings(database_url), registry) as http:
        run = await start_run(
            http, {"assistant_id": "steps", "input": {"text": "a"}, "after_seconds": 600}
        )
        assert await thread_exists(http, run["thread_id"])
        cancel = await http.post(
            f"/threads/{run['thread_id']}/runs/{run['run_id']}/cancel",
            params={"action": action},
        )
        assert cancel.status_code == 202
        assert not await thread_exists(http, run["thread_id"])


async def test_the_thread_stays_while_the_run_waits_for_a_retry(
    database_url: str, registry: GraphRegistry, checkpointer: BaseCheckpointSaver, tmp_path: Path
) -> None:
    """A threadless run whose attempt fails with a retryable error waits for its retry
    with its temporary thread and checkpoints (they used to be deleted with the failed
    attempt), and the thread goes once the retry succeeds."""
    counter = tmp_path / "tries.txt"
    settings = make_settings(database_url, retry_backoff_s=2.0)
    async with serve_in_process(settings, registry) as http:
        run = await start_run(
            http,
            {"assistant_id": "flaky", "input": {"counter_file": str(counter), "failures": 1}},
        )
        tid = run["thread_id"]

        async def waits_for_its_retry() -> bool:
            tried = counter.exists() and len(counter.read_text().splitlines()) == 1
            return tried and await status_of(http, run) == "pending"

        await eventually(waits_for_its_retry, what="the retry's wait")
        assert await thread_exists(http, tid)
        assert await checkpoints_of(checkpointer, tid) >= 1
        await gone_with_its_checkpoints(http, checkpointer, run, "success")
        assert len(counter.read_text().splitlines()) == 2


async def test_on_completion_keep_keeps_the_thread(
    database_url: str, registry: GraphRegistry
) -> None:
    """A threadless run with on_completion=keep leaves its thread with its state."""
    async with serve_in_process(make_settings(database_url), registry) as http:
        response = await http.post(
            "/runs/wait",
            json={"assistant_id": "fail", "input": {"message": "kept"}, "on_completion": "keep"},
        )
        assert response.json()["__error__"]["message"] == "kept"
        tid = response.headers["Content-Location"].split("/")[2]
        assert (await http.get(f"/threads/{tid}")).json()["status"] == "error"


async def test_the_reconciler_sweeps_a_thread_left_behind(
    database_url: str, registry: GraphRegistry, store: PlatformStore
) -> None:
    """A temporary thread whose run was cancelled while queued, by an API process that
    died before deleting the thread (here: the store's cancel alone), is deleted by a
    worker's reconciler loop."""
    async with serve_in_process(make_settings(database_url), registry) as http:
        run = await start_run(
            http, {"assistant_id": "steps", "input": {"text": "a"}, "after_seconds": 600}
        )
        await store.cancel(uuid.UUID(run["run_id"]))
        assert await thread_exists(http, run["thread_id"])
        await eventually(
            lambda: _not(thread_exists(http, run["thread_id"])), what="the reconciler's sweep"
        )
        assert await status_of(http, run) == "interrupted"


async def test_sweep_deletes_only_temporary_threads_whose_run_ended(
    database_url: str,
    registry: GraphRegistry,
    store: PlatformStore,
    checkpointer: BaseCheckpointSaver,
) -> None:
    """sweep_temporary_threads deletes the temporary thread of a run that ended (its
    worker died after recording the end: claimed and finished here through the store)
    with its checkpoints, keeps the run's record, and leaves alone a temporary thread
    whose run is still queued, one kept with on_completion=keep, and a thread of
    POST /threads; with created_after, only threads created since then are looked at."""
    settings = make_settings(database_url)
    backends = lambda: open_backends(settings, events=True, checkpointer=True)  # noqa: E731
    async with serve_in_process(settings, registry, backends=backends) as http:  # no worker
        body = {"assistant_id": "steps", "input": {"text": "a"}}
        ended = await start_run(http, body)
        kept = await start_run(http, {**body, "on_completion": "keep"})
        queued = await start_run(http, body)
        tid = (await http.post("/threads", json={})).json()["thread_id"]
        stateful = (await http.post(f"/threads/{tid}/runs", json=body)).json()
        config: Any = {"configurable": {"thread_id": ended["thread_id"], "checkpoint_ns": ""}}
        graph = await registry.build("steps", {}, checkpointer)
        await graph.aupdate_state(config, {"text": "left"}, as_node="upper")
        for run in (ended, kept, stateful):
            claimed = await store.claim(uuid.UUID(run["run_id"]), "a-worker-that-dies", 30)
            assert claimed is not None
            await store.finish(claimed.execution_id, 1, Outcome(Status.COMPLETED, output={}))
        recent_only = await sweep_temporary_threads(store, checkpointer, created_after=utcnow())
        assert recent_only == 0 and await thread_exists(http, ended["thread_id"])
        assert await sweep_temporary_threads(store, checkpointer) == 1
        assert not await thread_exists(http, ended["thread_id"])
        assert await checkpoints_of(checkpointer, ended["thread_id"]) == 0
        assert await status_of(http, ended) == "success"
        for thread_id in (kept["thread_id"], queued["thread_id"], tid):
            assert await thread_exists(http, thread_id)
        assert await sweep_temporary_threads(store, checkpointer) == 0


async def test_deleting_the_thread_of_a_queued_threadless_run(
    database_url: str, registry: GraphRegistry
) -> None:
    """DELETE /threads/{id} on the temporary thread of a run still queued cancels the run
    and answers 204, although cancelling the run deleted the thread first."""
    async with serve_in_process(make_settings(database_url), registry) as http:
        run = await start_run(
            http, {"assistant_id": "steps", "input": {"text": "a"}, "after_seconds": 600}
        )
        deleted = await http.delete(f"/threads/{run['thread_id']}")
        assert deleted.status_code == 204, deleted.text
        assert not await thread_exists(http, run["thread_id"])
