"""The search space of a study file: parameters, their ranges and conditions.

Owns: ``space:`` (inline or a file) and the flat form's ``optimization.parameters`` -> a
``SearchSpace`` whose parameters are in dependency order, under canonical knob names for the
built-in objective (a ``sparsity`` range becomes the ``keep_ratio`` range).
Must not know about: Optuna, torch, the other sections.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
from pathlib import Path
from typing import Any

from autotune import knobs
from autotune.spec_checks import MAX_INT, SpecError, _check_fraction, _clip, _Ctx, _join, _kind, _shown
from autotune.spec_types import Param, SearchSpace
from autotune.spec_yaml import _read_yaml

# --- search space -----------------------------------------------------------------------------

_PARAM_KEYS = ("type", "low", "high", "log", "step", "choices", "when")
_PARAM_TYPES = ("float", "int", "categorical")
_FLAT_PARAM_NAMES = {"min": "low", "max": "high", "values": "choices"}   # the flat form's names


def _parse_param(ctx: _Ctx, name: str, raw: Any, key: str, flat: bool = False) -> Param:
    if isinstance(raw, list):
        raw = {"type": "categorical", "choices": raw}
    if not isinstance(raw, dict):
        raise ctx.fail(key, f"must be a mapping with a type (float, int, categorical) or a list of "
                            f"choices, got {_kind(raw)}; constant values go under fixed:")
    raw = dict(raw)
    if flat:  # the flat form says min/max/values
        for old, new in _FLAT_PARAM_NAMES.items():
            if old in raw and new not in raw:
                raw[new] = raw.pop(old)
    ctx.keys(raw, key, _PARAM_KEYS, required=("type",))
    ptype = ctx.text(raw["type"], _join(key, "type"), _PARAM_TYPES)
    when = _parse_when(ctx, raw.get("when"), _join(key, "when"))
    if ptype == "categorical":
        for k in ("low", "high", "log", "step"):
            if k in raw:
                raise ctx.fail(_join(key, k), "does not apply to a categorical parameter (use choices)")
        choices = raw.get("choices")
        if not isinstance(choices, list):
            raise ctx.fail(_join(key, "choices"), f"must be a list, got {_kind(choices)}")
        if not choices:
            raise ctx.fail(_join(key, "choices"), "is empty; give at least one choice")
        for i, c in enumerate(choices):
            if not (c is None or isinstance(c, (bool, int, float, str))):
                raise ctx.fail(_join(_join(key, "choices"), i),
                               f"must be a number, text, boolean or null, got {_kind(c)}")
        _check_distinct(ctx, choices, _join(key, "choices"))
        return Param(name, "categorical", choices=tuple(choices), when=when)
    if "choices" in raw:
        raise ctx.fail(_join(key, "choices"), f"applies only to categorical parameters, not {ptype}")
    for k in ("low", "high"):
        if k not in raw:
            raise ctx.fail(_join(key, k), f"is required for a {ptype} parameter")
    integer = ptype == "int"
    low = ctx.number(raw["low"], _join(key, "low"), integer=integer)
    high = ctx.number(raw["high"], _join(key, "high"), integer=integer)
    if low > high:
        raise ctx.fail(_join(key, "low"), f"low ({low}) is greater than high ({high})")
    log = ctx.boolean(raw.get("log", False), _join(key, "log"))
    if log and low <= 0:
        raise ctx.fail(_join(key, "low"), f"must be > 0 when log: true, got {low}")
    step = raw.get("step")
    if step is not None:
        step = ctx.number(step, _join(key, "step"), integer=integer, positive=True)
        if log and not (integer and step == 1):
            raise ctx.fail(_join(key, "step"), "cannot be combined with log: true")
        if step > high - low and high > low:
            raise ctx.fail(_join(key, "step"), f"step {step} is larger than high - low ({high - low})")
    if ptype == "float":
        low, high = float(low), float(high)
        if not math.isfinite(high - low):
            raise ctx.fail(_join(key, "high"), f"the range {low:g} to {high:g} is too wide to sample")
    if step is not None and high > low and (high - low) / step > MAX_INT:
        raise ctx.fail(_join(key, "step"), f"step {step:g} cuts {low:g} to {high:g} into more than "
                                           f"{MAX_INT} (2**53) values; use a larger step or none")
    return Param(name, ptype, low=low, high=high, log=log, step=step, when=when)


def _check_distinct(ctx: _Ctx, choices: list, key: str) -> None:
    """Choices must differ under Python equality too: ``[1, true]`` or ``[1, 1.0]`` would collapse
    into one choice in Optuna (``1 == True``)."""
    seen: dict[Any, Any] = {}
    for i, c in enumerate(choices):
        if c not in seen:
            seen[c] = c
            continue
        first = seen[c]
        if type(first) is type(c):
            raise ctx.fail(_join(key, i), f"{_shown(c)} is a duplicate choice")
        raise ctx.fail(_join(key, i), f"{_shown(c)} equals the choice {_shown(first)} in Python "
                                      "(1 == true == 1.0); make them distinct, e.g. texts")


def _parse_when(ctx: _Ctx, raw: Any, key: str) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if raw is None:
        return ()
    raw = ctx.mapping(raw, key)
    if not raw:
        raise ctx.fail(key, "is empty; name a parameter and its values, e.g. {attention: sparse}")
    out = []
    for other, allowed in raw.items():
        values = tuple(allowed) if isinstance(allowed, list) else (allowed,)
        if not values:
            raise ctx.fail(_join(key, other), "is an empty list of values")
        out.append((str(other), values))
    return tuple(out)


def _order_params(ctx: _Ctx, params: dict[str, Param], key: str) -> tuple[Param, ...]:
    """Check conditions refer to real parameters and values; sort so each comes after what it needs."""
    for p in params.values():
        for other, allowed in p.when:
            wkey = _join(_join(_join(key, p.name), "when"), other)
            if other == p.name:
                raise ctx.fail(wkey, "a parameter cannot depend on itself")
            if other not in params:
                hint = difflib.get_close_matches(other, list(params), n=1)
                extra = f"; did you mean {hint[0]!r}?" if hint else ""
                raise ctx.fail(wkey, f"refers to {other!r}, which is not in the search space{extra}")
            dep = params[other]
            if dep.type == "categorical":
                for v in allowed:
                    if v not in dep.choices:
                        raise ctx.fail(wkey, f"{v!r} is not one of {other}'s choices {list(dep.choices)}")
    ordered: list[Param] = []
    state: dict[str, int] = {}

    def visit(name: str, chain: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise ctx.fail(_join(_join(key, name), "when"),
                           f"conditions form a cycle: {' -> '.join(chain + [name])}")
        state[name] = 1
        for other, _ in params[name].when:
            visit(other, chain + [name])
        state[name] = 2
        ordered.append(params[name])

    for name in params:
        visit(name, [])
    return tuple(ordered)


def _parse_space(ctx: _Ctx, raw: Any, key: str, base_dir: Path, flat: bool = False) -> SearchSpace:
    if isinstance(raw, str):
        if "\0" in raw or len(raw) > 1024:
            raise ctx.fail(key, f"{_shown(raw)} is not a file name")
        try:
            path = (base_dir / raw).resolve() if not Path(raw).is_absolute() else Path(raw)
            found = path.exists()
        except (OSError, RuntimeError) as exc:   # a symlink loop, a name too long
            raise ctx.fail(key, f"search-space file {_shown(raw)} cannot be read ({exc})") from None
        if not found:
            raise ctx.fail(key, f"search-space file {_shown(raw)} not found (looked in {_clip(str(path))})")
        try:
            data = _read_yaml(path)
        except SpecError as exc:   # name the study file and its key too
            raise ctx.fail(key, f"search-space file {exc.file}: {exc.problem}") from None
        if isinstance(data, dict) and set(data) <= {"parameters", "space"} and len(data) == 1:
            data = next(iter(data.values()))
        if not isinstance(data, dict):
            raise ctx.fail(key, f"search-space file {_shown(raw)} must hold a mapping of parameters, "
                                f"got {_kind(data)}")
        try:
            return _parse_space(ctx.for_file(path), data, "", path.parent, flat)
        except SpecError as exc:   # a mistake inside the space file: name the study file too
            if exc.file != str(path) or ctx.file is None:
                raise
            raise SpecError(path, exc.key, f"{exc.problem} (the search space of {ctx.file})") from None
    if raw is None:
        raise ctx.fail(key, "is required: a search-space file or a mapping of parameters")
    raw = ctx.mapping(raw, key)
    if not raw:
        raise ctx.fail(key, "is empty; name at least one parameter to search")
    params = {}
    for name, praw in raw.items():
        if not isinstance(name, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_.-]*$", name):
            raise ctx.fail(_join(key, name), "parameter names are letters, digits, _ . - "
                                             "and start with a letter")
        param = _parse_param(ctx, name, praw, _join(key, name), flat)
        if ctx.aliases:
            param = _canonical_param(ctx, param, _join(key, name))
        params[param.name] = param
    return SearchSpace(_order_params(ctx, params, key))


def _canonical_param(ctx: _Ctx, param: Param, key: str) -> Param:
    """``param`` under its knob's canonical name, its conditions too; a ``sparsity`` range
    ``[a, b]`` becomes the ``keep_ratio`` range ``[1 - b, 1 - a]``, its choices ``1 - c``."""
    alias = param.name
    name, complemented = ctx.knob(alias, key)
    when = []
    for other, values in param.when:
        other_name, other_complemented = knobs.canonical(other)
        when.append((other_name, tuple(map(knobs.complement, values)) if other_complemented else values))
    param = dataclasses.replace(param, name=name, when=tuple(when))
    if not complemented:
        return param
    what = f"{name} = 1 - {alias}"
    if param.type == "categorical":
        for i, c in enumerate(param.choices):
            _check_fraction(ctx, _join(_join(key, "choices"), i), c)
        return dataclasses.replace(param, choices=tuple(knobs.complement(c) for c in param.choices))
    if param.type == "int":
        raise ctx.fail(_join(key, "type"), f"{alias} is a fraction between 0 and 1 ({what}); "
                                           "use type: float")
    if param.log:
        raise ctx.fail(_join(key, "log"), f"log: true cannot carry over to {what} (a log-uniform "
                                          f"{alias} is not log-uniform in {name}); drop log, or "
                                          f"search {name} with log: true instead")
    _check_fraction(ctx, _join(key, "low"), param.low)
    _check_fraction(ctx, _join(key, "high"), param.high)
    return dataclasses.replace(param, low=knobs.complement(param.high), high=knobs.complement(param.low))

