"""Turn what a graph returns (messages, pydantic models, dataclasses...) into plain JSON."""

from __future__ import annotations

from typing import Any

from pydantic_core import to_jsonable_python


def to_jsonable(value: Any) -> Any:
    """JSON-compatible data; objects nothing knows how to encode become their ``repr``."""
    return to_jsonable_python(value, fallback=repr, serialize_unknown=True)
