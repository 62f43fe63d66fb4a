"""Graphs that exist for the test suite: failures and blocking sync nodes."""

from __future__ import annotations

import time

from langgraph.graph import END, START, StateGraph
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
    slept: float


def block(state: SleepState) -> SleepState:
    """A sync node that holds its thread: cancellation cannot interrupt it."""
    seconds = state.get("sleep_s", 1.0)
    time.sleep(seconds)
    return {"slept": seconds}


_sync_slow = StateGraph(SleepState)
_sync_slow.add_node("block", block)
_sync_slow.add_edge(START, "block")
_sync_slow.add_edge("block", END)
sync_slow = _sync_slow.compile()
