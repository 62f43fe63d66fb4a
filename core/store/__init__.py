"""The store: executions in PostgreSQL or SQLite, chosen by URL here and only here."""

from __future__ import annotations

from pathlib import Path

from lg_deploy.core.errors import UnknownBackend
from lg_deploy.core.store.base import Outcome, Overview, Page, Recorded, Store, Waiting

SCHEMES = ("sqlite+aiosqlite:///path", "postgresql+asyncpg://user:password@host/db")

__all__ = [
    "SCHEMES",
    "Outcome",
    "Overview",
    "Page",
    "Recorded",
    "Store",
    "Waiting",
    "check_database_url",
    "open_store",
]


def check_database_url(url: str) -> None:
    """Raise ``UnknownBackend`` unless ``url`` names a database the store can use."""
    if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise UnknownBackend(url, SCHEMES)


def ensure_sqlite_dir(url: str) -> None:
    """Create the folder of a SQLite database file if it is missing."""
    if url.startswith("sqlite+aiosqlite:///") and ":memory:" not in url:
        Path(url.removeprefix("sqlite+aiosqlite:///")).parent.mkdir(parents=True, exist_ok=True)


def open_store(url: str, *, pool_size: int = 10, statement_timeout_s: float = 10) -> Store:
    """The store for ``url``, with up to ``pool_size`` connections to PostgreSQL, each
    statement limited to ``statement_timeout_s`` there (a frozen server must not hang a
    request; maintenance commands allow more); the caller closes it."""
    check_database_url(url)
    ensure_sqlite_dir(url)
    from lg_deploy.core.store.sql import SQLStore

    if url.startswith("sqlite"):
        return SQLStore.from_url(url)
    # No overflow: connections opened past the pool were closed again on return, and a
    # burst of requests paid for a new connection each; they wait for a pooled one instead.
    return SQLStore.from_url(
        url,
        pool_size=pool_size,
        max_overflow=0,
        connect_args={"timeout": 5, "command_timeout": statement_timeout_s},
    )
