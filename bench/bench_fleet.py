#!/usr/bin/env python3
"""Benchmark an lg-deploy fleet (``lg-deploy api`` + ``lg-deploy worker`` on PostgreSQL and
Redis): executions/s with 1 and 2 workers, pickup latency at idle, recovery after SIGKILL.

Run ``python bench/bench_fleet.py --help``; ``bench/README.md`` explains the figures.
It needs a PostgreSQL server (it creates and drops a database of its own) and a Redis
server (it uses a queue name of its own), both on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import random
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import redis

# This script's directory is on sys.path when it is run as ``python bench/bench_fleet.py``.
from bench_dev import (
    REQUEST_TIMEOUT_S,
    SETTLED,
    BenchError,
    ErrorTally,
    Server,
    Terminated,
    _on_sigterm,
    fmt,
    free_port,
    inherited_settings,
    lg_deploy_command,
    log,
    log_tail,
    machine_facts,
    make_client,
    ms,
    percentile,
    rate,
    record_id,
    settle_by_list,
    status_text,
    stop_server,
    submit_many,
    wait_ready,
)
from psycopg import sql

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "examples" / "langgraph.json"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

STEPS_BODY: dict[str, Any] = {"graph_id": "steps", "input": {"text": "hi"}}
LIST_POLL_S = 0.02  # how often the throughput phase asks "anything QUEUED or RUNNING?"
RECOVERY_POLL_S = 0.05
WAIT_CHUNK_S = 10  # one GET /executions/{id}/wait asks for at most this many seconds
READY_LINE = "serving, concurrency"
LOG_LEVEL_RE = re.compile(r"^\S+ (WARNING|ERROR|CRITICAL)\b")
MAX_REDIS_KEYS_SCANNED = 200_000


# --------------------------------------------------------------------------- backends


def loopback_url(url: str, schemes: Sequence[str], what: str) -> str:
    """Refuse anything but a ``schemes`` URL on a loopback host."""
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        raise BenchError(f"{what} must be a {'/'.join(schemes)} URL, got {url!r}")
    host = parts.hostname
    if host != "localhost":
        try:
            ok = ipaddress.ip_address(host).is_loopback
        except ValueError:
            ok = False
        if not ok:
            raise BenchError(f"{what} must point at a loopback address, got host {host!r}")
    return url


def fleet_database_url(admin_url: str, name: str) -> str:
    """The admin URL turned into ``postgresql+asyncpg://.../<name>`` for the fleet."""
    parts = urlsplit(admin_url)
    return urlunsplit(parts._replace(scheme="postgresql+asyncpg", path=f"/{name}", query=""))


def postgres_version(admin_url: str) -> str:
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def create_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def execution_ids(admin_url: str, name: str) -> set[str]:
    """Every execution id in the run's database (for the Redis clean-up)."""
    url = urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        return {str(row[0]) for row in conn.execute("SELECT execution_id FROM executions")}


def redis_version(url: str) -> str:
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        info = client.info("server")
        return str(info.get("redis_version", "?")) if isinstance(info, dict) else "?"
    finally:
        client.close()


def clean_redis(url: str, queue_name: str, ids: set[str]) -> int:
    """Delete this run's keys: the queue's own, and ARQ job keys of our executions."""
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    doomed: list[bytes] = []
    try:
        scanned = 0
        for pattern in (f"{queue_name}*", "arq:*"):
            for key in client.scan_iter(match=pattern, count=1000):
                scanned += 1
                if scanned > MAX_REDIS_KEYS_SCANNED:
                    break
                parts = key.split(b":")
                # arq:job:<execution id>:<attempt>, arq:in-progress:..., arq:retry:...
                if pattern.startswith(queue_name) or (
                    len(parts) >= 3 and parts[2].decode(errors="replace") in ids
                ):
                    doomed.append(key)
        for start in range(0, len(doomed), 500):
            client.delete(*doomed[start : start + 500])
    finally:
        client.close()
    return len(doomed)


# --------------------------------------------------------------------------- CPU accounting


def _clock_ticks() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError, AttributeError):
        return 100


CLOCK_TICKS = _clock_ticks()


def group_cpu_s(pgid: int) -> float | None:
    """User + system CPU seconds of the live processes in process group ``pgid`` (Linux)."""
    total = 0
    found = False
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()
        # fields[0] is field 3 (state): pgrp is field 5, utime 14, stime 15.
        if len(fields) > 12 and int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
            found = True
    return total / CLOCK_TICKS if found else None


def system_cpu() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    values = [int(v) for v in first[1:9]]  # user nice system idle iowait irq softirq steal
    total = sum(values)
    idle = values[3] + values[4]
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuSnapshot:
    at: float
    procs: dict[str, float | None]
    system: tuple[float, float] | None
    bench: float


def cpu_snapshot(procs: dict[str, Server]) -> CpuSnapshot:
    return CpuSnapshot(
        time.perf_counter(),
        {name: group_cpu_s(s.proc.pid) for name, s in procs.items()},
        system_cpu(),
        self_cpu_s(),
    )


def cpu_usage(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, Any]:
    """CPU seconds per process and for the machine between two snapshots."""
    wall = after.at - before.at
    procs: dict[str, float | None] = {}
    for name, start in before.procs.items():
        end = after.procs.get(name)
        procs[name] = round(end - start, 2) if start is not None and end is not None else None
    out: dict[str, Any] = {
        "wall_s": round(wall, 3),
        "processes_cpu_s": procs,
        "bench_client_cpu_s": round(after.bench - before.bench, 2),
    }
    if before.system and after.system:
        busy = after.system[0] - before.system[0]
        total = after.system[1] - before.system[1]
        ours = sum(v for v in procs.values() if v is not None) + out["bench_client_cpu_s"]
        out["machine_busy_cpu_s"] = round(busy, 2)
        out["machine_busy_pct"] = round(100 * busy / total, 1) if total > 0 else None
        # PostgreSQL backends, Redis and anything else running on the machine.
        out["other_cpu_s"] = round(busy - ours, 2)
    return out


# --------------------------------------------------------------------------- the fleet


@dataclass
class Fleet:
    """The API and worker processes of one run, each in its own process group and log."""

    workdir: Path
    env: dict[str, str]
    startup_timeout: float
    shutdown_timeout: float
    api: Server | None = None
    workers: list[Server] = field(default_factory=list)
    worker_env: dict[str, str] = field(default_factory=dict)
    started: list[Server] = field(default_factory=list)
    stopped_by: dict[str, str] = field(default_factory=dict)
    _count: int = 0

    def spawn(self, name: str, args: Sequence[str], extra_env: dict[str, str]) -> Server:
        command = [*lg_deploy_command(), *args]
        log_path = self.workdir / f"{name}.log"
        log_file = log_path.open("wb")
        try:
            proc = subprocess.Popen(
                command,
                cwd=self.workdir,  # so no stray ./.env of the caller is read
                env={**self.env, **extra_env},
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            log_file.close()
            raise BenchError(f"cannot start {command[0]}: {exc}") from exc
        server = Server(proc, "", command, log_path, log_file)
        self.started.append(server)
        return server

    def start_api(self) -> float:
        port = free_port()
        api = self.spawn("api", ["api", "--host", "127.0.0.1", "--port", str(port)], {})
        api.url = f"http://127.0.0.1:{port}"
        self.api = api
        log(f"starting the API: {' '.join(api.command)} (log: {api.log_path})")
        return wait_ready(api.url, self.startup_timeout, api.proc)

    def start_worker(self) -> Server:
        self._count += 1
        worker = self.spawn(f"worker-{self._count}", ["worker"], self.worker_env)
        deadline = time.perf_counter() + self.startup_timeout
        while time.perf_counter() < deadline:
            code = worker.proc.poll()
            if code is not None:
                raise BenchError(f"{name_of(worker)} exited with code {code} before it was ready")
            if READY_LINE in read_log(worker):
                self.workers.append(worker)
                log(f"{name_of(worker)} ready (pid {worker.proc.pid})")
                return worker
            time.sleep(0.05)
        raise BenchError(f"{name_of(worker)} not ready after {self.startup_timeout:.0f} s")

    def set_workers(self, count: int, env: dict[str, str]) -> None:
        """Have exactly ``count`` workers running with ``env`` on top of the base env."""
        if env != self.worker_env:
            self.stop_workers()
            self.worker_env = dict(env)
        while len(self.workers) > count:
            self.stop(self.workers.pop())
        while len(self.workers) < count:
            self.start_worker()

    def kill(self, worker: Server) -> float:
        """SIGKILL a worker's process group; returns the moment of the kill."""
        self.workers.remove(worker)
        at = time.perf_counter()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait(timeout=10)
        self.stopped_by[name_of(worker)] = "SIGKILL (measured)"
        worker.log_file.close()
        return at

    def stop(self, server: Server) -> None:
        how = stop_server(server, self.shutdown_timeout)
        self.stopped_by.setdefault(name_of(server), how)
        log(f"{name_of(server)} stopped ({how})")

    def stop_workers(self) -> None:
        while self.workers:
            self.stop(self.workers.pop())

    def stop_all(self) -> None:
        """Stop every process this run started (workers first), SIGKILL as the fallback."""
        for server in reversed(self.started):
            if server.proc.poll() is None or not server.log_file.closed:
                self.stop(server)
        self.workers.clear()

    def processes(self) -> dict[str, Server]:
        procs = {name_of(w): w for w in self.workers}
        if self.api is not None:
            procs["api"] = self.api
        return procs


def name_of(server: Server) -> str:
    return server.log_path.stem


def read_log(server: Server) -> str:
    try:
        return server.log_path.read_text(errors="replace")
    except OSError:
        return ""


def started_attempts(server: Server, execution_id: str) -> list[int]:
    """Attempt numbers of ``execution_id`` that this worker's log says it started."""
    pattern = re.compile(rf"execution {re.escape(execution_id)}\b.*?\battempt (\d+) started")
    return [int(m.group(1)) for m in pattern.finditer(read_log(server))]


def completed_ids(server: Server) -> set[str]:
    return set(re.findall(r"execution (\S+) attempt \d+ COMPLETED", read_log(server)))


def log_findings(path: Path) -> dict[str, Any]:
    """WARNING/ERROR/CRITICAL lines and tracebacks of one log file."""
    counts: Counter[str] = Counter()
    samples: list[str] = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    for line in lines:
        m = LOG_LEVEL_RE.match(line)
        kind = m.group(1) if m else ("Traceback" if line.startswith("Traceback") else None)
        if kind is None:
            continue
        counts[kind] += 1
        if len(samples) < 4:
            samples.append(line[:240])
    return {"counts": dict(counts), "samples": samples} if counts else {}


# --------------------------------------------------------------------------- HTTP (sync)


def submit(client: httpx.Client, body: dict[str, Any]) -> str:
    resp = client.post("/execute", json=body)
    if resp.status_code != 202:
        raise BenchError(f"POST /execute answered {resp.status_code}: {resp.text[:200]}")
    execution_id = record_id(resp.json())
    if execution_id is None:
        raise BenchError(f"POST /execute gave no execution_id: {resp.text[:200]}")
    return execution_id


def get_record(client: httpx.Client, execution_id: str) -> dict[str, Any]:
    resp = client.get(f"/executions/{execution_id}")
    resp.raise_for_status()
    data: dict[str, Any] = resp.json()
    return data


def wait_settled(
    client: httpx.Client,
    execution_id: str,
    timeout_s: float,
    errors: Counter[str] | None = None,
) -> dict[str, Any]:
    """Long-poll ``/executions/{id}/wait`` until the execution settles or ``timeout_s``.

    A failed request (a backend restarting under the API, say) is counted in ``errors`` and
    tried again a quarter of a second later, until the deadline.
    """
    deadline = time.perf_counter() + timeout_s
    record: dict[str, Any] = {}
    while (left := deadline - time.perf_counter()) > 0:
        try:
            resp = client.get(
                f"/executions/{execution_id}/wait",
                params={"timeout": f"{min(WAIT_CHUNK_S, max(left, 0.1)):.1f}"},
            )
            resp.raise_for_status()
            record = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            kind = (
                f"HTTP {exc.response.status_code}"
                if isinstance(exc, httpx.HTTPStatusError)
                else type(exc).__name__
            )
            if errors is not None:
                errors[kind] += 1
            log(f"GET /executions/{execution_id}/wait failed ({kind}); trying again")
            time.sleep(0.25)
            continue
        if record.get("status") in SETTLED:
            return record
    return record


def parse_ts(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def sync_client(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT_S, trust_env=False)


# --------------------------------------------------------------------------- 1. throughput


async def _submit_and_settle(
    base_url: str, count: int, clients_n: int, deadline: float
) -> dict[str, Any]:
    """Submit ``count`` steps executions with ``clients_n`` clients; wait until all settle."""
    body = json.dumps(STEPS_BODY).encode()
    clients = [make_client(base_url, 1) for _ in range(clients_n)]
    waiter = make_client(base_url, clients_n)
    try:
        batch = await submit_many(clients, count, body, deadline)
        settled = await settle_by_list(waiter, batch.ids, deadline, LIST_POLL_S, clients_n)
    finally:
        await asyncio.gather(*(c.aclose() for c in [*clients, waiter]))
    total = (
        settled.end - batch.first_start
        if settled.end is not None and batch.first_start is not None
        else None
    )
    after_last = (
        settled.end - batch.last_end
        if settled.end is not None and batch.last_end is not None
        else None
    )
    return {
        "ids": batch.ids,
        "submitted": len(batch.ids),
        "submit_errors": batch.errors.total,
        "submit_error_samples": batch.errors.samples,
        "submit_timed_out": batch.timed_out,
        "submit_wall_s": round(batch.wall_s, 3) if batch.wall_s is not None else None,
        "submits_per_s": rate(len(batch.ids), batch.wall_s),
        "settle_timed_out": settled.timed_out,
        "total_s": round(total, 3) if total is not None else None,
        "settled_after_last_submit_s": round(after_last, 3) if after_last is not None else None,
        "executions_per_s": rate(len(batch.ids), total),
        "statuses": dict(Counter(settled.statuses.values()).most_common()),
    }


def phase_throughput(
    fleet: Fleet, workers: int, args: argparse.Namespace, problems: list[str], ids: set[str]
) -> dict[str, Any]:
    """Executions/s of ``args.executions`` steps executions with ``workers`` workers."""
    assert fleet.api is not None
    fleet.set_workers(workers, {})
    label = f"throughput, {workers} worker(s)"
    if args.warmup:
        log(f"{label}: warm-up of {args.warmup} executions")
        warm = asyncio.run(
            _submit_and_settle(
                fleet.api.url,
                args.warmup,
                args.submit_clients,
                time.perf_counter() + args.phase_timeout,
            )
        )
        ids.update(warm["ids"])
        if warm["submit_errors"] or set(warm["statuses"]) - {"COMPLETED"}:
            problems.append(f"{label}: warm-up not clean: {warm['statuses']}")
    log(f"{label}: {args.executions} executions with {args.submit_clients} clients")
    before = cpu_snapshot(fleet.processes())
    row = asyncio.run(
        _submit_and_settle(
            fleet.api.url,
            args.executions,
            args.submit_clients,
            time.perf_counter() + args.phase_timeout,
        )
    )
    row["cpu"] = cpu_usage(before, cpu_snapshot(fleet.processes()))
    batch_ids = set(row.pop("ids"))
    ids.update(batch_ids)
    row["workers"] = workers
    row["executions"] = args.executions
    row["completed_by_worker"] = {
        name_of(w): len(completed_ids(w) & batch_ids) for w in fleet.workers
    }
    if row["submit_errors"] or row["submit_timed_out"]:
        problems.append(f"{label}: {row['submitted']} of {args.executions} submits succeeded")
    if row["settle_timed_out"]:
        problems.append(f"{label}: not all settled within {args.phase_timeout:.0f} s")
    if set(row["statuses"]) - {"COMPLETED"} or row["submitted"] != args.executions:
        problems.append(f"{label}: not all COMPLETED: {status_text(row['statuses'])}")
    return row


# --------------------------------------------------------------------------- 2. pickup


def phase_pickup(
    fleet: Fleet, args: argparse.Namespace, problems: list[str], ids: set[str]
) -> dict[str, Any]:
    """One steps execution at a time on an idle fleet: queue wait from the record."""
    assert fleet.api is not None
    fleet.set_workers(args.pickup_workers, {})
    log(f"pickup: {args.pickup_samples} executions, one at a time, {args.pickup_pause} s apart")
    waits: list[float] = []
    runs: list[float] = []
    round_trips: list[float] = []
    statuses: Counter[str] = Counter()
    errors = ErrorTally("pickup")
    wait_errors: Counter[str] = Counter()
    deadline = time.perf_counter() + args.phase_timeout
    timed_out = False
    with sync_client(fleet.api.url) as client:
        for _ in range(args.pickup_samples):
            if time.perf_counter() >= deadline:
                timed_out = True
                break
            time.sleep(args.pickup_pause)  # the previous one is settled: the fleet is idle
            t0 = time.perf_counter()
            try:
                execution_id = submit(client, STEPS_BODY)
                ids.add(execution_id)
                record = wait_settled(client, execution_id, 30.0, wait_errors)
            except (httpx.HTTPError, ValueError, BenchError) as exc:
                errors.add(type(exc).__name__, str(exc))
                continue
            errors.ok()
            round_trips.append(time.perf_counter() - t0)
            status = str(record.get("status"))
            statuses[status] += 1
            created = parse_ts(record.get("created_at"))
            started = parse_ts(record.get("started_at"))
            finished = parse_ts(record.get("finished_at"))
            if created and started:
                waits.append((started - created).total_seconds())
            if started and finished:
                runs.append((finished - started).total_seconds())
    waits.sort()
    runs.sort()
    round_trips.sort()
    row: dict[str, Any] = {
        "samples": args.pickup_samples,
        "measured": len(waits),
        "workers": args.pickup_workers,
        "queue_poll_s": fleet.env.get("LG_DEPLOY_QUEUE_POLL_S", "0.05 (default)"),
        "queue_wait_p50_ms": ms(percentile(waits, 50)),
        "queue_wait_p90_ms": ms(percentile(waits, 90)),
        "queue_wait_max_ms": ms(waits[-1] if waits else None),
        "queue_wait_min_ms": ms(waits[0] if waits else None),
        "run_p50_ms": ms(percentile(runs, 50)),
        "client_round_trip_p50_ms": ms(percentile(round_trips, 50)),
        "statuses": dict(statuses.most_common()),
        "errors": errors.total,
        "error_samples": errors.samples,
        "wait_errors": dict(wait_errors),
        "timed_out": timed_out,
    }
    if wait_errors:
        problems.append(f"pickup: failed /wait requests {dict(wait_errors)}")
    if errors.total or timed_out or len(waits) != args.pickup_samples:
        problems.append(f"pickup: {len(waits)} of {args.pickup_samples} samples measured")
    if set(statuses) - {"COMPLETED"}:
        problems.append(f"pickup: not all COMPLETED: {status_text(dict(statuses))}")
    return row


# --------------------------------------------------------------------------- 3. recovery


def find_runner(fleet: Fleet, execution_id: str, timeout_s: float) -> tuple[Server, int]:
    """The worker whose log says it started ``execution_id``, and the attempt number."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        for worker in fleet.workers:
            attempts = started_attempts(worker, execution_id)
            if attempts:
                return worker, max(attempts)
        time.sleep(0.05)
    raise BenchError(f"no worker log shows execution {execution_id} started")


def recovery_round(
    fleet: Fleet, client: httpx.Client, number: int, args: argparse.Namespace, ids: set[str]
) -> dict[str, Any]:
    """Kill the worker running a slow execution; time until another worker runs it."""
    body = {"graph_id": "slow", "input": {"steps": args.slow_steps, "sleep_s": args.slow_sleep}}
    execution_id = submit(client, body)
    ids.add(execution_id)
    victim, attempt = find_runner(fleet, execution_id, 30.0)
    seen_started = time.perf_counter()
    # A random extra of up to one heartbeat interval (a third of the lease), so the kills do
    # not all land at the same point of the heartbeat cycle.
    time.sleep(args.kill_after + random.uniform(0, args.lease_s / 3))
    before = get_record(client, execution_id)
    if before.get("status") != "RUNNING":
        raise BenchError(f"round {number}: execution is {before.get('status')}, not RUNNING")
    attempts_before = int(before.get("attempts", 0))
    survivors = [w for w in fleet.workers if w is not victim]
    log(f"round {number}: SIGKILL {name_of(victim)} (pid {victim.proc.pid}), {execution_id}")
    killed_at = fleet.kill(victim)

    requeued_s: float | None = None
    recovered_s: float | None = None
    last: dict[str, Any] = before
    polls = 0
    request_errors: Counter[str] = Counter()
    limit = killed_at + args.lease_s + args.reconcile_s + args.recovery_timeout
    while (now := time.perf_counter()) < limit:
        polls += 1
        try:
            last = get_record(client, execution_id)
        except (httpx.HTTPError, ValueError) as exc:
            request_errors[type(exc).__name__] += 1
            log(f"round {number}: GET failed: {exc!r}")
        else:
            seen = time.perf_counter() - killed_at
            status = last.get("status")
            if status == "QUEUED" and requeued_s is None:
                requeued_s = seen
            if status == "RUNNING" and int(last.get("attempts", 0)) > attempts_before:
                recovered_s = seen
                break
            if status in SETTLED:
                break
        time.sleep(max(0.0, now + RECOVERY_POLL_S - time.perf_counter()))

    # Which worker took it over, by its log (the start line is written right after the claim).
    taken_by: str | None = None
    if recovered_s is not None:
        look_until = time.perf_counter() + 5.0
        while taken_by is None and time.perf_counter() < look_until:
            for worker in survivors:
                if any(a > attempt for a in started_attempts(worker, execution_id)):
                    taken_by = name_of(worker)
            if taken_by is None:
                time.sleep(0.05)
    final = wait_settled(
        client,
        execution_id,
        args.slow_steps * args.slow_sleep + args.recovery_timeout,
        request_errors,
    )
    output = final.get("output") if isinstance(final.get("output"), dict) else {}
    row: dict[str, Any] = {
        "round": number,
        "execution_id": execution_id,
        "killed": name_of(victim),
        "killed_after_s": round(killed_at - seen_started, 3),
        "attempts_before": attempts_before,
        "requeued_after_s": round(requeued_s, 3) if requeued_s is not None else None,
        "recovery_s": round(recovered_s, 3) if recovered_s is not None else None,
        "taken_over_by": taken_by,
        "attempts_after": final.get("attempts"),
        "final_status": final.get("status"),
        "steps_done": output.get("done") if isinstance(output, dict) else None,
        "polls": polls,
        "request_errors": dict(request_errors),
    }
    log(
        f"round {number}: running again after {fmt(row['recovery_s'], 0, 3)} s on "
        f"{taken_by}; ended {row['final_status']}"
    )
    # A replacement, so the next round starts with two workers again.
    fleet.start_worker()
    return row


def phase_recovery(
    fleet: Fleet, args: argparse.Namespace, problems: list[str], ids: set[str]
) -> dict[str, Any]:
    assert fleet.api is not None
    env = {
        "LG_DEPLOY_LEASE_S": f"{args.lease_s:g}",
        "LG_DEPLOY_RECONCILE_INTERVAL_S": f"{args.reconcile_s:g}",
    }
    fleet.set_workers(2, env)
    rounds: list[dict[str, Any]] = []
    deadline = time.perf_counter() + args.phase_timeout
    with sync_client(fleet.api.url) as client:
        for number in range(1, args.kills + 1):
            if time.perf_counter() >= deadline:
                problems.append(f"recovery: stopped after {number - 1} rounds (--phase-timeout)")
                break
            try:
                row = recovery_round(fleet, client, number, args, ids)
            except (BenchError, httpx.HTTPError, ValueError) as exc:
                problems.append(f"recovery round {number} aborted: {type(exc).__name__}: {exc}")
                break
            rounds.append(row)
            if row["request_errors"]:
                problems.append(f"recovery round {number}: failed requests {row['request_errors']}")
            if row["recovery_s"] is None:
                problems.append(f"recovery round {number}: never RUNNING again on another worker")
            elif row["taken_over_by"] is None:
                problems.append(f"recovery round {number}: no other worker's log shows the run")
            if row["final_status"] != "COMPLETED" or row["steps_done"] != args.slow_steps:
                problems.append(
                    f"recovery round {number}: ended {row['final_status']} "
                    f"with {row['steps_done']} of {args.slow_steps} steps"
                )
    times = sorted(r["recovery_s"] for r in rounds if r["recovery_s"] is not None)
    requeues = sorted(r["requeued_after_s"] for r in rounds if r["requeued_after_s"] is not None)
    return {
        "kills": args.kills,
        "lease_s": args.lease_s,
        "reconcile_interval_s": args.reconcile_s,
        "slow_input": {"steps": args.slow_steps, "sleep_s": args.slow_sleep},
        "median_s": round(p, 3) if (p := percentile(times, 50)) is not None else None,
        "max_s": times[-1] if times else None,
        "min_s": times[0] if times else None,
        "requeued_median_s": round(q, 3) if (q := percentile(requeues, 50)) is not None else None,
        "rounds": rounds,
    }


# --------------------------------------------------------------------------- output


def cpu_text(cpu: dict[str, Any]) -> str:
    parts = [f"{k} {v:.1f}" for k, v in cpu["processes_cpu_s"].items() if v is not None]
    parts.append(f"bench client {cpu['bench_client_cpu_s']:.1f}")
    if cpu.get("other_cpu_s") is not None:
        parts.append(f"other (PostgreSQL, Redis, ...) {cpu['other_cpu_s']:.1f}")
    busy = f"; machine {cpu['machine_busy_pct']}% busy" if cpu.get("machine_busy_pct") else ""
    return ", ".join(parts) + f" CPU-s over {cpu['wall_s']:.1f} s{busy}"


def format_summary(result: dict[str, Any]) -> str:
    m = result["machine"]
    usable = m.get("usable_cpus", m["cpu_count"])
    load = " ".join(str(x) for x in m.get("loadavg_at_start", []))
    fleet = result.get("fleet", {})
    lines = [
        "lg-deploy fleet benchmark",
        f"  machine: {m['cpu_count']} CPUs ({usable} usable), Python {m['python']}, "
        f"{m['platform']}" + (f", load {load}" if load else ""),
        f"  NOTE: only {usable} CPUs. The API, every worker, PostgreSQL, Redis and this "
        "client share them, so a second worker adds processes, not CPUs.",
        f"  backends: PostgreSQL {fleet.get('postgres_version', '?')} (database "
        f"{fleet.get('database', '?')}), Redis {fleet.get('redis_version', '?')} (queue "
        f"{fleet.get('queue_name', '?')}), all on loopback",
    ]
    if fleet.get("inherited_settings"):
        lines.append(f"  inherited settings: {fleet['inherited_settings']}")
    report = result.get("report", {})
    rows = report.get("throughput") or []
    if rows:
        lines += [
            "",
            f"1. End-to-end throughput (steps graph, {rows[0]['executions']} executions, "
            f"{rows[0].get('submit_clients', '?')} submitting clients, first submit to all "
            "terminal)",
        ]
        for row in rows:
            lines += [
                f"  {row['workers']} worker(s): {fmt(row['executions_per_s'], 0, 1)} executions/s"
                f"  ({row['submitted']} in {fmt(row['total_s'], 0, 2)} s; submits "
                f"{fmt(row['submits_per_s'], 0, 1)}/s; all settled "
                f"{fmt(row['settled_after_last_submit_s'], 0, 2)} s after the last submit)",
                f"      final status: {status_text(row['statuses'])}; completed per worker: "
                + ", ".join(f"{k}={v}" for k, v in row["completed_by_worker"].items()),
                f"      CPU: {cpu_text(row['cpu'])}",
            ]
        if report.get("throughput_ratio") is not None:
            lines.append(f"  ratio 2 workers / 1 worker: {report['throughput_ratio']:.2f}")
    p = report.get("pickup")
    if p:
        lines += [
            "",
            f"2. Pickup latency at idle ({p['measured']} of {p['samples']} executions one at "
            f"a time, {p['workers']} idle worker(s), queue poll {p['queue_poll_s']} s)",
            f"  queue wait (started_at - created_at): p50 {fmt(p['queue_wait_p50_ms'], 0, 1)} ms"
            f", p90 {fmt(p['queue_wait_p90_ms'], 0, 1)} ms, max {fmt(p['queue_wait_max_ms'], 0, 1)}"
            f" ms (min {fmt(p['queue_wait_min_ms'], 0, 1)} ms)",
            f"  for scale: graph run p50 {fmt(p['run_p50_ms'], 0, 1)} ms; client submit-to-"
            f"terminal p50 {fmt(p['client_round_trip_p50_ms'], 0, 1)} ms",
        ]
    r = report.get("recovery")
    if r:
        lines += [
            "",
            f"3. Recovery after SIGKILL ({len(r['rounds'])} of {r['kills']} rounds, 2 workers, "
            f"LG_DEPLOY_LEASE_S={r['lease_s']:g}, "
            f"LG_DEPLOY_RECONCILE_INTERVAL_S={r['reconcile_interval_s']:g}, slow graph "
            f"{r['slow_input']})",
            f"  kill -> RUNNING again on the other worker: median {fmt(r['median_s'], 0, 2)} s, "
            f"max {fmt(r['max_s'], 0, 2)} s (min {fmt(r['min_s'], 0, 2)} s); "
            f"seen QUEUED again after a median {fmt(r['requeued_median_s'], 0, 2)} s",
        ]
        for row in r["rounds"]:
            requeued = (
                f"QUEUED at {row['requeued_after_s']:.2f} s"
                if row["requeued_after_s"] is not None
                else "QUEUED not seen"
            )
            lines.append(
                f"    round {row['round']}: killed {row['killed']} "
                f"{row['killed_after_s']:.2f} s into the run; {requeued}, RUNNING again at "
                f"{fmt(row['recovery_s'], 0, 2)} s on {row['taken_over_by']}, attempts "
                f"{row['attempts_before']} -> {row['attempts_after']}, {row['final_status']} "
                f"({row['steps_done']} steps)"
            )
    notes = result.get("log_findings") or {}
    if notes:
        lines += ["", "Warnings and errors in the process logs:"]
        for name, found in notes.items():
            lines.append(f"  {name}: {found['counts']}")
            lines += [f"    {s}" for s in found["samples"]]
    lines.append("")
    problems = result.get("problems", [])
    if problems:
        lines.append("Result: PROBLEMS")
        lines += [f"  - {p}" for p in problems]
    else:
        lines.append("Result: OK (all executions COMPLETED)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--executions", type=int, default=1000, help="executions per throughput run")
    p.add_argument("--submit-clients", type=int, default=16, help="concurrent submitting clients")
    p.add_argument("--warmup", type=int, default=20, help="untimed executions before each run")
    p.add_argument("--pickup-samples", type=int, default=50, help="pickup latency samples")
    p.add_argument("--pickup-pause", type=float, default=0.2, help="idle pause before each, s")
    p.add_argument("--pickup-workers", type=int, default=2, help="idle workers for pickup")
    p.add_argument("--kills", type=int, default=5, help="recovery rounds (SIGKILLs)")
    p.add_argument("--lease-s", type=float, default=3.0, help="LG_DEPLOY_LEASE_S for recovery")
    p.add_argument(
        "--reconcile-s", type=float, default=1.0, help="LG_DEPLOY_RECONCILE_INTERVAL_S (recovery)"
    )
    p.add_argument("--slow-steps", type=int, default=20, help="steps of the slow execution")
    p.add_argument("--slow-sleep", type=float, default=0.5, help="seconds per slow step")
    p.add_argument(
        "--kill-after",
        type=float,
        default=2.0,
        help="run time before the kill, s (plus a random 0..lease/3)",
    )
    p.add_argument(
        "--recovery-timeout", type=float, default=60.0, help="extra bound per recovery wait, s"
    )
    for phase in ("throughput", "pickup", "recovery"):
        p.add_argument(f"--skip-{phase}", action="store_true", help=f"skip the {phase} phase")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="langgraph.json")
    p.add_argument("--pg-url", default=DEFAULT_PG_URL, help="PostgreSQL admin URL (loopback)")
    p.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="Redis URL (loopback)")
    p.add_argument("--phase-timeout", type=float, default=600.0, help="bound per phase, s")
    p.add_argument("--startup-timeout", type=float, default=60.0, help="wait for each process, s")
    p.add_argument("--shutdown-timeout", type=float, default=15.0, help="SIGINT to SIGKILL, s")
    p.add_argument("--keep-temp", action="store_true", help="keep the temp dir (logs)")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = p.parse_args(argv)
    for name in ("executions", "warmup", "pickup_samples", "kills"):
        if not 0 <= getattr(args, name) <= 1_000_000:
            p.error(f"--{name.replace('_', '-')} must be within 0..1000000")
    if not 1 <= args.submit_clients <= 256:
        p.error("--submit-clients must be within 1..256")
    if not 1 <= args.pickup_workers <= 16:
        p.error("--pickup-workers must be within 1..16")
    if not 1 <= args.slow_steps <= 10_000:
        p.error("--slow-steps must be within 1..10000")
    for name in ("lease_s", "reconcile_s", "phase_timeout", "startup_timeout", "shutdown_timeout"):
        if not getattr(args, name) > 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    for name in ("pickup_pause", "slow_sleep", "kill_after", "recovery_timeout"):
        if not getattr(args, name) >= 0:
            p.error(f"--{name.replace('_', '-')} must not be negative")
    if args.kills and args.kill_after + args.lease_s / 3 >= args.slow_steps * args.slow_sleep:
        p.error(
            "--kill-after plus a third of --lease-s must be shorter than the slow run "
            "(--slow-steps x --slow-sleep)"
        )
    return args


def run(args: argparse.Namespace, result: dict[str, Any], fleet: Fleet) -> None:
    """All phases; figures go to ``result["report"]``, problems to ``result["problems"]``."""
    problems: list[str] = result["problems"]
    report: dict[str, Any] = result.setdefault("report", {})
    ids: set[str] = result["_ids"]
    info = result["fleet"]

    migrate = subprocess.run(
        [*lg_deploy_command(), "migrate"],
        cwd=fleet.workdir,
        env=fleet.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if migrate.returncode != 0:
        raise BenchError(f"lg-deploy migrate failed: {(migrate.stderr or migrate.stdout)[-800:]}")
    ready_s = fleet.start_api()
    assert fleet.api is not None
    info["api_url"] = fleet.api.url
    info["api_ready_s"] = round(ready_s, 3)
    log(f"API ready after {ready_s:.2f} s at {fleet.api.url}")

    phases: list[tuple[str, Callable[[], None]]] = []

    def throughput() -> None:
        rows = []
        for workers in (1, 2):
            row = phase_throughput(fleet, workers, args, problems, ids)
            row["submit_clients"] = args.submit_clients
            rows.append(row)
            report["throughput"] = rows
        one, two = rows[0]["executions_per_s"], rows[1]["executions_per_s"]
        report["throughput_ratio"] = round(two / one, 3) if one and two else None

    def pickup() -> None:
        report["pickup"] = phase_pickup(fleet, args, problems, ids)

    def recovery() -> None:
        report["recovery"] = phase_recovery(fleet, args, problems, ids)

    if not args.skip_throughput and args.executions > 0:
        phases.append(("throughput", throughput))
    if not args.skip_pickup and args.pickup_samples > 0:
        phases.append(("pickup", pickup))
    if not args.skip_recovery and args.kills > 0:
        phases.append(("recovery", recovery))
    for name, phase in phases:
        try:
            phase()
        except (BenchError, httpx.HTTPError, ValueError) as exc:
            # The process start-up failures are BenchErrors too: the next phase tries again.
            problems.append(f"{name} phase aborted: {type(exc).__name__}: {exc}")
            log(f"{name} phase aborted: {exc}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when all went well, 1 on problems, 2 when it could not run."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    suffix = secrets.token_hex(4)
    database = f"lgd_bench_{suffix}"
    queue_name = f"lgd-bench-{suffix}"
    result: dict[str, Any] = {
        "machine": machine_facts(),
        "options": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("json", "keep_temp")
        },
        "fleet": {"database": database, "queue_name": queue_name},
        "problems": [],
        "_ids": set(),
    }
    code = 2
    failed = True
    interrupted = False
    workdir: Path | None = None
    fleet: Fleet | None = None
    created = False
    try:
        loopback_url(args.pg_url, ("postgresql", "postgres"), "--pg-url")
        loopback_url(args.redis_url, ("redis",), "--redis-url")
        config = args.config.resolve()
        if not config.is_file():
            raise BenchError(f"config not found: {config}")
        result["fleet"]["postgres_version"] = postgres_version(args.pg_url)
        result["fleet"]["redis_version"] = redis_version(args.redis_url)
        result["fleet"]["inherited_settings"] = inherited_settings()
        workdir = Path(tempfile.mkdtemp(prefix="lg-deploy-fleet-bench-"))
        create_database(args.pg_url, database)
        created = True
        log(f"database {database}, queue {queue_name}, logs in {workdir}")
        env = dict(os.environ)
        env.update(
            {
                "LG_DEPLOY_DATABASE_URL": fleet_database_url(args.pg_url, database),
                "LG_DEPLOY_QUEUE_URL": args.redis_url,
                "LG_DEPLOY_QUEUE_NAME": queue_name,
                "LG_DEPLOY_CONFIG": str(config),
                "PYTHONUNBUFFERED": "1",
            }
        )
        fleet = Fleet(workdir, env, args.startup_timeout, args.shutdown_timeout)
        run(args, result, fleet)
        code = 1 if result["problems"] else 0
        failed = code != 0
    except (BenchError, httpx.HTTPError, psycopg.Error, redis.RedisError, OSError) as exc:
        result["problems"].append(f"could not run: {type(exc).__name__}: {exc}")
        print(f"bench_fleet: {type(exc).__name__}: {exc}", file=sys.stderr)
    except subprocess.TimeoutExpired as exc:
        result["problems"].append(f"could not run: {exc}")
        print(f"bench_fleet: {exc}", file=sys.stderr)
    except (KeyboardInterrupt, Terminated) as exc:
        result["problems"].append("interrupted")
        interrupted = True
        code = 143 if isinstance(exc, Terminated) else 130
    finally:
        if fleet is not None:
            fleet.stop_all()
            result["fleet"]["stopped_by"] = fleet.stopped_by
            result["log_findings"] = {
                name_of(s): found for s in fleet.started if (found := log_findings(s.log_path))
            }
            if failed and not interrupted:
                for server in fleet.started:
                    log(f"{name_of(server)} log tail:\n{log_tail(server.log_path, 15)}")
        if created:
            with contextlib.suppress(psycopg.Error):
                result["_ids"].update(execution_ids(args.pg_url, database))
            try:
                drop_database(args.pg_url, database)
                log(f"dropped database {database}")
            except psycopg.Error as exc:
                log(f"could not drop database {database}: {exc}")
        with contextlib.suppress(redis.RedisError, OSError):
            removed = clean_redis(args.redis_url, queue_name, result["_ids"])
            log(f"removed {removed} Redis keys of this run")
        if workdir is not None:
            if args.keep_temp or (failed and not interrupted):
                log(f"kept {workdir} (process logs)")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
    result.pop("_ids")
    if "report" in result or result["problems"]:
        print(format_summary(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        log(f"wrote {args.json}")
    return code


if __name__ == "__main__":
    sys.exit(main())
