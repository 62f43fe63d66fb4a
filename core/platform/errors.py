"""Errors of the platform API's domain; ``api/platform/`` turns them into
``{"detail": ...}`` answers.

- ``InvalidAssistant(value)``: neither an assistant UUID nor a graph of langgraph.json (422).
- ``AlreadyExists(kind, id)``: create with ``if_exists="raise"`` of an existing one (409).
- ``BadRequest(message)``: a combination of fields the platform refuses (400).
"""

from __future__ import annotations

from lg_deploy.core.errors import LgDeployError


class InvalidAssistant(LgDeployError):
    def __init__(self, value: str) -> None:
        self.value = value
        super().__init__(
            f"Invalid assistant: '{value}'. Must be either a valid assistant UUID, or one of "
            "the registered graphs"
        )


class AlreadyExists(LgDeployError):
    def __init__(self, kind: str, id: str) -> None:
        self.kind = kind
        self.id = id
        super().__init__(f"{kind.capitalize()} {id} already exists")


class BadRequest(LgDeployError):
    """A request the platform refuses as a whole (HTTP 400)."""
