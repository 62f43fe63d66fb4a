"""Errors of the platform API as the SDK expects them: ``{"detail": "..."}`` with the
platform's status codes (``langgraph_sdk.errors`` maps each to an exception class).

The rest of lg-deploy answers ``{"error": {...}}`` (``api/errors.py``); the platform's
routes use ``PlatformRoute``, which turns errors into the platform's shape before the
application's handlers see them. (401, 408 and 413 come from middleware that runs before
any route, and keep lg-deploy's shape: the SDK goes by the status code.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from lg_deploy.api.errors import RETRY_AFTER_S
from lg_deploy.core.errors import (
    BackendBusy,
    BackendUnavailable,
    ExecutionActive,
    IdempotencyConflict,
    InvalidTransition,
    NotFound,
    QueueFull,
    ThreadBusy,
)
from lg_deploy.core.events import InvalidEventId
from lg_deploy.core.platform.errors import AlreadyExists, BadRequest, InvalidAssistant

log = logging.getLogger("lg_deploy.api")

THREAD_BUSY = (
    "Thread is already running a task. Wait for it to finish or choose a different "
    "multitask strategy."
)


def detail(status: int, message: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def platform_error(exc: Exception) -> Response | None:
    """The platform's answer to ``exc``, or None for an error nobody expected."""
    if isinstance(exc, RequestValidationError):
        return detail(422, jsonable_encoder(exc.errors(), custom_encoder={Exception: str}))
    if isinstance(exc, NotFound):
        return detail(404, f"{exc.kind.capitalize()} {exc.id} not found")
    if isinstance(exc, InvalidAssistant | InvalidEventId):
        return detail(422, str(exc))
    if isinstance(exc, BadRequest):
        return detail(400, str(exc))
    if isinstance(exc, ThreadBusy):
        return detail(409, THREAD_BUSY)
    if isinstance(exc, AlreadyExists | ExecutionActive | InvalidTransition | IdempotencyConflict):
        return detail(409, str(exc))
    if isinstance(exc, QueueFull):
        return detail(429, str(exc), {"Retry-After": str(RETRY_AFTER_S)})
    if isinstance(exc, BackendBusy):
        return detail(503, str(exc), {"Retry-After": "1"})
    if isinstance(exc, BackendUnavailable):
        log.warning("answering 503: %s", exc)
        return detail(
            503,
            f"the {exc.name} is unavailable; try again later",
            {"Retry-After": str(RETRY_AFTER_S)},
        )
    if isinstance(exc, HTTPException):
        return detail(exc.status_code, exc.detail, getattr(exc, "headers", None))
    return None


class PlatformRoute(APIRoute):
    """A route whose errors answer in the platform's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                response = platform_error(exc)
                if response is None:
                    raise
                return response

        return handle


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a platform route can give."""
    schema = {"type": "object", "properties": {"detail": {}}, "required": ["detail"]}
    return {code: {"content": {"application/json": {"schema": schema}}} for code in codes}
