"""Real ``lg-deploy`` processes, for the end-to-end tests and the benchmarks alike.

Every process runs in a session of its own with its output in a log file, answers on a
port of its own (the API's, or a worker's metrics port), and is stopped for sure by
``stop`` / ``running`` / ``Fleet.stop_all``. Readiness and every other wait polls a
condition (an HTTP answer, a status, a metric), never a fixed sleep or a log line.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, Self

import httpx
from prometheus_client.parser import text_string_to_metric_families

LG_DEPLOY = Path(sys.executable).parent / "lg-deploy"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def poll(
    condition: Callable[[], Any],
    timeout: float = 30,
    what: str = "the condition",
    interval: float = 0.02,
) -> Any:
    """Call ``condition`` every ``interval`` seconds until it returns something truthy,
    and return that."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout} s")
        time.sleep(interval)
    return result


def _cpu_ticks(pid: int) -> list[int]:
    """utime, stime, cutime and cstime of a process (/proc/<pid>/stat), in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return [int(f) for f in fields[11:15]]


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and its waited-for children (/proc)."""
    return sum(_cpu_ticks(pid)) / _CLOCK_TICKS


def user_system_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU time of a process, all its threads (/proc)."""
    user, system, _, _ = _cpu_ticks(pid)
    return user / _CLOCK_TICKS, system / _CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (/proc: VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0  # a zombie has no memory left


class Process:
    """One ``lg-deploy`` command running in the background, its output in a log file."""

    def __init__(
        self, args: Sequence[str], log_path: Path, env: dict[str, str], command: Path = LG_DEPLOY
    ) -> None:
        self.args = list(args)
        self.log_path = log_path
        self.env = env
        self.command = command
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(self.command), *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """SIGKILL the whole session if it still runs (the test may have stopped it
        already); a SIGSTOPped process is continued so that the kill is delivered."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGCONT)
                os.killpg(self.pid, signal.SIGKILL)
            self.wait(10)

    def cpu_seconds(self) -> float:
        """User and system CPU time of the process and its waited-for children (/proc)."""
        return cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        return rss_bytes(self.pid)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_answering(self, url: str, timeout: float = 30) -> None:
        """Until ``url`` answers 200; fail at once, with the log, if the process exits."""

        def ready() -> bool:
            if not self.running():
                raise AssertionError(f"lg-deploy {self.args[0]} exited:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(url, timeout=1).status_code == 200
            return False

        try:
            poll(ready, timeout, f"{url} answering")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log_tail()}") from None


class Server(Process):
    """A process serving the HTTP API (``lg-deploy dev`` or ``lg-deploy api``)."""

    def __init__(self, args: Sequence[str], log_path: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__([*args, "--port", str(self.port)], log_path, env)

    def wait_ready(self, timeout: float = 30) -> Self:
        self.wait_answering(f"{self.url}/readyz", timeout)
        return self


class DevServer(Server):
    def __init__(self, config: Path, database_url: str, log_path: Path, **env: str) -> None:
        args = ["dev", "--config", str(config), "--database-url", database_url]
        super().__init__(args, log_path, {"LG_DEPLOY_METRICS_PORT": "0", **env})


class Worker(Process):
    """``lg-deploy worker`` with its metrics port: /readyz, /healthz and /metrics."""

    def __init__(self, log_path: Path, env: dict[str, str], command: Path = LG_DEPLOY) -> None:
        self.metrics_port = free_port()
        self.url = f"http://127.0.0.1:{self.metrics_port}"
        env = {"LG_DEPLOY_METRICS_PORT": str(self.metrics_port), **env}
        super().__init__(["worker"], log_path, env, command)

    def wait_ready(self, timeout: float = 30) -> Self:
        self.wait_answering(f"{self.url}/readyz", timeout)
        return self

    def metrics(self) -> Metrics:
        return scrape(self.url)


class Fleet:
    """API and worker processes sharing one database and one queue; all stopped by
    ``stop_all``."""

    def __init__(self, folder: Path, **env: str) -> None:
        self.folder = folder
        self.env = {
            "LG_DEPLOY_LEASE_S": "2",
            "LG_DEPLOY_RECONCILE_INTERVAL_S": "0.5",
            "LG_DEPLOY_STARTUP_TIMEOUT_S": "10",
            "LG_DEPLOY_DRAIN_S": "1",
            "LG_DEPLOY_LOG_LEVEL": "INFO",
            **env,
        }
        self.processes: list[Process] = []
        self._count = 0

    def _log(self, kind: str) -> Path:
        self._count += 1
        return self.folder / f"{kind}-{self._count}.log"

    def api(self, **env: str) -> Server:
        server = Server(["api"], self._log("api"), {**self.env, **env})
        self.processes.append(server.start())
        return server.wait_ready()

    def worker(self, **env: str) -> Worker:
        [worker] = self.start_workers(1, **env)
        return worker

    def start_workers(self, count: int, **env: str) -> list[Worker]:
        """``count`` more workers, all started before the first is waited for (they
        start side by side: faster than one by one)."""
        started = [Worker(self._log("worker"), {**self.env, **env}) for _ in range(count)]
        for worker in started:
            self.processes.append(worker.start())
        return [worker.wait_ready() for worker in started]

    def start(self, *, apis: int = 1, workers: int = 0, **env: str) -> list[Process]:
        """Start ``apis`` API and ``workers`` worker processes side by side, then wait
        until every one is ready (quicker than one after the other); APIs come first."""
        started: list[Server | Worker] = [
            *(Server(["api"], self._log("api"), {**self.env, **env}) for _ in range(apis)),
            *(Worker(self._log("worker"), {**self.env, **env}) for _ in range(workers)),
        ]
        for process in started:
            self.processes.append(process.start())
        for process in started:
            process.wait_ready()
        return list(started)

    @property
    def workers(self) -> list[Worker]:
        return [p for p in self.processes if isinstance(p, Worker)]

    def worker_with_pid(self, pid: int) -> Worker:
        [worker] = [w for w in self.workers if w.pid == pid]
        return worker

    def worker_total(self, name: str, **labels: str) -> float:
        """The sum of a metric over the workers still running."""
        return sum(w.metrics().value(name, **labels) for w in self.workers if w.running())

    def stop_all(self) -> None:
        for process in self.processes:
            process.stop()


@contextlib.contextmanager
def running(*processes: Process) -> Iterator[None]:
    """Stop every process on the way out, whatever happened."""
    try:
        yield
    finally:
        for process in processes:
            process.stop()


class Metrics:
    """A Prometheus text exposition, parsed."""

    def __init__(self, text: str) -> None:
        self.samples = [
            (sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        return sum(
            value
            for sample, have, value in self.samples
            if sample == name and labels.items() <= have.items()
        )

    def names(self) -> set[str]:
        return {name for name, _, _ in self.samples}


def scrape(base_url: str) -> Metrics:
    response = httpx.get(f"{base_url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return Metrics(response.text)


class HasUrl(Protocol):
    url: str


def post(server: HasUrl, graph_id: str, input: Any = None, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{server.url}/execute", json={"graph_id": graph_id, "input": input, **body}, timeout=10
    )


def submit(server: HasUrl, graph_id: str, input: Any = None, **body: Any) -> str:
    """POST /execute and return the new execution's id (202 expected)."""
    response = post(server, graph_id, input, **body)
    assert response.status_code == 202, response.text
    execution_id: str = response.json()["execution_id"]
    return execution_id


def record(server: HasUrl, execution_id: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/executions/{execution_id}", timeout=10)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def wait(server: HasUrl, execution_id: str, timeout: float = 60) -> dict[str, Any]:
    """GET /executions/{id}/wait: the record once terminal or interrupted."""
    response = httpx.get(
        f"{server.url}/executions/{execution_id}/wait",
        params={"timeout": timeout},
        timeout=timeout + 10,
    )
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


class RedisServer:
    """A throwaway redis-server on a port of its own, that a test may stop and restart."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            import pytest

            pytest.fail("redis-server is not installed (Debian: apt-get install redis-server)")
        self.binary = binary
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
