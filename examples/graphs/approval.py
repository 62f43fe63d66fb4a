"""Human-in-the-loop graph: pauses for approval with ``interrupt`` and resumes on a decision.

Exported as an uncompiled ``StateGraph`` (``builder``); the runtime compiles it with its own
checkpointer, which ``interrupt`` needs in order to pause and resume.

Flow: ``draft`` -> ``review`` (interrupts with ``{"question", "draft"}``) -> ``publish``.
Input: ``{"request": "announce the release"}``. After the interrupt, resume with ``true``,
``"yes"``, ``"approve"`` or ``{"approved": true}`` to publish; anything else rejects.
Output: ``{"request", "draft", "decision", "status": "published" | "rejected"}``.
"""

import os
from collections.abc import Mapping
from typing import Any, Literal, NotRequired

from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt
from typing_extensions import TypedDict

_APPROVE_WORDS = frozenset({"yes", "y", "approve", "approved", "ok", "true"})


class ApprovalInput(TypedDict):
    """What a caller sends: the thing a draft should be written for."""

    request: str


class ApprovalState(TypedDict):
    """Full state; keys other than ``request`` are filled in by the nodes."""

    request: str
    draft: NotRequired[str]
    decision: NotRequired[Any]
    status: NotRequired[Literal["published", "rejected"]]


def draft(state: ApprovalState) -> dict[str, Any]:
    """Write a draft; the greeting comes from ``EXAMPLE_GREETING`` (langgraph.json ``env``)."""
    greeting = os.environ.get("EXAMPLE_GREETING", "hi")
    return {"draft": f"{greeting}! Draft for: {state.get('request', '')}"}


def review(state: ApprovalState) -> dict[str, Any]:
    """Pause until a human answers; the resume value becomes ``decision``.

    On resume LangGraph re-runs this node from the top and ``interrupt`` returns the value.
    """
    decision = interrupt({"question": "Approve this draft?", "draft": state.get("draft", "")})
    return {"decision": decision}


def publish(state: ApprovalState) -> dict[str, Any]:
    """Publish if the decision approves, otherwise reject."""
    approved = is_approval(state.get("decision"))
    return {"status": "published" if approved else "rejected"}


def is_approval(decision: object) -> bool:
    """Accept ``True``, approve-ish words ("yes", "approve", ...) and ``{"approved": ...}``."""
    if isinstance(decision, bool):
        return decision
    if isinstance(decision, str):
        return decision.strip().lower() in _APPROVE_WORDS
    if isinstance(decision, Mapping):
        return is_approval(decision.get("approved", False))
    return False


builder = StateGraph(ApprovalState, input_schema=ApprovalInput)
builder.add_node("draft", draft)
builder.add_node("review", review)
builder.add_node("publish", publish)
builder.add_edge(START, "draft")
builder.add_edge("draft", "review")
builder.add_edge("review", "publish")
builder.add_edge("publish", END)
