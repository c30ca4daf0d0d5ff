"""OpenAI Chat Completions requests as Gemini ``generateContent`` bodies.

:func:`request_body` is the one converter. System and developer messages become the
``system_instruction``; the conversation becomes ``contents`` of ``user`` and ``model`` turns; tool
results become ``functionResponse`` parts named after the tool call they answer; sampling settings
become ``generationConfig``; JSON schemas (``response_format`` and tool parameters) are rewritten into
the OpenAPI subset Gemini accepts by :func:`gemini_schema`. Whatever Gemini cannot express is a 400
:class:`UpstreamError` (not retryable: no other attempt would fare better), never a silent drop.
"""

from __future__ import annotations

import json
import mimetypes
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from chatgate.errors import UpstreamError
from chatgate.protocol import ChatCompletionRequest, ChatMessage, ContentPart
from chatgate.protocol.requests import NamedToolChoice, ResponseFormat, Tool

SKIP_SIGNATURE = "skip_thought_signature_validator"
"""Google's documented stand-in for the thought signature of a function call replayed from history:
thinking models (Gemini 3) reject replayed ``functionCall`` parts that carry none."""

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
               ".gif": "image/gif", ".heic": "image/heic", ".heif": "image/heif"}  # fmt: skip
MODES = {"auto": "AUTO", "required": "ANY", "none": "NONE"}
TYPES = {"string": "STRING", "number": "NUMBER", "integer": "INTEGER", "boolean": "BOOLEAN", "array": "ARRAY",
         "object": "OBJECT"}  # fmt: skip
COPIED = ("description", "minimum", "maximum", "minItems", "maxItems", "minLength", "maxLength", "pattern",
          "minProperties", "maxProperties")  # fmt: skip
DROPPED = frozenset({"title", "$schema", "$id", "$comment", "$defs", "definitions", "default", "examples",
                     "discriminator", "readOnly", "writeOnly", "deprecated", "additionalProperties"})  # fmt: skip
"""Annotations, or constraints Gemini's objects already imply (no ``additionalProperties``)."""
HANDLED = frozenset({"type", "format", "enum", "const", "nullable", "properties", "required", "items", "anyOf",
                     "oneOf", "allOf", "$ref"})  # fmt: skip
FORMATS = frozenset({"enum", "date-time"})
"""The string formats the Gemini API accepts; other formats are annotations and are dropped."""


def invalid(message: str, param: str, code: str = "invalid_value") -> UpstreamError:
    return UpstreamError(message, status=400, type="invalid_request_error", param=param, code=code, retryable=False)


def unsupported(what: str, param: str) -> UpstreamError:
    return invalid(f"Gemini models do not support {what}.", param, "unsupported_parameter")


def request_body(req: ChatCompletionRequest) -> dict[str, Any]:
    """The JSON body of ``models/{model}:generateContent`` (and of ``:streamGenerateContent``)."""
    _reject_unsupported(req)
    system, contents = translate_messages(req.messages)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["system_instruction"] = {"parts": system}
    config = generation_config(req)
    if config:
        body["generationConfig"] = config
    if req.tools:
        declarations = [function_declaration(tool, i) for i, tool in enumerate(req.tools)]
        body["tools"] = [{"functionDeclarations": declarations}]
        if req.tool_choice is not None:
            body["toolConfig"] = {"functionCallingConfig": calling_config(req.tool_choice)}
    return body


def _reject_unsupported(req: ChatCompletionRequest) -> None:
    if req.functions is not None or req.function_call is not None:
        raise unsupported("the deprecated `functions` (use `tools`)", "functions")
    if req.logprobs:
        raise invalid("chatgate does not map `logprobs` for Gemini models yet.", "logprobs", "unsupported_parameter")
    if req.logit_bias:
        raise unsupported("`logit_bias`", "logit_bias")


# --- messages ----------------------------------------------------------------------------------


def translate_messages(messages: list[ChatMessage]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system_instruction parts, contents) for a conversation."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}  # tool call id -> function name, from earlier assistant turns
    for i, msg in enumerate(messages):
        if msg.role in ("system", "developer"):
            if text := msg.text():
                system.append({"text": text})
        elif msg.role == "user":
            contents.append({"role": "user", "parts": user_parts(msg, i)})
        elif msg.role == "assistant":
            if parts := model_parts(msg, i, call_names):
                contents.append({"role": "model", "parts": parts})
        elif msg.role == "tool":
            part = function_response(msg, i, call_names)
            last = contents[-1] if contents else None
            if last and last["role"] == "user" and all("functionResponse" in p for p in last["parts"]):
                last["parts"].append(part)  # consecutive tool results answer one model turn
            else:
                contents.append({"role": "user", "parts": [part]})
        else:
            raise unsupported("`function` messages (use `tool` messages)", f"messages[{i}].role")
    return system, contents


def user_parts(msg: ChatMessage, i: int) -> list[dict[str, Any]]:
    if msg.content is None or isinstance(msg.content, str):
        return [{"text": msg.content or ""}]
    return [content_part(part, f"messages[{i}].content[{j}]") for j, part in enumerate(msg.content)]


def content_part(part: ContentPart, param: str) -> dict[str, Any]:
    if part.type == "text":
        return {"text": part.text or ""}
    if part.type == "image_url" and part.image_url and isinstance(part.image_url.get("url"), str):
        return media_part(part.image_url["url"], param, "image/jpeg")
    if part.type == "input_audio" and part.input_audio and isinstance(part.input_audio.get("data"), str):
        fmt = str(part.input_audio.get("format") or "wav")
        return {"inline_data": {"mime_type": f"audio/{fmt}", "data": part.input_audio["data"]}}
    if part.type == "file" and part.file and str(part.file.get("file_data", "")).startswith("data:"):
        return media_part(part.file["file_data"], param, "application/pdf")
    raise invalid(f"Gemini models cannot take this `{part.type}` content part.", param)


def media_part(url: str, param: str, default_type: str) -> dict[str, Any]:
    """A ``data:`` URI inline, an http(s) URL by reference (its MIME type guessed from the extension)."""
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        if not comma or not header.endswith(";base64"):
            raise invalid("Only base64 `data:` URIs can be sent to Gemini models.", param)
        return {"inline_data": {"mime_type": header.removesuffix(";base64") or default_type, "data": data}}
    if url.startswith(("http://", "https://")):
        path = urlsplit(url).path.lower()
        ext = path[path.rfind(".") :] if "." in path.rsplit("/", 1)[-1] else ""
        mime = IMAGE_TYPES.get(ext) or mimetypes.guess_type(path)[0] or default_type
        return {"file_data": {"mime_type": mime, "file_uri": url}}
    raise invalid("A media URL must be an http(s) URL or a base64 `data:` URI.", param)


def model_parts(msg: ChatMessage, i: int, call_names: dict[str, str]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if text := msg.text():
        parts.append({"text": text})
    for j, call in enumerate(msg.tool_calls or []):
        param = f"messages[{i}].tool_calls[{j}]"
        function = call.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise invalid("A tool call needs a function name.", param)
        args = _json_object(function.get("arguments") or "{}")
        if args is None:
            raise invalid("Tool call arguments must be a JSON object.", f"{param}.function.arguments")
        if isinstance(call.get("id"), str):
            call_names[call["id"]] = function["name"]
        parts.append({"functionCall": {"name": function["name"], "args": args}, "thoughtSignature": SKIP_SIGNATURE})
    return parts


def function_response(msg: ChatMessage, i: int, call_names: dict[str, str]) -> dict[str, Any]:
    name = call_names.get(msg.tool_call_id or "")
    if name is None:
        raise invalid("A tool message must answer a tool call of an earlier assistant message.",
                      f"messages[{i}].tool_call_id")  # fmt: skip
    text = msg.text()
    parsed = _json_object(text)
    return {"functionResponse": {"name": name, "response": parsed if parsed is not None else {"content": text}}}


def _json_object(text: Any) -> dict[str, Any] | None:
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# --- settings, tools ---------------------------------------------------------------------------


def generation_config(req: ChatCompletionRequest) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "temperature": req.temperature,
        "topP": req.top_p,
        "topK": req.top_k or None,  # 0 means off
        "maxOutputTokens": req.completion_limit(),
        "stopSequences": req.stop_sequences() or None,
        "candidateCount": req.n,
        "presencePenalty": req.presence_penalty,
        "frequencyPenalty": req.frequency_penalty,
        "seed": req.seed,
    }
    config = {key: value for key, value in fields.items() if value is not None}
    if req.response_format is not None:
        config.update(response_format_config(req.response_format))
    return config


def response_format_config(fmt: ResponseFormat) -> dict[str, Any]:
    if fmt.type == "text":
        return {}
    config: dict[str, Any] = {"responseMimeType": "application/json"}
    if fmt.type == "json_schema" and fmt.json_schema and fmt.json_schema.schema_ is not None:
        config["responseSchema"] = gemini_schema(fmt.json_schema.schema_, param="response_format", ordering=True)
    return config


def function_declaration(tool: Tool, i: int) -> dict[str, Any]:
    if tool.type != "function" or tool.function is None:
        raise unsupported(f"`{tool.type}` tools", f"tools[{i}]")
    declaration: dict[str, Any] = {"name": tool.function.name}
    if tool.function.description:
        declaration["description"] = tool.function.description
    parameters = gemini_schema(tool.function.parameter_schema(), param="tools")
    if parameters.get("type") != "OBJECT":
        raise invalid("Function parameters must be a JSON schema of an object.", f"tools[{i}].function.parameters")
    if parameters.get("properties"):  # Gemini refuses an OBJECT without properties here
        declaration["parameters"] = parameters
    return declaration


def calling_config(choice: str | NamedToolChoice) -> dict[str, Any]:
    if isinstance(choice, str):
        return {"mode": MODES[choice]}
    if choice.type == "function" and choice.function is not None:
        return {"mode": "ANY", "allowedFunctionNames": [choice.function.name]}
    raise unsupported(f"a `{choice.type}` tool_choice", "tool_choice")


# --- JSON schema -> Gemini schema ---------------------------------------------------------------


def gemini_schema(schema: dict[str, Any], *, param: str, ordering: bool = False) -> dict[str, Any]:
    """A JSON schema in Gemini's OpenAPI subset: types upper-cased, ``$ref`` inlined from ``$defs``,
    ``anyOf`` with ``null`` as ``nullable``, annotations dropped; a 400 for what it cannot express.
    ``ordering`` adds ``propertyOrdering`` so that Gemini writes keys in the schema's order."""
    return _Converter(schema, param, ordering).convert(schema, ())


@dataclass(frozen=True)
class _Converter:
    root: dict[str, Any]
    param: str
    ordering: bool

    def fail(self, why: str) -> UpstreamError:
        return invalid(f"This JSON schema cannot be expressed for Gemini models: {why}.", self.param)

    def convert(self, schema: Any, refs: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(schema, dict):
            raise self.fail("every schema must be an object")
        if "$ref" in schema:
            return self._ref(schema, refs)
        unknown = set(schema) - HANDLED - DROPPED - set(COPIED)
        if unknown:
            raise self.fail(f"unsupported keyword(s) {', '.join(sorted(unknown))}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            raise self.fail("`additionalProperties` with a schema (a map) is not supported")
        if "allOf" in schema:
            return self._all_of(schema, refs)
        if "anyOf" in schema or "oneOf" in schema:
            return self._union(schema, refs)
        type_, nullable = self._type(schema)
        out: dict[str, Any] = {"type": type_}
        out.update({key: schema[key] for key in COPIED if key in schema})
        if schema.get("format") in FORMATS:
            out["format"] = schema["format"]
        enum = self._enum(schema)
        if enum is not None:
            out["enum"] = enum
        if nullable or None in self._enum_values(schema):
            out["nullable"] = True
        if type_ == "OBJECT":
            self._object(schema, out, refs)
        elif type_ == "ARRAY" and "items" in schema:
            out["items"] = self.convert(schema["items"], refs)
        return out

    def _ref(self, schema: dict[str, Any], refs: tuple[str, ...]) -> dict[str, Any]:
        ref = schema["$ref"]
        if not isinstance(ref, str) or ref in refs or ref == "#":
            raise self.fail("recursive `$ref` is not supported")
        target: Any = None
        for section in ("$defs", "definitions"):
            prefix = f"#/{section}/"
            defs = self.root.get(section)
            if ref.startswith(prefix) and isinstance(defs, dict):
                target = defs.get(ref[len(prefix) :])
        if not isinstance(target, dict):
            raise self.fail(f"`$ref` {ref} does not point into `$defs`")
        siblings = {key: value for key, value in schema.items() if key != "$ref"}
        return self.convert({**target, **siblings}, (*refs, ref))

    def _all_of(self, schema: dict[str, Any], refs: tuple[str, ...]) -> dict[str, Any]:
        parts = schema["allOf"]
        if not isinstance(parts, list) or len(parts) != 1 or not isinstance(parts[0], dict):
            raise self.fail("`allOf` is supported with a single schema only")
        rest = {key: value for key, value in schema.items() if key != "allOf"}
        return self.convert({**parts[0], **rest}, refs)

    def _union(self, schema: dict[str, Any], refs: tuple[str, ...]) -> dict[str, Any]:
        branches = schema.get("anyOf", schema.get("oneOf"))
        if not isinstance(branches, list) or not branches or set(schema) - DROPPED - {"anyOf", "oneOf", "description"}:
            raise self.fail("`anyOf` must be a non-empty list and stand alone")
        rest = [b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")]
        if not rest:
            raise self.fail("a schema must allow more than `null`")
        converted = [self.convert(branch, refs) for branch in rest]
        out: dict[str, Any] = dict(converted[0]) if len(converted) == 1 else {"anyOf": converted}
        if len(rest) < len(branches):
            out["nullable"] = True
        if "description" in schema:
            out["description"] = schema["description"]
        return out

    def _type(self, schema: dict[str, Any]) -> tuple[str, bool]:
        raw = schema.get("type")
        names = raw if isinstance(raw, list) else [] if raw is None else [raw]
        nullable = "null" in names or schema.get("nullable") is True
        names = [name for name in names if name != "null"]
        if not names:
            names = ["object" if "properties" in schema else "array" if "items" in schema else
                     "string" if "enum" in schema or "const" in schema else "any"]  # fmt: skip
        if len(names) != 1 or names[0] not in TYPES:
            raise self.fail(f"type {raw!r} has no Gemini equivalent (one type, optionally with null)")
        return TYPES[names[0]], nullable

    def _enum_values(self, schema: dict[str, Any]) -> list[Any]:
        values = schema.get("enum", [schema["const"]] if "const" in schema else None)
        return values if isinstance(values, list) else []

    def _enum(self, schema: dict[str, Any]) -> list[str] | None:
        if "enum" not in schema and "const" not in schema:
            return None
        values = [value for value in self._enum_values(schema) if value is not None]
        if not values or not all(isinstance(value, str) for value in values):
            raise self.fail("`enum` and `const` must hold strings")
        return values

    def _object(self, schema: dict[str, Any], out: dict[str, Any], refs: tuple[str, ...]) -> None:
        properties = schema.get("properties")
        if properties is None:
            return
        if not isinstance(properties, dict):
            raise self.fail("`properties` must be an object")
        out["properties"] = {name: self.convert(sub, refs) for name, sub in properties.items()}
        required = [name for name in schema.get("required") or [] if name in properties]
        if required:
            out["required"] = required
        if self.ordering and properties:
            out["propertyOrdering"] = list(properties)
