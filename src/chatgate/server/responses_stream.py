"""A streamed chat completion as the Responses API's semantic events.

:class:`EventWriter` is fed the chat chunks of the answer and says which events they make, each with its
``sequence_number``: ``response.created``, ``response.in_progress``; per output item
``response.output_item.added``, (a message:) ``response.content_part.added``, ``response.output_text.delta``…,
``response.output_text.done``, ``response.content_part.done``, (a call:) ``response.function_call_arguments.delta``…,
``response.function_call_arguments.done``; ``response.output_item.done``; then ``response.completed`` (or
``response.incomplete``), or ``error`` and ``response.failed`` when the answer fails midway. Its
:attr:`EventWriter.response` is then the whole response, as a plain request would have answered it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from chatgate.errors import ChatgateError
from chatgate.protocol import ChatCompletionChunk
from chatgate.protocol.responses import ToolCallDelta
from chatgate.protocol.responses_objects import (
    ArgumentsDeltaEvent,
    ArgumentsDoneEvent,
    ContentPartEvent,
    ErrorEvent,
    FunctionCallItem,
    ItemStatus,
    Logprob,
    OutputItem,
    OutputItemEvent,
    OutputMessage,
    OutputText,
    Response,
    ResponseError,
    ResponseEvent,
    StreamEvent,
    TextDeltaEvent,
    TextDoneEvent,
    new_id,
)
from chatgate.server.responses_translate import finish_status, logprobs_of, usage_of

OBFUSCATION_BLOCK = 16
"""Delta events are padded (``obfuscation``) to a multiple of this many characters, as OpenAI's are."""


@dataclass
class _Message:
    index: int
    id: str
    text: list[str] = field(default_factory=list)
    logprobs: list[Logprob] = field(default_factory=list)


@dataclass
class _Call:
    index: int
    id: str
    call_id: str
    name: str
    arguments: list[str] = field(default_factory=list)


class EventWriter:
    def __init__(self, response: Response, *, obfuscate: bool = True) -> None:
        self.response = response
        self.obfuscate = obfuscate
        self.output: list[OutputItem] = []
        self._seq = 0
        self._message: _Message | None = None
        self._calls: dict[int, _Call] = {}
        self._finish_status = "completed"

    def _next(self) -> int:
        self._seq += 1
        return self._seq - 1

    def _padding(self, delta: str) -> str | None:
        if not self.obfuscate:
            return None
        return secrets.token_urlsafe(OBFUSCATION_BLOCK)[: OBFUSCATION_BLOCK - len(delta) % OBFUSCATION_BLOCK]

    def start(self) -> list[StreamEvent]:
        return [ResponseEvent(type=kind, sequence_number=self._next(), response=self.response)
                for kind in ("response.created", "response.in_progress")]  # fmt: skip

    def add(self, chunk: ChatCompletionChunk) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        if chunk.usage is not None:
            self.response = self.response.model_copy(update={"usage": usage_of(chunk.usage)})
        for choice in chunk.choices[:1]:
            delta = choice.delta
            if delta.content:
                events += self._text(delta.content, logprobs_of(choice.logprobs))
            for call in delta.tool_calls or []:
                events += self._call(call)
            if choice.finish_reason is not None:
                status, incomplete = finish_status(choice.finish_reason)
                self._finish_status = status
                self.response = self.response.model_copy(update={"incomplete_details": incomplete})
        return events

    def _text(self, text: str, logprobs: list[Logprob]) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        message = self._message
        if message is None:
            events += self._close_calls()
            message = self._message = _Message(index=len(self.output) + len(self._calls), id=new_id("msg"))
            item = OutputMessage(id=message.id, status="in_progress", content=[])
            events.append(OutputItemEvent(type="response.output_item.added", sequence_number=self._next(),
                                          output_index=message.index, item=item))  # fmt: skip
            events.append(ContentPartEvent(type="response.content_part.added", sequence_number=self._next(),
                                           item_id=message.id, output_index=message.index, content_index=0,
                                           part=OutputText(text="")))  # fmt: skip
        message.text.append(text)
        message.logprobs += logprobs
        events.append(TextDeltaEvent(sequence_number=self._next(), item_id=message.id, output_index=message.index,
                                     content_index=0, delta=text, logprobs=logprobs,
                                     obfuscation=self._padding(text)))  # fmt: skip
        return events

    def _call(self, delta: ToolCallDelta) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        call = self._calls.get(delta.index)
        fn = delta.function or {}
        if call is None:
            events += self._close_message()
            call = _Call(index=len(self.output) + len(self._calls), id=new_id("fc"), call_id=delta.id or new_id("call"),
                         name=fn.get("name", ""))  # fmt: skip
            self._calls[delta.index] = call
            item = FunctionCallItem(
                id=call.id, status="in_progress", arguments="", call_id=call.call_id, name=call.name
            )
            events.append(OutputItemEvent(type="response.output_item.added", sequence_number=self._next(),
                                          output_index=call.index, item=item))  # fmt: skip
        arguments = fn.get("arguments", "")
        if arguments:
            call.arguments.append(arguments)
            events.append(ArgumentsDeltaEvent(sequence_number=self._next(), item_id=call.id, output_index=call.index,
                                              delta=arguments, obfuscation=self._padding(arguments)))  # fmt: skip
        return events

    def _close_message(self) -> list[StreamEvent]:
        message, self._message = self._message, None
        if message is None:
            return []
        status: ItemStatus = "incomplete" if self._finish_status == "incomplete" else "completed"
        text = "".join(message.text)
        part = OutputText(text=text, logprobs=message.logprobs)
        item = OutputMessage(id=message.id, status=status, content=[part])
        self.output.append(item)
        return [
            TextDoneEvent(sequence_number=self._next(), item_id=message.id, output_index=message.index,
                          content_index=0, text=text, logprobs=message.logprobs),
            ContentPartEvent(type="response.content_part.done", sequence_number=self._next(), item_id=message.id,
                             output_index=message.index, content_index=0, part=part),
            OutputItemEvent(type="response.output_item.done", sequence_number=self._next(),
                            output_index=message.index, item=item),
        ]  # fmt: skip

    def _close_calls(self) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        for call in sorted(self._calls.values(), key=lambda c: c.index):
            arguments = "".join(call.arguments)
            item = FunctionCallItem(id=call.id, status="completed", arguments=arguments, call_id=call.call_id,
                                    name=call.name)  # fmt: skip
            self.output.append(item)
            events.append(ArgumentsDoneEvent(sequence_number=self._next(), item_id=call.id, output_index=call.index,
                                             name=call.name, arguments=arguments))  # fmt: skip
            events.append(OutputItemEvent(type="response.output_item.done", sequence_number=self._next(),
                                          output_index=call.index, item=item))  # fmt: skip
        self._calls = {}
        return events

    def end(self, model: str | None = None) -> list[StreamEvent]:
        """The answer is whole: close what is open; ``response.completed`` (or ``.incomplete``)."""
        events = self._close_message() + self._close_calls()
        if not self.output:  # an empty answer is still one (empty) message, as a plain request's
            events += self._text("", []) + self._close_message()
            events = [e for e in events if not isinstance(e, TextDeltaEvent)]
        status = "incomplete" if self._finish_status == "incomplete" else "completed"
        self.response = self.response.model_copy(update={"status": status, "output": self.output,
                                                         "model": model or self.response.model})  # fmt: skip
        kind = "response.incomplete" if status == "incomplete" else "response.completed"
        return [*events, ResponseEvent(type=kind, sequence_number=self._next(), response=self.response)]

    def fail(self, error: ChatgateError) -> list[StreamEvent]:
        """The answer failed midway: an ``error`` event, then ``response.failed``."""
        code = error.code or error.type
        failed = ResponseError(code=code, message=error.message)
        self.response = self.response.model_copy(update={"status": "failed", "output": self.output, "error": failed})
        return [
            ErrorEvent(sequence_number=self._next(), code=code, message=error.message, param=error.param),
            ResponseEvent(type="response.failed", sequence_number=self._next(), response=self.response),
        ]


def encode(event: StreamEvent) -> bytes:
    """One SSE event as OpenAI sends it: ``event: <type>`` and its JSON (no ``[DONE]`` ends this stream)."""
    return f"event: {event.type}\ndata: {event.model_dump_json()}\n\n".encode()
