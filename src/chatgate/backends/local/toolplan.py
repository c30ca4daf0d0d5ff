"""What a request asks of tools and output format, turned into a grammar and a response shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from chatgate.backends.local.grammar import GrammarSpec, ToolSpec, json_object_grammar, schema_grammar, tools_grammar
from chatgate.backends.local.toolcalls import ToolCallParser
from chatgate.config import StructuredOutputConfig
from chatgate.protocol import ChatCompletionRequest
from chatgate.protocol.responses import FinishReason, FunctionCall, ToolCall

Mode = Literal["none", "auto", "required", "named"]


@dataclass
class ToolPlan:
    """The tools a request offers, how the model may use them, and the response shape."""

    definitions: list[dict[str, Any]] = field(default_factory=list)
    """The tools as OpenAI defines them, for the prompt."""
    callable: list[ToolSpec] = field(default_factory=list)
    mode: Mode = "none"
    parallel: bool = True
    legacy: bool = False
    """``functions``/``function_call``: answered with ``message.function_call``."""

    @property
    def active(self) -> bool:
        return self.mode != "none" and bool(self.callable)

    def grammar(self, limits: StructuredOutputConfig) -> GrammarSpec | None:
        if not self.active:
            return None
        return tools_grammar(self.callable, allow_content=self.mode == "auto", parallel=self.parallel, limits=limits)

    def finish_reason(self, parser: ToolCallParser, engine_reason: FinishReason) -> FinishReason:
        if engine_reason == "length" or not parser.calls:
            return engine_reason
        if self.mode == "named":
            return "stop"  # as OpenAI does for a forced function
        return "function_call" if self.legacy else "tool_calls"

    def tool_calls(self, parser: ToolCallParser) -> list[ToolCall] | None:
        if self.legacy or not parser.calls:
            return None
        return [ToolCall(id=c["id"], function=FunctionCall(name=c["name"], arguments=c["arguments"]))
                for c in parser.calls]  # fmt: skip

    def function_call(self, parser: ToolCallParser) -> FunctionCall | None:
        if not self.legacy or not parser.calls:
            return None
        call = parser.calls[0]
        return FunctionCall(name=call["name"], arguments=call["arguments"])


def plan_tools(req: ChatCompletionRequest) -> ToolPlan:
    if req.tools:
        functions = [t.function for t in req.tools if t.function is not None]
        choice = req.tool_choice
        legacy = False
    elif req.functions:
        functions = list(req.functions)
        fc = req.function_call
        choice = fc if isinstance(fc, str) or fc is None else None
        named = None if isinstance(fc, str) or fc is None else fc.name
        plan = _plan(functions, choice, named, legacy=True, parallel=False)
        return plan
    else:
        return ToolPlan()
    named = None
    if choice is not None and not isinstance(choice, str) and choice.function is not None:
        named = choice.function.name
    mode_choice = choice if isinstance(choice, str) or choice is None else None
    parallel = req.parallel_tool_calls is not False
    return _plan(functions, mode_choice, named, legacy=legacy, parallel=parallel)


def _plan(functions: list[Any], choice: str | None, named: str | None, *, legacy: bool, parallel: bool) -> ToolPlan:
    definitions = [{"type": "function", "function": f.model_dump(exclude_none=True, by_alias=True)} for f in functions]
    specs = [ToolSpec(name=f.name, parameters=f.parameter_schema()) for f in functions]
    if named is not None:
        return ToolPlan(definitions, [s for s in specs if s.name == named], "named", parallel=False, legacy=legacy)
    mode: Mode = "auto" if choice in (None, "auto") else "required" if choice == "required" else "none"
    return ToolPlan(definitions, specs, mode, parallel=parallel and not legacy, legacy=legacy)


def format_grammar(req: ChatCompletionRequest, limits: StructuredOutputConfig) -> GrammarSpec | None:
    """The grammar ``response_format`` asks for, if any."""
    rf = req.response_format
    if rf is None or rf.type == "text":
        return None
    if rf.type == "json_object":
        return json_object_grammar()
    assert rf.json_schema is not None and rf.json_schema.schema_ is not None  # checked by validation
    return schema_grammar(rf.json_schema.schema_, "response_format", limits)
