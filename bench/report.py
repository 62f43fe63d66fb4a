"""The figures of a run as a table for people (the JSON holds the same and more)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

Row = tuple[str, str, str]


def _cpu(cpu: dict[str, float]) -> str:
    return " | ".join(f"{part} {ms:g}" for part, ms in cpu.items() if ms) + " CPU-ms"


def _rows(f: dict[str, Any]) -> Iterator[Row]:
    if limit := f.get("limit"):
        rate = f"{limit['executions_per_s']}/s"
        yield "limit: bare ainvoke, same saver", rate, _cpu(limit["cpu_ms"])
    for run in f.get("end_to_end", []):
        ratio = f"{run['ratio_to_limit']} x limit"
        if adjacent := run.get("limit_executions_per_s"):
            ratio += f" ({adjacent}/s just before)"
        ratio += " | "
        label, rate = f"end to end, {run['workers']} worker(s)", f"{run['executions_per_s']}/s"
        yield label, rate, ratio + _cpu(run["cpu_ms"])
    if trips := f.get("round_trips"):
        per, idle = trips["per_execution"], trips["idle_per_s"]
        yield (
            "PostgreSQL round trips / execution",
            f"{per['postgres']:g}",
            f"api {per['api_postgres']:g} | worker store {per['worker_store']:g}"
            f" | checkpointer {per['worker_checkpointer']:g}",
        )
        detail = f"api {per['api_redis']:g} | worker {per['worker_redis']:g}"
        yield "Redis round trips / execution", f"{per['redis']:g}", detail
        detail = f"postgres {idle['postgres']:g} | redis {idle['redis']:g}"
        yield "idle round trips / s, api + 1 worker", "", detail
    for level in f.get("submit", []):
        yield (
            f"POST /execute, {level['clients']} client(s), no worker",
            f"p50 {level['p50_ms']:g} ms",
            f"p99 {level['p99_ms']:g} ms | {level['submissions_per_s']:g}/s"
            f" | {_cpu(level['cpu_ms'])}",
        )
    for name, pickup in f.get("pickup", {}).items():
        rate = f" at {pickup['submissions_per_s']:g}/s" if "submissions_per_s" in pickup else ""
        label = f"pickup, {name.replace('_', ' ')}{rate}"
        yield label, f"p50 {pickup['p50_ms']:g} ms", f"p99 {pickup['p99_ms']:g} ms"
    if io := f.get("io_bound"):
        achieved = f"{io['achieved']:g} of {io['configured']}"
        yield "I/O-bound concurrency", achieved, f"{io['ratio']:g} of configured"
    for row in f.get("history", []):
        ratio = round(row["executions_per_s"] / f["history"][0]["executions_per_s"], 2)
        yield (
            f"history {row['executions_in_store']:,}",
            f"{row['executions_per_s']}/s",
            f"{ratio} x empty | list p50 {row['list_p50_ms']:g} ms | {_cpu(row['cpu_ms'])}",
        )
    if thread := f.get("thread"):
        for name, label in (("new", "new thread"), ("busy", f"thread of {thread['history']:,}")):
            run = thread[name]
            yield label, f"{run['ms_per_execution']:g} ms/exec", _cpu(run["cpu_ms"])
    if memory := f.get("memory"):
        label = f"worker RSS after {memory['executions']:,} executions"
        slope = f"slope {memory['slope_kb_per_1000']:g} KB / 1000 executions"
        late = memory["late_slope_kb_per_1000"]
        if late is not None:
            slope += f" | {late:g} over the last {memory['late_executions']:,}"
        yield label, f"{memory['rss_mb']:g} MB", slope
    if recovery := f.get("recovery"):
        yield (
            "recovery after SIGKILL",
            f"{recovery['median_s']:g} s",
            f"max {recovery['max_s']:g} s | lease {recovery['lease_s']} s, reconciler"
            f" every {recovery['reconcile_interval_s']} s",
        )


def table(result: dict[str, Any]) -> str:
    machine, options = result["machine"], result["options"]
    rows = list(_rows(result["figures"]))
    width = max((len(label) for label, _, _ in rows), default=0) + 2
    return "\n".join(
        [
            f"lg-deploy benchmarks at {machine['commit']}: {machine['cpus']} CPUs, load"
            f" {machine['load']} at start, durability {options['durability']},"
            f" worker concurrency {options['concurrency']},"
            f" event loop {options.get('event_loop', 'asyncio')}",
            "",
            *(f"{label:<{width}}{value:>16}   {detail}" for label, value, detail in rows),
        ]
    )
