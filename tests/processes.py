"""Real ``lg-deploy`` processes for end-to-end tests, always cleaned up."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, Self

import httpx

LG_DEPLOY = Path(sys.executable).parent / "lg-deploy"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Process:
    """One ``lg-deploy`` command running in the background, its output in a log file."""

    def __init__(self, args: Sequence[str], log_path: Path, env: dict[str, str]) -> None:
        self.args = list(args)
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(LG_DEPLOY), *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        log.close()
        return self

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        """SIGKILL whatever is still running (the test may have stopped it already); a
        SIGSTOPped process is continued so that the kill is delivered."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class DevServer(Process):
    def __init__(self, config: Path, database_url: str, log_path: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            [
                "dev",
                "--config",
                str(config),
                "--port",
                str(self.port),
                "--database-url",
                database_url,
            ],
            log_path,
            env,
        )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"lg-deploy dev exited early:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"lg-deploy dev never became ready:\n{self.log_tail()}")


def wait_for_log(process: Process, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in (
        process.log_path.read_text(errors="replace") if process.log_path.exists() else ""
    ):
        assert process.proc is not None
        if process.proc.poll() is not None:
            raise AssertionError(f"{process.args[0]} exited early:\n{process.log_tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{process.args[0]} never logged {text!r}:\n{process.log_tail()}")
        time.sleep(0.05)


class ApiServer(Process):
    def __init__(self, log_path: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(["api", "--port", str(self.port)], log_path, env)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"lg-deploy api exited early:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"lg-deploy api never became ready:\n{self.log_tail()}")


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

    def api(self, **env: str) -> ApiServer:
        self._count += 1
        server = ApiServer(self.folder / f"api-{self._count}.log", {**self.env, **env})
        self.processes.append(server.start())
        server.wait_ready()
        return server

    def worker(self, **env: str) -> Process:
        self._count += 1
        worker = Process(["worker"], self.folder / f"worker-{self._count}.log", {**self.env, **env})
        self.processes.append(worker.start())
        wait_for_log(worker, "serving, concurrency")
        return worker

    def worker_logs(self) -> str:
        return "".join(
            p.log_path.read_text(errors="replace")
            for p in self.processes
            if p.args[0] == "worker" and p.log_path.exists()
        )

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


class HasUrl(Protocol):
    url: str


def submit(server: HasUrl, graph_id: str, input: Any = None, **body: Any) -> str:
    """POST /execute and return the new execution's id (202 expected)."""
    response = httpx.post(
        f"{server.url}/execute", json={"graph_id": graph_id, "input": input, **body}, timeout=10
    )
    assert response.status_code == 202, response.text
    execution_id: str = response.json()["execution_id"]
    return execution_id


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


def wait_until(condition: Callable[[], bool], timeout: float = 30, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout} s"
        time.sleep(0.02)
