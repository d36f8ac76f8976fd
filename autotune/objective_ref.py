"""Which function a study's ``objective:`` names, and what the built-in one accepts.

Owns: ``builtin:NAME`` and ``package.module:function`` references (checked when the study file is
read, imported for a trial: ``import_objective``), and the built-in objective's checks of a study
file: knob names and value types (``builtin_fields``: the fields of ``ModelConfig`` and
``TrainConfig``), a recall task that can exist, the metrics it reports, and routing that can
exist (``routing_problem``: ``top_k`` at most ``num_experts``), the last also for each trial's
values. ``autotune/objective.py`` owns this module; the study-file parser (``spec.py``) calls it,
and every problem is a ``SpecError`` naming the file and key.
Must not know about: Optuna, torch (the config dataclasses are imported lazily and import none).

Example::

    >>> routing_problem({"num_experts": 2, "top_k": 4})
    'top_k 4 is more than num_experts 2: a token cannot be routed to more experts than there are'
    >>> routing_problem({"num_experts": 1, "top_k": 4}) is None    # one expert: a dense FFN
    True
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

from autotune import knobs
from autotune.spec_checks import _Ctx, _join, _kind, _shown
from autotune.spec_types import ObjectiveSpec, SearchSpace

BUILTIN_PREFIX = "builtin:"
BUILTIN_OBJECTIVES = ("moe_lm",)

def check_objective_ref(ctx: _Ctx, raw: Any, key: str) -> str:
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


def builtin_fields() -> dict[str, Any]:
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


def check_builtin_knobs(ctx: _Ctx, spec_values: dict[str, Any], space: SearchSpace,
                        space_key: str) -> None:
    """Every knob the study sets or searches is one the built-in objective has, with a value of
    its type, no knob is both fixed and searched, and the routing can exist."""
    known = builtin_fields()
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
            key = _written_key(ctx, section, name)
            check_name(key, name)
            _check_builtin_value(ctx, key, known[name], value)
    for p in space.params:
        if p.name in ("gpus_per_trial", "procs_per_trial"):   # the trial's width: the scheduler's
            continue
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
    _check_routing(ctx, spec_values, space, space_key, known)


def _written_key(ctx: _Ctx, section: str, name: str) -> str:
    """``section.name``, or ``section.alias (name)`` where the study spelled the knob otherwise."""
    key = _join(section, name)
    spelled = ctx.spellings.get(name)
    if spelled and spelled[0].startswith(section + ".") and spelled[1] != name:
        key = f"{spelled[0]} ({name})"
    return key


def routing_problem(values: Mapping[str, Any]) -> str | None:
    """Why a configuration's routing cannot exist (``top_k`` above ``num_experts``), or None.
    One expert is a dense feed-forward: its ``top_k`` is not used."""
    top_k, num_experts = values.get("top_k"), values.get("num_experts")
    if isinstance(top_k, int) and isinstance(num_experts, int) and 1 < num_experts < top_k:
        return (f"top_k {top_k} is more than num_experts {num_experts}: a token cannot be routed "
                "to more experts than there are")
    return None


def _possible(name: str, settings: Mapping[str, Any], space: SearchSpace, default: Any
              ) -> tuple[list[Any], str | None]:
    """The values a knob can take in a trial, and the searched parameter's name if searched."""
    param = next((p for p in space.params if p.name == name), None)
    constant = settings.get(name, default)
    if param is None:
        return [constant], None
    if param.type == "categorical":
        values = list(param.choices)
    else:
        values = [param.low, param.high]       # int: the two ends bound every value
    if param.when:                              # inactive: the trial keeps the constant
        values.append(constant)
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool)], name


def _check_routing(ctx: _Ctx, spec_values: dict[str, Any], space: SearchSpace, space_key: str,
                   known: Mapping[str, Any]) -> None:
    """``top_k > num_experts`` in every trial the study can run is a mistake in the file; where
    only some trials can meet it, each of those fails saying so (``routing_problem``)."""
    settings = {**dict(spec_values["trainer"]), **dict(spec_values["fixed"])}
    top_ks, top_k_searched = _possible("top_k", settings, space, known.get("top_k"))
    experts, experts_searched = _possible("num_experts", settings, space, known.get("num_experts"))
    if not top_ks or not experts or min(experts) <= 1 or min(top_ks) <= max(experts):
        return
    if top_k_searched:
        key = _join(_join(space_key, "top_k"), "low")
    elif experts_searched:
        key = _join(space_key, "num_experts")
    else:
        key = _written_key(ctx, "fixed" if "top_k" in dict(spec_values["fixed"]) else "trainer", "top_k")
    raise ctx.fail(key, f"top_k (at least {min(top_ks)}) is always more than num_experts (at most "
                        f"{max(experts)}): a token cannot be routed to more experts than there are; "
                        "lower top_k or add experts")


# knobs that decide whether the task can exist (batch size and seed don't)
_DATA_KNOBS = ("task", "data_path", "seq_len", "num_pairs", "num_queries", "task_vocab",
               "tokens_per_batch", "eot_token", "val_fraction")


def check_batching(ctx: _Ctx, values: dict[str, Any], space_key: str) -> None:
    """``batching`` (trainer, fixed or searched) is ``tokens`` or ``cost``; ``cost`` needs the
    variable-length text task, so a constant task other than ``text`` refuses it."""
    from autotune.train_config import BATCHINGS
    settings = {**dict(values["trainer"]), **dict(values["fixed"])}
    key = _join("fixed" if "batching" in dict(values["fixed"]) else "trainer", "batching")
    choices = [settings["batching"]] if "batching" in settings else []
    param = next((p for p in values["space"].params if p.name == "batching"), None)
    if param is not None:
        key, choices = _join(_join(space_key, "batching"), "choices"), list(param.choices or ())
    for choice in choices:
        if choice not in BATCHINGS:
            raise ctx.fail(key, f"{choice!r} is not a batching; choose tokens or cost")
    task = settings.get("task", "mqar")
    if "cost" in choices and task != "text" and "task" not in values["space"].names:
        raise ctx.fail(key, f"'cost' batches variable-length text (task: text); task {task!r} has "
                            "sequences of one length (batch_size of them a batch): use tokens or leave it out")


def check_builtin_data(ctx: _Ctx, values: dict[str, Any]) -> None:
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


def check_metrics(ctx: _Ctx, objective: str, objectives: tuple[ObjectiveSpec, ...], key: str,
                  leaf: bool = True) -> None:
    """A built-in objective's study names only metrics it reports."""
    if not objective.startswith(BUILTIN_PREFIX):
        return  # a user objective that omits a metric fails its first trial saying so
    from autotune.train_config import BUILTIN_METRICS
    for i, o in enumerate(objectives):
        if o.metric not in BUILTIN_METRICS:
            hint = difflib.get_close_matches(o.metric, BUILTIN_METRICS, n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else f"; it reports {', '.join(BUILTIN_METRICS)}"
            raise ctx.fail(_join(_join(key, i), "metric") if leaf else _join(key, i),
                           f"{objective} never reports {o.metric!r}{extra}")

