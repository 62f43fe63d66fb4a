"""Graphs that exist for the test suite: failures, blocking sync nodes, and what the
LangGraph Platform API streams (custom events, a subgraph, a streaming chat model)."""

from __future__ import annotations

import asyncio
import operator
import sqlite3
import time
from typing import Annotated

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AnyMessage
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import interrupt
from typing_extensions import TypedDict


class FailState(TypedDict, total=False):
    message: str


def explode(state: FailState) -> FailState:
    raise ValueError(state.get("message", "boom"))


_fail = StateGraph(FailState)
_fail.add_node("explode", explode)
_fail.add_edge(START, "explode")
_fail.add_edge("explode", END)
fail = _fail.compile()


class SleepState(TypedDict, total=False):
    sleep_s: float
    marker_file: str
    slept: float


def block(state: SleepState) -> SleepState:
    """A sync node that holds its thread: cancellation cannot interrupt it. It writes
    "started" and "returned" lines to ``marker_file``."""
    marker = state.get("marker_file")
    _mark(marker, "started")
    seconds = state.get("sleep_s", 1.0)
    time.sleep(seconds)
    _mark(marker, "returned")
    return {"slept": seconds}


def _mark(path: str | None, line: str) -> None:
    if path:
        with open(path, "a") as marker:
            marker.write(line + "\n")


_sync_slow = StateGraph(SleepState)
_sync_slow.add_node("block", block)
_sync_slow.add_edge(START, "block")
_sync_slow.add_edge("block", END)
sync_slow = _sync_slow.compile()


class StubbornState(TypedDict, total=False):
    name: str
    sleep_s: float
    cleanup_s: float
    marker_file: str


async def linger(state: StubbornState) -> StubbornState:
    """An async node that, when cancelled, takes ``cleanup_s`` to clean up before it stops
    (a client closed, a temporary file removed): its graph ends after the cancel, not at
    it. Writes "<name> started" and "<name> stopped" lines to ``marker_file``."""
    name, marker = state.get("name", "run"), state.get("marker_file")
    _mark(marker, f"{name} started")
    try:
        await asyncio.sleep(state.get("sleep_s", 0.0))
    except asyncio.CancelledError:
        await asyncio.sleep(state.get("cleanup_s", 1.0))
        _mark(marker, f"{name} stopped")
        raise
    _mark(marker, f"{name} finished")
    return {}


_stubborn = StateGraph(StubbornState)
_stubborn.add_node("linger", linger)
_stubborn.add_edge(START, "linger")
_stubborn.add_edge("linger", END)
stubborn = _stubborn.compile()


class FlakyError(Exception):
    """A failure the graph marks as worth retrying."""

    retryable = True


class FlakyState(TypedDict, total=False):
    counter_file: str
    failures: int
    tries: int


def flaky_step(state: FlakyState) -> FlakyState:
    """Fails the first ``failures`` times it runs (counted in ``counter_file``)."""
    with open(state["counter_file"], "a+") as counter:
        counter.seek(0)
        tries = len(counter.read().splitlines()) + 1
        counter.write("try\n")
    if tries <= state.get("failures", 1):
        raise FlakyError(f"try {tries} failed")
    return {"tries": tries}


_flaky = StateGraph(FlakyState)
_flaky.add_node("flaky_step", flaky_step)
_flaky.add_edge(START, "flaky_step")
_flaky.add_edge("flaky_step", END)
flaky = _flaky.compile()


class QuestionsState(TypedDict, total=False):
    first: str
    second: str


def ask_first(state: QuestionsState) -> QuestionsState:
    return {"first": interrupt("first question")}


def ask_second(state: QuestionsState) -> QuestionsState:
    return {"second": interrupt("second question")}


_questions = StateGraph(QuestionsState)
_questions.add_node("ask_first", ask_first)
_questions.add_node("ask_second", ask_second)
_questions.add_edge(START, "ask_first")
_questions.add_edge("ask_first", "ask_second")
_questions.add_edge("ask_second", END)
two_questions = _questions.compile()


class OddState(TypedDict, total=False):
    kind: str
    values: list[float]


def odd(state: OddState) -> OddState:
    """Returns what PostgreSQL's JSONB refuses, or fails on the graph's own database."""
    if state.get("kind") == "own_database":
        sqlite3.connect(":memory:").execute("SELECT * FROM no_such_table")
    if state.get("kind") == "nul_error":
        raise ValueError("bad\x00byte")
    # A list: the PostgreSQL saver keeps it as a blob, so the checkpoint takes the NaN.
    return {"values": [float("nan"), 1.5]}


_odd = StateGraph(OddState)
_odd.add_node("odd", odd)
_odd.add_edge(START, "odd")
_odd.add_edge("odd", END)
odd_results = _odd.compile()


class BlockState(TypedDict, total=False):
    block_s: float
    blocked: float


async def block_the_loop(state: BlockState) -> BlockState:
    """An async node that calls blocking code: it holds its worker's whole event loop."""
    seconds = state.get("block_s", 1.0)
    time.sleep(seconds)  # noqa: ASYNC251 (the mistake this graph exists to make)
    return {"blocked": seconds}


_loop_blocker = StateGraph(BlockState)
_loop_blocker.add_node("block_the_loop", block_the_loop)
_loop_blocker.add_edge(START, "block_the_loop")
_loop_blocker.add_edge("block_the_loop", END)
loop_blocker = _loop_blocker.compile()


class ConfigState(TypedDict, total=False):
    metadata: dict[str, object]
    tags: list[str]


def report_config(state: ConfigState, config: RunnableConfig) -> ConfigState:
    """Returns what lg-deploy put in the config every node (and a tracer) sees."""
    metadata = config.get("metadata") or {}
    return {
        "metadata": {k: v for k, v in metadata.items() if k.startswith("lg_deploy")},
        "tags": list(config.get("tags") or []),
    }


_config_echo = StateGraph(ConfigState)
_config_echo.add_node("report_config", report_config)
_config_echo.add_edge(START, "report_config")
_config_echo.add_edge("report_config", END)
config_echo = _config_echo.compile()


class MixState(TypedDict, total=False):
    topic: str
    notes: Annotated[list[str], operator.add]


def plan(state: MixState) -> MixState:
    """Writes custom stream events, then a note."""
    writer = get_stream_writer()
    writer({"progress": "planning", "topic": state.get("topic", "")})
    return {"notes": ["planned"]}


def research(state: MixState) -> MixState:
    get_stream_writer()({"progress": "researching"})
    return {"notes": [f"found {state.get('topic', '')}"]}


_research = StateGraph(MixState)
_research.add_node("research", research)
_research.add_edge(START, "research")
_research.add_edge("research", END)

_mix = StateGraph(MixState)
_mix.add_node("plan", plan)
_mix.add_node("child", _research.compile())
_mix.add_edge(START, "plan")
_mix.add_edge("plan", "child")
_mix.add_edge("child", END)
# Custom events, and a subgraph (for stream_subgraphs).
mix = _mix.compile()


class ChatState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


async def reply(state: ChatState) -> ChatState:
    """A chat model that streams its answer token by token (a fake: no API key)."""
    asked = str(state["messages"][-1].content)
    model = GenericFakeChatModel(messages=iter([AIMessage(content=f"you said {asked} and more")]))
    return {"messages": [await model.ainvoke(state["messages"])]}


_chat = StateGraph(ChatState)
_chat.add_node("reply", reply)
_chat.add_edge(START, "reply")
_chat.add_edge("reply", END)
# Streams message chunks (the messages stream modes).
chat = _chat.compile()
