"""What an operator sees: every metric the dashboard and the alert rules use is exported
by a running API or worker, promtool finds nothing wrong in them, and a real Prometheus
scraping a fleet answers the dashboard's main queries with what happened."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from observability.promql import committed_metric_families, exposed_metric_families
from tests.harness import Fleet, Process, Server, Worker, free_port, poll, submit, wait

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "helm" / "lg-deploy" / "files" / "dashboards" / "lg-deploy.json"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: apt-get install prometheus")
    return found


def start(fleet: Fleet) -> tuple[Server, Worker]:
    return fleet.api(), fleet.worker(LG_DEPLOY_WORKER_CONCURRENCY="4")


def run_workload(api: Server) -> None:
    """Four executions completed, one failed and one paused, every result recorded."""
    ids = [submit(api, "steps", {"text": str(i)}) for i in range(4)]
    ids += [submit(api, "fail", {"message": "no"}), submit(api, "approval", {"request": "r"})]
    assert [wait(api, e)["status"] for e in ids] == ["COMPLETED"] * 4 + ["FAILED", "INTERRUPTED"]


def test_every_metric_the_dashboard_and_rules_use_is_exported(fleet: Fleet) -> None:
    """The metric families the committed dashboard and alert rules query (read from their
    PromQL) all appear on a running API's or worker's /metrics."""
    api, worker = start(fleet)
    run_workload(api)
    exposed = set()
    for url in (api.url, worker.url):
        exposed |= exposed_metric_families(httpx.get(f"{url}/metrics").text)
    used = committed_metric_families()
    assert used, "the dashboard and the rules query nothing"
    assert used - exposed == set()


def test_promtool_finds_nothing_wrong_in_the_metrics(fleet: Fleet) -> None:
    """`promtool check metrics` is clean on what the API and a worker expose."""
    api, worker = start(fleet)
    run_workload(api)
    for url in (api.url, worker.url):
        checked = subprocess.run(
            [promtool(), "check", "metrics"],
            input=httpx.get(f"{url}/metrics").text,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (checked.returncode, checked.stdout + checked.stderr) == (0, ""), url


class Prometheus(Process):
    """A real Prometheus server (Debian's package) scraping the given targets every second."""

    def __init__(self, folder: Path, targets: dict[str, str]) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is missing: apt-get install prometheus")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = folder / "prometheus.yml"
        jobs = [
            {"job_name": job, "static_configs": [{"targets": [target]}]}
            for job, target in targets.items()
        ]
        config.write_text(json.dumps({"global": {"scrape_interval": "1s"}, "scrape_configs": jobs}))
        args = [
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        super().__init__(args, folder / "prometheus.log", {}, command=Path(binary))

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        assert answer.status_code == 200, answer.text
        result: list[dict[str, Any]] = answer.json()["data"]["result"]
        return result


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    started: list[Prometheus] = []

    def start(targets: dict[str, str]) -> Prometheus:
        server = Prometheus(tmp_path, targets)
        started.append(server.start())
        server.wait_answering(f"{server.url}/-/ready")
        return server

    yield start
    for server in started:
        server.stop()


def panel_queries() -> dict[str, list[str]]:
    """Panel title -> its PromQL, with Grafana's variables filled in as a user would."""
    found: dict[str, list[str]] = {}

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                expr = target["expr"].replace("$graph_id", ".*")
                expr = expr.replace("$__rate_interval", "1m").replace("$__range", "5m")
                found.setdefault(panel["title"], []).append(expr)
            walk(panel.get("panels", []))

    walk(json.loads(DASHBOARD.read_text())["panels"])
    return found


def test_prometheus_answers_the_dashboards_main_queries(fleet: Fleet, prometheus_for: Any) -> None:
    """A real Prometheus scrapes an API and a worker that ran six executions (four done,
    one failed, one paused): the dashboard's main panels show exactly that."""
    api, worker = start(fleet)
    prometheus = prometheus_for(
        {"api": api.url.removeprefix("http://"), "worker": worker.url.removeprefix("http://")}
    )
    panels = panel_queries()

    def value(expr: str, **labels: str) -> float:
        for series in prometheus.query(expr):
            if labels.items() <= series["metric"].items():
                return float(series["value"][1])
        return math.nan

    # Prometheus has seen the counters at zero before the work, as it would in production.
    scrapes = "count_over_time(lg_deploy_worker_slots[1m])"
    poll(lambda: value(scrapes) >= 3, timeout=30, what="three scrapes")
    run_workload(api)
    finished = "sum(lg_deploy_executions_finished_total)"
    poll(lambda: value(finished) == 6, timeout=30, what="Prometheus seeing six results")
    poll(lambda: value(scrapes) >= 6, timeout=30, what="scrapes after the work")
    [live] = panels["Live workers"][:1]
    assert value(live) == 1
    [unfinished] = panels["Unfinished executions by status"]
    assert value(unfinished, status="INTERRUPTED") == 1
    assert value(unfinished, status="QUEUED") == 0
    ratio = value(panels["Success ratio"][0])
    assert ratio == pytest.approx(0.8, abs=0.05)
    # A new error type's series starts at its first failure, which a rate cannot see (a
    # Prometheus limit: the type is unknown until then); the panel lists it all the same.
    [failures] = panels["Failures by graph and error type"]
    assert not math.isnan(value(failures, graph_id="fail", error_type="ValueError"))
    assert math.isnan(value(failures, graph_id="steps"))
    [health] = panels["Backend health"]
    assert (value(health, backend="database"), value(health, backend="queue")) == (1, 1)
    configured, busy = panels["Worker slots"]
    assert (value(configured), value(busy)) == (4, 0)
    assert not math.isnan(value(panels["Queue wait"][0]))
    assert not math.isnan(value(panels["Run time"][0]))
    # A route's series also starts at its first request: when every submission fell between
    # two scrapes, its rate is still zero. Once Prometheus has the series, traffic shows.
    [requests] = panels["API requests"]
    assert not math.isnan(value(requests, route="/execute", status="202"))
    wait(api, submit(api, "steps", {"text": "more"}))
    poll(
        lambda: value(requests, route="/execute", status="202") > 0,
        timeout=30,
        what="the API requests panel showing the new submission",
    )
