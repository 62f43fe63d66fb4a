"""The options a platform run was created with, as stored on its execution.

``Execution.platform`` holds ``{"kwargs": {...}, "multitask_strategy": ..., "on_completion":
..., "on_disconnect": ...}``. ``kwargs`` is what the platform shows back as the run's
``kwargs`` (its input excepted, which is the execution's own) and what the worker runs the
graph with: the command, the context, the stream modes, the breakpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from langgraph.types import Command, Send

from lg_deploy.core.models import Execution

StreamMode = Literal[
    "values",
    "updates",
    "messages",
    "messages-tuple",
    "custom",
    "debug",
    "events",
    "tasks",
    "checkpoints",
]
STREAM_MODES: tuple[str, ...] = (
    "values",
    "updates",
    "messages",
    "messages-tuple",
    "custom",
    "debug",
    "events",
    "tasks",
    "checkpoints",
)
MultitaskStrategy = Literal["reject", "rollback", "interrupt", "enqueue"]


@dataclass(frozen=True)
class RunOptions:
    kwargs: dict[str, Any]
    multitask_strategy: str = "enqueue"
    on_completion: str | None = None
    on_disconnect: str = "continue"

    @classmethod
    def of(cls, execution: Execution) -> RunOptions | None:
        """The options of a platform run; None for an execution made by /execute."""
        platform = execution.platform
        if platform is None:
            return None
        return cls(
            kwargs=dict(platform.get("kwargs") or {}),
            multitask_strategy=platform.get("multitask_strategy") or "enqueue",
            on_completion=platform.get("on_completion"),
            on_disconnect=platform.get("on_disconnect") or "continue",
        )

    def stored(self) -> dict[str, Any]:
        return {
            "kwargs": self.kwargs,
            "multitask_strategy": self.multitask_strategy,
            "on_completion": self.on_completion,
            "on_disconnect": self.on_disconnect,
        }

    @property
    def stream_modes(self) -> list[str]:
        modes = self.kwargs.get("stream_mode") or ["values"]
        return [modes] if isinstance(modes, str) else list(modes)

    @property
    def subgraphs(self) -> bool:
        return bool(self.kwargs.get("subgraphs"))

    @property
    def temporary(self) -> bool:
        return bool(self.kwargs.get("temporary"))

    @property
    def deletes_thread(self) -> bool:
        """A threadless run's thread goes once the run is over, unless asked to stay."""
        return self.temporary and (self.on_completion or "delete") == "delete"

    @property
    def command(self) -> dict[str, Any] | None:
        command = self.kwargs.get("command")
        return command if isinstance(command, dict) else None

    @property
    def context(self) -> dict[str, Any] | None:
        return self.kwargs.get("context") or None

    @property
    def checkpoint_id(self) -> str | None:
        checkpoint = self.kwargs.get("checkpoint") or {}
        found = self.kwargs.get("checkpoint_id") or checkpoint.get("checkpoint_id")
        return str(found) if found else None

    @property
    def checkpoint_ns(self) -> str:
        return str((self.kwargs.get("checkpoint") or {}).get("checkpoint_ns") or "")

    def breakpoints(self) -> dict[str, Any]:
        """``interrupt_before`` / ``interrupt_after`` as LangGraph takes them."""
        found: dict[str, Any] = {}
        for key in ("interrupt_before", "interrupt_after"):
            value = self.kwargs.get(key)
            if value:
                found[key] = value
        return found


def to_command(command: dict[str, Any]) -> Command[Any]:
    """The platform's ``{"update", "resume", "goto"}`` as a LangGraph ``Command``; a goto
    may be a node, ``{"node", "input"}`` (a ``Send``) or a list of either."""

    def target(goto: Any) -> Any:
        if isinstance(goto, dict):
            return Send(goto["node"], goto.get("input"))
        return goto

    goto = command.get("goto")
    if isinstance(goto, list):
        goto = [target(g) for g in goto]
    elif goto is not None:
        goto = target(goto)
    update = command.get("update")
    if isinstance(update, list):
        update = [tuple(u) for u in update]
    return Command(update=update, resume=command.get("resume"), goto=goto or ())
