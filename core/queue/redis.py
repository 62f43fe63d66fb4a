"""``redis://``: ARQ on Redis, for a fleet of API and worker processes.

What we rely on ARQ for is small: a shared, delayed queue of execution ids and a worker
loop with bounded concurrency. Its traps (docs/architecture.md, "The fleet on ARQ") are
closed here:

- JSON on both ends, never pickle; the payload is the execution id alone.
- One ARQ job id per attempt (``<execution id>:<attempt>``) and ``keep_result=0``, so a
  re-enqueue is never blocked by an old job or result, and enqueueing an id that already
  waits is a no-op (ARQ refuses a job id whose key exists).
- A per-worker health-check key; ``queue_read_limit`` sized for the fleet.
- Our handler never raises and the worker has no hooks, so no job can kill the process;
  a Redis disconnect ends ARQ's loop, and ``serve`` starts it again with backoff.
- When attempt ``n`` is enqueued, the job of attempt ``n - 1`` is taken off the queue:
  the job of a SIGKILLed worker would otherwise sit at the head of the queue until its
  in-progress key expires (the whole job timeout).
- The reconciler's revive puts back in line only a job nobody holds: a job a live worker
  took keeps its in-progress key, so ARQ never starts it twice.
- Cancellation goes through the store; a pub/sub message only makes it fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
import warnings
from collections.abc import AsyncIterator
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.worker import Worker, func
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from lg_deploy.core.errors import BackendUnavailable
from lg_deploy.core.queue.base import Handler, Topic

log = logging.getLogger("lg_deploy.queue")

JOB_FUNCTION = "run_execution"
# ARQ's own key prefixes (arq.constants), used only to drop a superseded attempt's job.
_ARQ_JOB_KEY = "arq:job:"
_ARQ_IN_PROGRESS_KEY = "arq:in-progress:"


# A job a worker took this long ago and never finished is stranded (the worker died between
# taking it and claiming its execution); a younger one is left alone: its worker is busy
# claiming it right now, and reviving it would start the same job twice.
STRANDED_AFTER_S = 30.0
# Put a job that waits too long back in line, atomically: leave it if a worker holds it
# (in-progress key younger than ARGV[3] ms, given its full TTL ARGV[4] ms); otherwise drop
# a stranded in-progress key and, if the job still exists, queue it again (ZADD NX keeps a
# job that is already in line where it is). Returns 1 when the job is held or in line, 0
# when there is no such job.
_REVIVE = """
local ttl = redis.call('PTTL', KEYS[3])
if ttl > 0 and tonumber(ARGV[4]) - ttl < tonumber(ARGV[3]) then return 1 end
if ttl ~= -2 then redis.call('DEL', KEYS[3]) end
if redis.call('EXISTS', KEYS[2]) == 1 then
    redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1])
    return 1
end
return 0
"""


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _loads(data: bytes) -> Any:
    return json.loads(data)


def job_id(execution_id: uuid.UUID, attempt: int) -> str:
    return f"{execution_id}:{attempt}"


class RedisQueue:
    """The ARQ-backed queue. It owns the connections it opens and closes them in ``close``."""

    def __init__(
        self,
        url: str,
        *,
        queue_name: str = "lg-deploy:queue",
        job_timeout_s: float = 8 * 24 * 3600,
        poll_delay_s: float = 0.05,
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
        self.job_timeout_s = job_timeout_s
        self.poll_delay_s = poll_delay_s
        self.queue_read_limit = queue_read_limit
        self.op_timeout_s = op_timeout_s
        self.settings = RedisSettings.from_dsn(url)
        self.settings.conn_timeout = max(1, int(connect_timeout_s))
        self.settings.conn_retries = 0
        self._pool: ArqRedis | None = None
        self._revive_script: AsyncScript | None = None
        # ARQ's in-progress key lives for the job timeout plus 10 s (arq.worker).
        self.in_progress_ms = int((job_timeout_s + 10) * 1000)
        self._lock = asyncio.Lock()
        self._executions: set[asyncio.Future[None]] = set()

    async def _connection(self) -> ArqRedis:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    try:
                        self._pool = await create_pool(
                            self.settings,
                            default_queue_name=self.queue_name,
                            job_serializer=_dumps,
                            job_deserializer=_loads,
                        )
                    except (RedisError, OSError) as exc:
                        raise BackendUnavailable("queue", _short(exc)) from exc
        return self._pool

    @contextlib.asynccontextmanager
    async def _redis(self, *, timeout: bool = True) -> AsyncIterator[ArqRedis]:
        """The pool; Redis failures become ``BackendUnavailable``, and so does a Redis
        that stops answering for ``op_timeout_s`` (redis-py waits forever by default)."""
        try:
            async with asyncio.timeout(self.op_timeout_s if timeout else None):
                yield await self._connection()
        except TimeoutError as exc:
            raise BackendUnavailable("queue", "no answer in time") from exc
        except (RedisError, OSError) as exc:
            raise BackendUnavailable("queue", _short(exc)) from exc

    async def ping(self) -> None:
        async with self._redis() as redis:
            await redis.ping()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose(close_connection_pool=True)
            self._pool = None
            self._revive_script = None

    async def enqueue(
        self, execution_id: uuid.UUID, *, attempt: int = 0, delay_s: float = 0
    ) -> None:
        job = job_id(execution_id, attempt)
        async with self._redis() as redis:
            await redis.enqueue_job(
                JOB_FUNCTION,
                str(execution_id),
                _job_id=job,
                _defer_by=delay_s if delay_s > 0 else None,
            )
            if attempt > 0:
                superseded = job_id(execution_id, attempt - 1)
                async with redis.pipeline(transaction=True) as pipe:
                    pipe.zrem(self.queue_name, superseded)
                    pipe.delete(_ARQ_JOB_KEY + superseded, _ARQ_IN_PROGRESS_KEY + superseded)
                    await pipe.execute()

    async def revive(self, execution_id: uuid.UUID, *, attempt: int, delay_s: float = 0) -> bool:
        job = job_id(execution_id, attempt)
        score_ms = int((time.time() + max(delay_s, 0)) * 1000)
        async with self._redis() as redis:
            found = await self._revive(redis)(
                keys=[self.queue_name, _ARQ_JOB_KEY + job, _ARQ_IN_PROGRESS_KEY + job],
                args=[job, score_ms, int(STRANDED_AFTER_S * 1000), self.in_progress_ms],
            )
        return bool(found)

    def _revive(self, redis: ArqRedis) -> AsyncScript:
        if self._revive_script is None:
            self._revive_script = redis.register_script(_REVIVE)
        return self._revive_script

    async def depth(self) -> int:
        """Jobs in ARQ's queue: waiting, deferred and running."""
        async with self._redis() as redis:
            return int(await redis.zcard(self.queue_name))

    async def publish(self, topic: Topic, execution_id: uuid.UUID) -> None:
        async with self._redis() as redis:
            await redis.publish(self.channels[topic], str(execution_id))

    @contextlib.asynccontextmanager
    async def subscribe(self, topic: Topic) -> AsyncIterator[AsyncIterator[uuid.UUID]]:
        async with self._redis() as redis:
            pubsub = redis.pubsub()
            await pubsub.subscribe(self.channels[topic])

        async def notices() -> AsyncIterator[uuid.UUID]:
            try:
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None:
                        with contextlib.suppress(ValueError):
                            yield uuid.UUID(message["data"].decode())
            except (RedisError, OSError) as exc:
                raise BackendUnavailable("queue", _short(exc)) from exc

        try:
            yield notices()
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def serve(self, handler: Handler, *, concurrency: int, stop: asyncio.Event) -> None:
        """Run an ARQ worker until ``stop``; when Redis drops it, start another."""
        delay = 0.5
        while not stop.is_set():
            worker = self._worker(handler, concurrency)
            running = asyncio.create_task(worker.async_run())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if stop.is_set():
                await self._drain(worker, running)
                return
            exc = running.exception() if not running.cancelled() else None
            log.warning("queue worker stopped (%s); starting again in %.1f s", _short(exc), delay)
            await _close_worker(worker)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            delay = min(delay * 2, 10.0)

    def _worker(self, handler: Handler, concurrency: int) -> Worker:
        async def run_execution(ctx: dict[str, Any], execution_id: str) -> None:
            # The execution runs in a task of its own: when ARQ cancels its job (Redis
            # dropped and this ARQ worker is replaced), the graph goes on; the lease and
            # the store, not ARQ, say who owns it.
            task = asyncio.ensure_future(handler(uuid.UUID(execution_id)))
            self._executions.add(task)
            task.add_done_callback(self._executions.discard)
            await asyncio.shield(task)

        return Worker(
            functions=[func(run_execution, name=JOB_FUNCTION)],
            queue_name=self.queue_name,
            redis_settings=self.settings,
            handle_signals=False,
            max_jobs=concurrency,
            job_timeout=self.job_timeout_s,
            keep_result=0,
            poll_delay=self.poll_delay_s,
            queue_read_limit=self.queue_read_limit,
            # Our handler returns normally, even for failed executions; a job retried by
            # ARQ after a crash only finds its execution claimed by the reconciler's retry.
            max_tries=1000,
            health_check_interval=10,
            health_check_key=f"{self.queue_name}:health-check:{_process_name()}",
            job_serializer=_dumps,
            job_deserializer=_loads,
            log_results=False,
        )

    async def _drain(self, worker: Worker, running: asyncio.Task[None]) -> None:
        """Take no new jobs; return once the jobs in flight have returned."""
        worker.allow_pick_jobs = False
        in_flight = [t for t in worker.tasks.values() if not t.done()]
        if in_flight or self._executions:
            await asyncio.gather(*in_flight, *self._executions, return_exceptions=True)
        running.cancel()
        with contextlib.suppress(BaseException):
            await running
        await _close_worker(worker)


async def _close_worker(worker: Worker) -> None:
    with contextlib.suppress(Exception, asyncio.CancelledError), warnings.catch_warnings():
        # arq 0.28's close() calls redis-py's deprecated close(): under -W error the warning
        # would abort it half-way and leak the worker's connections.
        warnings.simplefilter("ignore", DeprecationWarning)
        await worker.close()


def _process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _short(exc: BaseException | None) -> str:
    if exc is None:
        return "stopped"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
