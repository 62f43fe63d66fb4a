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
