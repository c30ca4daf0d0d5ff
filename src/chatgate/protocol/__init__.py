"""The OpenAI wire format: the one vocabulary every layer of chatgate speaks."""

from chatgate.protocol.requests import ChatCompletionRequest, ChatMessage, ContentPart, StreamOptions
from chatgate.protocol.responses import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    FinishReason,
    Model,
    ModelList,
    TokenLogprob,
    TopLogprob,
    Usage,
)

__all__ = [
    "AssistantMessage",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatMessage",
    "Choice",
    "ChoiceLogprobs",
    "ChunkChoice",
    "ContentPart",
    "Delta",
    "FinishReason",
    "Model",
    "ModelList",
    "StreamOptions",
    "TokenLogprob",
    "TopLogprob",
    "Usage",
]
