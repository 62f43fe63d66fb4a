"""Reading langgraph.json: the three kinds of entry, env, and clear start-up errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver

from lg_deploy.core.errors import GraphConfigError, NotFound
from lg_deploy.core.graphs import find_config, load_registry
from tests.conftest import EXAMPLES

GRAPH_FILE = '''
from typing_extensions import TypedDict
from langgraph.graph import StateGraph, START, END

class S(TypedDict, total=False):
    n: int

def inc(state: S) -> S:
    return {"n": state.get("n", 0) + 1}

builder = StateGraph(S)
builder.add_node("inc", inc)
builder.add_edge(START, "inc")
builder.add_edge("inc", END)
graph = builder.compile()

def factory(config):
    """A graph made per execution."""
    assert "configurable" in config
    return builder

async def async_factory(config):
    return graph

not_a_graph = 42
'''


def write_config(tmp_path: Path, graphs: dict[str, object], **extra: object) -> Path:
    (tmp_path / "agent.py").write_text(GRAPH_FILE)
    path = tmp_path / "langgraph.json"
    path.write_text(json.dumps({"graphs": graphs, **extra}))
    return path


def test_examples_load() -> None:
    """The shipped examples/langgraph.json loads all four graphs."""
    registry = load_registry(EXAMPLES)
    assert set(registry.graphs) == {"steps", "agent", "approval", "slow"}


@pytest.mark.parametrize("attr", ["graph", "builder", "factory", "async_factory"])
async def test_every_kind_of_entry_runs(tmp_path: Path, attr: str) -> None:
    """A compiled graph, a builder, a factory and an async factory all build and run with
    the runtime's checkpointer attached."""
    registry = load_registry(write_config(tmp_path, {"g": f"./agent.py:{attr}"}))
    config: RunnableConfig = {"configurable": {"thread_id": "t"}}
    saver = InMemorySaver()
    graph = await registry.build("g", config, saver)
    assert graph.checkpointer is saver
    assert await graph.ainvoke({"n": 1}, config) == {"n": 2}
    assert (await graph.aget_state(config)).values == {"n": 2}


@pytest.mark.parametrize(
    ("attr", "shared"), [("graph", True), ("builder", True), ("factory", False)]
)
async def test_a_graph_is_bound_to_a_checkpointer_once_a_factory_called_each_time(
    tmp_path: Path, attr: str, shared: bool
) -> None:
    """A compiled graph or a builder is bound once per checkpointer and shared by every
    execution (LangGraph keeps a run's state outside the graph); a factory may build from
    each execution's config, so it is called every time."""
    registry = load_registry(write_config(tmp_path, {"g": f"./agent.py:{attr}"}))
    first, second = InMemorySaver(), InMemorySaver()
    configs: list[RunnableConfig] = [{"configurable": {"thread_id": t}} for t in ("a", "b")]
    graphs = [await registry.build("g", config, first) for config in configs]
    assert (graphs[0] is graphs[1]) is shared
    other = await registry.build("g", configs[0], second)
    assert other is not graphs[0]
    assert other.checkpointer is second
    pairs = enumerate(zip(graphs, configs, strict=True))
    results = [await graph.ainvoke({"n": i}, config) for i, (graph, config) in pairs]
    assert results == [{"n": 1}, {"n": 2}]
    assert (await graphs[0].aget_state(configs[1])).values == {"n": 2}


def test_factory_description_comes_from_its_docstring(tmp_path: Path) -> None:
    """A factory's docstring describes the graph unless the entry gives a description."""
    registry = load_registry(
        write_config(
            tmp_path,
            {"f": "./agent.py:factory", "d": {"path": "./agent.py:graph", "description": "D"}},
        )
    )
    assert registry.get("f").description == "A graph made per execution."
    assert registry.get("d").description == "D"
    with pytest.raises(NotFound):
        registry.get("missing")


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("./missing.py:graph", "does not exist"),
        ("./agent.py:nope", "has no attribute 'nope'"),
        ("./agent.py:not_a_graph", "not a graph"),
        ("./agent.py", 'expected "./file.py:attribute"'),
        ("./broken.py:graph", "importing"),
        ("no_such_module_xyz:graph", "importing no_such_module_xyz failed"),
    ],
)
def test_broken_entry_names_file_graph_and_reason(tmp_path: Path, entry: str, reason: str) -> None:
    """A broken entry fails at load with the config path, the graph id and the reason."""
    (tmp_path / "broken.py").write_text("raise RuntimeError('kaput')\n")
    path = write_config(tmp_path, {"good": "./agent.py:graph", "bad": entry})
    with pytest.raises(GraphConfigError) as info:
        load_registry(path)
    assert info.value.graph_id == "bad"
    assert info.value.path == str(path)
    assert reason in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "cannot read it"),
        ('{"graphs": []}', '"graphs" object'),
        ('{"graphs": {}}', "no graphs"),
    ],
)
def test_broken_config_file(tmp_path: Path, content: str, reason: str) -> None:
    """An unreadable or empty langgraph.json fails with its path and the reason."""
    path = tmp_path / "langgraph.json"
    path.write_text(content)
    with pytest.raises(GraphConfigError, match=reason):
        load_registry(path)


def test_config_is_found_explicitly_or_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--config wins; otherwise ./langgraph.json; neither gives a clear error."""
    path = write_config(tmp_path, {"g": "./agent.py:graph"})
    assert find_config(str(path)) == path
    monkeypatch.chdir(tmp_path)
    assert find_config(None) == path
    monkeypatch.chdir(tmp_path.parent)
    with pytest.raises(GraphConfigError, match="LG_DEPLOY_CONFIG"):
        find_config(None)


def test_env_object_and_dotenv_file_fill_missing_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "env" as an object or a .env path sets variables the process does not already set."""
    monkeypatch.delenv("LGD_TEST_A", raising=False)
    monkeypatch.setenv("LGD_TEST_KEEP", "mine")
    load_registry(
        write_config(
            tmp_path, {"g": "./agent.py:graph"}, env={"LGD_TEST_A": "1", "LGD_TEST_KEEP": "x"}
        )
    )
    assert os.environ["LGD_TEST_A"] == "1"
    assert os.environ["LGD_TEST_KEEP"] == "mine"
    monkeypatch.delenv("LGD_TEST_B", raising=False)
    (tmp_path / ".env").write_text("LGD_TEST_B=from-dotenv\n")
    load_registry(write_config(tmp_path, {"g": "./agent.py:graph"}, env=".env"))
    assert os.environ["LGD_TEST_B"] == "from-dotenv"
    monkeypatch.delenv("LGD_TEST_A")
    monkeypatch.delenv("LGD_TEST_B")
    with pytest.raises(GraphConfigError, match="env file"):
        load_registry(write_config(tmp_path, {"g": "./agent.py:graph"}, env="missing.env"))


def test_a_graph_may_have_its_own_durability(tmp_path: Path) -> None:
    """A top-level "durability" object gives a graph its own LangGraph durability; a
    mode LangGraph lacks, or a graph the file does not declare, stops the start-up."""
    graphs: dict[str, object] = {"g": "./agent.py:graph", "h": "./agent.py:graph"}
    registry = load_registry(write_config(tmp_path, graphs, durability={"g": "exit"}))
    assert (registry.graphs["g"].durability, registry.graphs["h"].durability) == ("exit", None)
    for section, reason in (
        ({"g": "sometimes"}, "durability 'sometimes': use one of sync, async, exit"),
        ({"nope": "sync"}, "has a durability but is not a graph"),
        (["g"], '"durability" must be an object'),
    ):
        with pytest.raises(GraphConfigError) as info:
            load_registry(write_config(tmp_path, graphs, durability=section))
        assert reason in str(info.value)
