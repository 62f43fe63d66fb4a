"""The figures of a run as a table for people (the JSON holds the same and more)."""

from __future__ import annotations

from typing import Any


def _cpu(cpu: dict[str, float]) -> str:
    return " | ".join(f"{part} {ms:g}" for part, ms in cpu.items() if ms) + " CPU-ms"


def _rows(f: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    if limit := f.get("limit"):
        rows.append(
            (
                "limit: bare ainvoke, same saver",
                f"{limit['executions_per_s']}/s",
                _cpu(limit["cpu_ms"]),
            )
        )
    for run in f.get("end_to_end", []):
        ratio = f"{run['ratio_to_limit']} x limit | " if run["ratio_to_limit"] else ""
        rows.append(
            (
                f"end to end, {run['workers']} worker(s)",
                f"{run['executions_per_s']}/s",
                ratio + _cpu(run["cpu_ms"]),
            )
        )
    if trips := f.get("round_trips"):
        per, idle = trips["per_execution"], trips["idle_per_s"]
        rows += [
            (
                "PostgreSQL round trips / execution",
                f"{per['postgres']:g}",
                f"api {per['api_postgres']:g} | worker store {per['worker_store']:g}"
                f" | checkpointer {per['worker_checkpointer']:g}",
            ),
            (
                "Redis round trips / execution",
                f"{per['redis']:g}",
                f"api {per['api_redis']:g} | worker {per['worker_redis']:g}",
            ),
            (
                "idle round trips / s, api + 1 worker",
                "",
                f"postgres {idle['postgres']:g} | redis {idle['redis']:g}"
                f" (worker {idle['worker_redis']:g})",
            ),
        ]
    for level in f.get("submit", []):
        rows.append(
            (
                f"POST /execute, {level['clients']} client(s), no worker",
                f"p50 {level['p50_ms']:g} ms",
                f"p99 {level['p99_ms']:g} ms | {level['submissions_per_s']:g}/s"
                f" | {_cpu(level['cpu_ms'])}",
            )
        )
    for name, pickup in f.get("pickup", {}).items():
        rate = f" at {pickup['submissions_per_s']:g}/s" if "submissions_per_s" in pickup else ""
        rows.append(
            (
                f"pickup, {name.replace('_', ' ')}{rate}",
                f"p50 {pickup['p50_ms']:g} ms",
                f"p99 {pickup['p99_ms']:g} ms",
            )
        )
    if io := f.get("io_bound"):
        rows.append(
            (
                "I/O-bound concurrency",
                f"{io['achieved']:g} of {io['configured']}",
                f"{io['ratio']:g}",
            )
        )
    history = f.get("history", [])
    for row in history:
        base = history[0]["executions_per_s"]
        rows.append(
            (
                f"history {row['executions_in_store']:,}",
                f"{row['executions_per_s']}/s",
                f"{round(row['executions_per_s'] / base, 2)} x empty | list p50"
                f" {row['list_p50_ms']:g} ms | {_cpu(row['cpu_ms'])}",
            )
        )
    if thread := f.get("thread"):
        for name in ("new", "busy"):
            run = thread[name]
            label = "new thread" if name == "new" else f"thread of {thread['history']:,}"
            rows.append((label, f"{run['ms_per_execution']:g} ms/exec", _cpu(run["cpu_ms"])))
    if memory := f.get("memory"):
        rows.append(
            (
                f"worker RSS after {memory['executions']:,} executions",
                f"{memory['rss_mb']:g} MB",
                f"slope {memory['slope_kb_per_1000']:g} KB / 1000 executions",
            )
        )
    if recovery := f.get("recovery"):
        rows.append(
            (
                "recovery after SIGKILL",
                f"{recovery['median_s']:g} s",
                f"max {recovery['max_s']:g} s | lease {recovery['lease_s']} s, reconciler"
                f" every {recovery['reconcile_interval_s']} s",
            )
        )
    return rows


def table(result: dict[str, Any]) -> str:
    machine = result["machine"]
    lines = [
        f"lg-deploy benchmarks at {machine['commit']}: {machine['cpus']} CPUs,"
        f" load {machine['load']} at start,"
        f" durability {result['options']['durability']},"
        f" worker concurrency {result['options']['concurrency']}",
        "",
    ]
    rows = _rows(result["figures"])
    width = max(len(label) for label, _, _ in rows) + 2
    for label, value, detail in rows:
        lines.append(f"{label:<{width}}{value:>16}   {detail}")
    return "\n".join(lines)
