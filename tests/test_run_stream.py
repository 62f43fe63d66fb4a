"""How a worker publishes a platform run's stream (worker/streaming.py): event names,
message modes, and what a later attempt that continues from a checkpoint leaves out."""

from __future__ import annotations

import json
import uuid

from langchain_core.messages import AIMessageChunk

from lg_deploy.core.events import open_event_log
from lg_deploy.worker.streaming import RunStream


def always_held() -> bool:
    """The attempt keeps its lease (tests/platform_api/test_worker_attempts.py loses it)."""
    return True


async def test_chunks_become_events_named_after_their_mode_and_namespace() -> None:
    """Each chunk of a requested mode is one event, `mode|namespace` for a subgraph's;
    modes the run did not ask for are left out; attempts end with a control event."""
    log = open_event_log("memory://")
    run = uuid.uuid4()
    stream = RunStream(log, run, 1, ["updates", "custom"], held=always_held)
    await stream.begin(continuing=False)
    await stream.chunk((), "updates", {"a": {"x": 1}})
    await stream.chunk(("child:1",), "custom", {"p": 1})
    await stream.chunk((), "values", {"x": 1})
    await stream.end()
    events = await log.read(run)
    assert [(e.event, json.loads(e.data), e.mode) for e in events[:2]] == [
        ("updates", {"a": {"x": 1}}, "updates"),
        ("custom|child:1", {"p": 1}, "custom"),
    ]
    assert [e.event for e in events[2:]] == ["lg_deploy/attempt_end"]


async def test_messages_modes_stream_tuples_and_partial_messages() -> None:
    """messages-tuple streams [chunk, metadata]; messages streams its metadata once per
    message and the message so far after each chunk."""
    log = open_event_log("memory://")
    run = uuid.uuid4()
    stream = RunStream(log, run, 1, ["messages", "messages-tuple"], held=always_held)
    for token in ("he", "llo"):
        await stream.chunk((), "messages", (AIMessageChunk(content=token, id="m1"), {"n": 1}))
    events = [(e.event, json.loads(e.data)) for e in await log.read(run)]
    assert [name for name, _ in events] == [
        "messages",
        "messages/metadata",
        "messages/partial",
        "messages",
        "messages/partial",
    ]
    assert events[1][1] == {"m1": {"metadata": {"n": 1}}}
    assert [data[0]["content"] for name, data in events if name == "messages/partial"] == [
        "he",
        "hello",
    ]


async def test_a_continuing_attempt_leaves_out_what_langgraph_repeats() -> None:
    """An attempt that continues from the run's checkpoint announces itself, and drops
    LangGraph's repeat of that checkpoint's values, checkpoints and debug events when the
    stream carried them already; what is new goes out."""
    log = open_event_log("memory://")
    run = uuid.uuid4()
    modes = ["values", "checkpoints", "debug"]
    first = RunStream(log, run, 1, modes, held=always_held)
    await first.chunk((), "values", {"done": 1})
    await first.chunk((), "checkpoints", {"id": "c1"})
    await first.chunk((), "debug", {"type": "checkpoint", "timestamp": "t1", "payload": "c1"})
    await first.chunk((), "values", {"done": 2})
    second = RunStream(log, run, 2, modes, held=always_held)
    await second.begin(continuing=True)
    await second.chunk((), "values", {"done": 1})
    await second.chunk((), "checkpoints", {"id": "c1"})
    await second.chunk((), "debug", {"type": "checkpoint", "timestamp": "t2", "payload": "c1"})
    await second.chunk((), "values", {"done": 3})
    events = [(e.event, json.loads(e.data)) for e in await log.read(run)]
    assert events[4:] == [
        ("metadata", {"run_id": str(run), "attempt": 2}),
        ("values", {"done": 3}),
    ]
