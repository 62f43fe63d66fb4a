"""A graph with a dependency lg-deploy does not install (humanize): it needs a derived image."""

import humanize
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict


class File(TypedDict):
    name: str
    bytes: int


class State(TypedDict, total=False):
    files: list[File]
    total_bytes: int
    report: str


def add_up(state: State) -> State:
    return {"total_bytes": sum(f["bytes"] for f in state.get("files", []))}


def describe(state: State) -> State:
    count = len(state.get("files", []))
    size = humanize.naturalsize(state["total_bytes"])
    return {"report": f"{count} file{'s' if count != 1 else ''}, {size} in total"}


builder = StateGraph(State)
builder.add_node("add_up", add_up)
builder.add_node("describe", describe)
builder.add_edge(START, "add_up")
builder.add_edge("add_up", "describe")
builder.add_edge("describe", END)
graph = builder.compile()
