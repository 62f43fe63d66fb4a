"""Idempotency keys: a retried request with the same key and body gets the same execution
back; the same key with another body is a conflict. The body is compared by digest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def request_hash(body: Mapping[str, Any]) -> str:
    """A stable digest of a request body, to tell idempotent retries from key re-use."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
