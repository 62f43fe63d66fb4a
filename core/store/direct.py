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

Two pooled connections stay checked out between statements (the lanes): a statement
that finds one free runs on it, without a checkout from the pool. Every checkout from
SQLAlchemy's async pool, and every return, runs in a new greenlet, and on Python 3.11 a
new greenlet maps a frame stack of its own and unmaps it when it ends: with two per
statement, the worker's main thread made about four mmap and munmap pairs per execution,
and each unmap flushes the TLB of every core that runs one of the process's threads. A
statement that finds both lanes busy borrows from the pool as before, and its connection
becomes a lane when one is missing. So two connections of the pool (one of a pool of two
or three, none of a pool of one) serve these statements only, while the process runs;
``close`` returns them.

Failures look as they do through SQLAlchemy: a statement's own error is raised as
``IntegrityError`` or ``DBAPIError`` from ``sqlalchemy.exc``, with the driver's error as
its ``orig``; a connection that fails is discarded from the pool (``connection_invalidated``
is set), so the store's "a stale pooled connection is tried once more" holds here too, on
a lane as on a borrowed connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.engine.interfaces import PoolProxiedConnection
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

    def __init__(self, engine: AsyncEngine, *, lanes: int = 2) -> None:
        """``lanes``: how many connections to keep checked out for these statements (the
        module's doc)."""
        self.engine = engine
        self.dialect = engine.dialect
        self._compiled: dict[UpdateBase, _Compiled] = {}
        self._lanes = lanes
        self._kept = 0  # lanes checked out, free or running a statement
        self._free: list[PoolProxiedConnection] = []
        self._closed = False

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
        on_lane = bool(self._free)
        pooled = self._free.pop() if on_lane else await self.engine.raw_connection()
        driver: asyncpg.Connection = pooled.driver_connection
        broken = False
        try:
            return await driver.fetch(sql, *args)
        except Exception as exc:
            # A connection that failed is closed rather than lent again.
            if broken := _broken(exc):
                await self._server_went_away(pooled, exc)
            raise _as_sqlalchemy_error(sql, args, exc, broken) from exc
        except BaseException as exc:
            # So is one whose statement was cancelled midway: its state is unknown.
            broken = True
            await greenlet_spawn(pooled.invalidate, exc)
            raise
        finally:
            await self._put_back(pooled, on_lane, broken)

    async def _server_went_away(self, pooled: PoolProxiedConnection, exc: Exception) -> None:
        """The connection failed (a restart?): the others opened before it are as stale,
        and the store tries a statement only once more. As SQLAlchemy does when one of its
        statements finds the server gone: the pool replaces every connection older than
        this failure when it next lends it (``Pool._invalidate``), and the free lanes go
        back to it for that."""
        await greenlet_spawn(self.engine.sync_engine.pool._invalidate, pooled, exc)
        await self._drop_free_lanes()

    async def _put_back(self, pooled: PoolProxiedConnection, on_lane: bool, broken: bool) -> None:
        keep = not broken and not self._closed
        if keep and not on_lane and self._kept < self._lanes:
            self._kept += 1  # a borrowed connection becomes a lane
            on_lane = True
        if keep and on_lane:
            self._free.append(pooled)
            return
        if on_lane:
            self._kept -= 1  # a lane that broke, or outlived the store
        await greenlet_spawn(pooled.close)

    async def close(self) -> None:
        """Return the lanes to the pool (one running a statement returns when it ends)."""
        self._closed = True
        await self._drop_free_lanes()

    async def _drop_free_lanes(self) -> None:
        while self._free:
            self._kept -= 1
            await greenlet_spawn(self._free.pop().close)


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
