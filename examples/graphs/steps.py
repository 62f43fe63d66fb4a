"""Trivial two-step graph: the smallest useful smoke test for the runtime.

Exported as a compiled graph (``graph``), compiled without a checkpointer so the
runtime can attach its own.

Input: ``{"text": "hello"}``; output: ``{"text": "HELLO!", "steps": ["upper", "exclaim"]}``.
"""

import operator
from typing import Annotated

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict


class StepsInput(TypedDict):
    """What a caller sends: only the text to transform."""

    text: str


class StepsState(TypedDict):
    """Full state; ``steps`` accumulates (operator.add) the names of the nodes that ran."""

    text: str
    steps: Annotated[list[str], operator.add]


def upper(state: StepsState) -> dict[str, object]:
    """Upper-case the text; a missing ``text`` key is treated as an empty string."""
    return {"text": state.get("text", "").upper(), "steps": ["upper"]}


def exclaim(state: StepsState) -> dict[str, object]:
    """Append an exclamation mark, so the output proves both nodes ran in order."""
    return {"text": state.get("text", "") + "!", "steps": ["exclaim"]}


builder = StateGraph(StepsState, input_schema=StepsInput)
builder.add_node("upper", upper)
builder.add_node("exclaim", exclaim)
builder.add_edge(START, "upper")
builder.add_edge("upper", "exclaim")
builder.add_edge("exclaim", END)

graph = builder.compile()
