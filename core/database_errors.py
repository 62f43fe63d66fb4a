"""Telling a database outage from a failed statement, for both drivers lg-deploy uses.

The store (SQLAlchemy over asyncpg or aiosqlite) and the PostgreSQL checkpointer (psycopg)
raise different exception types for the same event. An outage is a failure of the
connection itself: refused, dropped, or the server shutting down or starting (SQLSTATE
classes 08 and 57P). A statement the database refused is not one.
"""

from __future__ import annotations

import sqlalchemy as sa

from lg_deploy.core.errors import BackendRefused, BackendUnavailable


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
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    code = sqlstate(exc)
    return code is not None and code.startswith(("08", "57P"))


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a driver error, wrapped by SQLAlchemy or not."""
    for cause in (
        exc,
        getattr(exc, "orig", None),
        getattr(getattr(exc, "orig", None), "__cause__", None),
    ):
        code = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def is_refusal(exc: BaseException) -> bool:
    """The server answered and refused who we are or what we asked for: a wrong role or
    password (SQLSTATE class 28) or a database that does not exist (3D000). Retrying does
    not help; the configuration has to change."""
    code = sqlstate(exc)
    return code is not None and (code.startswith("28") or code == "3D000")


def translated(exc: BaseException, name: str = "database") -> BackendUnavailable | None:
    """``BackendRefused`` or ``BackendUnavailable`` for a connection-level failure, or
    None when ``exc`` is the statement's own failure."""
    if is_refusal(exc):
        return BackendRefused(name, first_line(exc))
    if is_database_outage(exc) or isinstance(exc, OSError | ConnectionError):
        return BackendUnavailable(name, first_line(exc))
    return None


def first_line(exc: BaseException) -> str:
    """The first line of what the driver said, short enough for a log line or an answer."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
