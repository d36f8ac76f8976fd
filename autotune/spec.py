"""Study YAML -> a typed, validated ``StudySpec`` (the frozen dataclasses of ``spec_types``).

Owns: reading the study file (and the search-space file it names), both the native form and the
flat ``optimization:`` form, every validation, and the one-off overrides of ``autotune run``.
For the built-in objective every knob name goes through the alias table of ``autotune/knobs.py``
(``learning_rate`` -> ``lr``, ``sparsity`` -> ``1 - keep_ratio``), so the spec holds canonical
names only; a flat study gets the machine-sized defaults of ``knobs.flat_defaults``.
Every problem raises ``SpecError`` naming the file, the key path and the fix; nothing downstream
reads raw dicts.
Must not know about: Optuna internals, torch (the built-in objective's parameter names come from
the config dataclasses, imported lazily).

Example::

    >>> spec = load_spec("studies/quickstart.yaml")          # doctest: +SKIP
    >>> spec.objectives[0].metric, spec.budget.trials       # doctest: +SKIP
    ('val_loss', 8)
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
import os
import re
import stat
import sys
from pathlib import Path
from typing import Any, Callable

import yaml

from autotune import knobs
from autotune.spec_types import (OPTIMIZER_KINDS, PRUNER_KINDS, WARM_START_STRATEGIES, BudgetSpec,
                                 ConstraintSpec, ObjectiveSpec, OptimizerSpec, ParallelSpec, Param, PrunerSpec,
                                 SearchSpace, StudySpec, WarmStartSpec)

BUILTIN_PREFIX = "builtin:"
BUILTIN_OBJECTIVES = ("moe_lm",)


MAX_FILE_BYTES = 1 << 20      # a study or space file is a few KiB; 1 MiB is refused unread
MAX_NODES = 10_000            # YAML nodes after expanding aliases (a "billion laughs" stops here)
MAX_DEPTH = 64                # nesting of lists and mappings
MAX_SHOWN = 80                # characters of a value quoted in a message
MAX_INT = 2 ** 53             # whole numbers beyond this lose precision in Optuna's float sampling


class SpecError(Exception):
    """A mistake in a study or space file: ``file: key: problem``, each part kept short."""

    def __init__(self, file: str | Path | None, key: str, problem: str):
        self.file = _clip(str(file), 300) if file else "<study>"
        self.key, self.problem = _clip(key, 200), _clip(problem, 400)
        super().__init__(f"{self.file}: {self.key}: {self.problem}" if key
                         else f"{self.file}: {self.problem}")


def _clip(text: str, limit: int = MAX_SHOWN) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _shown(value: Any) -> str:
    """``repr(value)`` for a message, at most MAX_SHOWN characters (never a whole expanded value)."""
    if isinstance(value, (list, dict, tuple)):
        return _kind(value)
    return _clip(repr(value))


# --- YAML -------------------------------------------------------------------------------------

class _Refused(yaml.YAMLError):
    """A document over the loader's bounds (nodes after alias expansion, nesting)."""

    def __init__(self, problem: str, mark: Any):
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``), rejects duplicate
    keys instead of silently keeping the last one, and refuses documents that expand past
    MAX_NODES nodes (aliases count as the nodes they repeat) or nest deeper than MAX_DEPTH."""

    def __init__(self, stream: Any):
        super().__init__(stream)
        self._expanded: dict[int, int] = {}   # id(node) -> its size with aliases expanded
        self._total = 0
        self._depth = 0

    def _count(self, n: int, mark: Any) -> None:
        self._total += n
        if self._total > MAX_NODES:
            raise _Refused(f"more than {MAX_NODES} values once aliases are expanded; "
                           "a study needs a few hundred at most", mark)

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            node = super().compose_node(parent, index)
            self._count(self._expanded.get(id(node), 1), mark)
            return node
        mark = self.peek_event().start_mark
        self._count(1, mark)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep", mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        children = node.value if isinstance(node, yaml.SequenceNode) else (
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
        self._expanded[id(node)] = 1 + sum(self._expanded.get(id(c), 1) for c in children)
        return node


_FLOAT = re.compile(r"""^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?$
                       |^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$""", re.X)
_Loader.yaml_implicit_resolvers = {k: [r for r in v if r[0] != "tag:yaml.org,2002:float"]
                                   for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:   # a list or mapping as a key: SafeLoader's own error says so
            break
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {_shown(key)}", key_node.start_mark)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

_FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def _read_text(path: Path, key: str) -> str:
    """The text of a regular file of at most MAX_FILE_BYTES; anything else is refused before it is
    opened (a FIFO or a device would block the read forever)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SpecError(path, key, "file not found") from None
    except OSError as exc:
        raise SpecError(path, key, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    if not stat.S_ISREG(st.st_mode):
        what = next((name for test, name in _FILE_KINDS if test(st.st_mode)), "not a regular file")
        raise SpecError(path, key, f"is {what}; give a YAML file")
    if st.st_size > MAX_FILE_BYTES:
        raise SpecError(path, key, f"is {st.st_size} bytes; study and space files are limited to "
                                   f"{MAX_FILE_BYTES} bytes")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise SpecError(path, key, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    if len(data) > MAX_FILE_BYTES:
        raise SpecError(path, key, f"is over {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(path, key, f"is not UTF-8 text (byte {exc.start})") from None


def _read_yaml(path: Path, key: str = "") -> Any:
    text = _read_text(path, key)
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except _Refused as exc:
        mark = exc.problem_mark
        raise SpecError(path, key, f"refused at line {mark.line + 1}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = _clip(str(getattr(exc, "problem", None) or exc), 200)
        raise SpecError(path, key, f"YAML syntax error at {where}{problem}") from None
    except (RecursionError, MemoryError) as exc:
        raise SpecError(path, key, f"too large or too deeply nested ({type(exc).__name__})") from None
    except ValueError as exc:   # e.g. an integer of more than 4300 digits
        raise SpecError(path, key, f"a value cannot be read: {_clip(str(exc))}") from None


# --- small checkers -----------------------------------------------------------------------------

class _Ctx:
    """The file being read, for error messages; for the built-in objective (``aliases``) also the
    spelling of each knob named so far (canonical name -> (key, spelling)), to catch one knob
    named twice."""

    def __init__(self, file: Path | None, aliases: bool = False,
                 spellings: dict[str, tuple[str, str]] | None = None):
        self.file = file
        self.aliases = aliases
        self.spellings = {} if spellings is None else spellings

    def for_file(self, file: Path) -> "_Ctx":
        return _Ctx(file, self.aliases, self.spellings)

    def knob(self, name: str, key: str) -> tuple[str, bool]:
        """The canonical name of a knob the study sets (``key``: where), and whether its values
        are complemented (``sparsity`` = 1 - ``keep_ratio``). Without aliases: the name as is."""
        if not self.aliases:
            return name, False
        canonical, complemented = knobs.canonical(name)
        first = self.spellings.setdefault(canonical, (key, name))
        if first[1] != name:
            raise self.fail(key, f"{name!r} and {first[1]!r} ({first[0]}) both name the knob "
                                 f"{canonical!r}; keep one")
        return canonical, complemented

    def fail(self, key: str, problem: str) -> SpecError:
        return SpecError(self.file, key, problem)

    def mapping(self, value: Any, key: str) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a mapping, got {_kind(value)}")
        return value

    def keys(self, value: dict, key: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()):
        for k in value:
            if k not in allowed:
                hint = difflib.get_close_matches(str(k), allowed, n=1)
                extra = f"; did you mean {hint[0]!r}?" if hint else f"; allowed: {', '.join(allowed)}"
                raise self.fail(_join(key, k), f"unknown key{extra}")
        for k in required:
            if k not in value:
                raise self.fail(_join(key, k), "is required")

    def number(self, value: Any, key: str, *, integer: bool = False, positive: bool = False,
               minimum: float | None = None) -> float | int:
        if isinstance(value, str):
            text = value.strip()
            try:
                value = int(text) if integer and re.fullmatch(r"[-+]?\d{1,30}", text) else float(text)
            except ValueError:
                what = "a whole number" if integer else "a number"
                raise self.fail(key, f"must be {what}, got the text {_shown(text)}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"must be a number, got {_kind(value)}")
        if not math.isfinite(value):
            raise self.fail(key, f"must be finite, got {value}")
        if integer:
            if isinstance(value, float) and not value.is_integer():
                raise self.fail(key, f"must be a whole number, got {value}")
            if abs(value) > MAX_INT:
                raise self.fail(key, f"must be at most {MAX_INT} (2**53) in size, got {_shown(value)}")
            value = int(value)
        if positive and value <= 0:
            raise self.fail(key, f"must be > 0, got {value}")
        if minimum is not None and value < minimum:
            raise self.fail(key, f"must be >= {minimum}, got {value}")
        return value

    def text(self, value: Any, key: str, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"must be a non-empty text, got {_kind(value)}")
        if choices is not None and value not in choices:
            hint = difflib.get_close_matches(value[:100], choices, n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else ""
            raise self.fail(key, f"{_shown(value)} is not one of {', '.join(choices)}{extra}")
        return value

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {_kind(value)}")
        return value


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {value}"
    if isinstance(value, (int, float)):
        return f"the number {_clip(str(value))}"
    if isinstance(value, str):
        return f"the text {_shown(value)}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _join(key: str, sub: Any) -> str:
    if isinstance(sub, int):
        return f"{key}[{sub}]"
    return f"{key}.{sub}" if key else str(sub)


_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*(?:(\d+(?:\.\d+)?)\s*m)?\s*(?:(\d+(?:\.\d+)?)\s*s)?\s*$")


def parse_duration(value: Any, ctx: _Ctx, key: str) -> float:
    """``90`` (seconds), ``"90s"``, ``"30m"``, ``"2h"``, ``"1h30m"`` -> seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(ctx.number(value, key, positive=True))
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m and any(m.groups()):
            h, mi, s = (float(g) if g else 0.0 for g in m.groups())
            seconds = 3600 * h + 60 * mi + s
            if seconds > 0:
                return seconds
    raise ctx.fail(key, f"must be a duration like 90s, 30m, 2h or 1h30m, got {_kind(value)}")


# --- search space -----------------------------------------------------------------------------

_PARAM_KEYS = ("type", "low", "high", "log", "step", "choices", "when")
_PARAM_TYPES = ("float", "int", "categorical")


def _parse_param(ctx: _Ctx, name: str, raw: Any, key: str, flat: bool = False) -> Param:
    if isinstance(raw, list):
        raw = {"type": "categorical", "choices": raw}
    if not isinstance(raw, dict):
        raise ctx.fail(key, f"must be a mapping with a type (float, int, categorical) or a list of "
                            f"choices, got {_kind(raw)}; constant values go under fixed:")
    raw = dict(raw)
    if flat:  # the flat form says min/max/values
        for old, new in (("min", "low"), ("max", "high"), ("values", "choices")):
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


def _check_fraction(ctx: _Ctx, key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ctx.fail(key, f"must be a fraction between 0 and 1, got {_kind(value)}")


def _knob_mapping(ctx: _Ctx, raw: Any, key: str) -> tuple[tuple[str, Any], ...]:
    """``trainer:`` or ``fixed:`` with each knob under its canonical name (``sparsity: 0.8`` is
    ``keep_ratio: 0.2``)."""
    out = {}
    for name, value in _plain_mapping(ctx, raw, key):
        canonical, complemented = ctx.knob(name, _join(key, name))
        if complemented:
            _check_fraction(ctx, _join(key, name), value)
            value = knobs.complement(value)
        out[canonical] = value
    return tuple(sorted(out.items()))


# --- sections ---------------------------------------------------------------------------------

_STUDY_KEYS = ("study", "description", "storage", "space", "objectives", "optimizer", "pruner",
               "budget", "parallel", "warm_start", "objective", "trainer", "fixed", "constraints")
_FLAT_TOP_KEYS = ("optimization", "study", "description", "storage", "objective", "trainer",
                  "fixed", "pruner", "warm_start", "constraints")
_FLAT_KEYS = ("algorithm", "max_evals", "parallel_evals", "metrics", "parameters", "seed",
              "timeout")
_FLAT_ALGORITHMS = {"bayesian": "tpe", "evolutionary": "evolution", "hybrid": "hybrid",
                    "random": "random", "tpe": "tpe", "gp": "gp"}


def _parse_objectives(ctx: _Ctx, raw: Any, key: str) -> tuple[ObjectiveSpec, ...]:
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ctx.fail(key, "must be a list of {metric: NAME, direction: minimize|maximize}")
    out = []
    for i, item in enumerate(raw):
        ikey = _join(key, i)
        item = ctx.mapping(item, ikey)
        ctx.keys(item, ikey, ("metric", "direction"), required=("metric", "direction"))
        out.append(ObjectiveSpec(ctx.text(item["metric"], _join(ikey, "metric")),
                                 ctx.text(item["direction"], _join(ikey, "direction"),
                                          ("minimize", "maximize"))))
    names = [o.metric for o in out]
    if len(set(names)) != len(names):
        raise ctx.fail(key, f"names a metric twice: {names}")
    return tuple(out)


def _parse_optimizer(ctx: _Ctx, raw: Any, key: str, n_objectives: int) -> OptimizerSpec:
    if isinstance(raw, str):
        raw = {"kind": raw}
    raw = ctx.mapping(raw, key)
    kind = ctx.text(raw.get("kind", "tpe"), _join(key, "kind"), OPTIMIZER_KINDS)
    seed = raw.get("seed")
    if seed is not None:
        seed = ctx.number(seed, _join(key, "seed"), integer=True, minimum=0)
    options = {k: v for k, v in raw.items() if k not in ("kind", "seed")}
    try:
        from autotune.samplers import check_sampler_options
    except ImportError:  # samplers not importable: validated when the sampler is built
        check_sampler_options = None
    if check_sampler_options is not None:
        try:
            check_sampler_options(kind, options, n_objectives)
        except ValueError as exc:
            sub, _, problem = str(exc).partition(": ")
            if not problem:
                sub, problem = "kind", str(exc)
            raise ctx.fail(_join(key, sub), problem) from None
    return OptimizerSpec(kind, seed, tuple(sorted(options.items())))


def _parse_pruner(ctx: _Ctx, raw: Any, key: str, n_objectives: int) -> PrunerSpec:
    if isinstance(raw, str):
        raw = {"kind": raw}
    raw = ctx.mapping(raw, key)
    fields = [f.name for f in dataclasses.fields(PrunerSpec)]
    ctx.keys(raw, key, tuple(fields))
    kind = ctx.text(raw.get("kind", "none"), _join(key, "kind"), PRUNER_KINDS)
    values: dict[str, Any] = {"kind": kind}
    if raw.get("metric") is not None:
        values["metric"] = ctx.text(raw["metric"], _join(key, "metric"))
    if kind != "none" and n_objectives > 1 and (kind not in ("median", "percentile")
                                               or "metric" not in values):
        raise ctx.fail(_join(key, "kind"), "with several objectives, prune with kind: median or "
                                           "percentile and metric: one of the objectives' metrics")
    for name in ("min_steps", "reduction_factor", "startup_trials", "interval_steps"):
        if name in raw:
            values[name] = ctx.number(raw[name], _join(key, name), integer=True, minimum=0)
    if "max_steps" in raw and raw["max_steps"] is not None:
        values["max_steps"] = ctx.number(raw["max_steps"], _join(key, "max_steps"), integer=True,
                                         positive=True)
    if "percentile" in raw:
        pct = ctx.number(raw["percentile"], _join(key, "percentile"))
        if not 0 < pct < 100:
            raise ctx.fail(_join(key, "percentile"), f"must be between 0 and 100, got {pct}")
        values["percentile"] = float(pct)
    if values.get("reduction_factor", 3) < 2:
        raise ctx.fail(_join(key, "reduction_factor"), "must be >= 2")
    if values.get("interval_steps", 1) < 1:
        raise ctx.fail(_join(key, "interval_steps"), "must be >= 1")
    return PrunerSpec(**values)


def _parse_budget(ctx: _Ctx, raw: Any, key: str) -> BudgetSpec:
    raw = ctx.mapping(raw, key)
    ctx.keys(raw, key, ("trials", "timeout", "gpu_hours", "trial_timeout"))
    trials = raw.get("trials")
    if trials is not None:
        trials = ctx.number(trials, _join(key, "trials"), integer=True, positive=True)
    timeout = raw.get("timeout")
    if timeout is not None:
        timeout = parse_duration(timeout, ctx, _join(key, "timeout"))
    gpu_hours = raw.get("gpu_hours")
    if gpu_hours is not None:
        gpu_hours = float(ctx.number(gpu_hours, _join(key, "gpu_hours"), positive=True))
    if trials is None and timeout is None and gpu_hours is None:
        raise ctx.fail(key, "needs at least one of trials, timeout, gpu_hours (else the study never ends)")
    trial_timeout = raw.get("trial_timeout")
    if trial_timeout is not None:
        trial_timeout = parse_duration(trial_timeout, ctx, _join(key, "trial_timeout"))
    return BudgetSpec(trials, timeout, gpu_hours, trial_timeout)


def _parse_parallel(ctx: _Ctx, raw: Any, key: str) -> ParallelSpec:
    raw = ctx.mapping(raw, key)
    fields = tuple(f.name for f in dataclasses.fields(ParallelSpec) if f.name != "evals")
    ctx.keys(raw, key, fields)
    values: dict[str, Any] = {}
    gpus = raw.get("gpus", "auto")
    gkey = _join(key, "gpus")
    if isinstance(gpus, list):
        ids = tuple(ctx.number(g, _join(gkey, i), integer=True, minimum=0) for i, g in enumerate(gpus))
        if len(set(ids)) != len(ids):
            raise ctx.fail(gkey, f"lists a GPU twice: {list(ids)}")
        values["gpus"] = ids
    elif isinstance(gpus, str):
        values["gpus"] = ctx.text(gpus, gkey, ("auto",))
    else:
        values["gpus"] = ctx.number(gpus, gkey, integer=True, minimum=0)
    values["fit_cores"] = ctx.boolean(raw.get("fit_cores", True), _join(key, "fit_cores"))
    for name, minimum in (("trials_per_gpu", 1), ("workers", 1), ("max_retries", 0),
                          ("heartbeat_interval", 1), ("grace_period", 1), ("gpus_per_trial", 1),
                          ("procs_per_trial", 1)):
        if raw.get(name) is not None:
            values[name] = ctx.number(raw[name], _join(key, name), integer=True, minimum=minimum)
    spec = ParallelSpec(**values)
    if spec.grace_period <= spec.heartbeat_interval:
        raise ctx.fail(_join(key, "grace_period"),
                       f"must exceed heartbeat_interval ({spec.heartbeat_interval} s)")
    _check_ranks(ctx, spec, key)
    return spec


def _check_ranks(ctx: _Ctx, spec: ParallelSpec, key: str) -> None:
    """Trials over several processes (issue 21): GPUs or CPU processes, not both; a slot of
    several GPUs holds one trial."""
    if spec.gpus_per_trial > 1 and spec.procs_per_trial > 1:
        raise ctx.fail(_join(key, "procs_per_trial"),
                       "cannot go with gpus_per_trial: a trial's ranks run on GPUs "
                       "(gpus_per_trial, NCCL) or on the CPU (procs_per_trial, gloo)")
    if spec.gpus_per_trial > 1 and spec.trials_per_gpu > 1:
        raise ctx.fail(_join(key, "trials_per_gpu"),
                       f"must be 1 with gpus_per_trial {spec.gpus_per_trial}: a trial over several "
                       "GPUs has them to itself")
    if spec.gpus_per_trial > 1 and spec.gpus == 0:
        raise ctx.fail(_join(key, "gpus_per_trial"),
                       "asks for GPUs while parallel.gpus is 0; use procs_per_trial for CPU ranks")


def check_gpus_per_trial(spec: StudySpec, gpus_found: int) -> None:
    """At run time: ``parallel.gpus_per_trial`` fits the GPUs this run may use (``gpus_found``)."""
    need = spec.parallel.gpus_per_trial
    if need > 1 and gpus_found < need:
        raise SpecError(spec.path, "parallel.gpus_per_trial",
                        f"asks for {need} GPUs per trial, but this run has {gpus_found} GPU(s) "
                        "(parallel.gpus, CUDA_VISIBLE_DEVICES); lower it, or use procs_per_trial "
                        "to run the ranks on the CPU")


def _parse_warm_start(ctx: _Ctx, raw: Any, key: str, n_objectives: int) -> WarmStartSpec | None:
    if raw is None:
        return None
    if isinstance(raw, (str, list)):
        raw = {"from": raw}
    raw = ctx.mapping(raw, key)
    ctx.keys(raw, key, ("from", "storage", "strategy", "top_k", "out_of_range", "local_trials"),
             required=("from",))
    sources = raw["from"]
    sources = [sources] if isinstance(sources, str) else sources
    if not isinstance(sources, list) or not sources:
        raise ctx.fail(_join(key, "from"), "must name one or more earlier studies, or auto")
    names = tuple(ctx.text(s, _join(_join(key, "from"), i)) for i, s in enumerate(sources))
    if "auto" in names and len(names) > 1:
        raise ctx.fail(_join(key, "from"), "auto picks the sources itself; give it alone")
    values: dict[str, Any] = {"sources": names}
    if raw.get("storage") is not None:
        values["storage"] = _parse_storage(ctx, raw["storage"], _join(key, "storage"))
    if "strategy" in raw:
        values["strategy"] = ctx.text(raw["strategy"], _join(key, "strategy"), WARM_START_STRATEGIES)
    if "out_of_range" in raw:
        values["out_of_range"] = ctx.text(raw["out_of_range"], _join(key, "out_of_range"),
                                          ("clip", "drop"))
    strategy = values.get("strategy", WarmStartSpec.strategy)
    if "top_k" in raw:
        if strategy != "enqueue":
            raise ctx.fail(_join(key, "top_k"),
                           f"only strategy enqueue uses it (this file's strategy: {strategy})")
        values["top_k"] = ctx.number(raw["top_k"], _join(key, "top_k"), integer=True, positive=True)
    if "local_trials" in raw:
        if strategy != "local":
            raise ctx.fail(_join(key, "local_trials"),
                           f"only strategy local uses it (this file's strategy: {strategy})")
        values["local_trials"] = ctx.number(raw["local_trials"], _join(key, "local_trials"),
                                            integer=True, positive=True)
    if strategy == "local" and n_objectives > 1:
        raise ctx.fail(_join(key, "strategy"), f"local needs a single objective (this study has "
                                               f"{n_objectives}); use prior")
    return WarmStartSpec(**values)


def _parse_storage(ctx: _Ctx, raw: Any, key: str) -> str:
    from autotune.store import StoreError, check_storage_url
    url = ctx.text(raw, key)
    try:
        check_storage_url(url)
    except StoreError as exc:
        raise ctx.fail(key, str(exc)) from None
    return url


def _parse_objective_ref(ctx: _Ctx, raw: Any, key: str) -> str:
    ref = ctx.text(raw, key)
    if ref.startswith(BUILTIN_PREFIX):
        name = ref[len(BUILTIN_PREFIX):]
        if name not in BUILTIN_OBJECTIVES:
            raise ctx.fail(key, f"unknown built-in objective {name!r}; built-ins: "
                                f"{', '.join(BUILTIN_PREFIX + b for b in BUILTIN_OBJECTIVES)}")
        return ref
    module, _, func = ref.partition(":")
    if not module or not func:
        raise ctx.fail(key, f"{_shown(ref)} must be builtin:NAME or package.module:function")
    top = module.split(".")[0]
    if top in sys.stdlib_module_names or top == "autotune":
        raise ctx.fail(key, f"{_shown(ref)} is not an objective: name a function of your own "
                            "module, e.g. my_package.objectives:train")
    try:
        fn = import_objective(ref, ctx.file.parent if ctx.file else None)
    except ModuleNotFoundError as exc:
        raise ctx.fail(key, f"cannot import module {module!r} ({exc}); is it on PYTHONPATH?") from None
    except AttributeError:
        raise ctx.fail(key, f"module {module!r} has no function {func!r}") from None
    except Exception as exc:  # the user's module failed while importing
        raise ctx.fail(key, f"importing {module!r} failed: {type(exc).__name__}: {exc}") from None
    if not callable(fn):
        raise ctx.fail(key, f"{_shown(ref)} is not callable")
    if getattr(fn, "__module__", None) != module:
        raise ctx.fail(key, f"{_shown(ref)} is imported into {module!r} from "
                            f"{_shown(getattr(fn, '__module__', None))}; name a function defined in "
                            "the module itself")
    return ref


def import_objective(ref: str, study_dir: Path | None = None) -> Callable:
    """Import ``package.module:function``, looking in the working folder and the study's folder
    too (a console script's sys.path has neither)."""
    for folder in (Path.cwd(), study_dir):
        if folder is not None and str(folder.resolve()) not in sys.path:
            sys.path.insert(0, str(folder.resolve()))
    module, _, func = ref.partition(":")
    return getattr(importlib.import_module(module), func)


def _builtin_fields() -> dict[str, Any]:
    """Name -> default value of every knob the built-in objective understands."""
    from autotune.model.config import ModelConfig
    out = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    from autotune.train_config import TrainConfig
    out.update({f.name: f.default for f in dataclasses.fields(TrainConfig)})
    return out


def _check_builtin_value(ctx: _Ctx, key: str, default: Any, value: Any) -> None:
    if default is None or value is None or value == "auto":
        return
    if default == "auto":  # a knob that takes "auto" or an explicit choice, e.g. compile: false
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool) or (isinstance(value, str) and value == "auto")
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    else:
        ok = True
    if not ok:
        raise ctx.fail(key, f"must be {type(default).__name__} like its default {default!r}, "
                            f"got {_kind(value)}")


def _check_builtin_names(ctx: _Ctx, spec_values: dict[str, Any], space: SearchSpace,
                         space_key: str) -> None:
    known = _builtin_fields()
    if not known:
        return

    def check_name(key: str, name: str) -> None:
        if name not in known:
            hint = difflib.get_close_matches(name, [*known, *knobs.ALIASES], n=1)
            extra = ""
            if hint:
                of = f" (another name of {knobs.ALIASES[hint[0]]})" if hint[0] in knobs.ALIASES else ""
                extra = f"; did you mean {hint[0]!r}{of}?"
            raise ctx.fail(key, f"builtin:moe_lm has no knob {name!r}{extra}")

    for section in ("trainer", "fixed"):
        for name, value in dict(spec_values[section]).items():
            key = _join(section, name)
            spelled = ctx.spellings.get(name)   # the key as written (an alias), for the message
            if spelled and spelled[0].startswith(section + ".") and spelled[1] != name:
                key = f"{spelled[0]} ({name})"
            check_name(key, name)
            _check_builtin_value(ctx, key, known[name], value)
    for p in space.params:
        check_name(_join(space_key, p.name), p.name)
        default = known[p.name]
        if p.type == "float" and isinstance(default, int) and not isinstance(default, bool):
            raise ctx.fail(_join(_join(space_key, p.name), "type"),
                           f"{p.name} is a whole number; use type: int")
        if p.type == "categorical":
            for c in p.choices:
                _check_builtin_value(ctx, _join(_join(space_key, p.name), "choices"), default, c)
    overlap = set(dict(spec_values["fixed"])) & set(space.names)
    if overlap:
        raise ctx.fail("fixed", f"{sorted(overlap)} are both fixed and searched; keep one")


# knobs that decide whether the task can exist (batch size and seed don't)
_DATA_KNOBS = ("task", "data_path", "seq_len", "num_pairs", "num_queries", "task_vocab",
               "tokens_per_batch", "eot_token", "val_fraction")


def _check_builtin_data(ctx: _Ctx, values: dict[str, Any]) -> None:
    """Build the training config and the data set from the constant settings, so that a task that
    cannot exist (64 pairs in a 64-token vocabulary, a missing data file) fails here, not in every trial."""
    if set(values["space"].names) & set(_DATA_KNOBS):
        return  # searched data knobs: each trial checks its own combination
    from autotune.train_config import TrainConfig
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    settings = {k: v for k, v in {**dict(values["trainer"]), **dict(values["fixed"])}.items() if k in names}
    try:
        cfg = TrainConfig(**settings)
        if cfg.task == "mqar":        # the size rules alone: no torch for the built-in task
            from autotune.data.sizes import recall_sizes
            recall_sizes(seq_len=cfg.seq_len, num_pairs=cfg.num_pairs, num_queries=cfg.num_queries,
                         vocab_size=cfg.task_vocab or 64)
            return
        from autotune.data import build_dataset      # text: reads the file (and imports torch)
        build_dataset(cfg.task, seq_len=cfg.seq_len, batch_size=cfg.batch_size, seed=cfg.seed,
                      eval_batches=cfg.eval_batches, num_pairs=cfg.num_pairs, num_queries=cfg.num_queries,
                      task_vocab=cfg.task_vocab, data_path=cfg.data_path,
                      tokens_per_batch=cfg.tokens_per_batch, eot_token=cfg.eot_token,
                      val_fraction=cfg.val_fraction)
    except (ValueError, TypeError, OSError) as exc:
        raise ctx.fail("trainer", str(exc)) from None


def _check_metrics(ctx: _Ctx, objective: str, objectives: tuple[ObjectiveSpec, ...], key: str,
                   leaf: bool = True) -> None:
    if not objective.startswith(BUILTIN_PREFIX):
        return  # a user objective that omits a metric fails its first trial saying so
    from autotune.train_config import BUILTIN_METRICS
    for i, o in enumerate(objectives):
        if o.metric not in BUILTIN_METRICS:
            hint = difflib.get_close_matches(o.metric, BUILTIN_METRICS, n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else f"; it reports {', '.join(BUILTIN_METRICS)}"
            raise ctx.fail(_join(_join(key, i), "metric") if leaf else _join(key, i),
                           f"{objective} never reports {o.metric!r}{extra}")


_CONSTRAINT_RE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|<|>|=<|=>|==|=|!=)\s*(\S.*?)\s*$")


def _parse_constraints(ctx: _Ctx, raw: Any, key: str) -> tuple[ConstraintSpec, ...]:
    """``["peak_mem_mb <= 40000", "latency_ms <= 5"]``: a metric, ``<=`` or ``>=``, a number."""
    if raw is None:
        return ()
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise ctx.fail(key, f"must be a list of texts such as \"peak_mem_mb <= 40000\", got {_kind(raw)}")
    out = []
    for i, item in enumerate(raw):
        ikey = _join(key, i)
        if not isinstance(item, str):
            raise ctx.fail(ikey, f"must be a text such as \"latency_ms <= 5\", got {_kind(item)}")
        match = _CONSTRAINT_RE.match(item)
        if match is None:
            raise ctx.fail(ikey, f"{item!r} is not METRIC <= NUMBER or METRIC >= NUMBER")
        metric, op, bound = match.groups()
        if op not in ("<=", ">="):
            fix = {"<": "<=", "=<": "<=", ">": ">=", "=>": ">="}.get(op)
            hint = f"; write {metric} {fix} {bound}" if fix else ""
            raise ctx.fail(ikey, f"operator {op!r} is not supported: use <= or >={hint}")
        try:
            value = float(bound)
        except ValueError:
            raise ctx.fail(ikey, f"bound {bound!r} is not a number") from None
        if not math.isfinite(value):
            raise ctx.fail(ikey, f"bound {bound!r} is not a finite number")
        out.append(ConstraintSpec(metric, op, value))
    return tuple(out)


def _check_constraint_metrics(ctx: _Ctx, objective: str, constraints: tuple[ConstraintSpec, ...],
                              key: str) -> None:
    """As ``_check_metrics``: a built-in objective's constraints name metrics it reports."""
    _check_metrics(ctx, objective, tuple(ObjectiveSpec(c.metric, "minimize") for c in constraints),
                   key, leaf=False)


def _plain_mapping(ctx: _Ctx, raw: Any, key: str) -> tuple[tuple[str, Any], ...]:
    raw = ctx.mapping(raw, key)
    for k, v in raw.items():
        if isinstance(v, (dict, list)) and key == "fixed":
            raise ctx.fail(_join(key, k), "fixed values are single numbers, texts or booleans")
    return tuple(sorted((str(k), v) for k, v in raw.items()))


# --- the two forms ----------------------------------------------------------------------------

def _native(ctx: _Ctx, raw: dict, base_dir: Path, default_name: str) -> dict[str, Any]:
    ctx.keys(raw, "", _STUDY_KEYS, required=("space", "objectives"))
    objectives = _parse_objectives(ctx, raw["objectives"], "objectives")
    return {
        "study": ctx.text(raw.get("study", default_name), "study"),
        "storage": _parse_storage(ctx, raw["storage"], "storage") if raw.get("storage") else None,
        "space": _parse_space(ctx, raw["space"], "space", base_dir),
        "space_key": "space" if not isinstance(raw["space"], str) else "space",
        "objectives": objectives,
        "optimizer": _parse_optimizer(ctx, raw.get("optimizer"), "optimizer", len(objectives)),
        "pruner": _parse_pruner(ctx, raw.get("pruner"), "pruner", len(objectives)),
        "budget": _parse_budget(ctx, raw.get("budget", {"trials": 20}), "budget"),
        "parallel": _parse_parallel(ctx, raw.get("parallel"), "parallel"),
        "warm_start": _parse_warm_start(ctx, raw.get("warm_start"), "warm_start", len(objectives)),
        "objective": _parse_objective_ref(ctx, raw.get("objective", "builtin:moe_lm"), "objective"),
        "trainer": _knob_mapping(ctx, raw.get("trainer"), "trainer"),
        "fixed": _knob_mapping(ctx, raw.get("fixed"), "fixed"),
        "constraints": _parse_constraints(ctx, raw.get("constraints"), "constraints"),
    }


def _flat(ctx: _Ctx, raw: dict, base_dir: Path, default_name: str) -> dict[str, Any]:
    ctx.keys(raw, "", _FLAT_TOP_KEYS, required=("optimization",))
    opt = ctx.mapping(raw["optimization"], "optimization")
    ctx.keys(opt, "optimization", _FLAT_KEYS, required=("metrics", "parameters"))
    algorithm = ctx.text(opt.get("algorithm", "bayesian"), "optimization.algorithm",
                         tuple(_FLAT_ALGORITHMS))
    metrics = opt["metrics"]
    if not isinstance(metrics, list) or not metrics:
        raise ctx.fail("optimization.metrics", "must be a list of {name: METRIC, goal: minimize|maximize}")
    objectives = []
    for i, m in enumerate(metrics):
        mkey = _join("optimization.metrics", i)
        m = ctx.mapping(m, mkey)
        ctx.keys(m, mkey, ("name", "goal"), required=("name", "goal"))
        objectives.append(ObjectiveSpec(ctx.text(m["name"], _join(mkey, "name")),
                                        ctx.text(m["goal"], _join(mkey, "goal"), ("minimize", "maximize"))))
    objectives_t = tuple(objectives)
    if len({o.metric for o in objectives_t}) != len(objectives_t):
        raise ctx.fail("optimization.metrics", "names a metric twice")
    trials = None
    if "max_evals" in opt:
        trials = ctx.number(opt["max_evals"], "optimization.max_evals", integer=True, positive=True)
    timeout = parse_duration(opt["timeout"], ctx, "optimization.timeout") if "timeout" in opt else None
    if trials is None and timeout is None:
        trials = 20
    parallel = ParallelSpec(fit_cores=True)
    if "parallel_evals" in opt:
        workers = ctx.number(opt["parallel_evals"], "optimization.parallel_evals", integer=True, positive=True)
        parallel = ParallelSpec(workers=workers, evals=workers, fit_cores=True)
    seed = opt.get("seed")
    optimizer = {"kind": _FLAT_ALGORITHMS[algorithm]}
    if seed is not None:
        optimizer["seed"] = seed
    values = {
        "study": ctx.text(raw.get("study", default_name), "study"),
        "storage": _parse_storage(ctx, raw["storage"], "storage") if raw.get("storage") else None,
        "space": _parse_space(ctx, opt["parameters"], "optimization.parameters", base_dir, flat=True),
        "space_key": "optimization.parameters",
        "objectives": objectives_t,
        "optimizer": _parse_optimizer(ctx, optimizer, "optimization.algorithm", len(objectives_t)),
        "pruner": _parse_pruner(ctx, raw.get("pruner"), "pruner", len(objectives_t)),
        "budget": BudgetSpec(trials=trials, timeout_s=timeout),
        "parallel": parallel,
        "warm_start": _parse_warm_start(ctx, raw.get("warm_start"), "warm_start",
                                        len(objectives_t)),
        "objective": _parse_objective_ref(ctx, raw.get("objective", "builtin:moe_lm"), "objective"),
        "trainer": _knob_mapping(ctx, raw.get("trainer"), "trainer"),
        "fixed": _knob_mapping(ctx, raw.get("fixed"), "fixed"),
        "constraints": _parse_constraints(ctx, raw.get("constraints"), "constraints"),
    }
    if ctx.aliases:
        _fill_flat_defaults(values)
    return values


def machine_has_gpu() -> bool:
    """Whether this machine has a GPU, asked without torch (``CUDA_VISIBLE_DEVICES``, ``nvidia-smi``)."""
    from autotune.gpus import detect_gpus
    return bool(detect_gpus(ask_torch=False))


def _fill_flat_defaults(values: dict[str, Any]) -> None:
    """Give a flat study the machine-sized model / trainer settings (``knobs.flat_defaults``) it
    does not set itself, searched or constant, and record which ones it got."""
    gpu = machine_has_gpu()
    named = set(dict(values["trainer"])) | set(dict(values["fixed"])) | set(values["space"].names)
    settings = {**dict(values["trainer"]), **dict(values["fixed"])}
    if settings.get("task", "mqar") != "mqar":   # the defaults size the built-in recall task
        named |= set(knobs.MQAR_KNOBS)
    used: dict[str, Any] = {}
    for section, defaults in knobs.flat_defaults(gpu).items():
        missing = {k: v for k, v in defaults.items() if k not in named}
        if missing:
            values[section] = tuple(sorted({**dict(values[section]), **missing}.items()))
            used.update(missing)
    values["flat_defaults"] = tuple(used.items())
    values["flat_defaults_for"] = ("gpu" if gpu else "cpu") if used else None


def parse_spec(raw: Any, *, file: Path | None = None, base_dir: Path | None = None,
               default_name: str = "study") -> StudySpec:
    """Validate an already-loaded YAML document (a dict) into a StudySpec."""
    ctx = _Ctx(file)
    if not isinstance(raw, dict) or not raw:
        raise ctx.fail("", f"must be a mapping of study settings (study, space, objectives, ...), "
                           f"got {_kind(raw)}")
    # the built-in objective's knobs have aliases; a user's own function gets its names as written
    if not isinstance(raw.get("description", ""), str):
        raise ctx.fail("description", f"must be text, got {_kind(raw['description'])}")
    ctx.aliases = str(raw.get("objective", BUILTIN_PREFIX)).startswith(BUILTIN_PREFIX)
    base_dir = base_dir or (file.parent if file else Path("."))
    values = (_flat if "optimization" in raw else _native)(ctx, raw, base_dir, default_name)
    space_key = values.pop("space_key")
    if values["objective"].startswith(BUILTIN_PREFIX):
        _check_builtin_names(ctx, values, values["space"], space_key)
    if values["objective"].startswith(BUILTIN_PREFIX):
        _check_builtin_data(ctx, values)
    _check_metrics(ctx, values["objective"], values["objectives"],
                   "objectives" if "optimization" not in raw else "optimization.metrics")
    _check_constraint_metrics(ctx, values["objective"], values["constraints"], "constraints")
    prune_on = values["pruner"].metric
    if prune_on is not None and prune_on not in [o.metric for o in values["objectives"]]:
        raise ctx.fail("pruner.metric", f"{prune_on!r} is not an objective's metric; "
                                        f"choose one of {', '.join(o.metric for o in values['objectives'])}")
    from autotune.store import DEFAULT_STORAGE, ENV_STORAGE
    values["storage"] = values["storage"] or os.environ.get(ENV_STORAGE) or DEFAULT_STORAGE
    return StudySpec(path=file, **values)


def load_spec(path: str | Path, **overrides: Any) -> StudySpec:
    """Read and validate a study file, then apply the one-off overrides of ``autotune run``
    (``storage``, ``study``, ``trials``, ``timeout``, ``workers``, ``warm_start``)."""
    path = Path(path)
    raw = _read_yaml(path)
    try:
        spec = parse_spec(raw, file=path, base_dir=path.parent, default_name=path.stem)
    except (OverflowError, RecursionError, MemoryError) as exc:   # a check missed a huge value
        raise SpecError(path, "", f"a value is too large to handle ({type(exc).__name__})") from None
    return apply_overrides(spec, **overrides)


def apply_overrides(spec: StudySpec, *, storage: str | None = None, study: str | None = None,
                    trials: int | None = None, timeout: str | float | None = None,
                    workers: int | None = None, warm_start: tuple[str, ...] | None = None
                    ) -> StudySpec:
    changes: dict[str, Any] = {}
    if storage:
        changes["storage"] = _parse_storage(_Ctx(None), storage, "--storage")
    if study:
        changes["study"] = study
    budget = spec.budget
    if trials is not None:
        budget = dataclasses.replace(budget, trials=_Ctx(None).number(trials, "--trials", integer=True,
                                                                      positive=True))
    if timeout is not None:
        budget = dataclasses.replace(budget, timeout_s=parse_duration(timeout, _Ctx(None), "--timeout"))
    changes["budget"] = budget
    if workers is not None:
        changes["parallel"] = dataclasses.replace(
            spec.parallel, workers=_Ctx(None).number(workers, "--workers", integer=True, positive=True))
    if warm_start:
        base = spec.warm_start or WarmStartSpec()
        changes["warm_start"] = dataclasses.replace(base, sources=tuple(warm_start))
    return dataclasses.replace(spec, **changes)
