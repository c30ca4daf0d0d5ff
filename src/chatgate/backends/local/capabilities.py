"""What the local engine cannot do yet, refused with a clear 400 instead of silently dropped."""

from __future__ import annotations

from chatgate.errors import InvalidRequestError, UnsupportedParameterError
from chatgate.protocol import ChatCompletionRequest

_MEDIA = {"image_url": "image", "input_audio": "audio", "file": "file"}


def check_supported(req: ChatCompletionRequest, model_id: str) -> None:
    """Raise a 400 naming the first field this text-only local model cannot honour."""
    _check_tools(req, model_id)
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
    _check_json_mode(req)


def _check_tools(req: ChatCompletionRequest, model_id: str) -> None:
    for i, tool in enumerate(req.tools or []):
        if tool.type != "function":
            raise UnsupportedParameterError(
                f"Tools of type '{tool.type}' are not supported by model '{model_id}'; use function tools.",
                param=f"tools[{i}].type",
            )
    choice = req.tool_choice
    if choice is not None and not isinstance(choice, str) and choice.type != "function":
        raise UnsupportedParameterError(
            f"tool_choice of type '{choice.type}' is not supported by model '{model_id}'.", param="tool_choice"
        )


def _check_json_mode(req: ChatCompletionRequest) -> None:
    """OpenAI's rule: JSON mode needs the word "json" somewhere in the messages."""
    if req.response_format is None or req.response_format.type != "json_object":
        return
    if not any("json" in m.text().lower() for m in req.messages):
        raise InvalidRequestError(
            "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
            param="messages",
            code=None,
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
