"""Running a run of the LangGraph Platform API (``api/platform/``): the graph's input, its
stream, and what it leaves on its thread. The runner calls ``run_platform`` from ``_invoke``
for executions that carry platform options; claims, leases, fencing and results stay the
runner's.

- Input: the run's ``command`` (as a LangGraph ``Command``) or its ``input``, on top of the
  checkpoint it names (``checkpoint_id``) or the thread's newest. A later attempt that
  finds the run's own checkpoint on the thread continues from it (``None``), like any
  execution (docs/architecture.md, "Resume after a crash").
- A run that pauses in ``interrupt()`` (or at a breakpoint) ends COMPLETED with its
  interrupts: the platform ends it with status success, and its thread is interrupted
  until a new run answers (core/platform/statuses.py).
- The thread's row gets the run's final values, interrupts and status, fenced on the
  attempt; a threadless run's thread is deleted when it succeeds, unless it asked to keep
  it (every other ending: core/platform/temporary.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.pregel import Pregel
from langgraph.types import Interrupt

from lg_deploy.core.checkpoint import EXECUTION_ID_KEY
from lg_deploy.core.errors import BackendUnavailable, LeaseLost
from lg_deploy.core.events import EventLog
from lg_deploy.core.jsonable import to_jsonable
from lg_deploy.core.models import Execution
from lg_deploy.core.platform.runs import RunOptions, to_command
from lg_deploy.core.platform.statuses import settled_status
from lg_deploy.core.platform.temporary import delete_temporary_thread
from lg_deploy.core.states import Status
from lg_deploy.core.store import Outcome
from lg_deploy.core.store.platform_base import PlatformStore
from lg_deploy.worker.streaming import RunStream

log = logging.getLogger("lg_deploy.worker")

INTERRUPT = "__interrupt__"


@dataclass
class PlatformRun:
    graph: Pregel
    config: RunnableConfig
    execution: Execution
    options: RunOptions
    checkpointer: BaseCheckpointSaver
    # Whether the attempt still holds its lease (``LeaseClock.held``): once it does not,
    # another worker may run the run, and this attempt appends nothing more to its stream.
    held: Callable[[], bool]


def _with_checkpoint(config: RunnableConfig, checkpoint_id: str | None, ns: str) -> RunnableConfig:
    if checkpoint_id is None:
        return config
    configurable = {**config.get("configurable", {}), "checkpoint_id": checkpoint_id}
    if ns:
        configurable["checkpoint_ns"] = ns
    return cast(RunnableConfig, {**config, "configurable": configurable})


async def choose_platform_input(run: PlatformRun) -> tuple[Any, RunnableConfig, bool]:
    """The graph's input, the config to start from, and whether it continues from the
    run's own checkpoint (a later attempt)."""
    options, execution = run.options, run.execution
    initial = to_command(options.command) if options.command else execution.input
    start = _with_checkpoint(run.config, options.checkpoint_id, options.checkpoint_ns)
    if execution.attempt == 1:
        return initial, start, False
    snapshot = await run.graph.aget_state(run.config)
    if (snapshot.metadata or {}).get(EXECUTION_ID_KEY) == str(execution.execution_id):
        return None, run.config, True
    return initial, start, False


async def run_platform(
    run: PlatformRun,
    *,
    store: PlatformStore,
    events: EventLog | None,
    durability: str,
    max_output_bytes: int,
) -> Outcome:
    execution, options = run.execution, run.options
    stream = RunStream(
        events, execution.execution_id, execution.attempt, options.stream_modes, held=run.held
    )
    graph_input, config, continuing = await choose_platform_input(run)
    await stream.begin(continuing=continuing)
    kwargs: dict[str, Any] = {
        "stream_mode": stream.langgraph_modes(),
        "subgraphs": options.subgraphs,
        "durability": options.kwargs.get("durability") or durability,
        **options.breakpoints(),
    }
    if options.context is not None:
        kwargs["context"] = options.context
    result: Any = None
    paused: dict[str, Interrupt] | None = None

    async def take(item: tuple[Any, ...]) -> None:
        nonlocal result, paused
        namespace, mode, chunk = item if len(item) == 3 else ((), *item)
        await stream.chunk(namespace, mode, chunk)
        if namespace:
            return
        if mode == "updates" and isinstance(chunk, dict) and INTERRUPT in chunk:
            paused = (paused or {}) | {i.id: i for i in chunk[INTERRUPT]}
        if mode == "values":
            result = (
                {k: v for k, v in chunk.items() if k != INTERRUPT}
                if isinstance(chunk, dict)
                else chunk
            )

    try:
        if "events" in options.stream_modes:
            root = str(config.get("run_id"))
            async for event in run.graph.astream_events(
                graph_input, config, version="v2", **kwargs
            ):
                if event["event"] == "on_chain_stream" and event["run_id"] == root:
                    await take(event["data"]["chunk"])
                elif "langsmith:hidden" not in (event.get("tags") or ()):
                    await stream.callback_event(cast(dict[str, Any], event))
        else:
            async for item in run.graph.astream(graph_input, config, **kwargs):
                await take(item)
    except (LeaseLost, BackendUnavailable):
        # Not the run's failure: it is handed back or taken over, and goes on elsewhere
        # (worker/runner.py). Its thread is neither marked failed nor deleted.
        raise
    except Exception:
        await _leave_on_thread(run, store, failed=True)
        raise
    finally:
        await stream.end()
    output = to_jsonable(result)
    interrupts = None
    if paused is not None:
        interrupts = [{"id": i.id, "value": to_jsonable(i.value)} for i in paused.values()]
    size = len(json.dumps([output, interrupts], separators=(",", ":")).encode())
    if size > max_output_bytes:
        return Outcome(
            Status.FAILED,
            error={
                "type": "output_too_large",
                "message": f"the result is {size} bytes of JSON, over the limit of "
                f"{max_output_bytes} (LG_DEPLOY_MAX_OUTPUT_BYTES)",
            },
        )
    await _leave_on_thread(run, store, failed=False, values=output, paused=paused is not None)
    return Outcome(Status.COMPLETED, output=output, interrupts=interrupts)


async def _leave_on_thread(
    run: PlatformRun,
    store: PlatformStore,
    *,
    failed: bool,
    values: Any = None,
    paused: bool = False,
) -> None:
    """Record on the thread what the run left (or delete a threadless run's thread).
    Best effort: the run's own result is what counts."""
    execution = run.execution
    thread_id = execution.thread_id
    try:
        if run.options.deletes_thread:
            # A temporary thread goes once the run is over (core/platform/temporary.py): on
            # success here, before the result is recorded, so that it is gone when the run
            # shows success. A failure may yet be retried: worker/service.py deletes the
            # thread once the store says the run is over.
            if not failed and run.held():
                await delete_temporary_thread(store, run.checkpointer, thread_id)
            return
        interrupts: dict[str, Any] | None = None
        if failed or paused:
            snapshot = await run.graph.aget_state(run.config)
            values = to_jsonable(snapshot.values) if failed else values
            interrupts = {
                task.id: [to_jsonable(i) for i in task.interrupts]
                for task in snapshot.tasks
                if task.interrupts
            } or None
        await store.record_thread_state(
            thread_id,
            status=settled_status(failed, paused),
            values=values,
            interrupts=interrupts,
            fenced_on=(execution.execution_id, execution.attempt),
        )
    except BackendUnavailable as exc:
        log.warning("run %s: cannot record its thread's state: %s", execution.execution_id, exc)
    except Exception:
        log.exception("run %s: cannot record its thread's state", execution.execution_id)
