"""Streaming runs over SSE with the official SDK, on `lg-deploy dev` and on a fleet: every
stream mode carries what the same graph yields with `graph.astream` in this process; a
stream can be joined, resumed after its last event, kept alive by heartbeats, and a
client that leaves cancels its run only when it asked for that."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.messages import AIMessageChunk
from langgraph.checkpoint.memory import InMemorySaver
from langgraph_sdk import get_client

from lg_deploy.core.graphs import load_registry
from lg_deploy.core.jsonable import to_jsonable
from tests.conftest import TEST_GRAPHS
from tests.platform_api.support import (
    dev_server,
    normalized,
    reference_config,
    reference_stream,
)

pytestmark = pytest.mark.timeout(120)

CASES = [
    ("steps", {"text": "hey"}, ["values"], False),
    ("steps", {"text": "hey"}, ["updates"], False),
    ("steps", {"text": "hey"}, ["values", "updates"], False),
    ("steps", {"text": "hey"}, ["debug"], False),
    ("steps", {"text": "hey"}, ["tasks"], False),
    ("steps", {"text": "hey"}, ["checkpoints"], False),
    ("mix", {"topic": "owls"}, ["custom", "updates"], False),
    ("mix", {"topic": "owls"}, ["custom", "updates", "values"], True),
    ("approval", {"request": "a post"}, ["values", "updates"], False),
    ("agent", {"messages": [{"role": "user", "content": "what is 2 + 3?"}]}, ["updates"], False),
]


async def streamed(
    client: Any, graph_id: str, graph_input: Any, modes: list[str], subgraphs: bool = False
) -> list[tuple[str, Any]]:
    """What a threadless run streamed, metadata first."""
    return [
        (part.event, part.data)
        async for part in client.runs.stream(
            None, graph_id, input=graph_input, stream_mode=modes, stream_subgraphs=subgraphs
        )
    ]


@pytest.mark.parametrize(
    ("graph_id", "graph_input", "modes", "subgraphs"),
    CASES,
    ids=[f"{c[0]}-{'+'.join(c[2])}{'-subgraphs' if c[3] else ''}" for c in CASES],
)
async def test_each_stream_mode_carries_what_the_graph_yields_in_process(
    client: Any, graph_id: str, graph_input: Any, modes: list[str], subgraphs: bool
) -> None:
    """For values, updates, debug, tasks, checkpoints and custom, with and without
    subgraphs, the SSE events after the first (metadata) are the chunks graph.astream
    yields for the same input, in the same order, named mode[|namespace]."""
    parts = await streamed(client, graph_id, graph_input, modes, subgraphs)
    assert parts[0][0] == "metadata" and set(parts[0][1]) == {"run_id", "attempt"}
    expected = await reference_stream(graph_id, graph_input, modes, subgraphs=subgraphs)
    assert normalized(parts[1:]) == normalized(expected)


async def chat_reference(mode: str) -> list[Any]:
    registry = load_registry(TEST_GRAPHS)
    graph = await registry.build("chat", {}, InMemorySaver())
    config: Any = reference_config()
    chat_input = {"messages": [{"role": "user", "content": "hi"}]}
    found: list[Any] = []
    if mode == "events":
        async for event in graph.astream_events(chat_input, config, version="v2"):
            root_stream = event["event"] == "on_chain_stream" and not event["parent_ids"]
            if not root_stream:
                found.append((event["event"], event["name"]))
        return found
    async for message, metadata in graph.astream(chat_input, config, stream_mode="messages"):
        found.append(to_jsonable([message, metadata]))
    return found


async def test_messages_tuple_streams_the_models_tokens(client: Any) -> None:
    """messages-tuple: one `messages` event per token, [chunk, metadata], as LangGraph's
    messages mode yields them in process."""
    parts = await streamed(
        client, "chat", {"messages": [{"role": "user", "content": "hi"}]}, ["messages-tuple"]
    )
    tokens = [data for event, data in parts if event == "messages"]
    assert normalized(tokens) == normalized(await chat_reference("messages"))
    assert "".join(chunk["content"] for chunk, _ in tokens) == "you said hi and more"


async def test_messages_mode_streams_partial_and_whole_messages(client: Any) -> None:
    """messages: a messages/metadata event once per message, then messages/partial with
    the message so far after each token, ending with the whole answer."""
    parts = await streamed(
        client, "chat", {"messages": [{"role": "user", "content": "hi"}]}, ["messages"]
    )
    names = [event for event, _ in parts[1:]]
    assert names[0] == "messages/metadata"
    assert names.count("messages/metadata") == 1
    partial = [data[0] for event, data in parts if event == "messages/partial"]
    reference = [chunk for chunk, _ in await chat_reference("messages")]
    assert len(partial) == len(reference)
    so_far = ""
    for seen, token in zip(partial, reference, strict=True):
        so_far += token["content"]
        assert seen["content"] == so_far
        assert seen["type"] == AIMessageChunk(content="").type
    assert so_far == "you said hi and more"


async def test_events_mode_streams_the_callback_events(client: Any) -> None:
    """events: the astream_events (v2) events of the run, in the order the graph emits
    them in process (the root graph's own stream chunks aside)."""
    parts = await streamed(
        client, "chat", {"messages": [{"role": "user", "content": "hi"}]}, ["events"]
    )
    seen = [(data["event"], data["name"]) for event, data in parts if event == "events"]
    assert seen == await chat_reference("events")


async def test_an_interrupt_ends_the_stream_with_its_question(client: Any) -> None:
    """A run that pauses streams its last values with __interrupt__, like the graph in
    process, and its stream ends without an error."""
    parts = await streamed(client, "approval", {"request": "stream me"}, ["values"])
    last = parts[-1]
    assert last[0] == "values"
    assert last[1]["__interrupt__"][0]["value"]["question"] == "Approve this draft?"


async def test_join_stream_and_resume_after_the_last_event(client: Any) -> None:
    """join_stream attaches to a running run; a client that drops its stream and comes
    back with Last-Event-ID gets every later event once, and nothing it had."""
    thread = await client.threads.create()
    tid = thread["thread_id"]
    run = await client.runs.create(
        tid, "slow", input={"steps": 6, "sleep_s": 0.2}, stream_mode=["updates"]
    )
    first: list[Any] = []
    stream = client.runs.join_stream(tid, run["run_id"], last_event_id="0-0")
    async for part in stream:
        first.append(part)
        if part.event == "updates" and part.data["step"]["done"] == 2:
            break
    await stream.aclose()
    rest = [
        p async for p in client.runs.join_stream(tid, run["run_id"], last_event_id=first[-1].id)
    ]
    done = [p.data["step"]["done"] for p in [*first, *rest] if p.event == "updates"]
    assert done == [1, 2, 3, 4, 5, 6]
    ids = [p.id for p in [*first, *rest]]
    assert len(ids) == len(set(ids))


async def test_heartbeats_keep_an_idle_stream_open(server_url: str) -> None:
    """While a step runs and nothing is streamed, the server sends `: heartbeat`
    comments (here every 0.5 s)."""
    async with (
        httpx.AsyncClient(base_url=server_url, timeout=60) as http,
        http.stream(
            "POST",
            "/runs/stream",
            json={"assistant_id": "slow", "input": {"steps": 1, "sleep_s": 2}},
        ) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in response.aiter_lines()]
    assert ": heartbeat" in lines
    assert lines[0] == "event: metadata"


@pytest.mark.parametrize("on_disconnect", ["cancel", "continue"])
async def test_a_client_that_leaves_cancels_its_run_only_if_asked(
    client: Any, on_disconnect: str
) -> None:
    """A streaming client that disconnects cancels its run with on_disconnect=cancel;
    otherwise the run goes on to its end."""
    thread = await client.threads.create()
    tid = thread["thread_id"]
    stream = client.runs.stream(
        tid, "slow", input={"steps": 4, "sleep_s": 0.3}, on_disconnect=on_disconnect
    )
    metadata = await anext(stream)
    await stream.aclose()
    run_id = metadata.data["run_id"]
    wanted = "interrupted" if on_disconnect == "cancel" else "success"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while (run := await client.runs.get(tid, run_id))["status"] != wanted:
        assert run["status"] in ("pending", "running"), run["status"]
        assert loop.time() < deadline
        await asyncio.sleep(0.05)


async def test_api_keys_are_read_from_x_api_key(tmp_path: Path) -> None:
    """With API keys set, the SDK's x-api-key header is accepted and a missing key is
    401; /ok stays open."""
    with dev_server(tmp_path, LG_DEPLOY_API_KEYS="sesame") as server:
        sdk: Any = get_client(url=server.url, api_key="sesame")
        try:
            assert (await sdk.runs.wait(None, "steps", input={"text": "k"}))["text"] == "K!"
        finally:
            await sdk.aclose()
        async with httpx.AsyncClient(base_url=server.url) as http:
            assert (await http.post("/threads", json={})).status_code == 401
            assert (await http.get("/ok")).status_code == 200


async def test_the_openapi_document_lists_the_platform_routes(server_url: str) -> None:
    """Every platform route is in /openapi.json."""
    async with httpx.AsyncClient(base_url=server_url) as http:
        paths = (await http.get("/openapi.json")).json()["paths"]
    assert {
        "/assistants",
        "/assistants/search",
        "/assistants/count",
        "/assistants/{assistant_id}",
        "/assistants/{assistant_id}/graph",
        "/assistants/{assistant_id}/schemas",
        "/assistants/{assistant_id}/subgraphs",
        "/assistants/{assistant_id}/versions",
        "/assistants/{assistant_id}/latest",
        "/threads",
        "/threads/search",
        "/threads/count",
        "/threads/{thread_id}",
        "/threads/{thread_id}/copy",
        "/threads/{thread_id}/state",
        "/threads/{thread_id}/state/{checkpoint_id}",
        "/threads/{thread_id}/state/checkpoint",
        "/threads/{thread_id}/history",
        "/threads/{thread_id}/runs",
        "/threads/{thread_id}/runs/stream",
        "/threads/{thread_id}/runs/wait",
        "/threads/{thread_id}/runs/{run_id}",
        "/threads/{thread_id}/runs/{run_id}/join",
        "/threads/{thread_id}/runs/{run_id}/stream",
        "/threads/{thread_id}/runs/{run_id}/cancel",
        "/runs",
        "/runs/stream",
        "/runs/wait",
        "/runs/batch",
        "/runs/cancel",
        "/ok",
        "/info",
    } <= set(paths)
