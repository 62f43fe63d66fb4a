"""Which asyncio event loop a process runs on (``LG_DEPLOY_EVENT_LOOP``).

``auto``, the default, takes uvloop where it is installed (it comes with
``uvicorn[standard]``, one of lg-deploy's dependencies, on Linux and macOS) and asyncio's
own loop elsewhere: the same choice uvicorn makes for the API. A worker spends a good
part of its CPU in the loop itself (its sockets to PostgreSQL and Redis, the tasks and
futures around each step), and uvloop does that part in C. ``asyncio`` is the way back
for a graph whose libraries need asyncio's own loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from lg_deploy.core.errors import LgDeployError

T = TypeVar("T")
EventLoop = Literal["auto", "asyncio", "uvloop"]


class EventLoopUnavailable(LgDeployError):
    """``LG_DEPLOY_EVENT_LOOP=uvloop`` where uvloop is not installed."""

    def __init__(self) -> None:
        super().__init__(
            "LG_DEPLOY_EVENT_LOOP=uvloop, but uvloop is not installed here "
            "(pip install uvloop, or use auto or asyncio)"
        )


def chosen(choice: EventLoop) -> Literal["asyncio", "uvloop"]:
    """The loop ``choice`` means on this machine."""
    if choice == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if choice == "uvloop":
            raise EventLoopUnavailable() from None
        return "asyncio"
    return "uvloop"


def loop_factory(choice: EventLoop) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What ``asyncio.Runner`` makes its loop with (None: asyncio's own)."""
    if chosen(choice) == "asyncio":
        return None
    import uvloop

    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], choice: EventLoop) -> T:
    """``asyncio.run(main)`` on the loop ``choice`` means."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)
