"""Which failures are retried, and after how long."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Which failures are retried, and how long to wait before attempt n + 1."""

    retry_on: frozenset[str] = frozenset()
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0

    def is_retryable(self, error_type: str, exc: BaseException | None) -> bool:
        """The operator listed the error type, or the graph marked the exception
        (an attribute ``retryable = True``)."""
        return error_type in self.retry_on or bool(getattr(exc, "retryable", False))

    def delay_s(self, attempts_used: int) -> float:
        return min(self.backoff_s * 2 ** max(attempts_used - 1, 0), self.backoff_max_s)
