"""Domain errors become HTTP here, one handler per class, one body shape:
``{"error": {"code": ..., "message": ..., "details": ...}}``."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from lg_deploy.api.schemas import ErrorResponse
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

log = logging.getLogger("lg_deploy.api")

RETRY_AFTER_S = 5


class UnknownGraph(Exception):
    def __init__(self, graph_id: str, known: list[str]) -> None:
        self.graph_id = graph_id
        self.known = known


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details}}
    return JSONResponse(body, status_code=status, headers=headers)


async def send_error(
    send: Send,
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """The error body from pure ASGI middleware, which answers before FastAPI runs."""
    body = json.dumps({"error": {"code": code, "message": message, "details": details}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route can give."""
    return {code: {"model": ErrorResponse} for code in codes}


HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
}


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in exc.errors()
        ]
        if any(e["type"] == "json_invalid" for e in errors):
            return error_response(400, "malformed_json", "the body is not valid JSON", errors)
        return error_response(422, "validation_error", "the request is not valid", errors)

    @app.exception_handler(UnknownGraph)
    async def unknown_graph(_: Request, exc: UnknownGraph) -> JSONResponse:
        return error_response(
            422,
            "unknown_graph",
            f"no graph named {exc.graph_id!r}",
            {"known_graphs": exc.known},
        )

    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return error_response(404, "not_found", str(exc), {"kind": exc.kind, "id": exc.id})

    @app.exception_handler(InvalidTransition)
    async def invalid_transition(_: Request, exc: InvalidTransition) -> JSONResponse:
        return error_response(
            409,
            "invalid_transition",
            str(exc),
            {"current": str(exc.current), "wanted": str(exc.wanted)},
        )

    @app.exception_handler(IdempotencyConflict)
    async def idempotency_conflict(_: Request, exc: IdempotencyConflict) -> JSONResponse:
        return error_response(409, "idempotency_conflict", str(exc), {"key": exc.key})

    @app.exception_handler(ThreadBusy)
    async def thread_busy(_: Request, exc: ThreadBusy) -> JSONResponse:
        return error_response(409, "thread_busy", str(exc), {"thread_id": exc.thread_id})

    @app.exception_handler(ExecutionActive)
    async def execution_active(_: Request, exc: ExecutionActive) -> JSONResponse:
        return error_response(
            409,
            "execution_active",
            str(exc),
            {"execution_id": exc.execution_id, "status": exc.status},
        )

    @app.exception_handler(QueueFull)
    async def queue_full(_: Request, exc: QueueFull) -> JSONResponse:
        return error_response(
            429,
            "queue_full",
            str(exc),
            {"depth": exc.depth, "limit": exc.limit},
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    @app.exception_handler(BackendUnavailable)
    async def unavailable(_: Request, exc: BackendUnavailable) -> JSONResponse:
        log.warning("answering 503: %s", exc)
        return error_response(
            503,
            "backend_unavailable",
            f"the {exc.name} is unavailable; try again later",
            {"backend": exc.name},
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    @app.exception_handler(BackendBusy)
    async def busy(_: Request, exc: BackendBusy) -> JSONResponse:
        log.warning("answering 503: %s", exc)
        return error_response(
            503,
            "backend_busy",
            f"too many requests wait for the {exc.name} in this API process; try again shortly",
            {"backend": exc.name},
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and isinstance(exc.__cause__, ValueError | RecursionError):
            # FastAPI could not decode the body at all: not UTF-8, or nested too deep.
            return error_response(400, "malformed_json", "the body is not valid JSON")
        code = HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(
            exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return error_response(500, "internal_error", "an unexpected error occurred")
