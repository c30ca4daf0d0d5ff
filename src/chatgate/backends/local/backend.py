"""The local model as a :class:`~chatgate.backends.base.Backend`: request in, OpenAI objects out."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from chatgate.backends.local.capabilities import check_supported
from chatgate.backends.local.engine import Engine
from chatgate.backends.local.jobs import ChoiceDelta, ChoiceDone, EngineEvent, Job, JobDone, JobFailed
from chatgate.backends.local.llama import GGUFModel
from chatgate.backends.local.matchers import GrammarCompiler
from chatgate.backends.local.prompt import RenderedPrompt, tokenize_prompt
from chatgate.backends.local.sampling import SamplingParams
from chatgate.backends.local.templates import ChatTemplate
from chatgate.backends.local.toolcalls import CallEvent, ToolCallParser, parse_all
from chatgate.backends.local.toolplan import ToolPlan, format_grammar, plan_tools
from chatgate.errors import ChatgateError, ContextLengthExceededError, InvalidRequestError
from chatgate.exchange import Exchange
from chatgate.protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    FinishReason,
    Model,
    TokenLogprob,
    Usage,
)
from chatgate.protocol.responses import ToolCallDelta
from chatgate.protocol.text_completions import RawPromptRequest


@dataclass
class _Started:
    job: Job
    events: asyncio.Queue[EngineEvent]
    prompt_tokens: int
    plan: ToolPlan


def new_completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


class LocalBackend:
    """Serves one GGUF model through an :class:`Engine`."""

    serves_raw_prompts = True
    """It completes a :class:`RawPromptRequest`'s prompt as it is (legacy completions)."""

    def __init__(self, model_id: str, gguf: GGUFModel, engine: Engine, template: ChatTemplate, fingerprint: str,
                 *, grammars: GrammarCompiler):  # fmt: skip
        self.model_id = model_id
        self.gguf = gguf
        self.engine = engine
        self.template = template
        self.fingerprint = fingerprint
        self.created = int(time.time())
        self.grammars = grammars

    def models(self) -> list[Model]:
        return [Model(id=self.model_id, created=self.created, owned_by="chatgate")]

    async def complete(self, req: ChatCompletionRequest, ctx: Exchange) -> ChatCompletion:
        started = await self._start(req)
        n = len(started.job.choices)
        texts = [""] * n
        logprobs: list[list[TokenLogprob]] = [[] for _ in range(n)]
        finishes: list[ChoiceDone | None] = [None] * n
        try:
            while True:
                event = await started.events.get()
                if isinstance(event, ChoiceDelta):
                    texts[event.index] += event.text
                    logprobs[event.index].extend(event.logprobs)
                elif isinstance(event, ChoiceDone):
                    finishes[event.index] = event
                elif isinstance(event, JobFailed):
                    raise event.error
                else:
                    done = event
                    break
        finally:
            started.job.cancel()
        want_logprobs = started.job.top_logprobs is not None
        choices = [
            _choice(started.plan, i, texts[i], logprobs[i] if want_logprobs else None, f.finish_reason if f else "stop")
            for i, f in enumerate(finishes)
        ]
        return ChatCompletion(
            id=new_completion_id(),
            created=int(time.time()),
            model=self.model_id,
            choices=choices,
            usage=_usage(done, finishes),
            system_fingerprint=self.fingerprint,
        )

    async def stream(self, req: ChatCompletionRequest, ctx: Exchange) -> AsyncIterator[ChatCompletionChunk]:
        started = await self._start(req)
        chunk = _ChunkMaker(new_completion_id(), self.model_id, self.fingerprint, req.wants_usage_chunk())
        want_logprobs = started.job.top_logprobs is not None
        plan = started.plan
        finishes: list[ChoiceDone | None] = [None] * len(started.job.choices)
        parsers = [ToolCallParser() for _ in finishes] if plan.active else None
        try:
            for i in range(len(finishes)):
                first = Delta(role="assistant") if plan.active else Delta(role="assistant", content="")
                yield chunk.of(ChunkChoice(index=i, delta=first))
            while True:
                event = await started.events.get()
                if isinstance(event, ChoiceDelta):
                    lp = ChoiceLogprobs(content=event.logprobs) if want_logprobs else None
                    if parsers is None:
                        yield chunk.of(ChunkChoice(index=event.index, delta=Delta(content=event.text), logprobs=lp))
                        continue
                    content, calls = parsers[event.index].feed(event.text)
                    if content:
                        yield chunk.of(ChunkChoice(index=event.index, delta=Delta(content=content), logprobs=lp))
                    for call in calls:
                        yield chunk.of(ChunkChoice(index=event.index, delta=_call_delta(call, plan.legacy)))
                elif isinstance(event, ChoiceDone):
                    finishes[event.index] = event
                    reason = plan.finish_reason(parsers[event.index], event.finish_reason) if parsers else None
                    yield chunk.of(
                        ChunkChoice(index=event.index, delta=Delta(), finish_reason=reason or event.finish_reason)
                    )
                elif isinstance(event, JobFailed):
                    raise event.error
                else:
                    if chunk.include_usage:
                        yield chunk.usage(_usage(event, finishes))
                    return
        finally:
            started.job.cancel()

    def prompt_bound(self, req: ChatCompletionRequest) -> int:
        """The most prompt tokens ``req`` can cost here, for a budget's worst case: the rendered prompt's
        bytes (every token of it is at least one byte, the template's special tokens several) plus the
        BOS/EOS the tokenizer may add, and never more than the context (a longer prompt is refused, free).
        Without tokenizing: the engine's thread is not needed for it."""
        if isinstance(req, RawPromptRequest):
            prompt = req.prompt
            size = len(prompt) if isinstance(prompt, list) else len(prompt.encode("utf-8", "surrogatepass")) + 2
            return min(size, self.engine.n_ctx)
        try:
            check_supported(req, self.model_id)
            plan = plan_tools(req)
            text = self.template.render(list(req.messages), plan.definitions if plan.active else None)
        except ChatgateError:
            return self.engine.n_ctx  # refused later on, or answered by another deployment of the chain
        return min(len(text.encode("utf-8", "surrogatepass")) + 2, self.engine.n_ctx)

    async def _start(self, req: ChatCompletionRequest) -> _Started:
        """Check, render, tokenise and queue the request."""
        check_supported(req, self.model_id)
        plan = plan_tools(req)
        prompt = await asyncio.to_thread(self.prompt_tokens, req, plan)
        max_tokens = self._completion_budget(req, len(prompt))
        params = SamplingParams.from_request(req)
        self._check_logit_bias(params)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[EngineEvent] = asyncio.Queue()

        def sink(event: EngineEvent) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening any more
                loop.call_soon_threadsafe(events.put_nowait, event)

        grammars, estimate = await asyncio.to_thread(self._matchers, req, plan)  # a 400 if the schema is refused
        job = Job(
            prompt=prompt,
            choices=[params.for_choice(i) for i in range(req.choices())],
            max_tokens=max_tokens,
            stops=req.stop_sequences(),
            top_logprobs=(req.top_logprobs or 0) if req.logprobs else None,
            sink=sink,
            grammars=grammars,
            grammar_estimate=estimate,
        )
        self.engine.submit(job)
        return _Started(job=job, events=events, prompt_tokens=len(prompt), plan=plan)

    def count_tokens(self, req: ChatCompletionRequest) -> int:
        """The prompt tokens ``req`` costs here, exactly (blocking: it tokenises), for a count_tokens API."""
        check_supported(req, self.model_id)
        return len(self.prompt_tokens(req, plan_tools(req)))

    def prompt_tokens(self, req: ChatCompletionRequest, plan: ToolPlan) -> list[int]:
        """The rendered chat template's tokens; request text never becomes a control token (blocking).
        A :class:`RawPromptRequest`'s prompt is completed as it is, no template."""
        if isinstance(req, RawPromptRequest):
            return self.raw_prompt_tokens(req.prompt)
        rendered = self.template.render_prompt(list(req.messages), plan.definitions if plan.active else None)
        return tokenize_prompt(self.gguf, self.template.control, rendered)

    def raw_prompt_tokens(self, prompt: str | list[int]) -> list[int]:
        """A legacy completion's prompt: token ids as given, or text whose control-token texts are those
        tokens (the caller writes the whole prompt, as with OpenAI's ``<|endoftext|>``), a BOS first when
        the vocabulary wants one (blocking)."""
        if isinstance(prompt, list):
            if any(t >= self.gguf.n_vocab for t in prompt):
                vocab = f"0..{self.gguf.n_vocab - 1}"
                raise InvalidRequestError(f"The prompt holds a token id outside this model's vocabulary ({vocab}).",
                                          param="prompt", code="invalid_value")  # fmt: skip
            return list(prompt)
        tokens = tokenize_prompt(self.gguf, self.template.control, RenderedPrompt(prompt))
        if not tokens:
            raise InvalidRequestError("The prompt is empty.", param="prompt", code="invalid_value")
        return tokens

    def _matchers(self, req: ChatCompletionRequest, plan: ToolPlan) -> tuple[list[Any] | None, int]:
        """One fresh matcher per choice for the grammar the request asks for (off the event loop)."""
        limits = self.grammars.config
        spec = plan.grammar(limits) or format_grammar(req, limits)
        if spec is None:
            return None, 0
        return self.grammars.matchers(spec, req.choices()), self.grammars.compile(spec).shortest

    def _completion_budget(self, req: ChatCompletionRequest, prompt_tokens: int) -> int:
        n_ctx = self.engine.n_ctx
        asked = req.completion_limit()
        if prompt_tokens >= n_ctx or (asked is not None and prompt_tokens + asked > n_ctx):
            detail = f"{prompt_tokens} in the messages" + (f", {asked} in the completion" if asked else "")
            total = prompt_tokens + (asked or 0)
            raise ContextLengthExceededError(
                f"This model's maximum context length is {n_ctx} tokens. However, you requested "
                f"{total} tokens ({detail}). Please reduce the length of the messages or completion.",
                param="messages",
            )
        return asked if asked is not None else n_ctx - prompt_tokens

    def _check_logit_bias(self, params: SamplingParams) -> None:
        for token in params.logit_bias:
            if not 0 <= token < self.gguf.n_vocab:
                raise InvalidRequestError(
                    f"Invalid key in 'logit_bias': {token} is not a token id of this model "
                    f"(0 to {self.gguf.n_vocab - 1}).",
                    param="logit_bias",
                    code="invalid_value",
                )


def _choice(plan: ToolPlan, index: int, text: str, logprobs: list[TokenLogprob] | None, reason: FinishReason) -> Choice:
    """One choice of a finished completion: plain content, or the tool calls the text holds."""
    lp = ChoiceLogprobs(content=logprobs) if logprobs is not None else None
    if plan.active:
        parser = parse_all(text)
        if parser.tool_mode:
            message = AssistantMessage(
                content=None, tool_calls=plan.tool_calls(parser), function_call=plan.function_call(parser)
            )
            return Choice(index=index, message=message, logprobs=None, finish_reason=plan.finish_reason(parser, reason))
    return Choice(index=index, message=AssistantMessage(content=text), logprobs=lp, finish_reason=reason)


def _call_delta(call: CallEvent, legacy: bool) -> Delta:
    """A streamed tool call: its first delta names it, later ones carry argument fragments."""
    if legacy:
        if call.name is not None:
            return Delta(function_call={"name": call.name, "arguments": ""})
        return Delta(function_call={"arguments": call.arguments})
    if call.name is not None:
        return Delta(
            tool_calls=[
                ToolCallDelta(
                    index=call.index, id=call.id, type="function", function={"name": call.name, "arguments": ""}
                )
            ]
        )
    return Delta(tool_calls=[ToolCallDelta(index=call.index, function={"arguments": call.arguments})])


def _usage(done: JobDone, finishes: list[ChoiceDone | None]) -> Usage:
    completion = sum(f.completion_tokens for f in finishes if f is not None)
    return Usage.of(done.prompt_tokens, completion, cached=done.cached_tokens)


@dataclass
class _ChunkMaker:
    id: str
    model: str
    fingerprint: str
    include_usage: bool

    def __post_init__(self) -> None:
        self.created = int(time.time())

    def of(self, choice: ChunkChoice) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.id,
            created=self.created,
            model=self.model,
            system_fingerprint=self.fingerprint,
            choices=[choice],
            with_usage_field=self.include_usage,
        )

    def usage(self, usage: Usage) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.id,
            created=self.created,
            model=self.model,
            system_fingerprint=self.fingerprint,
            choices=[],
            usage=usage,
            with_usage_field=True,
        )
