"""Checkpoint operations the platform needs and the LangGraph savers do not all offer:
copying a thread, and finding the checkpoints an execution wrote (for a rollback).

Both go through the saver's public reading and writing methods, so they work with any
saver; a saver that implements ``acopy_thread`` itself is used as is.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple

from lg_deploy.core.checkpoint import EXECUTION_ID_KEY


def _thread(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id}}


async def copy_thread(saver: BaseCheckpointSaver, source: str, target: str) -> None:
    """Copy every checkpoint of ``source`` (all namespaces, oldest first, with their
    pending writes) to ``target``."""
    try:
        await saver.acopy_thread(source, target)
        return
    except NotImplementedError:
        pass
    found: list[CheckpointTuple] = [t async for t in saver.alist(_thread(source))]
    for item in reversed(found):  # newest first from alist: parents go in first
        configurable = item.config["configurable"]
        parent = (item.parent_config or {}).get("configurable", {}).get("checkpoint_id")
        config: dict[str, Any] = {
            "configurable": {
                "thread_id": target,
                "checkpoint_ns": configurable.get("checkpoint_ns", ""),
                **({"checkpoint_id": parent} if parent else {}),
            }
        }
        checkpoint = item.checkpoint
        written = await saver.aput(
            config,  # type: ignore[arg-type]
            checkpoint,
            item.metadata,
            dict(checkpoint["channel_versions"]),
        )
        writes: dict[str, list[tuple[str, Any]]] = defaultdict(list)
        for task_id, channel, value in item.pending_writes or ():
            writes[task_id].append((channel, value))
        for task_id, task_writes in writes.items():
            await saver.aput_writes(written, task_writes, task_id)


async def checkpoints_of_execution(
    saver: BaseCheckpointSaver, thread_id: str, execution_id: str
) -> list[str]:
    """The ids of the checkpoints ``execution_id`` wrote on the thread."""
    return [
        t.config["configurable"]["checkpoint_id"]
        async for t in saver.alist(_thread(thread_id), filter={EXECUTION_ID_KEY: execution_id})
    ]
