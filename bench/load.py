"""Driving the API over HTTP: a fixed number of clients each keeping one request in
flight, or submissions at a steady rate; seeing executions settle; percentiles.

The client speaks HTTP/1.1 on plain asyncio streams: on a 2-core machine it shares the
CPUs with what it measures, and httpx would cost it several times more per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from lg_deploy.core.queue import open_queue


class BenchError(Exception):
    """The stack did not answer as a run needs."""


class Connection:
    """One keep-alive HTTP/1.1 connection to the API (answers carry a Content-Length)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        for attempt in (1, 2):  # once more on a fresh connection if the server closed it
            if self.streams is None:
                self.streams = await asyncio.open_connection(*self.address)
            reader, writer = self.streams
            writer.write(head.encode() + data)
            status_line = await reader.readline()
            if status_line or attempt == 2:
                break
            await self.close()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return int(status_line.split()[1]), json.loads(await reader.readexactly(length))

    async def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


@dataclass
class Submitted:
    ids: list[str]
    latencies: list[float]
    seconds: float  # from the first request sent to the last answer read

    @property
    def per_s(self) -> float:
        return len(self.ids) / self.seconds


@dataclass(frozen=True)
class Settled:
    """Where the workers say that executions ended: the queue's ``settled`` notices."""

    redis_url: str
    queue_name: str


def percentile_ms(values: Sequence[float], q: int) -> float:
    """The ``q``-th percentile of ``values`` (seconds), in ms."""
    if len(values) == 1:
        return round(values[0] * 1000, 2)
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000, 2)


def latency(values: Sequence[float]) -> dict[str, float]:
    return {f"p{q}_ms": percentile_ms(values, q) for q in (50, 90, 99)}


def submit(
    url: str,
    bodies: Sequence[dict[str, Any]],
    clients: int,
    *,
    per_s: float | None = None,
    settled: Settled | None = None,
    warm: bool = False,
) -> Submitted:
    """POST /execute each body from ``clients`` connections, each with one request in
    flight; with ``per_s`` the i-th is sent no earlier than i / per_s s after the first
    (an open loop while ``clients`` cover the latency). With ``settled``, return once all
    of them settled; with ``warm``, each connection first sends one untimed request."""
    return asyncio.run(_submit(url, bodies, clients, per_s, settled, warm))


async def _submit(
    url: str,
    bodies: Sequence[dict[str, Any]],
    clients: int,
    per_s: float | None,
    settled: Settled | None,
    warm: bool,
) -> Submitted:
    ids = [""] * len(bodies)
    latencies: list[float] = []
    pending = iter(enumerate(bodies))
    connections = [Connection(url) for _ in range(clients)]

    async def post(connection: Connection, body: dict[str, Any]) -> str:
        status, answer = await connection.request("POST", "/execute", body)
        if status != 202:
            raise BenchError(f"POST /execute: {status} {answer}")
        return str(answer["execution_id"])

    async def client(connection: Connection) -> None:
        for i, body in pending:
            if per_s:
                await asyncio.sleep(start + i / per_s - time.perf_counter())
            sent = time.perf_counter()
            ids[i] = await post(connection, body)
            latencies.append(time.perf_counter() - sent)

    async with _settled(settled) as seen:
        try:
            if warm:
                await asyncio.gather(*(post(c, bodies[0]) for c in connections))
            start = time.perf_counter()
            await asyncio.gather(*(client(c) for c in connections))
            seconds = time.perf_counter() - start
        finally:
            await asyncio.gather(*(c.close() for c in connections))
        if seen is not None:
            await seen.until(ids)
    return Submitted(ids, latencies, seconds)


class _Seen:
    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.changed = asyncio.Event()

    async def until(self, ids: Sequence[str], timeout: float = 600) -> None:
        async with asyncio.timeout(timeout):
            while not self.ids.issuperset(ids):
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def _settled(where: Settled | None) -> AsyncIterator[_Seen | None]:
    """The ids the workers announce as settled, collected while the block runs."""
    if where is None:
        yield None
        return
    queue = open_queue(where.redis_url, name=where.queue_name)
    seen = _Seen()

    async def collect(notices: AsyncIterator[uuid.UUID]) -> None:
        async for execution_id in notices:
            seen.ids.add(str(execution_id))
            seen.changed.set()

    try:
        async with queue.subscribe("settled") as notices:
            collector = asyncio.create_task(collect(notices))
            try:
                yield seen
            finally:
                collector.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await collector
    finally:
        await queue.close()


def get_latencies(url: str, path: str, count: int) -> list[float]:
    """``count`` GETs of ``path``, one at a time on one connection."""

    async def measure() -> list[float]:
        connection, latencies = Connection(url), []
        try:
            for _ in range(count):
                sent = time.perf_counter()
                status, answer = await connection.request("GET", path)
                latencies.append(time.perf_counter() - sent)
                if status != 200:
                    raise BenchError(f"GET {path}: {status} {answer}")
        finally:
            await connection.close()
        return latencies

    return asyncio.run(measure())
