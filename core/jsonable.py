"""Turn what a graph returns (messages, pydantic models, dataclasses...) into plain JSON
that every store accepts."""

from __future__ import annotations

import math
from typing import Any

from pydantic_core import to_jsonable_python


def to_jsonable(value: Any) -> Any:
    """JSON-compatible data; objects nothing knows how to encode become their ``repr``.

    PostgreSQL's JSONB refuses NaN, infinities and NUL characters: non-finite numbers
    become null and NUL becomes U+FFFD, so a result can always be recorded.
    """
    return storable(to_jsonable_python(value, fallback=repr, serialize_unknown=True))


def storable(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, list):
        return [storable(v) for v in value]
    if isinstance(value, dict):
        return {storable_text(str(k)): storable(v) for k, v in value.items()}
    return value


def storable_text(text: str) -> str:
    return text.replace("\x00", "\ufffd")


def find_unstorable(value: Any, path: str = "") -> str | None:
    """Where ``value`` holds something a store refuses (NUL, NaN, infinity), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{path or 'value'}: {value} is not a finite number"
    if isinstance(value, str) and "\x00" in value:
        return f"{path or 'value'}: contains a NUL character"
    if isinstance(value, list):
        for i, item in enumerate(value):
            if found := find_unstorable(item, f"{path}[{i}]"):
                return found
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return f"{where}: a key contains a NUL character"
            if found := find_unstorable(item, where):
                return found
    return None
