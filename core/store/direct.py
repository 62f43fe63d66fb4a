"""The hot statements on PostgreSQL, run straight on the pooled asyncpg connection.

A worker runs three statements per execution (the API's INSERT, the claim, the finish),
each a single statement in autocommit. Through SQLAlchemy's ``Connection.execute`` each
paid for a ``Connection`` object, the compiled-cache lookup, parameter and result
processing and two greenlet switches: about a sixth of a worker's CPU per execution, more
than the statements themselves (BENCHMARKS.md). These statements are still built by
SQLAlchemy (core/store/statements.py) and compiled by its asyncpg dialect, once each; they
run here on the connection that SQLAlchemy's pool lends, with SQLAlchemy's own bind
processors (JSON, UTC timestamps) applied to the parameters. The rows come back as
asyncpg records: the connection's JSON codecs (set by SQLAlchemy's dialect when it opened
the connection) decode JSON columns, and asyncpg returns UUIDs and aware timestamps as
SQLAlchemy would.

Failures look as they do through SQLAlchemy: a statement's own error is raised as
``IntegrityError`` or ``DBAPIError`` from ``sqlalchemy.exc``, with the driver's error as
its ``orig``; a connection that fails is discarded from the pool (``connection_invalidated``
is set), so the store's "a stale pooled connection is tried once more" holds here too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.expression import UpdateBase
from sqlalchemy.util import greenlet_spawn

_GIVEN = object()  # a parameter the caller must give


@dataclass(frozen=True)
class _Compiled:
    sql: str
    # In the order of the statement's $1, $2, ...: the name, the value bound in the
    # statement itself (or _GIVEN) and SQLAlchemy's bind processor of its type.
    params: tuple[tuple[str, Any, Callable[[Any], Any] | None], ...]


# SQLSTATE classes of a failed connection (08) or a server going away (57P), and asyncpg's
# own errors for a connection that is closed or broke mid-statement.
_CONNECTION_ERRORS = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    OSError,
    ConnectionError,
    asyncio.TimeoutError,
)


def _broken(exc: BaseException) -> bool:
    code = getattr(exc, "sqlstate", None)
    if isinstance(code, str) and code.startswith(("08", "57P")):
        return True
    return isinstance(exc, _CONNECTION_ERRORS)


class DirectStatements:
    """Runs SQLAlchemy statements of ``engine`` (asyncpg) without its execution layer."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect
        self._compiled: dict[UpdateBase, _Compiled] = {}

    def _compile(self, stmt: UpdateBase) -> _Compiled:
        compiled = stmt.compile(dialect=self.dialect)
        params = []
        for name in compiled.positiontup or ():
            bind = compiled.binds[name]
            value = _GIVEN if bind.required else bind.effective_value
            processor = bind.type.dialect_impl(self.dialect).bind_processor(self.dialect)
            params.append((name, value, processor))
        return _Compiled(compiled.string, tuple(params))

    def _args(self, compiled: _Compiled, given: Mapping[str, Any]) -> list[Any]:
        args = []
        for name, bound, processor in compiled.params:
            value = given[name] if bound is _GIVEN else given.get(name, bound)
            args.append(value if processor is None else processor(value))
        return args

    async def fetch(self, stmt: UpdateBase, params: Mapping[str, Any]) -> list[asyncpg.Record]:
        """The rows of ``stmt``, run once in autocommit on a pooled connection."""
        if (compiled := self._compiled.get(stmt)) is None:
            compiled = self._compiled[stmt] = self._compile(stmt)
        sql, args = compiled.sql, self._args(compiled, params)
        pooled = await self.engine.raw_connection()
        driver: asyncpg.Connection = pooled.driver_connection
        try:
            return await driver.fetch(sql, *args)
        except BaseException as exc:
            # A connection that failed, or whose statement was cancelled midway, is closed
            # rather than lent again.
            broken = not isinstance(exc, Exception) or _broken(exc)
            if broken:
                await greenlet_spawn(pooled.invalidate, exc)
            if isinstance(exc, Exception):
                raise _as_sqlalchemy_error(sql, args, exc, broken) from exc
            raise
        finally:
            await greenlet_spawn(pooled.close)


def _as_sqlalchemy_error(
    sql: str, args: list[Any], exc: Exception, broken: bool
) -> sa.exc.DBAPIError:
    """``exc`` as SQLAlchemy would have raised it, so that the store handles both alike."""
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        kind: type[sa.exc.DBAPIError] = sa.exc.IntegrityError
    elif broken:
        kind = sa.exc.OperationalError
    else:
        kind = sa.exc.DBAPIError
    return kind(sql, args, exc, connection_invalidated=broken)
