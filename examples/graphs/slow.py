"""Slow, checkpoint-per-step graph for crash/resume tests.

Exported as a compiled graph (``graph``), compiled without a checkpointer so the runtime
can attach its own. The single node ``step`` loops on itself through a conditional edge, so
each super-step runs exactly one step and LangGraph saves a checkpoint after every one of
them. A run killed mid-way resumes after the last finished step instead of starting over.

Input: ``{"steps": 5, "sleep_s": 1.0, "marker_file": "/tmp/marks"}`` (all optional).
Output: ``{"steps", "sleep_s", "marker_file", "done": 5, "completed": [1, 2, 3, 4, 5]}``.
If ``marker_file`` is set, each finished step appends the line ``"{index}\\n"`` to it, so a
test can count lines to prove that no finished step ran twice. (The line is written just
before the step returns, i.e. before its checkpoint is saved; a kill inside that window of a
few milliseconds re-runs the step and repeats its line.)
"""

import asyncio
import operator
from typing import Annotated, Literal, NotRequired

from langgraph.graph import START, StateGraph
from typing_extensions import TypedDict

DEFAULT_STEPS = 5
DEFAULT_SLEEP_S = 1.0


class SlowInput(TypedDict):
    """What a caller sends; every key has a default."""

    steps: NotRequired[int]
    sleep_s: NotRequired[float]
    marker_file: NotRequired[str | None]


class SlowState(SlowInput):
    """Full state: the input plus progress (``done``) and the finished step indexes."""

    done: NotRequired[int]
    completed: Annotated[list[int], operator.add]


def _append_marker(path: str, index: int) -> None:
    """Append one line per finished step; flushed so a crash right after cannot lose it."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{index}\n")
        f.flush()


async def step(state: SlowState) -> dict[str, object]:
    """Run one step: sleep, record the marker, and count the step as done."""
    index = state.get("done", 0) + 1
    await asyncio.sleep(state.get("sleep_s", DEFAULT_SLEEP_S))
    marker_file = state.get("marker_file")
    if marker_file:
        await asyncio.to_thread(_append_marker, marker_file, index)
    return {"done": index, "completed": [index]}


def route(state: SlowState) -> Literal["step", "__end__"]:
    """Loop back to ``step`` until ``done`` reaches ``steps`` (``steps <= 0`` runs none)."""
    if state.get("done", 0) < state.get("steps", DEFAULT_STEPS):
        return "step"
    return "__end__"  # the value of langgraph.graph.END, spelled out for the Literal type


builder = StateGraph(SlowState, input_schema=SlowInput)
builder.add_node("step", step)
builder.add_conditional_edges(START, route)
builder.add_conditional_edges("step", route)

graph = builder.compile()
