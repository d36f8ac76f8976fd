"""The study file is the user's interface: what loads, and how every mistake is reported."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from autotune.spec import SpecError, load_spec, parse_duration, _Ctx

REPO = Path(__file__).resolve().parents[1]

GOOD = {
    "study": "t",
    "storage": "sqlite:///t.db",
    "space": {
        "lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
        "top_k": {"type": "int", "low": 1, "high": 2},
        "attention": {"type": "categorical", "choices": ["sparse", "dense"]},
        "keep_ratio": {"type": "float", "low": 0.25, "high": 1.0, "when": {"attention": "sparse"}},
    },
    "objectives": [{"metric": "val_loss", "direction": "minimize"}],
    "optimizer": {"kind": "tpe", "seed": 1},
    "pruner": {"kind": "median", "min_steps": 10},
    "budget": {"trials": 4, "timeout": "5m"},
    "trainer": {"steps": 20, "eval_every": 10},
    "fixed": {"d_model": 32},
}


def write(tmp_path: Path, doc, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


def with_change(path: str, value):
    """GOOD with the value at a dotted path replaced (``...=DELETE`` removes it)."""
    import copy
    doc = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = doc
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if value == "DELETE":
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return doc


def test_good_study_loads_typed(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    assert spec.study == "t"
    assert [p.name for p in spec.space.params][-1] == "keep_ratio"  # after the one it depends on
    lr = spec.space.params[0]
    assert (lr.type, lr.low, lr.high, lr.log) == ("float", 1e-4, 1e-2, True)
    assert spec.budget.timeout_s == 300
    assert spec.pruner.kind == "median" and spec.pruner.min_steps == 10
    assert spec.directions == ["minimize"]
    assert dict(spec.fixed) == {"d_model": 32}


def test_yaml11_exponent_without_dot_is_a_number(tmp_path):
    text = textwrap.dedent("""
        space: {lr: {type: float, low: 1e-4, high: 1e-2, log: true}}
        objectives: [{metric: val_loss, direction: minimize}]
        budget: {trials: 2}
    """)
    spec = load_spec(write(tmp_path, text))
    assert spec.space.params[0].low == pytest.approx(1e-4)
    assert isinstance(spec.space.params[0].low, float)


def test_study_name_defaults_to_file_stem_and_storage_to_sqlite(tmp_path, monkeypatch):
    monkeypatch.delenv("AUTOTUNE_STORAGE", raising=False)
    doc = with_change("study", "DELETE")
    del doc["storage"]
    spec = load_spec(write(tmp_path, doc, "my-study.yaml"))
    assert spec.study == "my-study"
    assert spec.storage == "sqlite:///autotune.db"


def test_env_storage_is_the_default_but_the_file_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOTUNE_STORAGE", "sqlite:///env.db")
    doc = dict(GOOD)
    del doc["storage"]
    assert load_spec(write(tmp_path, doc)).storage == "sqlite:///env.db"
    assert load_spec(write(tmp_path, GOOD, "b.yaml")).storage == "sqlite:///t.db"


def test_space_file_is_relative_to_the_study_file(tmp_path):
    (tmp_path / "spaces").mkdir()
    write(tmp_path / "spaces", {"lr": {"type": "float", "low": 0.001, "high": 0.1}}, "s.yaml")
    (tmp_path / "studies").mkdir()
    spec = load_spec(write(tmp_path / "studies", with_change("space", "../spaces/s.yaml")))
    assert spec.space.names == ("lr",)


def test_flat_form_maps_onto_the_same_spec(tmp_path):
    text = textwrap.dedent("""
        optimization:
          algorithm: bayesian
          max_evals: 100
          parallel_evals: 8
          metrics:
            - {name: accuracy, goal: maximize}
            - {name: latency, goal: minimize}
          parameters:
            lr: {type: float, min: 1e-5, max: 1e-2}
            batch_size: {type: int, min: 16, max: 256}
    """)
    spec = load_spec(write(tmp_path, text, "legacy.yaml"))
    assert spec.study == "legacy"
    assert spec.optimizer.kind == "tpe"
    assert spec.budget.trials == 100 and spec.parallel.workers == 8
    assert [(o.metric, o.direction) for o in spec.objectives] == [("accuracy", "maximize"), ("latency", "minimize")]
    assert {p.name: (p.type, p.low, p.high) for p in spec.space.params} == {
        "lr": ("float", 1e-5, 1e-2), "batch_size": ("int", 16, 256)}


@pytest.mark.parametrize("path", sorted((REPO / "studies").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_studies_are_valid(path):
    spec = load_spec(path)
    assert spec.space.params and spec.objectives


def test_overrides(tmp_path):
    spec = load_spec(write(tmp_path, GOOD), storage="sqlite:///o.db", study="other", trials=9,
                     timeout="1h30m", workers=3, warm_start=("old",))
    assert (spec.storage, spec.study, spec.budget.trials, spec.budget.timeout_s, spec.parallel.workers) == \
        ("sqlite:///o.db", "other", 9, 5400, 3)
    assert spec.warm_start.sources == ("old",)


def test_local_warm_start_loads_with_its_trial_count(tmp_path):
    spec = load_spec(write(tmp_path, with_change("warm_start", {"from": ["a"], "strategy": "local",
                                                                "local_trials": 9})))
    assert (spec.warm_start.strategy, spec.warm_start.local_trials) == ("local", 9)
    assert load_spec(write(tmp_path, with_change("warm_start", {"from": "a", "strategy": "local"}),
                           "d.yaml")).warm_start.local_trials == 15


@pytest.mark.parametrize("text,seconds", [(90, 90), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400)])
def test_durations(text, seconds):
    assert parse_duration(text, _Ctx(None), "budget.timeout") == seconds


# --- every mistake: (change, key in the message, words in the message) ---------------------------
BAD = [
    ("unknown top key", with_change("budgit", {"trials": 3}), "budgit", "did you mean 'budget'"),
    ("unknown param key", with_change("space.lr.logg", True), "space.lr.logg", "did you mean 'log'"),
    ("misspelt optimizer kind", with_change("optimizer.kind", "tpee"), "optimizer.kind", "did you mean 'tpe'"),
    ("unknown optimizer", with_change("optimizer.kind", "annealing"), "optimizer.kind", "not one of"),
    ("unknown pruner", with_change("pruner.kind", "asha"), "pruner.kind", "not one of"),
    ("low > high", with_change("space.top_k.low", 5), "space.top_k.low", "greater than high"),
    ("log with low 0", with_change("space.lr.low", 0), "space.lr.low", "> 0 when log"),
    ("log with negative low", with_change("space.lr.low", -1.0), "space.lr.low", "> 0 when log"),
    ("empty choices", with_change("space.attention.choices", []), "space.attention.choices", "empty"),
    ("choices not a list", with_change("space.attention.choices", "sparse"), "space.attention.choices", "must be a list"),
    ("wrong type low", with_change("space.lr.low", "abc"), "space.lr.low", "must be a number"),
    ("int with fractional bound", with_change("space.top_k.high", 2.5), "space.top_k.high", "whole number"),
    ("unknown param type", with_change("space.lr.type", "double"), "space.lr.type", "not one of"),
    ("missing param type", with_change("space.lr.type", "DELETE"), "space.lr.type", "required"),
    ("missing high", with_change("space.lr.high", "DELETE"), "space.lr.high", "required"),
    ("step with log", with_change("space.lr.step", 0.001), "space.lr.step", "log"),
    ("negative step", with_change("space.keep_ratio.step", -0.1), "space.keep_ratio.step", "> 0"),
    ("low on categorical", with_change("space.attention.low", 1), "space.attention.low", "categorical"),
    ("condition on unknown param", with_change("space.keep_ratio.when", {"atention": "sparse"}),
     "space.keep_ratio.when.atention", "did you mean 'attention'"),
    ("condition on a value not among choices", with_change("space.keep_ratio.when", {"attention": "flash"}),
     "space.keep_ratio.when.attention", "not one of"),
    ("empty space", with_change("space", {}), "space", "empty"),
    ("missing space", with_change("space", "DELETE"), "space", "required"),
    ("missing space file", with_change("space", "nowhere.yaml"), "space", "not found"),
    ("missing objectives", with_change("objectives", "DELETE"), "objectives", "required"),
    ("bad direction", with_change("objectives.0.direction", "minimise"), "objectives[0].direction", "did you mean 'minimize'"),
    ("missing direction", with_change("objectives.0.direction", "DELETE"), "objectives[0].direction", "required"),
    ("metric the builtin never reports", with_change("objectives.0.metric", "val_los"), "objectives[0].metric", "never reports"),
    ("duplicate metric", with_change("objectives", [{"metric": "val_loss", "direction": "minimize"}] * 2),
     "objectives", "twice"),
    ("zero trials", with_change("budget.trials", 0), "budget.trials", "> 0"),
    ("bad timeout", with_change("budget.timeout", "5 minutes"), "budget.timeout", "duration"),
    ("empty budget", with_change("budget", {}), "budget", "at least one"),
    ("trials_per_gpu zero", with_change("parallel", {"trials_per_gpu": 0}), "parallel.trials_per_gpu", ">= 1"),
    ("gpus text", with_change("parallel", {"gpus": "all"}), "parallel.gpus", "not one of"),
    ("pruner with two objectives", with_change("objectives", [{"metric": "val_loss", "direction": "minimize"},
                                                              {"metric": "latency_ms", "direction": "minimize"}]),
     "pruner.kind", "with several objectives, prune with kind: pareto, or median or percentile and metric"),
    ("unknown trainer knob", with_change("trainer.stepz", 10), "trainer.stepz", "did you mean 'steps'"),
    ("unknown fixed knob", with_change("fixed.d_modle", 10), "fixed.d_modle", "did you mean 'd_model'"),
    ("fixed wrong type", with_change("fixed.d_model", "big"), "fixed.d_model", "must be int"),
    ("searched and fixed", with_change("fixed.top_k", 2), "fixed", "both fixed and searched"),
    ("float for an int knob", with_change("space.top_k.type", "float"), "space.top_k.type", "use type: int"),
    ("unknown space knob", with_change("space.learning_rat", {"type": "float", "low": 0.1, "high": 0.2}),
     "space.learning_rat", "no knob"),
    ("bad storage url", with_change("storage", "not a url"), "storage", "not a database URL"),
    ("unknown builtin objective", with_change("objective", "builtin:resnet"), "objective", "unknown built-in"),
    ("user objective missing module", with_change("objective", "no_such_pkg.mod:fn"), "objective", "cannot import"),
    ("user objective bad ref", with_change("objective", "justaname"), "objective", "package.module:function"),
    ("negative seed", with_change("optimizer.seed", -1), "optimizer.seed", ">= 0"),
    ("unknown optimizer option", with_change("optimizer.populaton_size", 10), "optimizer.populaton_size", ""),
    ("warm start strategy", with_change("warm_start", {"from": ["a"], "strategy": "copy"}), "warm_start.strategy", "not one of"),
    ("local_trials without local", with_change("warm_start", {"from": ["a"], "strategy": "prior", "local_trials": 9}),
     "warm_start.local_trials", "only strategy local uses it (this file's strategy: prior)"),
    ("best_k without enqueue", with_change("warm_start", {"from": ["a"], "strategy": "local", "best_k": 3}),
     "warm_start.best_k", "only strategy enqueue uses it (this file's strategy: local)"),
    ("warm start's old top_k", with_change("warm_start", {"from": ["a"], "top_k": 3}),
     "warm_start.top_k", "is now best_k"),
    ("top_k above num_experts, both fixed",
     {**with_change("space.top_k", "DELETE"), "fixed": {"d_model": 32, "num_experts": 2, "top_k": 3}},
     "fixed.top_k", "top_k (at least 3) is always more than num_experts (at most 2)"),
    ("top_k above num_experts, under aliases",
     {**with_change("space.top_k", "DELETE"), "fixed": {"d_model": 32, "experts": 2, "topk": 3}},
     "fixed.topk (top_k)", "is always more than num_experts"),
    ("top_k searched above every num_experts",
     {**with_change("space.top_k", {"type": "int", "low": 3, "high": 4}), "fixed": {"d_model": 32, "num_experts": 2}},
     "space.top_k.low", "top_k (at least 3) is always more than num_experts (at most 2)"),
    ("local_trials zero", with_change("warm_start", {"from": ["a"], "strategy": "local", "local_trials": 0}),
     "warm_start.local_trials", "must be > 0"),
    ("local with two objectives", {**with_change("warm_start", {"from": ["a"], "strategy": "local"}),
                                   "pruner": "none", "objectives": [{"metric": "val_loss", "direction": "minimize"},
                                                                    {"metric": "latency_ms", "direction": "minimize"}]},
     "warm_start.strategy", "local needs a single objective (this study has 2); use prior"),
    ("task that cannot exist", with_change("trainer", {"num_pairs": 64, "task_vocab": 64}), "trainer",
     "raise task_vocab or lower num_pairs"),
    ("missing data file", with_change("trainer", {"task": "text", "data_path": "/no/such/file.txt"}), "trainer",
     "file.txt"),
    ("not a mapping", ["a", "list"], "", "must be a mapping"),
]


@pytest.mark.parametrize("doc,key,words", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_mistake_names_file_key_and_problem(tmp_path, doc, key, words):
    path = write(tmp_path, doc)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}:") if key else message.startswith(f"{path}:")
    assert words in message


def test_at_least_thirty_mistakes_are_covered():
    assert len(BAD) >= 30


@pytest.mark.parametrize("text,words", [
    ("space: {lr: {type: float, low: 1, high: 2}\nobjectives: [", "YAML syntax error at line"),
    ("space: {a: [1, 2]}\nspace: {b: [1]}\nobjectives: []\n", "duplicate key 'space'"),
    ("", "must be a mapping"),
])
def test_unreadable_yaml(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value).startswith(str(path)) and words in str(info.value)


def test_missing_file():
    with pytest.raises(SpecError, match="file not found"):
        load_spec("no/such/study.yaml")


def test_cycle_in_conditions(tmp_path):
    doc = with_change("space", {
        "a": {"type": "categorical", "choices": [1, 2], "when": {"b": 1}},
        "b": {"type": "categorical", "choices": [1, 2], "when": {"a": 1}},
    })
    doc["objective"] = "tests.user_objectives:quadratic"
    doc.pop("fixed")
    doc.pop("trainer")
    with pytest.raises(SpecError, match="cycle"):
        load_spec(write(tmp_path, doc))


def test_bad_overrides_name_the_option(tmp_path):
    path = write(tmp_path, GOOD)
    with pytest.raises(SpecError, match="--timeout: must be a duration"):
        load_spec(path, timeout="soon")
    with pytest.raises(SpecError, match="--trials: must be > 0"):
        load_spec(path, trials=0)
    with pytest.raises(SpecError, match="--storage"):
        load_spec(path, storage="::nope::")


def test_loading_a_study_of_the_built_in_task_never_imports_torch():
    """The parser only parses (DESIGN: spec.py must not import torch): checking knob names,
    metrics and the recall task's sizes needs none of it."""
    import subprocess
    import sys
    code = ("import sys; from autotune.spec import load_spec; "
            "[load_spec(f) for f in ('studies/quickstart.yaml', 'studies/moe_sparse.yaml', "
            "'studies/flat_example.yaml')]; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def _routing_study(space_extra: dict, fixed: dict) -> dict:
    doc = with_change("space.top_k", "DELETE")
    doc["space"].update(space_extra)
    doc["fixed"] = {"d_model": 32, **fixed}
    return doc


def test_num_experts_searched_below_a_fixed_top_k_is_refused(tmp_path):
    doc = _routing_study({"num_experts": {"type": "categorical", "choices": [2, 3]}}, {"top_k": 4})
    with pytest.raises(SpecError, match=r": space\.num_experts: top_k \(at least 4\) is always more"):
        load_spec(write(tmp_path, doc))


@pytest.mark.parametrize("space_extra, fixed", [
    ({"top_k": {"type": "int", "low": 1, "high": 4}, "num_experts": [2, 8]}, {}),   # only some trials
    ({}, {"num_experts": 1, "top_k": 4}),                       # one expert: a dense FFN, top_k unused
    ({"top_k": {"type": "int", "low": 3, "high": 4, "when": {"attention": "sparse"}}},
     {"num_experts": 2}),                                       # inactive: the default top_k 2 is used
])
def test_top_k_that_can_fit_the_experts_loads(tmp_path, space_extra, fixed):
    assert load_spec(write(tmp_path, _routing_study(space_extra, fixed)))
