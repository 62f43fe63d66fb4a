"""Watching the worker's event loop from a thread of its own.

Every execution of a worker shares one event loop. An ``async def`` node that calls
blocking code (``time.sleep``, a synchronous HTTP client, a long computation) stops all
of them. A timer on the loop ticks every ``TICK_S``; a thread notices when it stops
ticking, finds the graph node the loop is stuck in by reading the loop thread's stack
(LangGraph calls every node through a runnable whose frame holds the node's config), logs
it once with the execution, graph and node, and counts it. Leases are renewed from another thread
(``worker/leases.py``), so the other executions keep theirs meanwhile.

Past ``limit_s`` the worker is stuck: ``on_stuck`` is called once with the culprit, and
``stuck()`` holds until the loop ticks again (the liveness probe fails, the lease keeper
stops renewing).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from lg_deploy.worker import metrics

log = logging.getLogger("lg_deploy.worker")

TICK_S = 0.1


@dataclass(frozen=True)
class Culprit:
    """Where the loop is stuck: the node, and the execution it runs for (None when the loop
    is blocked outside any graph node)."""

    execution_id: str | None
    node: str | None


def blocking_node(thread_id: int, execution_key: str) -> Culprit:
    """The graph node on the stack of thread ``thread_id``, innermost first."""
    frame = sys._current_frames().get(thread_id)
    while frame is not None:
        # Read only LangGraph's own frames: the runnable that calls a node keeps the node's
        # config, whose metadata names the node and carries what lg-deploy put there.
        if frame.f_code.co_name in _NODE_CALLERS and "langgraph" in frame.f_code.co_filename:
            config = frame.f_locals.get("config")
            metadata = config.get("metadata") if isinstance(config, dict) else None
            if isinstance(metadata, dict) and "langgraph_node" in metadata:
                execution_id = metadata.get(execution_key)
                return Culprit(
                    str(execution_id) if execution_id else None, str(metadata["langgraph_node"])
                )
        frame = frame.f_back
    return Culprit(None, None)


# LangGraph's frames that call a node with its config (langgraph/_internal/_runnable.py).
_NODE_CALLERS = frozenset({"ainvoke", "invoke", "astream", "stream"})


class LoopWatch:
    def __init__(
        self,
        *,
        warn_s: float,
        limit_s: float,
        execution_key: str,
        graph_of: Callable[[str], str | None],
        on_stuck: Callable[[Culprit, float], None],
    ) -> None:
        self.warn_s = warn_s
        self.limit_s = limit_s
        self.execution_key = execution_key
        self.graph_of = graph_of
        self.on_stuck = on_stuck
        self.last_tick = time.monotonic()
        self._loop_thread = threading.get_ident()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, name="lg-deploy-loop-watch", daemon=True
        )
        self._ticking: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Call on the event loop's thread."""
        self._loop_thread = threading.get_ident()
        self.last_tick = time.monotonic()
        self._ticking = asyncio.create_task(self._tick())
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._ticking is not None:
            self._ticking.cancel()

    def blocked_for(self) -> float:
        """Seconds since the loop last ran its timer, beyond the tick itself."""
        return max(0.0, time.monotonic() - self.last_tick - TICK_S)

    def stuck(self) -> bool:
        return self.blocked_for() > self.limit_s

    async def _tick(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(TICK_S)
            self.last_tick = now = time.monotonic()
            metrics.LOOP_LAG.set(max(0.0, now - before - TICK_S))

    def _watch(self) -> None:
        warned: Culprit | None = None
        at_limit = False
        longest = 0.0
        while not self._stop.wait(TICK_S):
            blocked = self.blocked_for()
            if blocked <= self.warn_s:
                if warned is not None:
                    log.warning("the event loop runs again (blocked for %.1f s)", longest)
                warned, at_limit, longest = None, False, 0.0
                continue
            longest = max(longest, blocked)
            if warned is None:
                warned = blocking_node(self._loop_thread, self.execution_key)
                graph = self.graph_of(warned.execution_id) if warned.execution_id else None
                metrics.LOOP_BLOCKED.labels(graph or "").inc()
                log.warning(
                    "the event loop is blocked (%.1f s so far) by execution %s, graph %s, "
                    "node %s: an async node is running blocking code; other executions keep "
                    "their leases for up to %.0f s",
                    blocked,
                    warned.execution_id or "-",
                    graph or "-",
                    warned.node or "-",
                    self.limit_s,
                )
            if not at_limit and blocked > self.limit_s:
                at_limit = True
                self.on_stuck(warned, blocked)
