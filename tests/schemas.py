"""JSON schemas and tool definitions for the structured-output tests: varied on purpose."""

from __future__ import annotations

from typing import Any


def obj(props: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": list(props) if required is None else required,
        "additionalProperties": False,
        **extra,
    }


STR = {"type": "string", "maxLength": 24}
INT = {"type": "integer"}
NUM = {"type": "number"}
BOOL = {"type": "boolean"}

SCHEMAS: list[dict[str, Any]] = [
    obj({"name": STR}),
    obj({"age": INT}),
    obj({"ok": BOOL}),
    obj({"price": NUM}),
    obj({"name": STR, "age": INT, "member": BOOL}),
    obj({"color": {"type": "string", "enum": ["red", "green", "blue"]}}),
    obj({"level": {"enum": [1, 2, 3]}}),
    obj({"kind": {"const": "fixed"}, "count": INT}),
    obj({"tags": {"type": "array", "items": STR, "maxItems": 3}}),
    obj({"scores": {"type": "array", "items": INT, "minItems": 1, "maxItems": 4}}),
    obj({"point": obj({"x": NUM, "y": NUM})}),
    obj({"user": obj({"name": STR, "address": obj({"city": STR, "zip": STR})})}),
    obj({"nick": {"anyOf": [STR, {"type": "null"}]}}),
    obj({"value": {"anyOf": [INT, STR]}}),
    obj({"maybe": {"type": ["integer", "null"]}}),
    obj({"date": {"type": "string", "format": "date"}}),
    obj({"when": {"type": "string", "format": "date-time"}}),
    obj({"id": {"type": "string", "format": "uuid"}}),
    obj({"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}}),
    obj({"short": {"type": "string", "minLength": 2, "maxLength": 5}}),
    obj({"pair": {"type": "array", "prefixItems": [STR, INT], "items": False}}),
    obj({"a": STR, "b": INT}, required=["a"]),
    obj({"items": {"type": "array", "items": obj({"sku": STR, "qty": INT}), "maxItems": 2}}),
    {"$defs": {"Pet": obj({"kind": {"enum": ["cat", "dog"]}, "name": STR})}, **obj({"pet": {"$ref": "#/$defs/Pet"}})},
    {
        "$defs": {"P": obj({"name": STR})},
        **obj({"people": {"type": "array", "items": {"$ref": "#/$defs/P"}, "maxItems": 2}}),
    },
    obj({"answer": {"oneOf": [obj({"yes": BOOL}), obj({"no": STR})]}}),
    obj({"meta": obj({"k": STR}, required=[])}),
    obj({"matrix": {"type": "array", "items": {"type": "array", "items": INT, "maxItems": 2}, "maxItems": 2}}),
    obj(
        {
            "title": STR,
            "chapters": {"type": "array", "items": obj({"n": INT, "name": STR}), "maxItems": 2},
            "done": BOOL,
        }
    ),
    {
        "allOf": [
            {"type": "object", "properties": {"a": STR}, "required": ["a"]},
            {"type": "object", "properties": {"b": INT}, "required": ["b"]},
        ]
    },
    obj({"flags": obj({"x": BOOL, "y": BOOL, "z": BOOL}), "note": {"anyOf": [STR, {"type": "null"}]}}),
]

TOOLS: list[dict[str, Any]] = [
    {"name": "get_weather", "parameters": obj({"city": STR, "unit": {"enum": ["c", "f"]}})},
    {"name": "add", "parameters": obj({"a": INT, "b": INT})},
    {"name": "search", "parameters": obj({"query": STR, "limit": INT})},
    {"name": "send_email", "parameters": obj({"to": STR, "subject": STR, "urgent": BOOL})},
    {"name": "set_alarm", "parameters": obj({"time": {"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$"}})},
    {"name": "book_flight", "parameters": obj({"from": STR, "to": STR, "date": {"type": "string", "format": "date"}})},
    {"name": "convert", "parameters": obj({"amount": NUM, "currency": {"enum": ["USD", "EUR", "GBP"]}})},
    {"name": "create_user", "parameters": obj({"user": obj({"name": STR, "age": INT})})},
    {"name": "tag_items", "parameters": obj({"tags": {"type": "array", "items": STR, "maxItems": 3}})},
    {"name": "no_args", "parameters": obj({})},
    {"name": "lookup", "parameters": obj({"id": {"anyOf": [INT, STR]}})},
    {"name": "toggle", "parameters": obj({"on": BOOL})},
    {
        "name": "rate",
        "parameters": obj({"stars": {"enum": [1, 2, 3, 4, 5]}, "comment": {"anyOf": [STR, {"type": "null"}]}}),
    },
    {"name": "move", "parameters": obj({"dx": INT, "dy": INT})},
    {
        "name": "order_pizza",
        "parameters": obj(
            {"size": {"enum": ["s", "m", "l"]}, "toppings": {"type": "array", "items": STR, "maxItems": 2}}
        ),
    },
    {"name": "translate", "parameters": obj({"text": STR, "lang": {"type": "string", "pattern": "^[a-z]{2}$"}})},
    {
        "name": "schedule",
        "parameters": obj({"events": {"type": "array", "items": obj({"at": STR, "what": STR}), "maxItems": 2}}),
    },
    {"name": "get_stock", "parameters": obj({"symbol": {"type": "string", "pattern": "^[A-Z]{1,4}$"}})},
    {"name": "note", "parameters": {"type": "object", "properties": {"text": STR, "pin": BOOL}, "required": ["text"]}},
    {
        "name": "geo",
        "parameters": {
            "$defs": {"Pt": obj({"lat": NUM, "lon": NUM})},
            **obj({"a": {"$ref": "#/$defs/Pt"}, "b": {"$ref": "#/$defs/Pt"}}),
        },
    },
]
