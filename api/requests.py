"""Every request, as pure ASGI middleware: its request id, its line in the access log, and
its count and latency by route template.

The request id comes from the client's ``X-Request-ID`` when it is a sensible token, or is
made here; it is on the answer, on every log line of the request, and on the execution a
submission creates, so that a submission can be followed into the worker's logs.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lg_deploy.api import metrics
from lg_deploy.core import logcontext

access = logging.getLogger("lg_deploy.access")

HEADER = b"x-request-id"
_ACCEPTED = re.compile(rb"[A-Za-z0-9._:-]{1,200}")


def request_id_of(scope: Scope) -> str:
    given = dict(scope["headers"]).get(HEADER)
    if given is not None and _ACCEPTED.fullmatch(given):
        return given.decode()
    return uuid.uuid4().hex


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_of(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (HEADER, request_id.encode())]
            await send(message)

        with logcontext.bound(request_id=request_id):
            try:
                await self.app(scope, receive, sending)
            finally:
                seconds = time.perf_counter() - started
                # The route template, never the raw path: an id would make a series per
                # request.
                route = getattr(scope.get("route"), "path", "unmatched")
                method = scope["method"]
                metrics.REQUESTS.labels(method, route, str(status)).inc()
                metrics.REQUEST_SECONDS.labels(method, route).observe(seconds)
                access.info("%s %s %d %.1f ms", method, scope["path"], status, seconds * 1000)
