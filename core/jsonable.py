"""JSON that every store accepts and every reader can read back.

Two directions: ``find_unstorable`` refuses a request's input that a store or LangGraph
would refuse or could not give back (the API answers 422 and writes nothing);
``to_jsonable`` turns what a graph returns (messages, pydantic models, dataclasses...)
into plain JSON, cleaning what cannot be stored, so that a result can always be recorded.
"""

from __future__ import annotations

import math
import re
from typing import Any

from pydantic_core import to_jsonable_python

# Deeper documents hit recursion limits in the JSON encoders and decoders on the way
# (Python's json, PostgreSQL's JSONB, LangGraph's msgpack).
MAX_DEPTH = 100
# LangGraph's checkpoint serializer (msgpack) stores integers of at most 64 bits.
MIN_INT, MAX_INT = -(2**63), 2**63 - 1
_SURROGATE = re.compile("[\ud800-\udfff]")


def to_jsonable(value: Any) -> Any:
    """JSON-compatible data; objects nothing knows how to encode become their ``repr``.

    PostgreSQL's JSONB refuses NaN, infinities and NUL characters, and no JSON encoder
    writes a lone UTF-16 surrogate: non-finite numbers become null, and NUL and lone
    surrogates become U+FFFD.
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
    return _SURROGATE.sub("\ufffd", text.replace("\x00", "\ufffd"))


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character"
    if _SURROGATE.search(text):
        return "contains a lone UTF-16 surrogate (not valid Unicode)"
    return None


def find_unstorable(value: Any) -> str | None:
    """Where ``value`` holds something a store or LangGraph refuses or cannot give back
    (nesting deeper than ``MAX_DEPTH``, NUL, a lone surrogate, NaN, infinity, an integer
    beyond 64 bits), or None. The answer is itself storable text."""
    problem = _first_problem(value)
    return None if problem is None else storable_text(problem)


def _first_problem(value: Any) -> str | None:
    """Iterative: a deep document cannot exhaust the stack."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        where = path or "value"
        if depth > MAX_DEPTH:
            return f"{where}: nested deeper than {MAX_DEPTH} levels"
        if isinstance(item, bool):
            continue
        if isinstance(item, float) and not math.isfinite(item):
            return f"{where}: {item} is not a finite number"
        if isinstance(item, int) and not MIN_INT <= item <= MAX_INT:
            return f"{where}: the integer does not fit in 64 bits"
        if isinstance(item, str) and (problem := _text_problem(item)):
            return f"{where}: {problem}"
        if isinstance(item, list):
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(item))
        elif isinstance(item, dict):
            for key, v in item.items():
                inner = f"{path}.{key}" if path else str(key)
                if problem := _text_problem(str(key)):
                    return f"{inner}: a key {problem}"
                stack.append((v, inner, depth + 1))
    return None
