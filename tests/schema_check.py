"""A small checker for the subset of JSON Schema (draft 2020-12) that ``autotune schema`` emits, so
that the schema's tests run where the ``jsonschema`` package is not installed (where it is,
tests/test_schema.py checks with it too).

``errors(schema, value)`` -> a list of ``"path: problem"``; empty when ``value`` conforms. A keyword
outside the subset raises, so the schema cannot grow past what this checks unnoticed.
"""
from __future__ import annotations

import re
from typing import Any

_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
_KNOWN = {"$schema", "$id", "$defs", "$ref", "title", "description", "type", "enum", "const",
          "properties", "additionalProperties", "required", "minProperties", "items", "minItems",
          "minLength", "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "anyOf",
          "allOf", "not", "if", "then", "else"}


def _is(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[kind])


def errors(schema: dict, value: Any, root: dict | None = None, path: str = "") -> list[str]:
    root = root if root is not None else schema
    unknown = set(schema) - _KNOWN
    if unknown:
        raise ValueError(f"{path or '/'}: keywords outside the checked subset: {sorted(unknown)}")
    out: list[str] = []
    here = path or "/"
    if "$ref" in schema:
        target = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        out += errors(target, value, root, path)
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is(value, k) for k in kinds):
            return out + [f"{here}: {value!r} is not of type {kinds}"]
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{here}: {value!r} is not one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        out.append(f"{here}: {value!r} is not {schema['const']!r}")
    if _is(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            out.append(f"{here}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            out.append(f"{here}: {value} > {schema['maximum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            out.append(f"{here}: {value} <= {schema['exclusiveMinimum']}")
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            out.append(f"{here}: {value} >= {schema['exclusiveMaximum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            out.append(f"{here}: too short")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            out.append(f"{here}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            out.append(f"{here}: fewer than {schema['minItems']} items")
        if "items" in schema:
            for i, item in enumerate(value):
                out += errors(schema["items"], item, root, f"{path}/{i}")
    if isinstance(value, dict):
        if len(value) < schema.get("minProperties", 0):
            out.append(f"{here}: fewer than {schema['minProperties']} keys")
        out += [f"{path}/{k}: is required" for k in schema.get("required", []) if k not in value]
        properties = schema.get("properties", {})
        for k, v in value.items():
            if k in properties:
                out += errors(properties[k], v, root, f"{path}/{k}")
            elif schema.get("additionalProperties") is False:
                out.append(f"{path}/{k}: is not allowed (additionalProperties)")
            elif isinstance(schema.get("additionalProperties"), dict):
                out += errors(schema["additionalProperties"], v, root, f"{path}/{k}")
    if "anyOf" in schema and all(errors(s, value, root, path) for s in schema["anyOf"]):
        out.append(f"{here}: matches none of anyOf")
    for sub in schema.get("allOf", []):
        out += errors(sub, value, root, path)
    if "not" in schema and not errors(schema["not"], value, root, path):
        out.append(f"{here}: matches the schema under not")
    if "if" in schema:
        branch = "then" if not errors(schema["if"], value, root, path) else "else"
        if branch in schema:
            out += errors(schema[branch], value, root, path)
    return out
