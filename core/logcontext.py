"""What a log line is about: fields bound to the current task, added to every line it logs.

The API binds the request id for each request, the worker the execution, graph, thread,
attempt and request id for each attempt; the JSON log format (``run/logs.py``) writes them
as fields of their own. asyncio tasks inherit the fields of the task that created them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

_FIELDS: ContextVar[Mapping[str, Any]] = ContextVar(
    "lg_deploy_log_fields", default=MappingProxyType({})
)
# Fields of the whole process (a worker's name), for its threads too.
_PROCESS: dict[str, Any] = {}


def describe_process(**fields: Any) -> None:
    _PROCESS.update(fields)


@contextlib.contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Add ``fields`` (None values left out) to every line logged inside the block."""
    token = _FIELDS.set({**_FIELDS.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _FIELDS.reset(token)


def current() -> Mapping[str, Any]:
    return _PROCESS | dict(_FIELDS.get())
