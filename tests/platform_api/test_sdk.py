"""The LangGraph Platform API driven by the official langgraph-sdk and RemoteGraph, against
`lg-deploy dev` and against `lg-deploy api` + two `lg-deploy worker`s on PostgreSQL and
Redis: assistants, threads, state and history, runs, interrupts, failures, multitasking."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph.pregel.remote import RemoteGraph
from langgraph_sdk import get_client
from langgraph_sdk.errors import ConflictError, NotFoundError, UnprocessableEntityError

from lg_deploy.core.platform.assistants import system_assistant_id

pytestmark = pytest.mark.timeout(120)


async def wait_for_status(
    client: Any, thread_id: str, run_id: str, *statuses: str
) -> dict[str, Any]:
    """Poll the run until it has one of ``statuses``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        run = await client.runs.get(thread_id, run_id)
        if run["status"] in statuses:
            return dict(run)
        assert loop.time() < deadline, f"run {run_id} stayed {run['status']}"
        await asyncio.sleep(0.05)


async def test_every_graph_has_a_system_assistant(client: Any) -> None:
    """Each graph of langgraph.json has an assistant whose id is the platform's uuid5 of
    the graph id, made by the system; a graph id works wherever an assistant id does."""
    found = await client.assistants.search(graph_id="steps")
    assert [a["assistant_id"] for a in found] == [str(system_assistant_id("steps"))]
    assert found[0]["metadata"] == {"created_by": "system"}
    by_graph = await client.assistants.get("steps")
    assert by_graph["assistant_id"] == str(system_assistant_id("steps"))
    assert await client.assistants.count(graph_id="approval") == 1
    schemas = await client.assistants.get_schemas("steps")
    assert schemas["input_schema"]["properties"] == {"text": {"title": "Text", "type": "string"}}
    assert {"text", "steps"} <= set(schemas["state_schema"]["properties"])
    graph = await client.assistants.get_graph("steps")
    assert {n["id"] for n in graph["nodes"]} == {"__start__", "upper", "exclaim", "__end__"}
    assert {(e["source"], e["target"]) for e in graph["edges"]} == {
        ("__start__", "upper"),
        ("upper", "exclaim"),
        ("exclaim", "__end__"),
    }


async def test_assistant_variants_are_created_versioned_and_deleted(
    client: Any,
) -> None:
    """A configured assistant keeps its config, context and metadata; an update makes a
    new version, both are listed, an older one can be made current again; deleted, it is
    gone (404)."""
    tag = uuid.uuid4().hex
    made = await client.assistants.create(
        "config_echo", config={"tags": ["a"]}, metadata={"tag": tag}, name="echo"
    )
    assert made["version"] == 1 and made["metadata"] == {"tag": tag}
    with pytest.raises(ConflictError):
        await client.assistants.create("config_echo", assistant_id=made["assistant_id"])
    same = await client.assistants.create(
        "config_echo", assistant_id=made["assistant_id"], if_exists="do_nothing"
    )
    assert same["assistant_id"] == made["assistant_id"]
    updated = await client.assistants.update(made["assistant_id"], metadata={"tag": tag, "v": 2})
    assert updated["version"] == 2 and updated["metadata"]["v"] == 2
    versions = await client.assistants.get_versions(made["assistant_id"])
    assert [v["version"] for v in versions] == [2, 1]
    back = await client.assistants.set_latest(made["assistant_id"], 1)
    assert back["version"] == 1 and back["metadata"] == {"tag": tag}
    assert [a["assistant_id"] for a in await client.assistants.search(metadata={"tag": tag})] == [
        made["assistant_id"]
    ]
    await client.assistants.delete(made["assistant_id"])
    with pytest.raises(NotFoundError):
        await client.assistants.get(made["assistant_id"])


async def test_a_run_uses_its_assistants_config(client: Any) -> None:
    """A run of a configured assistant gets the assistant's config (tags), and its own
    metadata and config come on top."""
    assistant = await client.assistants.create("config_echo", config={"tags": ["from-assistant"]})
    thread = await client.threads.create()
    result = await client.runs.wait(
        thread["thread_id"],
        assistant["assistant_id"],
        input={},
        config={"tags": ["from-run"]},
        metadata={"who": "test"},
    )
    assert {"from-assistant", "from-run"} <= set(result["tags"])
    [run] = await client.runs.list(thread["thread_id"])
    assert run["assistant_id"] == assistant["assistant_id"]
    assert run["metadata"] == {"who": "test"}


async def test_threads_are_created_found_updated_copied_and_deleted(
    client: Any,
) -> None:
    """Threads: create (if_exists raise / do_nothing), get, search and count by metadata,
    update metadata, copy with their state, delete with their checkpoints and runs."""
    tag = uuid.uuid4().hex
    thread = await client.threads.create(metadata={"tag": tag})
    tid = thread["thread_id"]
    assert thread["status"] == "idle"
    with pytest.raises(ConflictError):
        await client.threads.create(thread_id=tid)
    assert (await client.threads.create(thread_id=tid, if_exists="do_nothing"))["thread_id"] == tid
    await client.runs.wait(tid, "steps", input={"text": "copy me"})
    found = await client.threads.search(metadata={"tag": tag})
    assert [t["thread_id"] for t in found] == [tid]
    assert found[0]["values"] == {"text": "COPY ME!", "steps": ["upper", "exclaim"]}
    assert await client.threads.count(metadata={"tag": tag}) == 1
    updated = await client.threads.update(tid, metadata={"more": 1})
    assert updated["metadata"]["tag"] == tag and updated["metadata"]["more"] == 1
    copy = await client.threads.copy(tid)
    assert copy["thread_id"] != tid
    copied = await client.threads.get_state(copy["thread_id"])
    assert copied["values"] == {"text": "COPY ME!", "steps": ["upper", "exclaim"]}
    assert len(await client.threads.get_history(copy["thread_id"])) == len(
        await client.threads.get_history(tid)
    )
    await client.threads.delete(tid)
    with pytest.raises(NotFoundError):
        await client.threads.get(tid)
    assert (await client.threads.get_state(copy["thread_id"]))["values"]["text"] == "COPY ME!"


async def test_wait_state_and_history_match_the_graph_in_process(client: Any) -> None:
    """runs.wait answers the final values; the thread's state and its history (each
    checkpoint, newest first) are what LangGraph has for the same run in this process."""
    from langgraph.checkpoint.memory import InMemorySaver

    from lg_deploy.core.graphs import load_registry
    from tests.conftest import TEST_GRAPHS

    graph = await load_registry(TEST_GRAPHS).build("steps", {}, InMemorySaver())
    config: Any = {"configurable": {"thread_id": "reference"}}
    await graph.ainvoke({"text": "abc"}, config)
    reference = [s async for s in graph.aget_state_history(config)]

    thread = await client.threads.create()
    tid = thread["thread_id"]
    result = await client.runs.wait(tid, "steps", input={"text": "abc"})
    assert result == {"text": "ABC!", "steps": ["upper", "exclaim"]}
    state = await client.threads.get_state(tid)
    assert state["values"] == result and state["next"] == []
    history = await client.threads.get_history(tid)
    assert [h["values"] for h in history] == [s.values for s in reference]
    assert [h["next"] for h in history] == [list(s.next) for s in reference]
    assert [h["metadata"]["step"] for h in history] == [
        (s.metadata or {})["step"] for s in reference
    ]
    older = await client.threads.get_state(
        tid, checkpoint_id=history[1]["checkpoint"]["checkpoint_id"]
    )
    assert older["values"] == history[1]["values"]
    assert (await client.threads.get(tid))["status"] == "idle"


async def test_create_get_join_and_list_runs(client: Any) -> None:
    """A background run goes pending/running -> success; join answers its final values;
    list shows a thread's runs newest first, filtered by status."""
    thread = await client.threads.create()
    tid = thread["thread_id"]
    first = await client.runs.create(tid, "steps", input={"text": "one"})
    assert first["status"] in ("pending", "running") and first["thread_id"] == tid
    assert first["kwargs"]["input"] == {"text": "one"}
    assert await client.runs.join(tid, first["run_id"]) == {
        "text": "ONE!",
        "steps": ["upper", "exclaim"],
    }
    assert (await client.runs.get(tid, first["run_id"]))["status"] == "success"
    second = await client.runs.create(tid, "steps", input={"text": "two"})
    await client.runs.join(tid, second["run_id"])
    listed = await client.runs.list(tid)
    assert [r["run_id"] for r in listed] == [second["run_id"], first["run_id"]]
    assert len(await client.runs.list(tid, status="success")) == 2
    assert await client.runs.list(tid, status="error") == []
    await client.runs.delete(tid, first["run_id"])
    with pytest.raises(NotFoundError):
        await client.runs.get(tid, first["run_id"])


async def test_interrupt_then_resume_with_a_command(client: Any) -> None:
    """A graph that calls interrupt() ends its run with status success and leaves its
    thread interrupted, its question in the state; a run with Command(resume=...) answers
    it and the thread is idle again."""
    thread = await client.threads.create()
    tid = thread["thread_id"]
    paused = await client.runs.wait(tid, "approval", input={"request": "a post"})
    [question] = paused["__interrupt__"]
    assert question["value"]["question"] == "Approve this draft?"
    [run] = await client.runs.list(tid)
    assert run["status"] == "success"
    assert (await client.threads.get(tid))["status"] == "interrupted"
    state = await client.threads.get_state(tid)
    assert state["next"] == ["review"]
    assert state["interrupts"][0]["id"] == question["id"]
    assert state["tasks"][0]["interrupts"][0]["value"] == question["value"]
    done = await client.runs.wait(tid, "approval", command={"resume": "yes"})
    assert done["status"] == "published" and done["decision"] == "yes"
    assert (await client.threads.get(tid))["status"] == "idle"


async def test_update_state_as_a_node_then_continue(client: Any) -> None:
    """Instead of resuming, a person edits the state as the paused node and the thread
    continues from there with a run without input."""
    thread = await client.threads.create()
    tid = thread["thread_id"]
    await client.runs.wait(tid, "approval", input={"request": "edit me"})
    updated = await client.threads.update_state(tid, {"decision": "yes"}, as_node="review")
    assert updated["checkpoint"]["thread_id"] == tid
    assert (await client.threads.get_state(tid))["next"] == ["publish"]
    done = await client.runs.wait(tid, "approval", input=None)
    assert done["status"] == "published"


async def test_goto_and_update_in_a_command(client: Any) -> None:
    """Command(update=..., goto=...) sends the thread to a node with new values."""
    thread = await client.threads.create()
    tid = thread["thread_id"]
    await client.runs.wait(tid, "approval", input={"request": "jump"})
    done = await client.runs.wait(
        tid, "approval", command={"update": {"decision": "approve"}, "goto": "publish"}
    )
    assert done["status"] == "published"


async def test_static_breakpoints_pause_the_run(client: Any) -> None:
    """interrupt_before stops the run before the node; a run without input continues."""
    thread = await client.threads.create()
    tid = thread["thread_id"]
    paused = await client.runs.wait(
        tid, "steps", input={"text": "bp"}, interrupt_before=["exclaim"]
    )
    assert paused["text"] == "BP"
    assert (await client.threads.get(tid))["status"] == "interrupted"
    assert (await client.threads.get_state(tid))["next"] == ["exclaim"]
    assert (await client.runs.wait(tid, "steps", input=None))["text"] == "BP!"


async def test_a_failing_graph_raises_and_marks_run_and_thread(client: Any) -> None:
    """A graph that raises: runs.wait raises with the error type and message, the run's
    status is error, the thread's is error, and its stream ends with an error event."""
    thread = await client.threads.create()
    tid = thread["thread_id"]
    with pytest.raises(Exception, match="ValueError: it broke"):
        await client.runs.wait(tid, "fail", input={"message": "it broke"})
    [run] = await client.runs.list(tid)
    assert run["status"] == "error"
    assert (await client.threads.get(tid))["status"] == "error"
    parts = [p async for p in client.runs.stream(tid, "fail", input={"message": "again"})]
    assert parts[0].event == "metadata"
    assert parts[-1].event == "error"
    assert parts[-1].data == {"error": "ValueError", "message": "again"}


async def test_threadless_runs_and_their_temporary_threads(client: Any) -> None:
    """A run without a thread gets a temporary one, deleted when the run ends unless
    on_completion=keep; a resume needs a thread (400)."""
    result = await client.runs.wait(None, "steps", input={"text": "free"})
    assert result == {"text": "FREE!", "steps": ["upper", "exclaim"]}
    kept = await client.runs.create(None, "steps", input={"text": "kept"}, on_completion="keep")
    assert kept["kwargs"]["temporary"] is True
    await wait_for_status(client, kept["thread_id"], kept["run_id"], "success")
    assert (await client.threads.get_state(kept["thread_id"]))["values"]["text"] == "KEPT!"
    gone = await client.runs.create(None, "steps", input={"text": "gone"})
    await wait_for_status(client, gone["thread_id"], gone["run_id"], "success")
    with pytest.raises(NotFoundError):
        await client.threads.get(gone["thread_id"])
    with pytest.raises(httpx.HTTPStatusError) as refused:
        await client.runs.wait(None, "approval", command={"resume": "yes"})
    assert refused.value.response.status_code == 400


async def test_if_not_exists_creates_or_refuses_the_thread(client: Any) -> None:
    """A run on an unknown thread is 404, unless if_not_exists=create makes the thread."""
    tid = str(uuid.uuid4())
    with pytest.raises(NotFoundError):
        await client.runs.create(tid, "steps", input={"text": "x"})
    made = await client.runs.wait(tid, "steps", input={"text": "x"}, if_not_exists="create")
    assert made["text"] == "X!"
    assert (await client.threads.get(tid))["metadata"]["graph_id"] == "steps"


async def test_cancel_interrupt_keeps_finished_steps(client: Any, tmp_path: Path) -> None:
    """Cancelling a running run (action interrupt) stops it where it is: its status is
    interrupted, and the steps it finished stay on the thread."""
    marker = tmp_path / "steps.txt"
    thread = await client.threads.create()
    tid = thread["thread_id"]
    run = await client.runs.create(
        tid, "slow", input={"steps": 50, "sleep_s": 0.1, "marker_file": str(marker)}
    )
    await _until(lambda: marker.exists() and len(marker.read_text().split()) >= 2)
    await client.runs.cancel(tid, run["run_id"], action="interrupt")
    assert (await wait_for_status(client, tid, run["run_id"], "interrupted"))[
        "status"
    ] == "interrupted"
    done = (await client.threads.get_state(tid))["values"].get("done", 0)
    assert 2 <= done < 50
    assert (await client.threads.get(tid))["status"] != "busy"


async def test_cancel_rollback_deletes_the_run_and_its_checkpoints(
    client: Any, tmp_path: Path
) -> None:
    """Cancelling with action rollback deletes the run and the checkpoints it wrote: the
    thread's state, its history and its record (values, status) are what they were
    before the run."""
    thread = await client.threads.create()
    tid = thread["thread_id"]
    before = await client.runs.wait(tid, "slow", input={"steps": 1, "sleep_s": 0})
    history = await client.threads.get_history(tid, limit=100)
    marker = tmp_path / "steps.txt"
    run = await client.runs.create(
        tid, "slow", input={"steps": 50, "sleep_s": 0.1, "marker_file": str(marker)}
    )
    await _until(lambda: marker.exists() and len(marker.read_text().split()) >= 2)
    await client.runs.cancel(tid, run["run_id"], action="rollback", wait=True)
    with pytest.raises(NotFoundError):
        await client.runs.get(tid, run["run_id"])
    assert (await client.threads.get_state(tid))["values"] == before
    after = await client.threads.get_history(tid, limit=100)
    assert [h["checkpoint"]["checkpoint_id"] for h in after] == [
        h["checkpoint"]["checkpoint_id"] for h in history
    ]
    record = await client.threads.get(tid)
    assert record["status"] == "idle" and record["values"] == before
    assert run["run_id"] not in [r["run_id"] for r in await client.runs.list(tid)]


async def test_multitask_reject_answers_409(client: Any) -> None:
    """With multitask_strategy=reject, a run on a busy thread is refused (409)."""
    thread = await client.threads.create()
    tid = thread["thread_id"]
    first = await client.runs.create(tid, "slow", input={"steps": 20, "sleep_s": 0.1})
    with pytest.raises(ConflictError):
        await client.runs.create(tid, "steps", input={"text": "x"}, multitask_strategy="reject")
    await client.runs.cancel(tid, first["run_id"])


async def test_multitask_enqueue_runs_after_the_first(client: Any) -> None:
    """With multitask_strategy=enqueue (the default), the second run waits for the first
    and runs on the state it left."""
    thread = await client.threads.create()
    tid = thread["thread_id"]
    first = await client.runs.create(tid, "slow", input={"steps": 3, "sleep_s": 0.1})
    second = await client.runs.create(tid, "slow", input={"steps": 5, "sleep_s": 0})
    assert (await client.runs.join(tid, second["run_id"]))["completed"] == [1, 2, 3, 4, 5]
    assert (await client.runs.get(tid, first["run_id"]))["status"] == "success"
    assert (await client.threads.get(tid))["status"] == "idle"


@pytest.mark.parametrize("strategy", ["interrupt", "rollback"])
async def test_multitask_interrupt_and_rollback_stop_the_running_run(
    client: Any, strategy: str, tmp_path: Path
) -> None:
    """With multitask_strategy interrupt (rollback), the running run is stopped (and
    deleted with its checkpoints) and the new one runs: on the steps the first finished,
    or, rolled back, on the thread as it was before the first run."""
    thread = await client.threads.create()
    tid = thread["thread_id"]
    marker = tmp_path / "steps.txt"
    first = await client.runs.create(
        tid, "slow", input={"steps": 50, "sleep_s": 0.1, "marker_file": str(marker)}
    )
    await _until(lambda: marker.exists() and len(marker.read_text().split()) >= 1)
    second = await client.runs.create(
        tid, "slow", input={"steps": 1, "sleep_s": 0}, multitask_strategy=strategy
    )
    result = await client.runs.join(tid, second["run_id"])
    assert (await client.runs.get(tid, second["run_id"]))["status"] == "success"
    if strategy == "interrupt":
        assert (await client.runs.get(tid, first["run_id"]))["status"] == "interrupted"
        kept = result["completed"]  # the first run's finished steps; the second adds none
        assert kept == list(range(1, len(kept) + 1)) and result["done"] == len(kept) >= 1
    else:
        with pytest.raises(NotFoundError):
            await client.runs.get(tid, first["run_id"])
        assert result["completed"] == [1]
        assert (await client.threads.get_state(tid))["values"]["completed"] == [1]


async def test_after_seconds_delays_the_start(client: Any, server_url: str) -> None:
    """A run created with after_seconds starts no earlier than that after its creation."""
    thread = await client.threads.create()
    tid = thread["thread_id"]
    run = await client.runs.create(tid, "steps", input={"text": "later"}, after_seconds=1)
    assert run["status"] == "pending"
    await client.runs.join(tid, run["run_id"])
    async with httpx.AsyncClient(base_url=server_url) as http:
        record = (await http.get(f"/executions/{run['run_id']}")).json()
    from datetime import datetime

    waited = datetime.fromisoformat(record["started_at"]) - datetime.fromisoformat(
        record["created_at"]
    )
    assert waited.total_seconds() >= 1


async def test_remote_graph_invokes_streams_and_reads_state(server_url: str) -> None:
    """RemoteGraph runs a deployed graph without a thread and on one, streams it, draws
    its graph and reads the thread's state, as it does against the platform."""
    sdk = get_client(url=server_url, api_key=None)
    remote = RemoteGraph("steps", client=sdk)  # its own clients would stay open
    try:
        await _drive_remote_graph(remote)
    finally:
        await sdk.aclose()


async def _drive_remote_graph(remote: RemoteGraph) -> None:
    assert await remote.ainvoke({"text": "rg"}) == {"text": "RG!", "steps": ["upper", "exclaim"]}
    updates = [c async for c in remote.astream({"text": "rg"}, stream_mode="updates")]
    assert updates == [
        {"upper": {"text": "RG", "steps": ["upper"]}},
        {"exclaim": {"text": "RG!", "steps": ["exclaim"]}},
    ]
    config: Any = {"configurable": {"thread_id": str(uuid.uuid4())}}
    await remote.ainvoke({"text": "t"}, config)
    state = await remote.aget_state(config)
    assert state.values == {"text": "T!", "steps": ["upper", "exclaim"]}
    assert state.next == ()
    drawn = await remote.aget_graph()
    assert set(drawn.nodes) == {"__start__", "upper", "exclaim", "__end__"}


async def test_errors_answer_with_detail(server_url: str) -> None:
    """Errors answer {"detail": ...}: 404 for an unknown thread, 422 for an assistant that
    is neither a UUID nor a graph, and for a stream mode that does not exist; unknown
    request fields are ignored."""
    async with httpx.AsyncClient(base_url=server_url) as http:
        missing = await http.get(f"/threads/{uuid.uuid4()}")
        assert missing.status_code == 404 and "detail" in missing.json()
        bad = await http.post("/runs/wait", json={"assistant_id": "nope", "input": {}})
        assert bad.status_code == 422 and "Invalid assistant" in bad.json()["detail"]
        mode = await http.post(
            "/runs", json={"assistant_id": "steps", "input": {}, "stream_mode": ["telepathy"]}
        )
        assert mode.status_code == 422 and isinstance(mode.json()["detail"], list)
        ok = await http.post(
            "/runs/wait",
            json={"assistant_id": "steps", "input": {"text": "x"}, "a_future_field": 1},
        )
        assert ok.status_code == 200 and ok.json()["text"] == "X!"
        assert (await http.get("/ok")).json() == {"ok": True}
        assert (await http.get("/info")).json()["flags"]["assistants"] is True
    with pytest.raises(UnprocessableEntityError):
        sdk = get_client(url=server_url, api_key=None)
        try:
            await sdk.assistants.get("not-a-graph")
        finally:
            await sdk.aclose()


async def _until(condition: Any, timeout: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_a_thread_created_with_supersteps_starts_from_them(client: Any) -> None:
    """threads.create with supersteps applies them as state updates: the thread starts
    where they leave it, and a run without input goes on from there."""
    thread = await client.threads.create(
        graph_id="steps",
        supersteps=[
            {"updates": [{"values": {"text": "SEED", "steps": ["upper"]}, "as_node": "upper"}]}
        ],
    )
    tid = thread["thread_id"]
    assert (await client.threads.get_state(tid))["next"] == ["exclaim"]
    assert (await client.threads.get(tid))["status"] == "interrupted"
    assert (await client.runs.wait(tid, "steps", input=None))["text"] == "SEED!"


async def test_batches_and_bulk_cancel(client: Any) -> None:
    """runs.create_batch makes threadless runs; runs.cancel_many cancels the pending runs
    by status (the running one goes on), then a thread's given runs."""
    made = await client.runs.create_batch(
        [{"assistant_id": "steps", "input": {"text": t}, "on_completion": "keep"} for t in "ab"]
    )
    assert len(made) == 2 and made[0]["thread_id"] != made[1]["thread_id"]
    assert (await client.runs.join(made[1]["thread_id"], made[1]["run_id"]))["text"] == "B!"
    thread = await client.threads.create()
    tid = thread["thread_id"]
    running = await client.runs.create(tid, "slow", input={"steps": 50, "sleep_s": 0.1})
    queued = await client.runs.create(tid, "slow", input={"steps": 1, "sleep_s": 0})
    await wait_for_status(client, tid, running["run_id"], "running")
    await client.runs.cancel_many(thread_id=tid, status="pending")
    assert (await client.runs.get(tid, queued["run_id"]))["status"] == "interrupted"
    assert (await client.runs.get(tid, running["run_id"]))["status"] == "running"
    await client.runs.cancel_many(thread_id=tid, run_ids=[running["run_id"]], action="interrupt")
    assert (await client.runs.get(tid, running["run_id"]))["status"] == "interrupted"


async def test_subgraphs_of_an_assistant(client: Any) -> None:
    """An assistant's subgraphs are listed by namespace, with their schemas."""
    found = await client.assistants.get_subgraphs("mix")
    assert list(found) == ["child"]
    assert "topic" in found["child"]["input_schema"]["properties"]


async def test_wait_keeps_the_connection_alive_with_newlines(server_url: str) -> None:
    """While a run goes on, /runs/wait sends newlines (valid leading JSON whitespace)
    every heartbeat, then the final values."""
    async with httpx.AsyncClient(base_url=server_url, timeout=60) as http:
        response = await http.post(
            "/runs/wait", json={"assistant_id": "slow", "input": {"steps": 1, "sleep_s": 2}}
        )
    assert response.status_code == 200
    assert response.text.startswith("\n")
    assert response.json()["completed"] == [1]
