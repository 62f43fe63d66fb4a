"""Executions as JSON answers, one record at a time, so that a record that cannot be shown
never takes a whole answer down.

Requests are validated at submit, but rows written by an older version, or damaged by
hand, may hold what no JSON encoder writes (a lone surrogate, say). Such a record is
shown as its identity and status with ``unreadable`` saying what failed, and can still be
cancelled or deleted. Encoding here also spares FastAPI a second validation of every
answer against its response model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from fastapi import Response

from lg_deploy.api.schemas import ExecutionOut
from lg_deploy.core.models import Execution
from lg_deploy.core.store import Page

log = logging.getLogger("lg_deploy.api")


def execution_json(
    execution: Execution, *, with_input: bool = True, with_result: bool = True
) -> bytes:
    try:
        rendered = ExecutionOut.of(execution, with_input=with_input, with_result=with_result)
        return rendered.model_dump_json().encode()
    except ValueError as exc:  # pydantic's validation and serialization errors
        log.warning("execution %s cannot be shown in full: %s", execution.execution_id, exc)
        reason = str(exc).splitlines()[0][:300].encode("utf-8", "replace").decode()
        return json.dumps(
            {
                "execution_id": str(execution.execution_id),
                "graph_id": execution.graph_id,
                "thread_id": execution.thread_id,
                "status": str(execution.status),
                "created_at": execution.created_at.isoformat(),
                "updated_at": execution.updated_at.isoformat(),
                "unreadable": reason,
            }
        ).encode()


def execution_response(
    execution: Execution, *, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        execution_json(execution),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


def page_response(page: Page, include: Sequence[str]) -> Response:
    items = b",".join(
        execution_json(e, with_input="input" in include, with_result="output" in include)
        for e in page.items
    )
    cursor = json.dumps(page.next_cursor).encode()
    return Response(
        b'{"items":[' + items + b'],"next_cursor":' + cursor + b"}",
        media_type="application/json",
    )
