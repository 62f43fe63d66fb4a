#!/usr/bin/env python3
"""Benchmark ``lg-deploy dev``: submit latency and end-to-end execution throughput.

Run ``python bench/bench_dev.py --help``; ``bench/README.md`` explains the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "examples" / "langgraph.json"

ALL_STATUSES = ("COMPLETED", "FAILED", "CANCELLED", "INTERRUPTED", "QUEUED", "RUNNING")
ACTIVE = ("QUEUED", "RUNNING")
# Where an execution stops on its own: the terminal statuses plus a pause for input.
SETTLED = frozenset({"COMPLETED", "FAILED", "CANCELLED", "INTERRUPTED"})

REQUEST_TIMEOUT_S = 30.0
MAX_CONSECUTIVE_ERRORS = 20
MAX_TIMEOUTS_IN_ROW = 3
LIST_PAGE_LIMIT = 100
MAX_LIST_PAGES = 10_000
WAIT_LONG_POLL_S = 30


class BenchError(Exception):
    """The benchmark could not run (server down, unsupported API, bad arguments)."""


class Terminated(BaseException):
    """Raised from the SIGTERM handler so that the cleanup in ``finally`` runs."""


def log(message: str) -> None:
    """Progress goes to stderr so stdout holds only the summary."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- figures


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation between closest ranks."""
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def ms(seconds: float | None) -> float | None:
    """Seconds to milliseconds, rounded for the report."""
    return None if seconds is None else round(seconds * 1000.0, 3)


def rate(count: int, seconds: float | None) -> float | None:
    """count / seconds, or None when undefined."""
    if not seconds or seconds <= 0:
        return None
    return round(count / seconds, 2)


def machine_facts() -> dict[str, Any]:
    """What the figures were measured on."""
    facts: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }
    if hasattr(os, "sched_getaffinity"):
        facts["usable_cpus"] = len(os.sched_getaffinity(0))
    if hasattr(os, "getloadavg"):
        facts["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return facts


# --------------------------------------------------------------------------- server


@dataclass
class Server:
    """A spawned ``lg-deploy dev`` process."""

    proc: subprocess.Popen[bytes]
    url: str
    command: list[str]
    log_path: Path
    log_file: IO[bytes]


def check_loopback(url: str) -> str:
    """Return ``url`` without a trailing slash; refuse anything but a loopback http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BenchError(f"--url must be an http(s) URL, got {url!r}")
    host = parts.hostname
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise BenchError(f"--url must point at a loopback address, got host {host!r}")
    return url.rstrip("/")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def lg_deploy_command() -> list[str]:
    """The ``lg-deploy`` executable of this interpreter's environment, or the module fallback."""
    exe = Path(sys.executable).parent / "lg-deploy"
    if exe.is_file() and os.access(exe, os.X_OK):
        return [str(exe)]
    return [sys.executable, "-m", "lg_deploy.api.cli"]


def inherited_settings() -> dict[str, str]:
    """``LG_DEPLOY_*`` variables the server inherits, secrets masked."""
    shown: dict[str, str] = {}
    for name, value in sorted(os.environ.items()):
        if not name.startswith("LG_DEPLOY_") or name == "LG_DEPLOY_DATABASE_URL":
            continue
        secret = any(w in name for w in ("URL", "PASSWORD", "SECRET", "TOKEN", "KEY"))
        shown[name] = "<set>" if secret else value
    return shown


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of the server log."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def start_server(config: Path, workdir: Path) -> Server:
    """Spawn ``lg-deploy dev`` on a free loopback port with a fresh SQLite database."""
    port = free_port()
    command = [
        *lg_deploy_command(),
        "dev",
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = dict(os.environ)
    env["LG_DEPLOY_DATABASE_URL"] = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    env.setdefault("PYTHONUNBUFFERED", "1")
    log_path = workdir / "server.log"
    log_file = log_path.open("wb")
    log(f"starting: {' '.join(command)} (log: {log_path})")
    try:
        # Own process group: stopping it stops whatever the server itself spawned.
        proc = subprocess.Popen(
            command,
            cwd=workdir,  # so no stray ./.env or ./.lg-deploy of the caller is picked up
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        log_file.close()
        raise BenchError(f"cannot start {command[0]}: {exc}") from exc
    return Server(proc, f"http://127.0.0.1:{port}", command, log_path, log_file)


def wait_ready(url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> float:
    """Poll ``/readyz`` until 200 and return the seconds it took; raise if it never is."""
    start = time.perf_counter()
    deadline = start + timeout_s
    last = "no answer yet"
    with httpx.Client(base_url=url, timeout=2.0, trust_env=False) as client:
        while time.perf_counter() < deadline:
            code = proc.poll() if proc is not None else None
            if code is not None:
                raise BenchError(f"server exited with code {code} before it was ready")
            try:
                resp = client.get("/readyz")
                if resp.status_code == 200:
                    return time.perf_counter() - start
                last = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.1)
    raise BenchError(f"server not ready after {timeout_s:.0f} s (last /readyz: {last})")


def stop_server(server: Server, timeout_s: float) -> str:
    """SIGINT the server's process group, SIGKILL it after ``timeout_s``; say which it took."""
    proc = server.proc
    how = "already exited"
    try:
        if proc.poll() is None:
            how = "SIGINT"
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=timeout_s)
            except (subprocess.TimeoutExpired, KeyboardInterrupt, Terminated):
                how = f"SIGKILL (no exit {timeout_s:.0f} s after SIGINT, or asked again)"
                # The leader is not reaped yet, so its group id is still ours.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
    finally:
        server.log_file.close()
    return how


# --------------------------------------------------------------------------- HTTP helpers


def make_client(
    base_url: str, connections: int, read_timeout: float = REQUEST_TIMEOUT_S
) -> httpx.AsyncClient:
    """A keep-alive client that ignores proxy settings (loopback only)."""
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(REQUEST_TIMEOUT_S, read=read_timeout),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        trust_env=False,
    )


def record_id(record: dict[str, Any]) -> str | None:
    """The execution id of a record (``execution_id``, or ``id`` as a fallback)."""
    value = record.get("execution_id", record.get("id"))
    return str(value) if value is not None else None


class ErrorTally:
    """Counts failures by kind, keeps a few samples, and aborts on a long failing streak."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.counts: Counter[str] = Counter()
        self.samples: list[str] = []
        self.streak = 0
        self.timeout_streak = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def ok(self) -> None:
        self.streak = self.timeout_streak = 0

    def add(self, kind: str, detail: str = "") -> None:
        self.counts[kind] += 1
        self.streak += 1
        # A hung server costs a full request timeout per try: give up on it sooner.
        self.timeout_streak = self.timeout_streak + 1 if kind.endswith("Timeout") else 0
        if len(self.samples) < 5:
            self.samples.append(f"{kind}: {detail[:200]}" if detail else kind)
        if self.streak >= MAX_CONSECUTIVE_ERRORS or self.timeout_streak >= MAX_TIMEOUTS_IN_ROW:
            raise BenchError(
                f"{self.what}: {self.streak} failures in a row; first ones: {self.samples}"
            )


# --------------------------------------------------------------------------- submitting


@dataclass
class Batch:
    """The outcome of one batch of ``POST /execute`` requests."""

    latencies: list[float] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    errors: ErrorTally = field(default_factory=lambda: ErrorTally("POST /execute"))
    first_start: float | None = None
    last_end: float | None = None
    timed_out: bool = False

    @property
    def wall_s(self) -> float | None:
        if self.first_start is None or self.last_end is None:
            return None
        return self.last_end - self.first_start


async def submit_many(
    clients: Sequence[httpx.AsyncClient],
    n: int,
    body: bytes,
    deadline: float,
    on_id: Callable[[str], None] | None = None,
) -> Batch:
    """Issue ``n`` submits, one in flight per client, until done or ``deadline``."""
    batch = Batch()
    issued = 0
    headers = {"content-type": "application/json"}

    async def run(client: httpx.AsyncClient) -> None:
        nonlocal issued
        while issued < n:
            if time.perf_counter() >= deadline:
                batch.timed_out = True
                return
            issued += 1
            t0 = time.perf_counter()
            if batch.first_start is None:
                batch.first_start = t0
            try:
                resp = await client.post("/execute", content=body, headers=headers)
            except httpx.HTTPError as exc:
                batch.last_end = time.perf_counter()
                batch.errors.add(type(exc).__name__, str(exc))
                continue
            t1 = time.perf_counter()
            batch.last_end = t1
            if not 200 <= resp.status_code < 300:
                batch.errors.add(f"HTTP {resp.status_code}", resp.text)
                continue
            try:
                execution_id = record_id(resp.json())
            except (ValueError, AttributeError):
                execution_id = None
            if execution_id is None:
                batch.errors.add("no execution_id", resp.text)
                continue
            batch.errors.ok()
            batch.latencies.append(t1 - t0)
            batch.ids.append(execution_id)
            if on_id is not None:
                on_id(execution_id)

    await asyncio.gather(*(run(c) for c in clients))
    return batch


def latency_figures(concurrency: int, batch: Batch, requested: int) -> dict[str, Any]:
    """Percentiles and rate of one timed batch."""
    values = sorted(batch.latencies)
    return {
        "concurrency": concurrency,
        "requested": requested,
        "ok": len(values),
        "errors": batch.errors.total,
        "error_kinds": dict(batch.errors.counts),
        "error_samples": batch.errors.samples,
        "timed_out": batch.timed_out,
        "p50_ms": ms(percentile(values, 50)),
        "p90_ms": ms(percentile(values, 90)),
        "p99_ms": ms(percentile(values, 99)),
        "max_ms": ms(values[-1] if values else None),
        "mean_ms": ms(sum(values) / len(values) if values else None),
        "wall_s": round(batch.wall_s, 4) if batch.wall_s is not None else None,
        "requests_per_s": rate(len(values), batch.wall_s),
    }


# --------------------------------------------------------------------------- waiting


@dataclass
class Settled:
    """When a set of executions was last seen settled, and their statuses."""

    statuses: dict[str, str]
    end: float | None
    timed_out: bool
    requests: int
    mode: str


async def list_page(
    client: httpx.AsyncClient, status: str, limit: int, cursor: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of ``GET /executions?status=...``."""
    params = {"status": status, "limit": str(limit)}
    if cursor:
        params["cursor"] = cursor
    resp = await client.get("/executions", params=params)
    resp.raise_for_status()
    data = resp.json()
    items = data.get("items") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise BenchError(f"GET /executions returned no 'items' list: {resp.text[:200]}")
    cursor_out = data.get("next_cursor")
    return items, (str(cursor_out) if cursor_out else None)


async def list_supported(client: httpx.AsyncClient) -> bool:
    """Whether ``GET /executions?status=QUEUED&limit=1`` answers as the contract says."""
    try:
        await list_page(client, "QUEUED", 1)
    except httpx.TimeoutException as exc:
        raise BenchError(f"server did not answer GET /executions: {exc!r}") from exc
    except (httpx.HTTPError, BenchError, ValueError) as exc:
        log(f"status-filtered listing unusable ({exc}); falling back to per-execution /wait")
        return False
    return True


async def fetch_statuses(
    client: httpx.AsyncClient, ids: Iterable[str], deadline: float, concurrency: int
) -> dict[str, str]:
    """Statuses of ``ids``: page the status lists, then GET the ones not seen there."""
    wanted = set(ids)
    found: dict[str, str] = {}
    requests = 0
    for status in ALL_STATUSES:
        cursor: str | None = None
        seen_cursors: set[str] = set()
        for _ in range(MAX_LIST_PAGES):
            if wanted <= found.keys() or time.perf_counter() >= deadline:
                break
            items, cursor = await list_page(client, status, LIST_PAGE_LIMIT, cursor)
            requests += 1
            for item in items:
                item_id = record_id(item)
                if item_id in wanted:
                    found[item_id] = str(item.get("status", status))
            if not items or cursor is None or cursor in seen_cursors:
                break
            seen_cursors.add(cursor)
    missing = [i for i in wanted if i not in found]
    if missing:
        # Moved between lists while we paged, or the listing is incomplete: ask one by one.
        sem = asyncio.Semaphore(concurrency)

        async def one(execution_id: str) -> None:
            async with sem:
                if time.perf_counter() >= deadline:
                    return
                resp = await client.get(f"/executions/{execution_id}")
                if resp.status_code == 200:
                    found[execution_id] = str(resp.json().get("status", "UNKNOWN"))
                elif resp.status_code == 404:
                    found[execution_id] = "NOT FOUND"
                else:
                    found[execution_id] = f"HTTP {resp.status_code}"

        await asyncio.gather(*(one(i) for i in missing))
    for execution_id in wanted - found.keys():
        found[execution_id] = "UNKNOWN"
    return found


async def settle_by_list(
    client: httpx.AsyncClient,
    ids: Sequence[str],
    deadline: float,
    poll_interval: float,
    concurrency: int,
) -> Settled:
    """Poll for "nothing QUEUED or RUNNING" (two ``limit=1`` lists a tick), then verify ids.

    QUEUED is asked before RUNNING, so a forward move between the two asks cannot hide an
    execution. Any the verification still finds active (a retry moved back to QUEUED, or a
    listing that misses some) are then waited for one by one with ``/wait``.
    """
    errors = ErrorTally("GET /executions")
    requests = 0
    statuses: dict[str, str] = {}
    while time.perf_counter() < deadline:
        try:
            active = False
            for status in ACTIVE:
                items, _ = await list_page(client, status, 1)
                requests += 1
                if items:
                    active = True
                    break
            seen_at = time.perf_counter()
            if not active:
                statuses = await fetch_statuses(client, ids, deadline, concurrency)
                pending = [i for i, s in statuses.items() if s in ACTIVE]
                if not pending:
                    return Settled(statuses, seen_at, False, requests, "list")
                log(f"{len(pending)} still active though none was listed; waiting on each")
                rest = await settle_by_wait(client, closed_queue(pending), deadline, concurrency)
                statuses.update(rest.statuses)
                requests += rest.requests
                return Settled(statuses, rest.end, rest.timed_out, requests, "list")
            errors.ok()
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            errors.add(type(exc).__name__, str(exc))
        await asyncio.sleep(poll_interval)
    with contextlib.suppress(httpx.HTTPError, BenchError, ValueError):
        statuses = await fetch_statuses(client, ids, time.perf_counter() + 30, concurrency)
    return Settled(statuses, None, True, requests, "list")


def closed_queue(ids: Iterable[str]) -> asyncio.Queue[str | None]:
    """A queue holding ``ids`` and the end marker."""
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    for execution_id in ids:
        queue.put_nowait(execution_id)
    queue.put_nowait(None)
    return queue


async def settle_by_wait(
    client: httpx.AsyncClient,
    ids: asyncio.Queue[str | None],
    deadline: float,
    concurrency: int,
) -> Settled:
    """Long-poll ``/executions/{id}/wait`` for each id taken from ``ids`` until ``None``.

    ``concurrency`` waiters take ids in submission order, so they can run while the ids are
    still being submitted and each check happens about when its execution settles.
    """
    statuses: dict[str, str] = {}
    seen: list[float] = []
    errors = ErrorTally("GET /executions/{id}/wait")
    requests = 0
    timed_out = False

    async def one(execution_id: str) -> None:
        nonlocal requests, timed_out
        status = "UNKNOWN"
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                timed_out = True
                break
            timeout = max(1, min(WAIT_LONG_POLL_S, int(left)))
            try:
                resp = await client.get(
                    f"/executions/{execution_id}/wait", params={"timeout": str(timeout)}
                )
                requests += 1
                if resp.status_code == 404:
                    status = "NOT FOUND"
                    break
                resp.raise_for_status()
                status = str(resp.json().get("status", "UNKNOWN"))
                errors.ok()
            except (httpx.HTTPError, ValueError, AttributeError) as exc:
                errors.add(type(exc).__name__, str(exc))
                await asyncio.sleep(0.1)
                continue
            if status in SETTLED:
                seen.append(time.perf_counter())
                break
            await asyncio.sleep(0.05)  # a long-poll timeout, or a server answering early
        statuses[execution_id] = status

    async def waiter() -> None:
        while (execution_id := await ids.get()) is not None:
            await one(execution_id)
        ids.put_nowait(None)  # pass the end marker on to the next waiter

    await asyncio.gather(*(waiter() for _ in range(concurrency)))
    end = None if timed_out or not seen else max(seen)
    return Settled(statuses, end, timed_out, requests, "wait")


async def settle(
    client: httpx.AsyncClient,
    ids: Sequence[str],
    mode: str,
    deadline: float,
    args: argparse.Namespace,
) -> Settled:
    """Wait until all ``ids`` are settled with the chosen strategy."""
    if mode == "list":
        return await settle_by_list(client, ids, deadline, args.poll_interval, args.wait_clients)
    return await settle_by_wait(client, closed_queue(ids), deadline, args.wait_clients)


# --------------------------------------------------------------------------- phases


async def phase_latency(
    base_url: str, body: bytes, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], list[str]]:
    """Phase 1: warm up, then time ``args.requests`` submits at each concurrency level."""
    results: list[dict[str, Any]] = []
    ids: list[str] = []
    for concurrency in args.concurrency:
        clients = [make_client(base_url, 1) for _ in range(concurrency)]
        try:
            deadline = time.perf_counter() + args.phase_timeout
            # Every client warms its own connection before the clock starts.
            warm = await submit_many(clients, max(args.warmup, concurrency), body, deadline)
            ids.extend(warm.ids)
            if warm.errors.total:
                log(f"warm-up at C={concurrency}: {warm.errors.total} errors {warm.errors.samples}")
            log(f"timing {args.requests} submits with {concurrency} client(s)")
            batch = await submit_many(clients, args.requests, body, deadline)
            ids.extend(batch.ids)
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))
        results.append(latency_figures(concurrency, batch, args.requests))
    return results, ids


async def phase_throughput(
    base_url: str, body: bytes, mode: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Phase 2: submit ``args.executions`` and time until the last one is seen settled.

    In list mode the waiting starts once all are submitted; in wait mode the per-execution
    long-polls run alongside the submits, so the checks do not pile up at the end.
    """
    clients = [make_client(base_url, 1) for _ in range(args.submit_clients)]
    wait_client = make_client(base_url, args.wait_clients, WAIT_LONG_POLL_S + 15)
    try:
        log(f"submitting {args.executions} executions with {args.submit_clients} clients")
        start = time.perf_counter()
        if mode == "wait":
            queue: asyncio.Queue[str | None] = asyncio.Queue()

            async def submit_all() -> Batch:
                try:
                    return await submit_many(
                        clients, args.executions, body, start + args.phase_timeout, queue.put_nowait
                    )
                finally:
                    queue.put_nowait(None)

            batch, settled = await asyncio.gather(
                submit_all(),
                settle_by_wait(
                    wait_client, queue, start + 2 * args.phase_timeout, args.wait_clients
                ),
            )
        else:
            batch = await submit_many(clients, args.executions, body, start + args.phase_timeout)
            log(f"submitted {len(batch.ids)}; waiting for them to settle")
            settled = await settle(
                wait_client, batch.ids, mode, time.perf_counter() + args.phase_timeout, args
            )
    finally:
        await asyncio.gather(*(c.aclose() for c in [*clients, wait_client]))
    total_s = (
        settled.end - batch.first_start
        if settled.end is not None and batch.first_start is not None
        else None
    )
    after_submit_s = (
        settled.end - batch.last_end
        if settled.end is not None and batch.last_end is not None
        else None
    )
    return {
        "executions": args.executions,
        "submitted": len(batch.ids),
        "submit_clients": args.submit_clients,
        "submit_errors": batch.errors.total,
        "submit_error_samples": batch.errors.samples,
        "submit_timed_out": batch.timed_out,
        "submit_wall_s": round(batch.wall_s, 4) if batch.wall_s is not None else None,
        "submits_per_s": rate(len(batch.ids), batch.wall_s),
        "wait_mode": settled.mode,
        "wait_requests": settled.requests,
        "wait_timed_out": settled.timed_out,
        "total_s": round(total_s, 4) if total_s is not None else None,
        "settled_after_last_submit_s": (
            round(after_submit_s, 4) if after_submit_s is not None else None
        ),
        "executions_per_s": rate(len(batch.ids), total_s),
        "statuses": dict(Counter(settled.statuses.values()).most_common()),
    }


async def run_benchmark(base_url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Both phases against a ready server; returns the report (figures and problems)."""
    body = json.dumps({"graph_id": args.graph, "input": args.input}).encode()
    report: dict[str, Any] = {"submit_latency": [], "drain": None, "throughput": None}
    problems: list[str] = report.setdefault("problems", [])

    probe = make_client(base_url, 1)
    try:
        mode = args.wait_mode
        if mode == "auto":
            mode = "list" if await list_supported(probe) else "wait"
    finally:
        await probe.aclose()
    report["wait_mode"] = mode

    if args.requests > 0 and args.concurrency:
        latency, phase1_ids = await phase_latency(base_url, body, args)
        report["submit_latency"] = latency
        for row in latency:
            if row["errors"] or row["timed_out"]:
                problems.append(
                    f"phase 1 C={row['concurrency']}: {row['errors']} failed submits"
                    + (", timed out" if row["timed_out"] else "")
                )
        # Let phase 1's executions finish so phase 2 starts on an idle server.
        log(f"draining {len(phase1_ids)} phase-1 executions")
        client = make_client(base_url, args.wait_clients, WAIT_LONG_POLL_S + 15)
        t0 = time.perf_counter()
        try:
            drained = await settle(client, phase1_ids, mode, t0 + args.phase_timeout, args)
        finally:
            await client.aclose()
        statuses = dict(Counter(drained.statuses.values()).most_common())
        report["drain"] = {
            "executions": len(phase1_ids),
            "seconds": round(drained.end - t0, 4) if drained.end is not None else None,
            "timed_out": drained.timed_out,
            "statuses": statuses,
        }
        if drained.timed_out or set(statuses) - {"COMPLETED"}:
            problems.append(f"phase-1 executions did not all complete: {statuses}")

    if args.executions > 0:
        throughput = await phase_throughput(base_url, body, mode, args)
        report["throughput"] = throughput
        if throughput["submit_errors"] or throughput["submit_timed_out"]:
            problems.append(
                f"phase 2: {throughput['submitted']} of {args.executions} submits succeeded"
            )
        if throughput["wait_timed_out"]:
            problems.append(f"phase 2: not all settled within {args.phase_timeout:.0f} s")
        if set(throughput["statuses"]) - {"COMPLETED"}:
            problems.append(f"phase 2: not all COMPLETED: {throughput['statuses']}")
    return report


# --------------------------------------------------------------------------- output


def fmt(value: float | None, width: int, digits: int = 2) -> str:
    """Right-aligned number, or a dash."""
    return f"{value:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def format_summary(result: dict[str, Any]) -> str:
    """The human-readable report."""
    m = result["machine"]
    usable = f", {m['usable_cpus']} usable" if "usable_cpus" in m else ""
    load = " ".join(str(x) for x in m.get("loadavg_at_start", []))
    lines = [
        "lg-deploy dev benchmark",
        f"  machine: {m['cpu_count']} CPUs{usable}, Python {m['python']} "
        f"({m['python_implementation']}), {m['platform']}" + (f", load {load}" if load else ""),
        f"  server:  {result['server']['description']}",
    ]
    if result["server"].get("inherited_settings"):
        lines.append(f"  inherited settings: {result['server']['inherited_settings']}")
    report = result.get("report") or {}
    if report.get("submit_latency"):
        lines += [
            "",
            "Phase 1: submit latency (POST /execute, one request in flight per client)",
            f"  {'clients':>7} {'ok':>6} {'errors':>6} {'p50 ms':>8} {'p90 ms':>8} "
            f"{'p99 ms':>8} {'max ms':>8} {'req/s':>9}",
        ]
        for row in report["submit_latency"]:
            lines.append(
                f"  {row['concurrency']:>7} {row['ok']:>6} {row['errors']:>6} "
                f"{fmt(row['p50_ms'], 8)} {fmt(row['p90_ms'], 8)} {fmt(row['p99_ms'], 8)} "
                f"{fmt(row['max_ms'], 8)} {fmt(row['requests_per_s'], 9, 1)}"
            )
        drain = report.get("drain")
        if drain:
            lines.append(
                f"  then drained {drain['executions']} phase-1 executions in "
                f"{fmt(drain['seconds'], 0)} s: {status_text(drain['statuses'])}"
            )
    t = report.get("throughput")
    if t:
        lines += [
            "",
            f"Phase 2: end-to-end throughput ({t['executions']} executions, "
            f"{t['submit_clients']} submitting clients, wait mode: {t['wait_mode']})",
            f"  submitted:    {t['submitted']} in {fmt(t['submit_wall_s'], 0, 3)} s "
            f"({fmt(t['submits_per_s'], 0, 1)} submits/s, {t['submit_errors']} errors)",
            f"  all settled:  {fmt(t['total_s'], 0, 3)} s after the first submit "
            f"({fmt(t['settled_after_last_submit_s'], 0, 3)} s after the last)",
            f"  throughput:   {fmt(t['executions_per_s'], 0, 1)} executions/s",
            f"  final status: {status_text(t['statuses'])}",
        ]
    lines.append("")
    problems = result.get("problems", [])
    if problems:
        lines.append("Result: PROBLEMS")
        lines += [f"  - {p}" for p in problems]
    else:
        lines.append("Result: OK (all executions COMPLETED)")
    return "\n".join(lines)


def status_text(statuses: dict[str, int]) -> str:
    """``COMPLETED=1000 FAILED=2``."""
    return " ".join(f"{k}={v}" for k, v in statuses.items()) or "(none)"


# --------------------------------------------------------------------------- main


def concurrency_list(text: str) -> list[int]:
    """Parse ``1`` or ``1,8``."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text}") from exc
    if not values or any(v < 1 or v > 256 for v in values):
        raise argparse.ArgumentTypeError("concurrency values must be within 1..256")
    return values


def json_object(text: str) -> dict[str, Any]:
    """Parse the --input JSON object."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--input must be a JSON object")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--requests", type=int, default=500, help="timed submits per client count")
    p.add_argument(
        "--concurrency",
        type=concurrency_list,
        default="1,8",
        help="phase 1 client counts, comma-separated (1 gives the clean latency figure)",
    )
    p.add_argument("--executions", type=int, default=1000, help="phase 2 executions")
    p.add_argument("--submit-clients", type=int, default=16, help="phase 2 submitting clients")
    p.add_argument("--warmup", type=int, default=20, help="untimed submits before each level")
    p.add_argument("--url", help="benchmark this running server (loopback only) instead")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="langgraph.json")
    p.add_argument("--graph", default="steps", help="graph_id to submit")
    p.add_argument("--input", type=json_object, default='{"text": "hi"}', help="input JSON")
    p.add_argument(
        "--wait-mode",
        choices=("auto", "list", "wait"),
        default="auto",
        help="list: poll status-filtered lists (cheap, needs an otherwise idle server); "
        "wait: long-poll /executions/{id}/wait per execution",
    )
    p.add_argument("--wait-clients", type=int, default=16, help="concurrent waiters / lookups")
    p.add_argument("--poll-interval", type=float, default=0.02, help="list-mode poll, seconds")
    p.add_argument("--phase-timeout", type=float, default=300.0, help="bound per phase, s")
    p.add_argument("--startup-timeout", type=float, default=30.0, help="wait for /readyz, s")
    p.add_argument("--shutdown-timeout", type=float, default=15.0, help="SIGINT to SIGKILL, s")
    p.add_argument("--keep-temp", action="store_true", help="keep the temp dir (db, log)")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = p.parse_args(argv)
    for name in ("requests", "executions", "warmup"):
        if not 0 <= getattr(args, name) <= 1_000_000:
            p.error(f"--{name} must be within 0..1000000")
    for name in ("submit_clients", "wait_clients"):
        if not 1 <= getattr(args, name) <= 256:
            p.error(f"--{name.replace('_', '-')} must be within 1..256")
    for name in ("poll_interval", "phase_timeout", "startup_timeout", "shutdown_timeout"):
        if not getattr(args, name) > 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    return args


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when all went well, 1 on problems, 2 when it could not run."""
    args = parse_args(argv)
    # A plain `kill` should still stop the server we started.
    signal.signal(signal.SIGTERM, _on_sigterm)
    result: dict[str, Any] = {
        "machine": machine_facts(),
        "options": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("json", "keep_temp")
        },
        "problems": [],
    }
    server: Server | None = None
    workdir: Path | None = None
    failed = True
    interrupted = False
    code = 2
    try:
        if args.url:
            base_url = check_loopback(args.url)
            result["server"] = {"description": f"external {base_url}", "url": base_url}
            wait_ready(base_url, args.startup_timeout)
        else:
            config = args.config.resolve()
            if not config.is_file():
                raise BenchError(f"config not found: {config}")
            workdir = Path(tempfile.mkdtemp(prefix="lg-deploy-bench-"))
            server = start_server(config, workdir)
            base_url = server.url
            result["server"] = {
                "description": f"spawned `{' '.join(server.command)}`, SQLite in {workdir}",
                "url": base_url,
                "command": server.command,
                "inherited_settings": inherited_settings(),
            }
            ready_s = wait_ready(base_url, args.startup_timeout, server.proc)
            log(f"ready after {ready_s:.2f} s at {base_url}")
            result["server"]["ready_s"] = round(ready_s, 3)
        report = asyncio.run(run_benchmark(base_url, args))
        result["report"] = report
        result["problems"] = report.pop("problems")
        code = 1 if result["problems"] else 0
        failed = code != 0
    except (BenchError, httpx.HTTPError, ValueError) as exc:
        result["problems"].append(f"could not run: {type(exc).__name__}: {exc}")
        print(f"bench_dev: {type(exc).__name__}: {exc}", file=sys.stderr)
    except (KeyboardInterrupt, Terminated) as exc:
        result["problems"].append("interrupted")
        interrupted = True
        code = 143 if isinstance(exc, Terminated) else 130
    finally:
        if server is not None:
            how = stop_server(server, args.shutdown_timeout)
            log(f"server stopped ({how})")
            result["server"]["stopped_by"] = how
            if failed and not interrupted:
                log(f"server log tail:\n{log_tail(server.log_path)}")
        if workdir is not None:
            if args.keep_temp or (failed and not interrupted):
                log(f"kept {workdir} (server.log, bench.db)")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
    if "server" in result:
        print(format_summary(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        log(f"wrote {args.json}")
    return code


if __name__ == "__main__":
    sys.exit(main())
