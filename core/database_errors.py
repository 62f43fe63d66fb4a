"""Telling a database outage from a failed statement, for both drivers lg-deploy uses.

The store (SQLAlchemy over asyncpg or aiosqlite) and the PostgreSQL checkpointer (psycopg)
raise different exception types for the same event. An outage is a failure of the
connection itself: refused, dropped, or the server shutting down or starting (SQLSTATE
classes 08 and 57P). A statement the database refused is not one.
"""

from __future__ import annotations

import sqlalchemy as sa

from lg_deploy.core.errors import BackendUnavailable


def is_database_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached. A bare OSError is not one:
    raised by a graph, it is the graph's own failure."""
    import psycopg
    import psycopg_pool

    if isinstance(
        exc,
        BackendUnavailable
        | psycopg.OperationalError
        | psycopg.InterfaceError
        | psycopg_pool.PoolTimeout
        | sa.exc.OperationalError
        | sa.exc.InterfaceError
        | sa.exc.TimeoutError,
    ):
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        for cause in (exc.orig, exc.orig.__cause__ if exc.orig else None):
            code = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
            if isinstance(code, str) and code.startswith(("08", "57P")):
                return True
    return False


def first_line(exc: BaseException) -> str:
    """The first line of what the driver said, short enough for a log line or an answer."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
