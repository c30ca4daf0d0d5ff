"""What the local engine cannot do yet, refused with a clear 400 instead of silently dropped."""

from __future__ import annotations

from chatgate.errors import InvalidRequestError, UnsupportedParameterError
from chatgate.protocol import ChatCompletionRequest

_MEDIA = {"image_url": "image", "input_audio": "audio", "file": "file"}


def check_supported(req: ChatCompletionRequest, model_id: str) -> None:
    """Raise a 400 naming the first field this text-only local model cannot honour."""
    _check_tools(req, model_id)
    if req.response_format is not None and req.response_format.type != "text":
        raise UnsupportedParameterError(
            f"response_format of type '{req.response_format.type}' is not supported by model "
            f"'{model_id}' yet; only 'text' is.",
            param="response_format",
        )
    unsupported = {
        "audio": req.audio is not None,
        "modalities": bool(req.modalities) and any(m != "text" for m in req.modalities or []),
        "prediction": req.prediction is not None,
        "web_search_options": req.web_search_options is not None,
        "reasoning_effort": req.reasoning_effort is not None,
        "verbosity": req.verbosity not in (None, "medium"),
    }
    for param, present in unsupported.items():
        if present:
            raise UnsupportedParameterError(
                f"Unsupported parameter: '{param}' is not supported by model '{model_id}'.", param=param
            )
    _check_content(req, model_id)


def _check_tools(req: ChatCompletionRequest, model_id: str) -> None:
    if req.tools:
        raise UnsupportedParameterError(
            f"'tools' (tool calling) is not supported by model '{model_id}' yet.", param="tools"
        )
    if req.functions:
        raise UnsupportedParameterError(
            f"'functions' (function calling) is not supported by model '{model_id}' yet.", param="functions"
        )
    if req.tool_choice not in (None, "none"):
        raise InvalidRequestError(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
            param="tool_choice",
            code="invalid_value",
        )
    if req.function_call not in (None, "none"):
        raise InvalidRequestError(
            "Invalid value for 'function_call': 'function_call' is only allowed when 'functions' are specified.",
            param="function_call",
            code="invalid_value",
        )


def _check_content(req: ChatCompletionRequest, model_id: str) -> None:
    for i, message in enumerate(req.messages):
        if not isinstance(message.content, list):
            continue
        for j, part in enumerate(message.content):
            kind = _MEDIA.get(part.type)
            if kind is not None:
                raise UnsupportedParameterError(
                    f"Model '{model_id}' does not support {kind} input; send text content only.",
                    param=f"messages[{i}].content[{j}].type",
                    code="unsupported_content",
                )
