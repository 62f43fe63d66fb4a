"""History for the benchmarks, written by one ``INSERT ... SELECT`` over generate_series.

The column list is the model's (``Execution``'s mapped columns) and every value not varied
here comes from a real ``Execution`` built in Python, so a migration that adds a column
(with its default) needs no change here.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from lg_deploy.core.models import Execution, ExecutionTable, utcnow
from lg_deploy.core.states import Status

# Seeded ids are shaped like UUIDv7 ids from 2020, so they sort before every real one.
_ID_BASE_MS = 1_600_000_000_000


def finished_execution(**fields: Any) -> Execution:
    """A COMPLETED execution of ``steps``, as the seeded rows look (``fields`` on top)."""
    now = utcnow()
    values: dict[str, Any] = {
        "execution_id": uuid.uuid4(),
        "graph_id": "steps",
        "thread_id": "",
        "input": {"text": "hi"},
        "output": {"text": "HI!", "steps": ["upper", "exclaim"]},
        "status": Status.COMPLETED,
        "attempt": 1,
        "started_at": now,
        "finished_at": now,
    }
    return Execution(**(values | fields))


def insert_rows(template: Execution, varied: dict[str, Any], source: Any) -> sa.Insert:
    """``INSERT INTO executions ... SELECT`` one row per row of ``source``: the columns in
    ``varied`` computed from it, every other one the ``template``'s value."""
    table = ExecutionTable.__table__  # type: ignore[attr-defined]
    columns, values = [], []
    for attribute in sa.inspect(ExecutionTable).column_attrs:
        column = attribute.columns[0]
        value = getattr(template, attribute.key)
        columns.append(column)
        if column.name in varied:
            values.append(varied[column.name])
        elif value is None:
            values.append(sa.null())
        else:
            values.append(sa.literal(value, column.type))
    return table.insert().from_select(columns, sa.select(*values).select_from(source))


def _insert(first: int, last: int, thread_id: str | None) -> sa.Insert:
    template = finished_execution()
    table = ExecutionTable.__table__  # type: ignore[attr-defined]
    n = sa.func.generate_series(first, last).table_valued("n").render_derived()
    varied: dict[str, Any] = {
        "execution_id": sa.cast(
            sa.func.concat(
                sa.func.lpad(sa.func.to_hex(n.c.n + _ID_BASE_MS), 12, "0"),
                "70008",
                sa.func.lpad(sa.func.to_hex(n.c.n), 15, "0"),
            ),
            table.c.execution_id.type,
        ),
        # Many short threads, as executions without a thread_id get.
        "thread_id": sa.literal(thread_id) if thread_id else sa.func.concat("seed-", n.c.n),
        "status": sa.case(
            (n.c.n % 10 == 0, Status.FAILED.value),
            (n.c.n % 10 == 1, Status.CANCELLED.value),
            else_=Status.COMPLETED.value,
        ),
    }
    return insert_rows(template, varied, n)


async def _seed(database_url: str, first: int, last: int, thread_id: str | None) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(_insert(first, last, thread_id))
        # As a store that lives long is vacuumed: autovacuum must not run during the
        # measurement, and the first reads must not be the ones that set hint bits.
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(sa.text("VACUUM ANALYZE executions"))
    finally:
        await engine.dispose()


class Seeder:
    """Adds finished executions to a database; each call's ids follow the last call's."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.seeded = 0

    def add(self, count: int, thread_id: str | None = None) -> None:
        if count > 0:
            first, self.seeded = self.seeded + 1, self.seeded + count
            asyncio.run(_seed(self.database_url, first, self.seeded, thread_id))
