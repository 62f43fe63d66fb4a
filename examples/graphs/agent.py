"""Tool-calling agent driven by a scripted fake chat model: no API keys, real tool calls.

The model is a langchain-core ``BaseChatModel`` subclass that reads the conversation and
decides deterministically what to say: for a question like "what is 2 + 3?" it emits a
tool call (``add`` with ``a=2, b=3``), and once the ``ToolMessage`` comes back it answers
with the number it read from that message. The tools really run, inside
``langgraph.prebuilt.ToolNode``, so the final answer depends on the tool's output.

The reply is computed from the messages rather than popped from an iterator (as
``GenericFakeChatModel`` does), so a run that is replayed or resumed after a crash gets
exactly the same turns. ``make_graph`` is a factory: the runtime calls it with a
``RunnableConfig`` and gets a freshly built, checkpointer-less compiled graph.

Input: ``{"messages": [{"role": "user", "content": "what is 2 + 3?"}]}``.
Output: ``{"messages": [human, ai(tool_call add), tool("5"), ai("The answer is 5.")]}``.
"""

import re
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.messages.tool import tool_call
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool, tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from typing_extensions import TypedDict

# "2 + 3", "4*5", "6 x 7": two integers around an operator the tools can handle.
_QUESTION = re.compile(r"(-?\d+)\s*([+*x])\s*(-?\d+)")
_TOOL_FOR_OPERATOR = {"+": "add", "*": "multiply", "x": "multiply"}


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


TOOLS: list[BaseTool] = [add, multiply]


# A separate input schema: the JSON schema of ``list[AnyMessage]`` is a ``oneOf`` over every
# message class, which a ``{"role", "content"}`` dict matches several times over, so a strict
# JSON-schema validator would reject the most common input. The channel (with its
# ``add_messages`` reducer) still comes from ``AgentState``: LangGraph allows an input schema
# to redeclare a reducer key as a plain value.
class AgentInput(TypedDict):
    """What a caller sends: messages as plain dicts, e.g. ``{"role": "user", "content": ...}``."""

    messages: list[dict[str, Any]]


class AgentState(TypedDict):
    """Chat history; ``add_messages`` appends, and coerces ``{"role", "content"}`` dicts."""

    messages: Annotated[list[AnyMessage], add_messages]


class ScriptedCalculatorModel(BaseChatModel):
    """Fake chat model that calls a calculator tool, then reports the tool's result.

    It only calls tools that were bound with ``bind_tools``, like a real model would.
    """

    @property
    def _llm_type(self) -> str:
        return "scripted-calculator"

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools the way provider integrations do: as OpenAI-format tool schemas."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        return self.bind(tools=formatted, **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        bound = {t["function"]["name"] for t in kwargs.get("tools", [])}
        reply = _next_turn(messages, bound)
        return ChatResult(generations=[ChatGeneration(message=reply)])


def _next_turn(messages: Sequence[BaseMessage], bound_tools: set[str]) -> AIMessage:
    """Decide the model's next message from the conversation alone (deterministic)."""
    if not messages:
        return AIMessage(content="Ask me to add or multiply two integers.")
    last = messages[-1]
    if isinstance(last, ToolMessage):
        return AIMessage(content=f"The answer is {_text(last)}.")
    if not isinstance(last, HumanMessage):
        return AIMessage(content="Ask me to add or multiply two integers.")
    match = _QUESTION.search(_text(last))
    if match is None:
        return AIMessage(content="I can only add or multiply two integers, e.g. 'what is 2 + 3?'.")
    name = _TOOL_FOR_OPERATOR[match.group(2)]
    if name not in bound_tools:
        return AIMessage(content=f"I would need the '{name}' tool for that.")
    # Deterministic id: the same conversation always yields the same tool call.
    turn = sum(isinstance(m, AIMessage) for m in messages)
    args = {"a": int(match.group(1)), "b": int(match.group(3))}
    return AIMessage(content="", tool_calls=[tool_call(name=name, args=args, id=f"call_{turn}")])


def _text(message: BaseMessage) -> str:
    """Plain text of a message whose content may be a string or a list of content blocks."""
    if isinstance(message.content, str):
        return message.content
    parts = [
        block if isinstance(block, str) else str(block.get("text", "")) for block in message.content
    ]
    return "".join(parts)


def make_graph(config: RunnableConfig) -> CompiledStateGraph:
    """Build the agent graph; the runtime calls this per execution with its config.

    ``config`` is accepted because the runtime's factory contract passes it; this example
    needs nothing from it. Compiled without a checkpointer: the runtime attaches its own.
    """
    model = ScriptedCalculatorModel().bind_tools(TOOLS)

    async def agent(state: AgentState) -> dict[str, list[AnyMessage]]:
        """Ask the model for its next turn: a tool call or the final answer."""
        return {"messages": [await model.ainvoke(state["messages"])]}

    builder = StateGraph(AgentState, input_schema=AgentInput)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode(TOOLS))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder.compile()
