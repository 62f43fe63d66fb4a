"""Bad input to the LangGraph Platform API, on `lg-deploy dev` and on a fleet: each request
gets a 4xx with a `{"detail": ...}` body before anything is written, never a 500, a broken
response or a half-made thread (docs/architecture.md, invariant 7)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def http(server_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server_url, timeout=60) as client:
        yield client


def refused(response: httpx.Response, status: int) -> Any:
    """The ``detail`` of an error answer with ``status``."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"detail"}, body
    return body["detail"]


async def finished_run(http: httpx.AsyncClient) -> tuple[str, str]:
    """A thread and a run on it that has ended."""
    thread_id = (await http.post("/threads", json={})).json()["thread_id"]
    response = await http.post(
        f"/threads/{thread_id}/runs/wait", json={"assistant_id": "steps", "input": {"text": "a"}}
    )
    assert response.status_code == 200
    run_id = response.headers["Content-Location"].rsplit("/", 1)[1]
    return thread_id, run_id


@pytest.mark.parametrize(
    "last_event_id",
    ["not-an-id", "1-2-3", "-1", "99999999999999999999-0", "1-99999999999999999999"],
)
async def test_an_invalid_last_event_id_is_422_before_the_stream_starts(
    http: httpx.AsyncClient, last_event_id: str
) -> None:
    """join_stream with a Last-Event-ID that is no event id (or beyond Redis's 64-bit
    ids) answers 422 with a detail, instead of starting a 200 stream that breaks on its
    first read."""
    thread_id, run_id = await finished_run(http)
    url = f"/threads/{thread_id}/runs/{run_id}/stream"
    response = await http.get(url, headers={"Last-Event-ID": last_event_id})
    assert "event id" in refused(response, 422)
    replay = await http.get(url, headers={"Last-Event-ID": "0-0"})
    assert replay.status_code == 200 and "event: values" in replay.text


async def history_length(http: httpx.AsyncClient, thread_id: str) -> int:
    response = await http.post(f"/threads/{thread_id}/history", json={"limit": 100})
    assert response.status_code == 200
    return len(response.json())


@pytest.mark.parametrize(
    ("update", "status"),
    [
        ({"values": {"text": "x"}, "as_node": "no_such_node"}, 400),
        ({"values": {"text": "x"}, "as_node": "__end__"}, 400),
        ({"values": ["not", "a", "dict"], "as_node": "upper"}, 400),
        ({"values": {"steps": 5}, "as_node": "upper"}, 400),
        ({"values": {"text": "x"}, "as_node": 7}, 422),
    ],
    ids=["unknown-node", "end-node", "not-a-dict", "reducer-type-error", "node-not-a-string"],
)
async def test_a_state_update_langgraph_refuses_is_a_4xx_and_writes_nothing(
    http: httpx.AsyncClient, update: dict[str, Any], status: int
) -> None:
    """POST /threads/{id}/state with an as_node the graph lacks, or values LangGraph
    cannot apply (InvalidUpdateError, a reducer's TypeError), answers 400 (422 for a
    malformed body), not 500, and adds no checkpoint to the thread."""
    thread_id, _ = await finished_run(http)
    before = await history_length(http, thread_id)
    response = await http.post(f"/threads/{thread_id}/state", json=update)
    assert refused(response, status)
    assert await history_length(http, thread_id) == before
    state = await http.get(f"/threads/{thread_id}/state")
    assert state.json()["values"] == {"text": "A!", "steps": ["upper", "exclaim"]}


GOOD_STEP = {"updates": [{"values": {"text": "SEED", "steps": ["upper"]}, "as_node": "upper"}]}


@pytest.mark.parametrize(
    ("supersteps", "status"),
    [
        ([{"updates": [{"values": {"text": "x"}, "as_node": "no_such_node"}]}], 400),
        ([GOOD_STEP, {"updates": [{"values": {"text": "x"}, "as_node": "no_such_node"}]}], 400),
        ([GOOD_STEP, {"updates": [{"values": "not a dict", "as_node": "exclaim"}]}], 400),
        ([{"updates": []}], 422),
        ([{"updates": [{"values": {"text": "nul\u0000"}, "as_node": "upper"}]}], 422),
        ([{"no_updates": True}], 422),
    ],
    ids=["unknown-node", "second-step-bad", "not-a-dict", "empty-updates", "nul", "no-updates"],
)
async def test_a_thread_with_bad_supersteps_is_not_created(
    http: httpx.AsyncClient, supersteps: list[Any], status: int
) -> None:
    """POST /threads whose supersteps LangGraph refuses (even after a good one), or that
    are ill-formed, answers 400 / 422 and leaves no thread and no checkpoint behind: the
    same id can then be created afresh, with an empty state."""
    thread_id = str(uuid.uuid4())
    body = {"thread_id": thread_id, "metadata": {"graph_id": "steps"}, "supersteps": supersteps}
    assert refused(await http.post("/threads", json=body), status)
    assert refused(await http.get(f"/threads/{thread_id}"), 404)
    made = await http.post("/threads", json={"thread_id": thread_id, "metadata": body["metadata"]})
    assert made.status_code == 200
    assert await history_length(http, thread_id) == 0


async def threads_with(http: httpx.AsyncClient, metadata: dict[str, Any]) -> int:
    response = await http.post("/threads/count", json={"metadata": metadata})
    assert response.status_code == 200
    count: int = response.json()
    return count


BOTH = {"config": {"configurable": {"model": "a"}}, "context": {"model": "b"}}


@pytest.mark.parametrize("route", ["/runs", "/runs/wait", "/runs/stream"])
async def test_a_refused_threadless_run_leaves_no_temporary_thread(
    http: httpx.AsyncClient, route: str
) -> None:
    """A threadless run refused with 400 (configurable and context together) creates no
    temporary thread: the refusal comes before any write."""
    assistant = (await http.post("/assistants", json={"graph_id": "steps"})).json()
    aid = assistant["assistant_id"]
    response = await http.post(route, json={"assistant_id": aid, "input": {"text": "x"}, **BOTH})
    assert "configurable and context" in refused(response, 400)
    assert await threads_with(http, {"assistant_id": aid}) == 0


async def test_a_refused_run_creates_no_thread_and_changes_none(http: httpx.AsyncClient) -> None:
    """A run refused with 400 neither creates its thread (if_not_exists=create) nor
    touches the metadata of an existing one."""
    missing = str(uuid.uuid4())
    response = await http.post(
        f"/threads/{missing}/runs",
        json={"assistant_id": "steps", "input": {}, "if_not_exists": "create", **BOTH},
    )
    refused(response, 400)
    refused(await http.get(f"/threads/{missing}"), 404)
    made = await http.post("/threads", json={"metadata": {"graph_id": "approval"}})
    thread_id = made.json()["thread_id"]
    response = await http.post(
        f"/threads/{thread_id}/runs", json={"assistant_id": "steps", "input": {}, **BOTH}
    )
    refused(response, 400)
    thread = (await http.get(f"/threads/{thread_id}")).json()
    assert thread["metadata"] == {"graph_id": "approval"}
    assert (await http.get(f"/threads/{thread_id}/runs")).json() == []


@pytest.mark.parametrize(
    "config",
    [
        {"configurable": "not an object"},
        {"metadata": ["not", "an", "object"]},
        {"tags": "not-a-list"},
        {"recursion_limit": 0},
        {"recursion_limit": "many"},
    ],
)
async def test_an_ill_formed_run_config_is_422_and_leaves_no_thread(
    http: httpx.AsyncClient, config: dict[str, Any]
) -> None:
    """A run config whose known keys have the wrong shape is a 422 with nothing written,
    not a 500 from the code that merges it with the assistant's."""
    missing = str(uuid.uuid4())
    response = await http.post(
        f"/threads/{missing}/runs",
        json={"assistant_id": "steps", "input": {}, "if_not_exists": "create", "config": config},
    )
    refused(response, 422)
    refused(await http.get(f"/threads/{missing}"), 404)


@pytest.mark.parametrize(
    "goto",
    [{"input": {}}, {"node": ""}, 7, [{"node": "upper"}, {"no": "node"}], ""],
    ids=["send-without-node", "empty-node", "number", "list-with-a-bad-send", "empty"],
)
async def test_an_ill_formed_goto_is_422_and_leaves_no_thread(
    http: httpx.AsyncClient, goto: Any
) -> None:
    """A ``command.goto`` that names no node is a 422 before anything is written, not a
    run that fails on its worker."""
    missing = str(uuid.uuid4())
    response = await http.post(
        f"/threads/{missing}/runs",
        json={"assistant_id": "steps", "command": {"goto": goto}, "if_not_exists": "create"},
    )
    refused(response, 422)
    refused(await http.get(f"/threads/{missing}"), 404)


NUL = "nul\u0000here"
LONG = "x" * 201  # the id columns are 200 characters (core/models.py)


def bad_path_requests(thread_id: str, bad: str) -> list[tuple[str, str, Any]]:
    """Requests whose thread id (or checkpoint id) in the path is ``bad``."""
    return [
        ("GET", f"/threads/{bad}", None),
        ("PATCH", f"/threads/{bad}", {"metadata": {}}),
        ("DELETE", f"/threads/{bad}", None),
        ("POST", f"/threads/{bad}/copy", None),
        ("GET", f"/threads/{bad}/state", None),
        ("POST", f"/threads/{bad}/state", {"values": {"text": "x"}, "as_node": "upper"}),
        ("GET", f"/threads/{bad}/history", None),
        ("GET", f"/threads/{bad}/runs", None),
        (
            "POST",
            f"/threads/{bad}/runs",
            {"assistant_id": "steps", "input": {}, "if_not_exists": "create"},
        ),
        ("POST", f"/threads/{bad}/runs/wait", {"assistant_id": "steps", "input": {}}),
        ("GET", f"/threads/{thread_id}/state/{bad}", None),
    ]


@pytest.mark.parametrize("bad", [NUL, LONG], ids=["nul", "too-long"])
async def test_a_thread_or_checkpoint_id_in_the_path_is_checked(
    http: httpx.AsyncClient, bad: str
) -> None:
    """A thread id (or checkpoint id) in the path with a NUL character, which PostgreSQL
    text refuses, or longer than the id columns is a 422 naming the parameter, not a 500
    and not a thread created with it."""
    thread_id, _ = await finished_run(http)
    for method, url, body in bad_path_requests(thread_id, bad.replace("\u0000", "%00")):
        response = await http.request(method, url, json=body)
        detail = refused(response, 422)
        assert detail[0]["loc"][:1] == ["path"], (method, url, detail)
    listed = await http.post("/threads/search", json={"limit": 1000})
    assert bad not in {t["thread_id"] for t in listed.json()}


@pytest.mark.parametrize("before", ["nul%00here", LONG], ids=["nul", "too-long"])
async def test_a_checkpoint_id_in_the_query_is_checked(
    http: httpx.AsyncClient, before: str
) -> None:
    """GET /threads/{id}/history?before= with a NUL character or an over-long checkpoint
    id is a 422 naming the query parameter, not a 500 from the checkpoint database."""
    thread_id, _ = await finished_run(http)
    response = await http.get(f"/threads/{thread_id}/history?before={before}")
    assert refused(response, 422)[0]["loc"] == ["query", "before"]


def bad_bodies(thread_id: str) -> list[tuple[str, str, Any]]:
    """Requests with a body field a store cannot take: a NUL character (PostgreSQL text
    and JSONB refuse it), or an id longer than its column."""
    run = {"assistant_id": "steps", "input": {"text": "x"}}
    return [
        ("POST", "/threads", {"thread_id": NUL}),
        ("POST", "/threads", {"thread_id": LONG}),
        ("POST", "/threads/search", {"metadata": {"k": NUL}}),
        ("POST", "/threads/search", {"ids": [NUL]}),
        ("POST", "/threads/count", {"metadata": {NUL: 1}}),
        ("POST", f"/threads/{thread_id}/state", {"values": {"text": "x"}, "checkpoint_id": LONG}),
        ("POST", f"/threads/{thread_id}/state", {"values": {}, "checkpoint_id": NUL}),
        ("POST", f"/threads/{thread_id}/state", {"values": {}, "as_node": NUL}),
        ("POST", f"/threads/{thread_id}/state", {"checkpoint": {"checkpoint_id": NUL}}),
        ("POST", f"/threads/{thread_id}/state", {"checkpoint": {"checkpoint_id": 5}}),
        ("POST", f"/threads/{thread_id}/state/checkpoint", {"checkpoint": {"checkpoint_ns": NUL}}),
        ("POST", f"/threads/{thread_id}/history", {"before": NUL}),
        ("POST", f"/threads/{thread_id}/history", {"checkpoint": {"checkpoint_id": LONG}}),
        ("POST", f"/threads/{thread_id}/runs", {**run, "checkpoint_id": NUL}),
        ("POST", f"/threads/{thread_id}/runs", {**run, "checkpoint_id": LONG}),
        ("POST", f"/threads/{thread_id}/runs", {**run, "checkpoint": {"checkpoint_id": NUL}}),
        ("POST", f"/threads/{thread_id}/runs", {**run, "webhook": "https://example.com/" + NUL}),
        ("POST", f"/threads/{thread_id}/runs", {**run, "webhook": "https://e.com/" + "w" * 3000}),
        ("POST", f"/threads/{thread_id}/runs", {**run, "feedback_keys": [NUL]}),
        ("POST", f"/threads/{thread_id}/runs", {**run, "interrupt_before": [NUL]}),
        ("POST", f"/threads/{thread_id}/runs", {**run, "assistant_id": NUL}),
        ("POST", "/runs", {**run, "webhook": NUL}),
        ("POST", "/assistants", {"graph_id": "steps", "description": NUL}),
        ("POST", "/assistants", {"graph_id": "steps", "description": "d" * 20_000}),
        ("POST", "/assistants", {"graph_id": "steps", "name": NUL}),
        ("POST", "/assistants", {"graph_id": "steps", "assistant_id": LONG}),
        ("POST", "/assistants/search", {"name": NUL}),
        ("POST", "/runs/cancel", {"thread_id": NUL, "run_ids": [str(uuid.uuid4())]}),
    ]


async def test_a_body_field_a_store_cannot_take_is_422_and_writes_nothing(
    http: httpx.AsyncClient,
) -> None:
    """Ids, checkpoints, webhooks, descriptions, names, search filters: a NUL character
    or an over-long id is a 422 with a detail naming the field; nothing is written (the
    thread keeps its state, runs and history; no assistant is made)."""
    thread_id, _ = await finished_run(http)
    history = await history_length(http, thread_id)
    runs = (await http.get(f"/threads/{thread_id}/runs")).json()
    assistants = (await http.post("/assistants/count", json={"graph_id": "steps"})).json()
    for method, url, body in bad_bodies(thread_id):
        response = await http.request(method, url, json=body)
        detail = refused(response, 422)
        assert detail and all(e["loc"][0] == "body" for e in detail), (url, body, detail)
    assert await history_length(http, thread_id) == history
    assert (await http.get(f"/threads/{thread_id}/runs")).json() == runs
    assert (await http.post("/assistants/count", json={"graph_id": "steps"})).json() == assistants


@pytest.mark.parametrize(
    "body",
    [{}, {"thread_id": "t"}, {"run_ids": [str(uuid.uuid4())]}, {"action": "interrupt"}],
    ids=["empty", "thread-only", "run-ids-without-thread", "no-filter"],
)
async def test_bulk_cancel_without_a_filter_is_422_and_cancels_nothing(
    http: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    """POST /runs/cancel must name what it cancels (a status, or a thread's run ids): an
    empty body used to cancel every run of the deployment."""
    thread_id = (await http.post("/threads", json={})).json()["thread_id"]
    created = await http.post(
        f"/threads/{thread_id}/runs",
        json={"assistant_id": "slow", "input": {"steps": 30, "sleep_s": 0.1}},
    )
    run_id = created.json()["run_id"]
    try:
        assert "thread_id" in str(refused(await http.post("/runs/cancel", json=body), 422))
        run = (await http.get(f"/threads/{thread_id}/runs/{run_id}")).json()
        assert run["status"] in ("pending", "running")
    finally:
        await http.post(f"/threads/{thread_id}/runs/{run_id}/cancel")
