"""What an attempt gives the graph: its own input, ``None`` to continue, or an answer to
an interrupt (docs/architecture.md, invariant 4).

Checkpoints carry the execution id in their metadata. When the thread's newest checkpoint
is this execution's, the graph continues from it (``None``, or ``Command(resume=...)``
while an interrupt waits for the value given to /resume); otherwise this execution has not
checkpointed yet and starts from its original input, whatever the thread did before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.pregel import Pregel
from langgraph.types import Command

from lg_deploy.core.models import Execution

EXECUTION_ID_KEY = "lg_deploy_execution_id"


@dataclass(frozen=True)
class ResumeConflict:
    """The interrupt this execution was resumed for is gone: the thread moved on."""

    error: dict[str, str]


def graph_config(execution: Execution) -> RunnableConfig:
    """The RunnableConfig of an execution: its own config, its thread, its id in metadata."""
    config: dict[str, Any] = dict(execution.config or {})
    configurable = dict(config.get("configurable") or {})
    configurable["thread_id"] = execution.thread_id
    metadata = dict(config.get("metadata") or {})
    metadata[EXECUTION_ID_KEY] = str(execution.execution_id)
    config["configurable"] = configurable
    config["metadata"] = metadata
    return cast(RunnableConfig, config)


async def choose_input(
    graph: Pregel, config: RunnableConfig, execution: Execution
) -> Any | ResumeConflict:
    """Fresh input, ``None`` (continue) or ``Command(resume=...)``: see the module doc."""
    snapshot = await graph.aget_state(config)
    mine = (snapshot.metadata or {}).get(EXECUTION_ID_KEY) == str(execution.execution_id)
    if not mine:
        if execution.has_resume:
            return ResumeConflict(
                {
                    "type": "resume_conflict",
                    "message": "the thread ran another execution since this one was "
                    "interrupted, so the interrupt can no longer be resumed",
                }
            )
        return execution.input
    if execution.has_resume:
        # The value answers the interrupts the execution showed when it was resumed; if
        # the graph got past them and asked something new before a crash, it must not
        # receive the old answer: continuing with None asks the new question again.
        answered = {i["id"] for i in execution.interrupts or []}
        pending = {i.id for i in snapshot.interrupts}
        if answered & pending:
            return Command(resume={iid: execution.resume for iid in answered & pending})
    return None
