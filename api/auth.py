"""Optional API keys: when configured, every route but health and metrics needs one,
given as ``Authorization: Bearer <key>`` or ``X-Api-Key: <key>``."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from lg_deploy.api.errors import send_error

# /ok: the LangGraph Platform API's health check, open like the probes.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/ok"})


class ApiKeys:
    def __init__(self, app: ASGIApp, keys: Iterable[str]) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]

    def _allowed(self, scope: Scope) -> bool:
        headers = dict(scope["headers"])
        given = headers.get(b"x-api-key")
        authorization = headers.get(b"authorization", b"")
        if given is None and authorization[:7].lower() == b"bearer ":
            given = authorization[7:].strip()
        if not given:
            return False
        # Compare against every key, in constant time for each.
        return any([hmac.compare_digest(given, key) for key in self.keys])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        await send_error(
            send,
            401,
            "unauthorized",
            "a valid API key is required (Authorization: Bearer <key> or X-Api-Key: <key>)",
            headers=[(b"www-authenticate", b"Bearer")],
        )
