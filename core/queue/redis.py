"""``redis://``: a shared queue on Redis, for a fleet of API and worker processes.

Jobs are written in ARQ's format (a sorted set of job ids scored by when they are due,
and an ``arq:job:<id>`` key holding ARQ's job record, serialized as JSON, never pickle),
so ARQ's tools can read the queue. lg-deploy consumes it itself, with two atomic scripts
instead of ARQ's worker: ARQ spent about fourteen Redis round trips per job (a WATCH and
MULTI/EXEC to start it, tried again for every job still running at the head of the
queue, another pipeline to finish it) and polled every 50 ms. Here:

- enqueueing is one script, one round trip: the job record, its place in line, and a
  wake-up on a pub/sub channel that idle workers wait on (no polling: an idle worker
  asks Redis once a second, or when a delayed job falls due). The wake-up goes out only
  when no due job waited already: while one waits, every worker with a free slot is on
  its way to take it (it was woken for that job, or its clock runs out when a delayed
  job falls due), and a busy worker takes the next job as soon as a slot frees. Under a
  backlog no worker reads a message per submission. The script answers the queue's
  depth, which the API's backpressure check reuses for a moment.
- taking is one script for a batch of due jobs: out of the line, their records deleted,
  a short "taken" mark left for the reconciler. The same call carries the "settled"
  notices of the executions that just ended on this worker: a slot frees when one ends,
  so its notice costs no round trip of its own.
- the payload is the execution id alone, and the job id is ``<execution id>:<attempt>``:
  enqueueing what already waits is a no-op, and enqueueing attempt ``n`` removes the job
  of attempt ``n - 1`` (the job of a worker that died).
- a job is out of the queue once taken. If its worker dies before claiming the
  execution, the reconciler finds the execution QUEUED with no job (``held`` leaves it
  out) and enqueues it again; while the "taken" mark lives (5 s) the job counts as held,
  so a live worker's claim is not doubled.
- the handler runs each execution in a task of its own: a Redis outage never stops a
  graph; the lease and the store, not the queue, say who owns an execution.
- cancellation goes through the store; a pub/sub message only makes it fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import redis.asyncio as aioredis
from arq.jobs import serialize_job
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from lg_deploy.core.errors import BackendUnavailable
from lg_deploy.core.queue.base import Handler, Topic

log = logging.getLogger("lg_deploy.queue")

JOB_FUNCTION = "run_execution"
# ARQ's key prefix for job records (arq.constants.job_key_prefix).
JOB_KEY = "arq:job:"
# A job record outlives its due time by a day, as ARQ's do.
_JOB_EXPIRES_MS = 24 * 3600 * 1000
# How long a taken job counts as held by its worker: far longer than a claim takes (a
# claim that outlasts it at worst meets a duplicate delivery, which the claim refuses),
# and short, because a claim that failed (the database down) leaves its execution QUEUED
# with no job until then.
STRANDED_AFTER_S = 5.0
# How often an idle worker looks at the queue when no wake-up came (a lost message, a
# job that fell due).
IDLE_POLL_S = 1.0
# How long the queue depth an enqueue answered stands in for asking again.
DEPTH_FRESH_S = 0.5
# The longest a served execution's "settled" notice waits for a take to carry it.
SETTLED_DELAY_S = 0.02

# KEYS: queue, job record, superseded job record, wake channel.
# ARGV: job id, due (ms), record, record lifetime (ms), superseded job id or "", now (ms).
_ENQUEUE = """
if ARGV[5] ~= '' then
    redis.call('ZREM', KEYS[1], ARGV[5])
    redis.call('DEL', KEYS[3])
end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
    local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
    redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
    if head[2] == nil or tonumber(head[2]) > tonumber(ARGV[6]) then
        redis.call('PUBLISH', KEYS[4], ARGV[2])
    end
end
return redis.call('ZCARD', KEYS[1])
"""
# KEYS: queue. ARGV: now (ms), how many (0 or more), taken mark lifetime (ms), taken
# prefix, job prefix, settled channel, then the execution ids to announce on it.
# Returns the ids taken and when the next job falls due (false when none waits).
_TAKE = """
for i = 7, #ARGV do
    redis.call('PUBLISH', ARGV[6], ARGV[i])
end
local ids = {}
if tonumber(ARGV[2]) > 0 then
    ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
end
for _, id in ipairs(ids) do
    redis.call('ZREM', KEYS[1], id)
    redis.call('DEL', ARGV[5] .. id)
    redis.call('SET', ARGV[4] .. id, '1', 'PX', ARGV[3])
end
local next = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {ids, next[2] or false}
"""
# KEYS: queue. ARGV: taken prefix, then job ids. For each job, 1 when it waits in line or
# was taken a moment ago, 0 when there is none.
_HELD = """
local held = {}
for i = 2, #ARGV do
    if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
        held[i - 1] = 1
    else
        held[i - 1] = redis.call('EXISTS', ARGV[1] .. ARGV[i])
    end
end
return held
"""


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def job_id(execution_id: uuid.UUID, attempt: int) -> str:
    return f"{execution_id}:{attempt}"


class RedisQueue:
    """The Redis-backed queue. It owns the connections it opens and closes them in
    ``close``."""

    def __init__(
        self,
        url: str,
        *,
        queue_name: str = "lg-deploy:queue",
        poll_delay_s: float = IDLE_POLL_S,
        queue_read_limit: int = 1000,
        connect_timeout_s: float = 2.0,
        op_timeout_s: float = 5.0,
    ) -> None:
        self.url = url
        self.queue_name = queue_name
        self.channels: dict[Topic, str] = {
            "cancelled": f"{queue_name}:cancel",
            "settled": f"{queue_name}:settled",
        }
        self.wake_channel = f"{queue_name}:wake"
        self.taken_prefix = f"{queue_name}:taken:"
        self.poll_delay_s = poll_delay_s
        self.queue_read_limit = queue_read_limit
        self.connect_timeout_s = connect_timeout_s
        self.op_timeout_s = op_timeout_s
        self._client: aioredis.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._depth: tuple[int, float] | None = None  # (depth, when by the monotonic clock)
        # While ``serve`` takes work: the "settled" notices its next take carries, and
        # what wakes it (a freed slot, a notice to send, a wake-up, stop).
        self._settled: list[str] = []
        self._settled_due = 0.0  # by the loop's clock: when they go out on their own
        self._nudge: asyncio.Event | None = None

    def _connection(self) -> aioredis.Redis:
        if self._client is None:
            self._client = aioredis.Redis.from_url(
                self.url,
                socket_connect_timeout=self.connect_timeout_s,
                health_check_interval=30,
            )
            self._scripts = {
                name: self._client.register_script(source)
                for name, source in (("enqueue", _ENQUEUE), ("take", _TAKE), ("held", _HELD))
            }
        return self._client

    @contextlib.asynccontextmanager
    async def _redis(self, *, timeout: bool = True) -> AsyncIterator[aioredis.Redis]:
        """The client; Redis failures become ``BackendUnavailable``, and so does a Redis
        that stops answering for ``op_timeout_s`` (redis-py waits forever by default)."""
        try:
            async with asyncio.timeout(self.op_timeout_s if timeout else None):
                yield self._connection()
        except TimeoutError as exc:
            raise BackendUnavailable("queue", "no answer in time") from exc
        except (RedisError, OSError) as exc:
            raise BackendUnavailable("queue", _short(exc)) from exc

    async def ping(self) -> None:
        async with self._redis() as redis:
            await redis.ping()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def enqueue(
        self, execution_id: uuid.UUID, *, attempt: int = 0, delay_s: float = 0
    ) -> None:
        job = job_id(execution_id, attempt)
        now = time.time()
        now_ms = int(now * 1000)
        due_ms = math.ceil((now + max(delay_s, 0)) * 1000)  # never a millisecond early
        record = serialize_job(JOB_FUNCTION, (str(execution_id),), {}, 1, now_ms, serializer=_dumps)
        superseded = job_id(execution_id, attempt - 1) if attempt > 0 else ""
        async with self._redis() as redis:
            depth = await self._scripts["enqueue"](
                keys=[
                    self.queue_name,
                    JOB_KEY + job,
                    JOB_KEY + superseded,
                    self.wake_channel,
                ],
                args=[job, due_ms, record, due_ms - now_ms + _JOB_EXPIRES_MS, superseded, now_ms],
                client=redis,
            )
        self._depth = (int(depth), time.monotonic())

    async def held(self, jobs: Sequence[tuple[uuid.UUID, int]]) -> set[uuid.UUID]:
        if not jobs:
            return set()
        async with self._redis() as redis:
            answers = await self._scripts["held"](
                keys=[self.queue_name],
                args=[self.taken_prefix, *(job_id(eid, attempt) for eid, attempt in jobs)],
                client=redis,
            )
        return {eid for (eid, _), answer in zip(jobs, answers, strict=True) if answer}

    async def depth(self) -> int:
        """Jobs waiting, deferred ones included (a retry's backoff). What an enqueue of this
        process answered within the last half second stands in for asking again: the
        API's backpressure check costs no round trip of its own under load."""
        if self._depth is not None and time.monotonic() - self._depth[1] < DEPTH_FRESH_S:
            return self._depth[0]
        async with self._redis() as redis:
            depth = int(await redis.zcard(self.queue_name))
        self._depth = (depth, time.monotonic())
        return depth

    async def publish(self, topic: Topic, execution_id: uuid.UUID) -> None:
        if topic == "settled" and self._nudge is not None:
            # An execution of this worker ended: its slot is about to free, and the take
            # that follows carries the notice (or a take of nothing, if none comes soon).
            if not self._settled:
                loop = asyncio.get_running_loop()
                self._settled_due = loop.time() + SETTLED_DELAY_S
                loop.call_later(SETTLED_DELAY_S, self._nudge.set)
            self._settled.append(str(execution_id))
            return
        async with self._redis() as redis:
            await redis.publish(self.channels[topic], str(execution_id))

    @contextlib.asynccontextmanager
    async def subscribe(self, topic: Topic) -> AsyncIterator[AsyncIterator[uuid.UUID]]:
        async with self._channel(self.channels[topic]) as messages:

            async def notices() -> AsyncIterator[uuid.UUID]:
                async for data in messages:
                    with contextlib.suppress(ValueError):
                        yield uuid.UUID(data.decode())

            yield notices()

    @contextlib.asynccontextmanager
    async def _channel(self, channel: str) -> AsyncIterator[AsyncIterator[bytes]]:
        """The messages of ``channel``, subscribed on entry."""
        async with self._redis() as redis:
            pubsub = redis.pubsub()
            await pubsub.subscribe(channel)

        async def messages() -> AsyncIterator[bytes]:
            try:
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None:
                        yield message["data"]
            except (RedisError, OSError) as exc:
                raise BackendUnavailable("queue", _short(exc)) from exc

        try:
            yield messages()
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def serve(self, handler: Handler, *, concurrency: int, stop: asyncio.Event) -> None:
        """Take due jobs while slots are free, until ``stop``; then return once the
        executions in flight have returned. A Redis outage pauses the taking, never an
        execution."""
        running: set[asyncio.Future[None]] = set()
        self._nudge = nudge = asyncio.Event()
        listening = asyncio.create_task(self._listen_for_work(nudge, stop))
        stopping = asyncio.create_task(_relay(stop, nudge))
        delay = 0.5
        loop = asyncio.get_running_loop()

        def finished(task: asyncio.Future[None]) -> None:
            running.discard(task)
            nudge.set()

        try:
            while not stop.is_set():
                nudge.clear()
                free = concurrency - len(running)
                if free <= 0 and not (self._settled and loop.time() >= self._settled_due):
                    await nudge.wait()
                    continue
                want = min(max(free, 0), self.queue_read_limit)
                try:
                    taken, next_due_ms = await self._take(want)
                    delay = 0.5
                except BackendUnavailable as exc:
                    log.warning("cannot take work from the queue (%s); again in %.1f s", exc, delay)
                    await _sleep_until(stop, delay)
                    delay = min(delay * 2, 10.0)
                    continue
                for execution_id in taken:
                    task = asyncio.ensure_future(handler(execution_id))
                    running.add(task)
                    task.add_done_callback(finished)
                if free <= 0 or len(taken) == want:
                    continue  # the slots are still full, or more may be due now
                # Fewer than asked for: none is due now, and the next enqueue wakes us.
                wait_s = self.poll_delay_s
                if next_due_ms is not None:
                    wait_s = min(wait_s, max(next_due_ms / 1000 - time.time(), 0.0))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s):
                        await nudge.wait()
        finally:
            # Executions that end from now on announce themselves at once.
            self._nudge = None
            for task in (listening, stopping):
                task.cancel()
            await asyncio.gather(listening, stopping, return_exceptions=True)
            await self._send_settled()
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    async def _take(self, count: int) -> tuple[list[uuid.UUID], float | None]:
        """Take up to ``count`` due jobs, and send the pending "settled" notices (best
        effort: a long poll also reads the store every half second)."""
        settled, self._settled = self._settled, []
        if count <= 0 and not settled:
            return [], None
        async with self._redis() as redis:
            ids, next_due = await self._scripts["take"](
                keys=[self.queue_name],
                args=[
                    int(time.time() * 1000),
                    count,
                    int(STRANDED_AFTER_S * 1000),
                    self.taken_prefix,
                    JOB_KEY,
                    self.channels["settled"],
                    *settled,
                ],
                client=redis,
            )
        taken = []
        for job in ids:
            try:
                taken.append(uuid.UUID(job.decode().rsplit(":", 1)[0]))
            except ValueError:  # not lg-deploy's: dropped, never read
                log.warning("dropped a job that is not an execution: %r", job[:100])
        return taken, float(next_due) if next_due else None

    async def _send_settled(self) -> None:
        with contextlib.suppress(BackendUnavailable):
            await self._take(0)

    async def _listen_for_work(self, wake: asyncio.Event, stop: asyncio.Event) -> None:
        """Set ``wake`` whenever a job is enqueued anywhere; the taking loop's periodic
        look covers a subscription lost to a Redis outage."""
        while not stop.is_set():
            try:
                async with self._channel(self.wake_channel) as messages:
                    async for _ in messages:
                        wake.set()
            except BackendUnavailable:
                await _sleep_until(stop, 1.0)


async def _relay(stop: asyncio.Event, nudge: asyncio.Event) -> None:
    await stop.wait()
    nudge.set()


async def _sleep_until(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


def _short(exc: BaseException | None) -> str:
    if exc is None:
        return "stopped"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
