"""What an attempt gives the graph: its own input, ``None`` to continue, or an answer to
an interrupt (docs/architecture.md, invariant 4).

Checkpoints carry the execution id in their metadata. When the thread's newest checkpoint
is this execution's, the graph continues from it (``None``, or ``Command(resume=...)``
while an interrupt waits for the value given to /resume); otherwise this execution has not
checkpointed yet and starts from its original input, whatever the thread did before.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.pregel import Pregel
from langgraph.types import Command

from lg_deploy.core.checkpoint import EXECUTION_ID_KEY
from lg_deploy.core.models import Execution


@dataclass(frozen=True)
class ResumeConflict:
    """The interrupt this execution was resumed for is gone: the thread moved on."""

    error: dict[str, str]


def graph_config(execution: Execution) -> RunnableConfig:
    """The RunnableConfig of an attempt: the execution's own config, its thread, and what
    tells its runs apart in a LangSmith trace (when the usual LANGSMITH_* variables turn
    tracing on): the execution, graph and attempt as metadata and tags, and a run id
    derived from the execution and the attempt, so that an attempt's trace can be found
    from the execution and back."""
    config: dict[str, Any] = dict(execution.config or {})
    configurable = dict(config.get("configurable") or {})
    configurable["thread_id"] = execution.thread_id
    eid = str(execution.execution_id)
    metadata = dict(config.get("metadata") or {})
    metadata |= {
        EXECUTION_ID_KEY: eid,
        "lg_deploy_graph_id": execution.graph_id,
        "lg_deploy_attempt": execution.attempt,
    }
    tags = [*config.get("tags", []), "lg-deploy", f"execution:{eid}"]
    config["configurable"] = configurable
    config["metadata"] = metadata
    config["tags"] = tags
    config["run_id"] = attempt_run_id(execution.execution_id, execution.attempt)
    return cast(RunnableConfig, config)


def attempt_run_id(execution_id: uuid.UUID, attempt: int) -> uuid.UUID:
    """The LangSmith run id of an attempt's root run."""
    return uuid.uuid5(execution_id, str(attempt))


async def choose_input(
    graph: Pregel, config: RunnableConfig, execution: Execution
) -> Any | ResumeConflict:
    """Fresh input, ``None`` (continue) or ``Command(resume=...)``: see the module doc."""
    if execution.attempt == 1:
        return execution.input  # its first claim: nothing of it can be on the thread yet
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
