"""A graph small enough for a ConfigMap: one module, nothing beyond what lg-deploy installs."""

import os

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict


class State(TypedDict, total=False):
    name: str
    greeting: str


def greet(state: State) -> State:
    greeting = os.environ.get("GREETING", "Hello")
    return {"greeting": f"{greeting}, {state.get('name') or 'world'}!"}


builder = StateGraph(State)
builder.add_node("greet", greet)
builder.add_edge(START, "greet")
builder.add_edge("greet", END)
graph = builder.compile()
