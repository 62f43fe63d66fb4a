"""Counting TCP proxies: what a process asks PostgreSQL and Redis, counted on the wire.

A process is pointed at a proxy instead of the server; the proxy forwards every byte at
once and parses a copy of what the client sends. A round trip is a burst of client
messages that asks for an answer (PostgreSQL: a simple Query, or a Sync or Flush of the
extended protocol; Redis: any command), counted again only once the server has answered
in between: a pipeline is one round trip, a pipelined Sync after each statement too.
Statements are counted by kind (``INSERT checkpoints``, ``EVALSHA``), and PostgreSQL
connections by driver, told apart by their startup message (asyncpg names its
``client_encoding`` there, libpq does not).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import struct
import threading
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field, fields
from typing import Any

SSL_REQUEST, GSS_REQUEST, STARTUP_V3 = 80877103, 80877104, 196608
_SQL_KIND = re.compile(rb'\s*(\w+|;)(?:\s+(?:INTO\s+|FROM\s+)?"?(\w+))?', re.I)


def _sql_kind(sql: bytes) -> str:
    match = _SQL_KIND.match(sql)
    if match is None:
        return "?"
    word, table = match.group(1).upper(), match.group(2)
    if word in (b"INSERT", b"UPDATE", b"DELETE") and table:
        return f"{word.decode()} {table.decode()}"
    return word.decode()


@dataclass
class Tally:
    """What the clients of one proxy asked, keyed by driver or statement kind."""

    round_trips: Counter[str] = field(default_factory=Counter)
    statements: Counter[str] = field(default_factory=Counter)
    connections: Counter[str] = field(default_factory=Counter)

    def __sub__(self, before: Tally) -> Tally:
        return Tally(*(getattr(self, f.name) - getattr(before, f.name) for f in fields(self)))


class _Stream:
    """One client connection's messages; ``feed`` returns True when they ask for an
    answer."""

    driver = "redis"

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.buffer = bytearray()

    def feed(self, data: bytes) -> bool:
        raise NotImplementedError


class _Postgres(_Stream):
    driver = "?"

    def __init__(self, tally: Tally) -> None:
        super().__init__(tally)
        self.started = False
        self.prepared: dict[bytes, str] = {}
        self.portals: dict[bytes, str] = {}

    def feed(self, data: bytes) -> bool:
        self.buffer += data
        asks = False
        while True:
            if not self.started:  # the startup message: length, protocol, key\0value\0...
                if len(self.buffer) < 8:
                    return asks
                length, code = struct.unpack("!ii", self.buffer[:8])
                if len(self.buffer) < length:
                    return asks
                params = bytes(self.buffer[8:length]).split(b"\0")
                if code == STARTUP_V3:
                    self.driver = "asyncpg" if b"client_encoding" in params[::2] else "psycopg"
                    self.tally.connections[self.driver] += 1
                del self.buffer[:length]
                self.started = True
                continue
            if len(self.buffer) < 5:
                return asks
            kind, length = bytes(self.buffer[0:1]), struct.unpack("!i", self.buffer[1:5])[0]
            if len(self.buffer) < length + 1:
                return asks
            body = bytes(self.buffer[5 : length + 1])
            del self.buffer[: length + 1]
            asks |= kind in (b"Q", b"S", b"H")
            self._statement(kind, body)

    def _statement(self, kind: bytes, body: bytes) -> None:
        if kind == b"Q":
            self.tally.statements[f"{self.driver} {_sql_kind(body)}"] += 1
        elif kind == b"P":  # Parse: statement name, query
            name, query = body.split(b"\0", 2)[:2]
            self.prepared[name] = _sql_kind(query)
        elif kind == b"B":  # Bind: portal name, statement name
            portal, name = body.split(b"\0", 2)[:2]
            self.portals[portal] = self.prepared.get(name, "?")
        elif kind == b"E":  # Execute: portal name
            portal = body.split(b"\0", 1)[0]
            self.tally.statements[f"{self.driver} {self.portals.get(portal, '?')}"] += 1


class _Redis(_Stream):
    def __init__(self, tally: Tally) -> None:
        super().__init__(tally)
        tally.connections[self.driver] += 1

    def feed(self, data: bytes) -> bool:
        """Count the RESP arrays of bulk strings that redis-py sends."""
        self.buffer += data
        asks = False
        while (command := self._command()) is not None:
            self.tally.statements[f"redis {command}"] += 1
            asks = True
        return asks

    def _command(self) -> str | None:
        buffer, end = self.buffer, self.buffer.find(b"\r\n")
        if end < 0:
            return None
        names: list[bytes] = []
        position = end + 2
        for _ in range(int(buffer[1:end])):
            size_end = buffer.find(b"\r\n", position)
            if size_end < 0:
                return None
            size = int(buffer[position + 1 : size_end])
            if len(buffer) < size_end + 2 + size + 2:
                return None
            names.append(bytes(buffer[size_end + 2 : size_end + 2 + size]))
            position = size_end + 2 + size + 2
        del buffer[:position]
        return names[0].decode(errors="replace").upper() if names else "?"


class Proxies:
    """Counting proxies served by an event loop in a thread of their own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.tallies: dict[str, Tally] = {}
        self.servers: list[asyncio.Server] = []
        self.connections: set[asyncio.Task[None]] = set()

    def _call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def open(self, name: str, protocol: str, upstream: tuple[str, int]) -> int:
        """A proxy to ``upstream`` whose clients are counted under ``name``; its port."""
        tally = self.tallies[name] = Tally()
        stream = _Postgres if protocol == "postgres" else _Redis

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self.connections.add(task)
            try:
                # Cancelled by ``close``: the connection simply ends.
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await self._relay(reader, writer, upstream, stream(tally))
            finally:
                self.connections.discard(task)

        async def start() -> int:
            server = await asyncio.start_server(serve, "127.0.0.1", 0)
            self.servers.append(server)
            port: int = server.sockets[0].getsockname()[1]
            return port

        port: int = self._call(start())
        return port

    async def _relay(
        self,
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        upstream: tuple[str, int],
        stream: _Stream,
    ) -> None:
        server_r, server_w = await asyncio.open_connection(*upstream)
        answered = True  # the server spoke since the client's last request

        async def from_client() -> None:
            nonlocal answered
            if isinstance(stream, _Postgres):
                # Refuse TLS and GSS encryption ourselves: the rest must stay readable.
                while (head := await client_r.readexactly(8))[4:] in (
                    struct.pack("!i", SSL_REQUEST),
                    struct.pack("!i", GSS_REQUEST),
                ):
                    client_w.write(b"N")
                stream.feed(head)
                server_w.write(head)
            while data := await client_r.read(65536):
                if stream.feed(data) and answered:
                    stream.tally.round_trips[stream.driver] += 1
                    answered = False
                server_w.write(data)
                await server_w.drain()

        async def from_server() -> None:
            nonlocal answered
            while data := await server_r.read(65536):
                answered = True
                client_w.write(data)
                await client_w.drain()

        pumps = [asyncio.ensure_future(from_client()), asyncio.ensure_future(from_server())]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for writer in (client_w, server_w):
                writer.close()
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    def counts(self) -> dict[str, Tally]:
        """A consistent copy of every tally, taken on the proxies' own loop."""

        async def copy() -> dict[str, Tally]:
            return {name: tally - Tally() for name, tally in self.tallies.items()}

        counted: dict[str, Tally] = self._call(copy())
        return counted

    def close(self) -> None:
        async def stop() -> None:
            for server in self.servers:
                server.close()
            for task in list(self.connections):
                task.cancel()
            await asyncio.gather(*self.connections, return_exceptions=True)

        with contextlib.suppress(Exception):
            self._call(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
