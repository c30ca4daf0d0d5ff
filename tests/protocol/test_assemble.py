"""A completion unfolded into chunks folds back into the same completion."""

from __future__ import annotations

from chatgate.protocol import ChatCompletion
from chatgate.protocol.assemble import Assembler, as_chunks, fresh
from chatgate.protocol.responses import (
    AssistantMessage,
    Choice,
    ChoiceLogprobs,
    FunctionCall,
    TokenLogprob,
    ToolCall,
    Usage,
)


def completion() -> ChatCompletion:
    lp = ChoiceLogprobs(content=[TokenLogprob(token="Hi", logprob=-0.5, bytes=[72, 105])])
    return ChatCompletion(
        id="chatcmpl-1", created=1, model="m",
        choices=[
            Choice(index=0, message=AssistantMessage(content="Hi there"), logprobs=lp, finish_reason="stop"),
            Choice(index=1, message=AssistantMessage(tool_calls=[
                ToolCall(id="call_a", function=FunctionCall(name="f", arguments='{"x": 1}')),
                ToolCall(id="call_b", function=FunctionCall(name="g", arguments="{}")),
            ]), finish_reason="tool_calls"),
        ],
        usage=Usage.of(7, 5),
    )  # fmt: skip


def test_chunks_fold_back_into_the_completion() -> None:
    original = completion()
    chunks = list(as_chunks(original, include_usage=True))
    assert chunks[-1].choices == [] and chunks[-1].usage == original.usage
    assembler = Assembler()
    for chunk in chunks:
        assembler.add(chunk)
    assert assembler.completion() == original


def test_an_unfinished_stream_is_no_completion_and_fresh_gets_a_new_id() -> None:
    assembler = Assembler()
    chunks = list(as_chunks(completion(), include_usage=False))
    assert all(c.choices for c in chunks)
    for chunk in chunks[:2]:
        assembler.add(chunk)
    assert assembler.completion() is None
    again = fresh(completion())
    assert again.id != "chatcmpl-1" and again.choices == completion().choices
