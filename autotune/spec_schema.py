"""The JSON Schema (draft 2020-12) of a study file, for editors that complete and check keys.

Owns: ``study_schema()``, built from the parser's own key tables (``spec.section_keys``), the
dataclasses of ``spec_types`` (pruner and parallel keys and their types), the optimizers' options
(``samplers.sampler_defaults``) and the built-in objective's knobs (``objective_ref``), so that a
key the parser accepts is a key the schema knows, and the two cannot drift. The schema checks keys
and value types; the parser checks more (ranges, conditions, one knob under two names, ...).
Must not know about: how a study runs.

Example:
    >>> schema = study_schema()
    >>> schema["$schema"], sorted(schema["$defs"]["budget"]["properties"])
    ('https://json-schema.org/draft/2020-12/schema', ['gpu_hours', 'timeout', 'trial_timeout', 'trials'])
"""
from __future__ import annotations

import dataclasses
from typing import Any

from autotune.spec import _FLAT_ALGORITHMS, section_keys
from autotune.spec_space import _PARAM_TYPES
from autotune.spec_types import (OPTIMIZER_KINDS, PRUNER_KINDS, WARM_START_STRATEGIES, ParallelSpec,
                                 PrunerSpec)

DRAFT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = "https://autotune.invalid/study.schema.json"   # a name, not a place: nothing is fetched

_SCALAR = {"type": ["number", "string", "boolean", "null"]}
_TEXT = {"type": "string", "minLength": 1}
_COUNT = {"type": "integer", "minimum": 1}
_DURATION = {"anyOf": [{"type": "number", "exclusiveMinimum": 0},
                       {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?\s*h)?\s*(\d+(\.\d+)?\s*m)?\s*(\d+(\.\d+)?\s*s)?\s*$"}],
             "description": "seconds, or a duration like 90s, 30m, 2h, 1h30m"}
_DIRECTION = {"enum": ["minimize", "maximize"]}
_STUDIES = {"anyOf": [_TEXT, {"type": "array", "items": _TEXT, "minItems": 1}]}
_CONSTRAINT = {"type": "string", "pattern": r"^\s*[A-Za-z_][\w.]*\s*(<=|>=)\s*\S",
               "description": "METRIC <= NUMBER or METRIC >= NUMBER, e.g. latency_ms <= 5"}

# The value of each key the parser allows, where the key table says no more than its name.
_VALUES: dict[str, dict[str, Any]] = {
    "": {
        "study": {**_TEXT, "description": "the study's name in the store (default: the file's name)"},
        "description": {"type": "string"},
        "storage": {**_TEXT, "description": "sqlite:///FILE or postgresql://user@host/db"},
        "space": {"anyOf": [{**_TEXT, "description": "a search-space file, relative to this file"},
                            {"$ref": "#/$defs/space"}]},
        "objectives": {"anyOf": [{"$ref": "#/$defs/objective"},
                                 {"type": "array", "items": {"$ref": "#/$defs/objective"}, "minItems": 1}]},
        "optimizer": {"$ref": "#/$defs/optimizer"},
        "pruner": {"$ref": "#/$defs/pruner"},
        "budget": {"$ref": "#/$defs/budget"},
        "parallel": {"$ref": "#/$defs/parallel"},
        "warm_start": {"$ref": "#/$defs/warm_start"},
        "objective": {"type": "string", "pattern": r"^(builtin:\w+|[A-Za-z_][\w.]*:[A-Za-z_]\w*)$",
                      "description": "builtin:moe_lm (default) or package.module:function"},
        "trainer": {"$ref": "#/$defs/knobs"},
        "fixed": {"$ref": "#/$defs/fixed"},
        "constraints": {"anyOf": [_CONSTRAINT, {"type": "array", "items": _CONSTRAINT}]},
    },
    "objectives[]": {"metric": _TEXT, "direction": _DIRECTION},
    "budget": {"trials": _COUNT, "timeout": _DURATION, "gpu_hours": {"type": "number", "exclusiveMinimum": 0},
               "trial_timeout": _DURATION},
    "warm_start": {"from": {**_STUDIES, "description": "earlier studies, or auto"},
                   "storage": _TEXT, "strategy": {"enum": list(WARM_START_STRATEGIES)},
                   "best_k": {**_COUNT, "description": "enqueue: the best configurations of each source"},
                   "out_of_range": {"enum": ["clip", "drop"]}, "local_trials": _COUNT},
    "space.*": {"type": {"enum": list(_PARAM_TYPES)}, "low": {"type": "number"}, "high": {"type": "number"},
                "log": {"type": "boolean"}, "step": {"type": "number", "exclusiveMinimum": 0},
                "choices": {"type": "array", "items": _SCALAR, "minItems": 1},
                "when": {"type": "object", "minProperties": 1,
                         "additionalProperties": {"anyOf": [_SCALAR, {"type": "array", "minItems": 1}]}}},
    "optimization": {"algorithm": {"enum": list(_FLAT_ALGORITHMS)}, "max_evals": _COUNT,
                     "parallel_evals": _COUNT, "seed": {"type": "integer", "minimum": 0},
                     "timeout": _DURATION,
                     "metrics": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/flat_metric"}},
                     "parameters": {"$ref": "#/$defs/flat_space"}},
    "optimization.metrics[]": {"name": _TEXT, "goal": _DIRECTION},
    "pruner": {"kind": {"enum": list(PRUNER_KINDS)}, "percentile": {"type": "number", "exclusiveMinimum": 0,
                                                                    "exclusiveMaximum": 100},
               "dominated_by": {"type": "number", "exclusiveMinimum": 0, "maximum": 1}},
    "parallel": {"gpus": {"anyOf": [{"const": "auto"}, {"type": "integer", "minimum": 0},
                                    {"type": "array", "items": {"type": "integer", "minimum": 0}}]}},
}
_VALUES["optimization.parameters.*"] = {**_VALUES["space.*"], "min": {"type": "number"},
                                        "max": {"type": "number"}, "values": _VALUES["space.*"]["choices"]}
_VALUES["flat"] = {"optimization": {"$ref": "#/$defs/optimization"},
                   **{k: v for k, v in _VALUES[""].items() if k != "space"}}

_JSON_TYPES = {"int": "integer", "float": "number", "str": "string", "bool": "boolean", "None": "null"}


def _from_annotation(cls: type, name: str) -> dict[str, Any]:
    """A dataclass field's JSON type from its annotation (``int | None`` -> integer or null)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    parts = [p.strip() for p in str(field.type).split("|")]
    if not all(p in _JSON_TYPES for p in parts):
        raise KeyError(f"{cls.__name__}.{name}: give its JSON Schema in spec_schema._VALUES "
                       f"(annotation {field.type!r})")
    types = [_JSON_TYPES[p] for p in parts]
    return {"type": types[0] if len(types) == 1 else types}


def _section(section: str, required: tuple[str, ...] = (), of: type | None = None) -> dict[str, Any]:
    """An object with exactly the keys the parser allows in ``section``."""
    values = _VALUES.get(section, {})
    properties = {k: values[k] if k in values or of is None else _from_annotation(of, k)
                  for k in section_keys()[section]}
    out: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        out["required"] = list(required)
    return out


def _json_type(default: Any) -> dict[str, Any]:
    """The JSON type of a value like ``default`` (bool before int: True is an int in Python)."""
    for py, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string")):
        if isinstance(default, py):
            return {"type": name}
    return {}


def _optimizer() -> dict[str, Any]:
    """``kind`` alone as text, or a mapping of kind, seed and that kind's options (tpe's without kind)."""
    from autotune.samplers import sampler_defaults
    by_kind = []
    for kind in OPTIMIZER_KINDS:
        options = {name: _json_type(default) for name, default in sampler_defaults(kind).items()}
        then = {"properties": {"kind": {}, "seed": {}, **options}, "additionalProperties": False}
        when = {"properties": {"kind": {"const": kind}}, "required": ["kind"]}
        if kind == "tpe":
            when = {"anyOf": [when, {"not": {"required": ["kind"]}}]}
        by_kind.append({"if": when, "then": then})
    mapping = {"type": "object", "allOf": by_kind,
               "properties": {"kind": {"enum": list(OPTIMIZER_KINDS)},
                              "seed": {"type": ["integer", "null"], "minimum": 0}}}
    return {"anyOf": [{"enum": list(OPTIMIZER_KINDS)}, mapping]}


def _knobs(scalars_only: bool) -> dict[str, Any]:
    """``trainer`` / ``fixed``: the built-in objective's knobs by name (for completion); a user's own
    objective takes any names. A knob also takes ``auto`` or null where the parser allows it."""
    from autotune.objective_ref import builtin_fields
    properties = {}
    for name, default in sorted(builtin_fields().items()):
        typed = _json_type(default)
        constrained = typed and default != "auto"   # an "auto" knob also takes an explicit choice
        properties[name] = {"anyOf": [typed, {"const": "auto"}, {"type": "null"}]} if constrained else {}
    extra = _SCALAR if scalars_only else {}
    return {"type": "object", "properties": properties, "additionalProperties": extra}


def _param(flat: bool) -> dict[str, Any]:
    section = "optimization.parameters.*" if flat else "space.*"
    mapping = _section(section)
    if not flat:
        mapping["required"] = ["type"]
    return {"anyOf": [mapping, {"type": "array", "items": _SCALAR, "minItems": 1}]}


def study_schema() -> dict[str, Any]:
    """The JSON Schema of a study file: the native form, or the flat ``optimization:`` form."""
    space = {"type": "object", "minProperties": 1, "additionalProperties": {"$ref": "#/$defs/param"}}
    flat_space = {"type": "object", "minProperties": 1, "additionalProperties": {"$ref": "#/$defs/flat_param"}}
    return {
        "$schema": DRAFT,
        "$id": SCHEMA_ID,
        "title": "autotune study file",
        "description": "autotune run FILE: a study of the MoE / sparse-attention transformer "
                       "(or of your own objective), in the native or the flat optimization: form",
        "type": "object",
        "if": {"required": ["optimization"]},
        "then": {"$ref": "#/$defs/flat"},
        "else": {"$ref": "#/$defs/native"},
        "$defs": {
            "native": _section("", required=("space", "objectives")),
            "flat": _section("flat", required=("optimization",)),
            "optimization": _section("optimization", required=("metrics", "parameters")),
            "flat_metric": _section("optimization.metrics[]", required=("name", "goal")),
            "objective": _section("objectives[]", required=("metric", "direction")),
            "optimizer": _optimizer(),
            "pruner": {"anyOf": [{"enum": list(PRUNER_KINDS)}, _section("pruner", of=PrunerSpec)]},
            "budget": _section("budget"),
            "parallel": _section("parallel", of=ParallelSpec),
            "warm_start": {"anyOf": [_STUDIES, _section("warm_start", required=("from",))]},
            "space": space,
            "flat_space": flat_space,
            "param": _param(flat=False),
            "flat_param": _param(flat=True),
            "knobs": _knobs(scalars_only=False),
            "fixed": _knobs(scalars_only=True),
        },
    }
