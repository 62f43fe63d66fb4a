"""The wheel the container images install: built from this tree, installed into a fresh
virtualenv, it holds every module and migration, and the images' and the chart's exact
command lines run from it: migrate, the API answers /readyz, the worker runs work."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_python import Chart

from tests.conftest import EXAMPLES, PG_ADMIN_URL, ROOT, PgAdmin, drop_queue, unique_queue_name
from tests.harness import Process, Server, Worker, running, submit, wait

PACKAGES = ("api", "core", "run", "worker")


@pytest.fixture(scope="session")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv with only the project's wheel installed in it; the dependencies
    come from the test environment's site-packages through a path entry (which adds the
    folder, not the editable install's import hook that lives there)."""
    folder = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(folder / "dist"), str(ROOT)],
        check=True, timeout=300,
    )  # fmt: skip
    [wheel] = (folder / "dist").glob("lg_deploy-*.whl")
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-deps", "--no-index", str(wheel)],
        check=True, timeout=300,
    )  # fmt: skip
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    (Path(site) / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_the_wheel_holds_every_module_migration_and_marker(wheel_venv: Path) -> None:
    """Every module of api/, core/, run/ and worker/ imports from the installed wheel (not
    from this tree), with every migration, the Alembic template, py.typed for each package
    and the one version of pyproject.toml."""
    probe = """
import importlib, importlib.metadata, json, pkgutil, sys
import lg_deploy
found = {}
for info in pkgutil.walk_packages(lg_deploy.__path__, "lg_deploy."):
    if info.name.endswith("migrations.env"):
        continue  # runs Alembic's migration context: only Alembic may import it
    module = importlib.import_module(info.name)
    found[info.name] = module.__file__
versions = importlib.import_module("lg_deploy.core.store.migrations.versions")
print(json.dumps({"modules": found, "version": importlib.metadata.version("lg-deploy"),
                  "versions_dir": versions.__path__[0], "prefix": sys.prefix}))
"""
    answer = subprocess.run(
        [str(wheel_venv / "bin" / "python"), "-c", probe],
        capture_output=True, text=True, check=True, timeout=120, cwd="/",
    )  # fmt: skip
    report = json.loads(answer.stdout)
    installed = Path(report["prefix"])
    assert all(Path(f).is_relative_to(installed) for f in report["modules"].values())
    expected = {
        "lg_deploy."
        + ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
    } - {"lg_deploy.core.store.migrations.env"}
    assert set(report["modules"]) == expected
    versions = Path(report["versions_dir"])
    repo_versions = {p.name for p in (ROOT / "core/store/migrations/versions").glob("0*.py")}
    assert {p.name for p in versions.glob("0*.py")} == repo_versions
    assert (versions.parent / "script.py.mako").is_file()
    lg_deploy = versions.parents[3]
    assert all((lg_deploy / package / "py.typed").is_file() for package in PACKAGES)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert report["version"] == pyproject["project"]["version"]


def exec_form(dockerfile: Path, instruction: str) -> list[str]:
    """The JSON array of an ENTRYPOINT or CMD line (exec form)."""
    [line] = [
        line for line in dockerfile.read_text().splitlines() if line.startswith(instruction + " ")
    ]
    command: list[str] = json.loads(line.removeprefix(instruction + " "))
    return command


def image_env(dockerfile: Path) -> dict[str, str]:
    """The LG_DEPLOY_* variables the last stage's ENV lines set."""
    text = dockerfile.read_text().replace("\\\n", " ")
    last_stage = text.rsplit("\nFROM ", 1)[1]
    env: dict[str, str] = {}
    for line in last_stage.splitlines():
        if line.startswith("ENV "):
            env |= dict(re.findall(r"(LG_DEPLOY_\w+)=(\S+)", line))
    return env


def chart_containers() -> dict[str, dict[str, Any]]:
    """The api, worker and migrate containers of the chart with its default values."""
    values = {
        "database": {"url": "postgresql+asyncpg://u:p@db/lgd"},
        "queue": {"url": "redis://redis:6379/0"},
    }
    with Chart.load(ROOT / "helm" / "lg-deploy") as chart:
        manifests = chart.render(values, name="demo", namespace="apps")
    found: dict[str, dict[str, Any]] = {}
    for name, text in manifests.items():
        if name.endswith(".txt"):
            continue
        for obj in yaml.safe_load_all(text):
            if obj and obj["kind"] in ("Deployment", "Job"):
                for container in obj["spec"]["template"]["spec"]["containers"]:
                    found[container["name"]] = container
    return found


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """A container's plain values (secrets are the test's own URLs instead)."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


@pytest.fixture
def backends(pg_admin: PgAdmin, redis_url: str) -> Iterator[dict[str, str]]:
    """A new, empty database (the migrate job's to fill) and a queue of its own."""
    name = unique_queue_name()
    pg_admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {
            "LG_DEPLOY_DATABASE_URL": fresh_database_url(name),
            "LG_DEPLOY_QUEUE_URL": redis_url,
            "LG_DEPLOY_QUEUE_NAME": name,
            "LG_DEPLOY_CONFIG": str(EXAMPLES),
        }
    finally:
        pg_admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        drop_queue(redis_url, name)


def fresh_database_url(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


@pytest.mark.postgres
@pytest.mark.redis
def test_the_images_command_lines_run_from_the_wheel(
    wheel_venv: Path, backends: dict[str, str], tmp_path: Path
) -> None:
    """The chart's migrate job, then the API image's and the worker image's ENTRYPOINT and
    arguments with their ENV and the chart's environment, run from the wheel as the
    containers would: the schema is made, the API answers /readyz, the worker runs work."""
    command = wheel_venv / "bin" / exec_form(ROOT / "Dockerfile.api", "ENTRYPOINT")[0]
    containers = chart_containers()
    images = {"api": ROOT / "Dockerfile.api", "worker": ROOT / "Dockerfile.worker"}
    for role, dockerfile in images.items():
        assert exec_form(dockerfile, "ENTRYPOINT") == ["lg-deploy"]
        assert exec_form(dockerfile, "CMD") == containers[role]["args"] == [role]
    assert containers["migrate"]["args"] == ["migrate"]

    def env_of(role: str) -> dict[str, str]:
        image = image_env(images.get(role, images["worker"]))
        return image | container_env(containers[role]) | backends

    migrate = Process(
        containers["migrate"]["args"], tmp_path / "migrate.log", env_of("migrate"), command
    )
    with running(migrate.start()):
        assert migrate.wait(120) == 0, migrate.log_tail()
    api = Server(containers["api"]["args"], tmp_path / "api.log", env_of("api"))
    api.args = containers["api"]["args"]  # the port comes from the environment, as in a pod
    api.env["LG_DEPLOY_PORT"] = str(api.port)
    api.command = command
    worker = Worker(tmp_path / "worker.log", env_of("worker"))
    worker.env["LG_DEPLOY_METRICS_PORT"] = str(worker.metrics_port)
    worker.command = command
    assert api.env["LG_DEPLOY_HOST"] == "0.0.0.0"
    with running(api.start(), worker.start()):
        api.wait_ready()
        worker.wait_ready()
        done = wait(api, submit(api, "steps", {"text": "from the wheel"}))
        assert done["status"] == "COMPLETED"
        assert done["output"]["text"] == "FROM THE WHEEL!"
