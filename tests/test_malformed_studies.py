"""A corpus of malformed studies (issue 17): each one is refused with exit code 2 and one message
naming the file and the key, no traceback, within 5 s, and nothing written to the store.

Most cases are mutations of one valid study (``BASE``): wrong types, unknown keys at every level,
bad ranges, durations, URLs, conditions, duplicates, huge values; the rest are whole files (alias
bombs, deep nesting, oversized, not UTF-8, FIFOs, folders) written by hand. The bulk runs through
click's CliRunner in-process; a sample through ``autotune run`` (the store stays untouched) and a
few through real subprocesses.
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from click.testing import CliRunner

from autotune.cli import main
from autotune.spec import MAX_FILE_BYTES

REPO = Path(__file__).resolve().parents[1]
LIMIT_S = 5.0


def base_study(tmp: Path) -> dict:
    return {
        "study": "corpus",
        "description": "the valid study every case breaks in one place",
        "storage": f"sqlite:///{tmp / 'store.db'}",
        "space": {
            "x": {"type": "float", "low": 0.0, "high": 1.0},
            "n": {"type": "int", "low": 1, "high": 4},
            "kind": {"type": "categorical", "choices": ["a", "b"]},
            "y": {"type": "float", "low": 0.1, "high": 1.0, "log": True, "when": {"kind": "b"}},
        },
        "objectives": [{"metric": "val_loss", "direction": "minimize"}],
        "optimizer": {"kind": "random", "seed": 0},
        "pruner": {"kind": "median", "min_steps": 1, "startup_trials": 1},
        "budget": {"trials": 2, "timeout": "10m"},
        "parallel": {"workers": 1, "heartbeat_interval": 1, "grace_period": 3},
        "objective": "tests.user_objectives:quadratic",
        "trainer": {"steps": 2},
        "fixed": {"z": 1},
    }


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Path], Path]   # writes the study (and what it needs) under tmp, returns it
    expect: str                    # the key (or the place) the message must name


CASES: list[Case] = []


def _write(tmp: Path, doc: Any) -> Path:
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _set(doc: dict, keys: tuple, value: Any) -> None:
    for k in keys[:-1]:
        doc = doc[k]
    if value is _DELETE:
        del doc[keys[-1]]
    else:
        doc[keys[-1]] = value


_DELETE = object()


def _key_text(keys: tuple) -> str:
    out = ""
    for k in keys:
        out = f"{out}[{k}]" if isinstance(k, int) else (f"{out}.{k}" if out else str(k))
    return out


def mutate(keys: tuple, value: Any, expect: str | None = None, tag: str = "") -> None:
    """A case: BASE with the value at ``keys`` replaced (or deleted with _DELETE)."""
    def make(tmp: Path) -> Path:
        doc = base_study(tmp)
        _set(doc, keys, value(tmp) if callable(value) else value)
        return _write(tmp, doc)
    shown = "deleted" if value is _DELETE else (tag or repr(value)[:60])
    CASES.append(Case(f"{_key_text(keys)}={shown}", make, expect or _key_text(keys)))


def text(case_id: str, body: str | Callable[[Path], str], expect: str) -> None:
    """A case: a whole study file written as text."""
    def make(tmp: Path) -> Path:
        path = tmp / "study.yaml"
        path.write_text(body(tmp) if callable(body) else body)
        return path
    CASES.append(Case(case_id, make, expect))


def special(case_id: str, make: Callable[[Path], Path], expect: str) -> None:
    CASES.append(Case(case_id, make, expect))


# --- unknown keys at every level ------------------------------------------------------------------
for where in [(), ("space", "x"), ("space", "kind"), ("objectives", 0), ("pruner",), ("budget",),
              ("parallel",), ("space", "y", "when")]:
    def _unknown(where=where):
        def value(tmp: Path) -> dict:
            doc = base_study(tmp)
            for k in where:
                doc = doc[k]
            return {**doc, "bogus_key": 1}
        if where:
            mutate(where, value, _key_text(where + ("bogus_key",)) if where[-1] != "when" else "bogus_key",
                   tag="+bogus_key")
        else:
            text("top.bogus_key", lambda tmp: yaml.safe_dump({**base_study(tmp), "bogus_key": 1}),
                 "bogus_key")
    _unknown()
mutate(("optimizer",), {"kind": "random", "seed": 0, "bogus_option": 3}, "optimizer.bogus_option")
mutate(("optimizer",), {"kind": "tpe", "n_startup_trials": -2}, "optimizer")
mutate(("optimizer",), {"kind": "tpe", "n_startup_trials": "many"}, "optimizer")
mutate(("warm_start",), {"from": ["old"], "bogus_key": 1}, "warm_start.bogus_key")
for _kind in ("evolution", "nsga2"):   # a genetic algorithm breeds only from its own trials
    text(f"warm_start.strategy=prior-with-{_kind}",
         lambda tmp, kind=_kind: yaml.safe_dump({**base_study(tmp), "optimizer": {"kind": kind, "seed": 0},
                                                 "warm_start": {"from": ["old"], "strategy": "prior"}}),
         "warm_start.strategy")
mutate(("space", "lr"), {"type": "float", "low": 1e-4, "high": 1e-2, "min": 0}, "space.lr.min")

# --- wrong types and bad values, key by key --------------------------------------------------------
BAD_VALUES: dict[tuple, list] = {
    ("study",): [5, [1], {"a": 1}, True, "", None],
    ("description",): [[1, [2]], {"a": 1}, 5],
    ("storage",): [5, ["sqlite:///x.db"], "notaurl", "://nothing", "postgresql://u@h:notaport/db"],
    ("objectives",): [[], "val_loss", 5, [{"metric": "val_loss"}],
                      [{"metric": "a", "direction": "minimize"}, {"metric": "a", "direction": "maximize"}]],
    ("objectives", 0, "direction"): ["up", 5, None, "MINIMIZE", ["minimize"]],
    ("objectives", 0, "metric"): [5, "", None, {"a": 1}],
    ("optimizer", "kind"): ["sgd", 5, [], None, "TPE"],
    ("optimizer", "seed"): [-1, "abc", 1.5, [1], True, "2.7", 10 ** 30],
    ("pruner", "kind"): ["fast", 3, [], "percentil"],
    ("pruner", "min_steps"): [-1, "x", 1.5, [1]],
    ("pruner", "startup_trials"): [-1, "2.5", {"a": 1}],
    ("budget", "trials"): [0, -1, "2.7", 2.7, "abc", [1], True, "1e400", 10 ** 30, "", {"n": 1}],
    ("budget", "timeout"): ["10 minutes", -5, "0s", [1], "m", "1h-5m", 0, True],
    ("budget", "gpu_hours"): [0, "x", -1, ".inf", ".nan"],
    ("parallel", "gpus"): [-1, "all", [0, 0], [-1], 1.5, {"a": 1}, ["x"]],
    ("parallel", "trials_per_gpu"): [0, "x", 2.5],
    ("parallel", "workers"): [0, -3, 2.5, "two"],
    ("parallel", "max_retries"): [-1, "x"],
    ("parallel", "heartbeat_interval"): [0, "fast"],
    ("parallel", "grace_period"): [1, 0],
    ("parallel", "fit_cores"): ["yes", 1],
    ("objective",): ["os:system", "builtins:eval", "subprocess:run", "shutil:rmtree",
                     "importlib:import_module", "sys:exit", "posix:system", "autotune.cli:main",
                     "no_such_module_xyz:f", "tests.user_objectives:nope", "tests.user_objectives",
                     ":quadratic", "builtin:nope", 5, "", ["tests.user_objectives:quadratic"]],
    ("trainer",): [5, [1], "steps=4"],
    ("fixed",): [[1], 5, {"z": [1]}, {"z": {"a": 1}}],
    ("budget",): [5, {}, [1], "10m"],
    ("parallel",): [5, [1]],
    ("pruner",): [5, [1]],
    ("space",): [None, [], 5, {}],
}
for keys, values in BAD_VALUES.items():
    for v in values:
        mutate(keys, v)

# objectives whose direction appears in the message as objectives[0]
mutate(("objectives", 0), {"metric": "val_loss", "direction": "minimize", "goal": "x"},
       "objectives[0].goal")
mutate(("objectives", 0), "val_loss", "objectives[0]")
mutate(("pruner",), {"kind": "percentile", "percentile": 0}, "pruner.percentile")
mutate(("pruner",), {"kind": "percentile", "percentile": 100}, "pruner.percentile")
mutate(("pruner",), {"kind": "sha", "reduction_factor": 1}, "pruner.reduction_factor")
mutate(("pruner",), {"kind": "median", "interval_steps": 0}, "pruner.interval_steps")
mutate(("pruner",), {"kind": "hyperband", "max_steps": 0}, "pruner.max_steps")
mutate(("objectives",), [{"metric": "a", "direction": "minimize"}, {"metric": "b", "direction": "minimize"}],
       "pruner.kind", tag="two-objectives-with-a-pruner")

# --- search-space parameters -------------------------------------------------------------------------
PARAM_VALUES: dict[str, list] = {
    "type": ["floaty", 5, None, "Float", ["float"]],
    "low": ["abc", [1], None, "1e400", ".nan", 2.0, {"a": 1}],
    "high": ["abc", "-.inf", "1e400", [1], True],
    "log": ["yes", 1, [True]],
    "step": [-0.1, 0, "x", 2.0, [1]],
}
for field, values in PARAM_VALUES.items():
    for v in values:
        mutate(("space", "x", field), v)
for field in ("low", "high", "type"):
    mutate(("space", "x", field), _DELETE)
mutate(("space", "x"), {"type": "float", "low": 0.0, "high": 1.0, "log": True}, "space.x.low")
mutate(("space", "x"), {"type": "float", "low": 0.0, "high": -1.0}, "space.x.low")
mutate(("space", "x"), {"type": "float", "low": 0.1, "high": 1.0, "log": True, "step": 0.1}, "space.x.step")
mutate(("space", "x"), {"type": "float", "low": -1e308, "high": 1e308}, "space.x.high")
mutate(("space", "x"), {"type": "float", "low": 0, "high": 1e30, "step": 1e-30}, "space.x.step")
mutate(("space", "x"), {"type": "float", "low": 0, "high": 1, "choices": [1, 2]}, "space.x.choices")
mutate(("space", "n"), {"type": "int", "low": 0.5, "high": 4}, "space.n.low")
mutate(("space", "n"), {"type": "int", "low": 0, "high": 10 ** 30, "step": 1}, "space.n.high",
       tag="int-range-1e30")
mutate(("space", "n"), {"type": "int", "low": 0, "high": "1e400"}, "space.n.high")
mutate(("space", "n"), {"type": "int", "low": 0, "high": 10, "step": 1.5}, "space.n.step")
mutate(("space", "n"), {"type": "int", "low": 0, "high": 10, "step": 20}, "space.n.step")
mutate(("space", "n"), {"type": "int", "low": -(2 ** 60), "high": 0}, "space.n.low")
CHOICES = [[], "a", [1, True], [0, False], [1, 1.0], ["a", "a"], [[1]], [{"a": 1}], None, 5,
           [1, 2, 1.0]]
for v in CHOICES:
    mutate(("space", "kind", "choices"), v, "space.kind.choices")
mutate(("space", "kind"), {"type": "categorical", "choices": [1, 2], "low": 1}, "space.kind.low")
mutate(("space", "kind"), {"type": "categorical"}, "space.kind.choices")
mutate(("space", "kind"), "sparse", "space.kind")
mutate(("space", "kind"), 5, "space.kind")
for bad_name in ("1abc", "a b", "x;y"):
    mutate(("space", bad_name), {"type": "float", "low": 0, "high": 1}, f"space.{bad_name}")
WHEN_VALUES = {"nope": {"nope": "a"}, "self": {"y": 1}, "empty": {}, "not-a-choice": {"kind": "c"},
               "scalar": 5, "no-values": {"kind": []}, "list": ["kind"]}
for tag, v in WHEN_VALUES.items():
    mutate(("space", "y", "when"), v, "space.y.when", tag=tag)
mutate(("space",), {"a": {"type": "categorical", "choices": [1, 2], "when": {"b": 1}},
                    "b": {"type": "categorical", "choices": [1, 2], "when": {"a": 1}}},
       "when", tag="cycle")

# --- warm start ------------------------------------------------------------------------------------------
WARM = {"not-a-mapping": 5, "empty-from": {"from": []}, "from-number": {"from": [5]},
        "auto-and-more": {"from": ["auto", "x"]}, "strategy": {"from": ["x"], "strategy": "magic"},
        "best_k-prior": {"from": ["x"], "strategy": "prior", "best_k": 3},
        "top_k-renamed": {"from": ["x"], "top_k": 3},
        "local_trials-enqueue": {"from": ["x"], "local_trials": 3},
        "out_of_range": {"from": ["x"], "out_of_range": "wrap"},
        "storage-number": {"from": ["x"], "storage": 5},
        "storage-url": {"from": ["x"], "storage": "::nonsense::"},
        "no-from": {"strategy": "prior"}, "best_k-zero": {"from": ["x"], "best_k": 0}}
for tag, v in WARM.items():
    mutate(("warm_start",), v, "warm_start", tag=tag)

# --- whole files written by hand -------------------------------------------------------------------------
BOMB = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x, x]"]
                 + [f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]"
                    for p, c in zip("abcdefgh", "bcdefghi")]) + "\n"
text("alias-bomb", BOMB, "line")
text("alias-bomb-in-description",
     lambda tmp: BOMB.replace("i: &i", "description: &i") + yaml.safe_dump(
         {k: v for k, v in base_study(tmp).items() if k != "description"}), "line")
text("alias-bomb-in-choices",
     lambda tmp: "c: &c [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n" + "\n".join(
         f"c{i}: &c{i} [*c{i - 1 if i > 1 else ''}, *c{i - 1 if i > 1 else ''}, *c{i - 1 if i > 1 else ''}, "
         f"*c{i - 1 if i > 1 else ''}, *c{i - 1 if i > 1 else ''}, *c{i - 1 if i > 1 else ''}, "
         f"*c{i - 1 if i > 1 else ''}, *c{i - 1 if i > 1 else ''}, *c{i - 1 if i > 1 else ''}, "
         f"*c{i - 1 if i > 1 else ''}]" for i in range(1, 7)) + "\n"
     + yaml.safe_dump({k: v for k, v in base_study(tmp).items() if k != "space"})
     + "space:\n  kind: {type: categorical, choices: *c6}\n", "line")
text("deep-lists", "study: x\nspace: " + "[" * 5000 + "]" * 5000 + "\n", "line")
text("deep-mappings", "study: x\nspace: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n", "line")
text("deep-block", lambda tmp: "study: x\nspace:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 200))
     + " " * 200 + "v: 1\n", "line")
text("huge-int", "study: x\nbudget: {trials: " + "9" * 5000 + "}\n", "value")
text("huge-file", lambda tmp: "# " + "x" * MAX_FILE_BYTES + "\n", "bytes")
text("empty-file", "", "mapping")
text("only-a-comment", "# nothing here\n", "mapping")
text("top-level-list", "- study: x\n", "mapping")
text("top-level-scalar", "just a sentence\n", "mapping")
text("syntax-unclosed", "study: [x\n", "line")
text("syntax-tab", "study: x\nspace:\n\tx: 1\n", "line")
text("syntax-colon", "study: x: y\n", "line")
text("duplicate-top-key", lambda tmp: yaml.safe_dump(base_study(tmp)) + "study: again\n", "duplicate key")
text("duplicate-param",
     lambda tmp: yaml.safe_dump({k: v for k, v in base_study(tmp).items() if k != "space"})
     + "space:\n  x: {type: float, low: 0, high: 1}\n  x: {type: int, low: 0, high: 1}\n", "duplicate key")
text("python-tag", "study: !!python/object/apply:os.system ['true']\n", "line")
text("python-name-tag", "objective: !!python/name:os.system\n", "line")
text("unhashable-key", "? [a, b]\n: 1\n", "line")


def _bytes(body: bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / "study.yaml").write_bytes(body)
        return tmp / "study.yaml"
    return make


special("not-utf8", _bytes(b"study: \xff\xfe\x00x\n"), "UTF-8")
special("nul-byte", _bytes(b"study: a\x00b\n"), "character")
text("flat-algorithm", "optimization: {algorithm: genetic, metrics: [{name: a, goal: minimize}], "
     "parameters: {x: {type: float, min: 0, max: 1}}}\nobjective: tests.user_objectives:quadratic\n",
     "optimization.algorithm")
text("flat-max-evals", "optimization: {max_evals: '2.7', metrics: [{name: a, goal: minimize}], "
     "parameters: {x: {type: float, min: 0, max: 1}}}\nobjective: tests.user_objectives:quadratic\n",
     "optimization.max_evals")
text("flat-metrics", "optimization: {metrics: [], parameters: {x: {type: float, min: 0, max: 1}}}\n",
     "optimization.metrics")
text("flat-goal", "optimization: {metrics: [{name: a, goal: up}], "
     "parameters: {x: {type: float, min: 0, max: 1}}}\nobjective: tests.user_objectives:quadratic\n",
     "optimization.metrics[0].goal")
text("flat-min-max", "optimization: {metrics: [{name: a, goal: minimize}], "
     "parameters: {x: {type: float, min: 2, max: 1}}}\nobjective: tests.user_objectives:quadratic\n",
     "optimization.parameters.x.low")
text("flat-unknown", "optimization: {metrics: [{name: a, goal: minimize}], bogus: 1, "
     "parameters: {x: {type: float, min: 0, max: 1}}}\n", "optimization.bogus")
text("flat-parallel", "optimization: {parallel_evals: 0, metrics: [{name: a, goal: minimize}], "
     "parameters: {x: {type: float, min: 0, max: 1}}}\nobjective: tests.user_objectives:quadratic\n",
     "optimization.parallel_evals")


# --- files the study names, and files that are not files ------------------------------------------------
def _with_space(make_space: Callable[[Path], str]) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        doc = base_study(tmp)
        doc["space"] = make_space(tmp)
        return _write(tmp, doc)
    return make


def _fifo(tmp: Path, name: str) -> Path:
    path = tmp / name
    os.mkfifo(path)
    return path


def _space_file(body: str | bytes) -> Callable[[Path], str]:
    def make(tmp: Path) -> str:
        path = tmp / "space.yaml"
        path.write_bytes(body if isinstance(body, bytes) else body.encode())
        return "space.yaml"
    return make


special("space-missing", _with_space(lambda tmp: "missing/space.yaml"), "space")
special("space-missing-absolute", _with_space(lambda tmp: "/nonexistent/dir/space.yaml"), "space")
special("space-under-a-file", _with_space(lambda tmp: "study.yaml/space.yaml"), "space")
special("space-folder", _with_space(lambda tmp: str(tmp)), "space")
special("space-empty-name", _with_space(lambda tmp: ""), "space")
special("space-nul-name", _with_space(lambda tmp: "sp\0ace.yaml"), "space")
special("space-fifo", _with_space(lambda tmp: _fifo(tmp, "space.fifo").name), "space")
special("space-dev-zero", _with_space(lambda tmp: "/dev/zero"), "space")
special("space-dev-urandom", _with_space(lambda tmp: "/dev/urandom"), "space")
special("space-huge", _with_space(_space_file("# " + "x" * MAX_FILE_BYTES)), "space")
special("space-bomb", _with_space(_space_file(BOMB)), "space")
special("space-syntax", _with_space(_space_file("x: {type: float, low: 0\n")), "space")
special("space-not-utf8", _with_space(_space_file(b"x: \xff\n")), "space")
special("space-names-itself", _with_space(_space_file("space.yaml\n")), "space")
special("space-a-list", _with_space(_space_file("- x\n- y\n")), "space")
special("space-bad-param", _with_space(_space_file("x: {type: float, low: 2, high: 1}\n")), "x.low")
special("study-fifo", lambda tmp: _fifo(tmp, "study.yaml"), "FIFO")
special("study-dev-zero", lambda tmp: Path("/dev/zero"), "device")
special("study-missing", lambda tmp: tmp / "missing.yaml", "not found")


def _symlink_to_fifo(tmp: Path) -> Path:
    (tmp / "study.yaml").symlink_to(_fifo(tmp, "f"))
    return tmp / "study.yaml"


special("study-symlink-to-fifo", _symlink_to_fifo, "FIFO")


def _imported_into(tmp: Path) -> str:
    """A user module that imports ``os.system``: naming it through the module is refused."""
    name = f"corpus_evil_{tmp.name.replace('-', '_')}"
    (tmp / f"{name}.py").write_text("from os import system\nfrom subprocess import run\n")
    return f"{name}:system"


mutate(("objective",), _imported_into, "objective", tag="imported-os.system")



def _unique_ids(cases: list[Case]) -> list[Case]:
    seen: dict[str, int] = {}
    out = []
    for c in cases:
        seen[c.id] = seen.get(c.id, 0) + 1
        out.append(c if seen[c.id] == 1 else Case(f"{c.id}#{seen[c.id]}", c.make, c.expect))
    return out


CASES = _unique_ids(CASES)


# --- the checks ------------------------------------------------------------------------------------------
def _check(result_code: int, output: str, path: Path, case: Case, elapsed: float) -> None:
    assert result_code == 2, f"{case.id}: exit {result_code}: {output[-400:]}"
    assert str(path) in output, f"{case.id}: the file is not named: {output[-400:]}"
    assert case.expect in output, f"{case.id}: {case.expect!r} not named: {output[-400:]}"
    assert "Traceback" not in output, f"{case.id}: {output[-400:]}"
    assert len(output) < 1000, f"{case.id}: a message of {len(output)} characters"
    assert elapsed < LIMIT_S, f"{case.id}: {elapsed:.1f} s"


def _validate_in_process(case: Case, tmp: Path) -> tuple[int, str, Path, float]:
    path = case.make(tmp)
    start = time.monotonic()
    result = CliRunner().invoke(main, ["validate", "--offline", str(path)])
    return result.exit_code, result.output, path, time.monotonic() - start


def test_the_corpus_is_large_and_its_ids_unique():
    ids = [c.id for c in CASES]
    assert len(ids) >= 150 and len(set(ids)) == len(ids), [i for i in ids if ids.count(i) > 1]


def test_the_base_study_is_valid(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    path = _write(tmp_path, base_study(tmp_path))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_validate_refuses_with_exit_2_naming_file_and_key(case, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    code, output, path, elapsed = _validate_in_process(case, tmp_path)
    _check(code, output, path, case, elapsed)
    assert not (tmp_path / "store.db").exists()


RUN_SAMPLE_IDS = {
    "budget.trials='2.7'", "objective='os:system'", "space.kind.choices=[1, True]",
    "space.x.high='1e400'", "space.n=int-range-1e30", "alias-bomb-in-choices",
    "deep-lists", "space-fifo", "study-fifo", "description=[1, [2]]", "space-missing",
    "parallel.grace_period=1", "warm_start=strategy", "optimizer.kind='sgd'", "pruner.kind='fast'",
    "objective=imported-os.system", "budget.timeout='10 minutes'"}
RUN_SAMPLE = [c for c in CASES if c.id in RUN_SAMPLE_IDS]


@pytest.mark.parametrize("case", RUN_SAMPLE, ids=[c.id for c in RUN_SAMPLE])
def test_run_refuses_and_writes_nothing(case, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    path = case.make(tmp_path)
    start = time.monotonic()
    result = CliRunner().invoke(main, ["run", str(path), "--no-live", "--no-estimate"])
    _check(result.exit_code, result.output, path, case, time.monotonic() - start)
    assert not (tmp_path / "store.db").exists()


def test_the_run_sample_covers_15_cases():
    assert len(RUN_SAMPLE) == len(RUN_SAMPLE_IDS) >= 15, RUN_SAMPLE_IDS - {c.id for c in RUN_SAMPLE}


SUBPROCESS_SAMPLE = ["alias-bomb", "deep-mappings", "study-fifo", "space-fifo", "huge-file",
                     "objective='os:system'"]


@pytest.mark.parametrize("case_id", SUBPROCESS_SAMPLE)
def test_a_real_process_answers_at_once(case_id, tmp_path):
    case = next(c for c in CASES if c.id == case_id)
    path = case.make(tmp_path)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "autotune", "validate", "--offline", str(path)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - start
    output = proc.stdout + proc.stderr
    _check(proc.returncode, output, path, case, elapsed)   # imports included: ~1.5 s on 2 cores


# --- what run checks in the store, validate checks too (read-only) ------------------------------------
def _study_with(tmp: Path, **changes: Any) -> Path:
    doc = base_study(tmp)
    doc.update(changes)
    return _write(tmp, doc)


def _source_study(url: str, name: str, direction: str) -> None:
    import optuna
    optuna.create_study(study_name=name, storage=url, direction=direction)


STORE_CASES = {
    "unreachable": (lambda tmp: {"storage": "postgresql://postgres@127.0.0.1:1/test"}, "storage"),
    "no-folder": (lambda tmp: {"storage": f"sqlite:///{tmp / 'no' / 'store.db'}"}, "storage"),
    "not-a-store": (lambda tmp: (tmp / "foreign.db").write_bytes(b"not sqlite" * 100) and
                    {"storage": f"sqlite:///{tmp / 'foreign.db'}"}, "foreign.db"),
    "missing-source": (lambda tmp: {"warm_start": {"from": ["earlier"]}}, "warm_start"),
    "source-in-missing-store": (lambda tmp: {"warm_start": {
        "from": ["earlier"], "storage": f"sqlite:///{tmp / 'other.db'}"}}, "warm_start.storage"),
}


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case_id", list(STORE_CASES))
def test_store_problems_exit_2_from_validate_as_from_run(case_id, command, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    changes, expect = STORE_CASES[case_id]
    path = _study_with(tmp_path, **changes(tmp_path))
    args = [command, str(path)] + (["--no-live", "--no-estimate"] if command == "run" else [])
    result = CliRunner().invoke(main, args)
    _check(result.exit_code, result.output, path, Case(case_id, lambda t: path, expect), 0.0)
    assert not (tmp_path / "store.db").exists() and not (tmp_path / "other.db").exists()
    offline = CliRunner().invoke(main, ["validate", "--offline", str(path)])
    assert offline.exit_code == 0 and "not opened (--offline)" in offline.output, offline.output


@pytest.mark.parametrize("what", ["source", "study"])
def test_other_directions_in_the_store_exit_2_from_validate(what, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    _source_study(url, "earlier" if what == "source" else "corpus", "maximize")
    changes = {"warm_start": {"from": ["earlier"]}} if what == "source" else {}
    path = _study_with(tmp_path, **changes)
    before = (tmp_path / "store.db").read_bytes()
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2 and str(path) in result.output, result.output
    assert "directions ['maximize']" in result.output
    assert (tmp_path / "store.db").read_bytes() == before


def test_validate_of_a_new_store_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    path = _study_with(tmp_path)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 0 and "new; run creates it" in result.output, result.output
    assert not (tmp_path / "store.db").exists()
