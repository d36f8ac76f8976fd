"""`autotune schema`: the JSON Schema of study files, built from the parser's own key tables, so
that what the parser accepts the schema accepts and a misspelled key fails both."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from autotune.cli import main
from autotune.spec import SpecError, load_spec, section_keys
from autotune.spec_schema import DRAFT, study_schema
from autotune.spec_yaml import _read_yaml
from tests.schema_check import errors

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(REPO.glob("studies/*.yaml")) + [REPO / "bench" / "gpu_smoke.yaml"]
SCHEMA = study_schema()

GOOD = {
    "study": "t",
    "space": {"lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
              "top_k": [1, 2]},
    "objectives": [{"metric": "val_loss", "direction": "minimize"}],
    "optimizer": {"kind": "tpe", "seed": 1, "n_startup_trials": 4},
    "pruner": {"kind": "median", "min_steps": 10},
    "budget": {"trials": 4, "timeout": "5m"},
    "parallel": {"workers": 1},
    "warm_start": {"from": ["old"], "best_k": 2},
    "trainer": {"steps": 20, "eval_every": 10},
    "fixed": {"d_model": 32},
}
FLAT = {"optimization": {"algorithm": "bayesian", "max_evals": 4,
                         "metrics": [{"name": "accuracy", "goal": "maximize"}],
                         "parameters": {"learning_rate": {"type": "float", "min": 1e-4, "max": 1e-2}}}}


def changed(doc: dict, path: str, value) -> dict:
    """``doc`` with ``value`` set at a dotted path (a list index as a number)."""
    doc = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node = doc
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    node[last] = value
    return doc


def check(doc: dict) -> list[str]:
    return errors(SCHEMA, doc)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_study_validates_against_the_schema(path):
    assert check(_read_yaml(path)) == []


def test_the_examples_here_are_valid_for_the_parser_and_the_schema(tmp_path):
    for name, doc in (("native", GOOD), ("flat", FLAT)):
        assert check(doc) == [], name
        path = tmp_path / f"{name}.yaml"
        path.write_text(json.dumps(doc))
        if name == "native":
            doc = {k: v for k, v in doc.items() if k != "warm_start"}   # its source need not exist here
            path.write_text(json.dumps(doc))
        assert load_spec(path)


MISSPELLED = [
    ("top level", GOOD, "budgett", {"trials": 3}),
    ("budget", GOOD, "budget.trails", 3),
    ("pruner", GOOD, "pruner.min_step", 3),
    ("parallel", GOOD, "parallel.trial_per_gpu", 2),
    ("warm start: the old top_k", GOOD, "warm_start.top_k", 2),
    ("objective", GOOD, "objectives.0.metrics", "val_loss"),
    ("parameter", GOOD, "space.lr.logg", True),
    ("optimizer option", GOOD, "optimizer.n_startup_trial", 4),
    ("flat top level", FLAT, "optimisation", {}),
    ("flat optimization", FLAT, "optimization.max_eval", 4),
    ("flat metric", FLAT, "optimization.metrics.0.goals", "maximize"),
    ("flat parameter", FLAT, "optimization.parameters.learning_rate.mn", 0.1),
]


@pytest.mark.parametrize("what, doc, path, value", MISSPELLED, ids=[m[0] for m in MISSPELLED])
def test_a_misspelled_key_fails_the_schema_and_the_parser(tmp_path, what, doc, path, value):
    bad = changed(doc, path, value)
    section = "/" + path.split(".")[0] if "." in path else "/"
    assert any(e.startswith(section) for e in check(bad)), check(bad)
    file = tmp_path / "bad.yaml"
    file.write_text(json.dumps(bad))
    with pytest.raises(SpecError) as info:
        load_spec(file)
    key = path.replace(".0.", "[0].")
    assert f": {key}: " in str(info.value) or (what == "flat top level" and "optimisation" in str(info.value))


@pytest.mark.parametrize("section, path", [("pruner", "pruner"), ("budget", "budget"),
                                           ("parallel", "parallel"), ("warm_start", "warm_start"),
                                           ("space.*", "space.lr"), ("objectives[]", "objectives.0")])
def test_every_key_the_schema_lists_is_one_the_parser_knows(tmp_path, section, path):
    """The drift check: a key in the schema that the parser calls unknown fails here."""
    assert section_keys()[section]
    for key in section_keys()[section]:
        doc = changed(GOOD, f"{path}.{key}", 1)
        file = tmp_path / "study.yaml"
        file.write_text(json.dumps(doc))
        try:
            load_spec(file)
        except SpecError as exc:
            assert "unknown key" not in str(exc), key


def test_the_schema_is_draft_2020_12_and_names_every_top_level_key():
    assert SCHEMA["$schema"] == DRAFT == "https://json-schema.org/draft/2020-12/schema"
    assert list(SCHEMA["$defs"]["native"]["properties"]) == list(section_keys()[""])
    assert list(SCHEMA["$defs"]["flat"]["properties"]) == list(section_keys()["flat"])


def test_wrong_value_types_fail_the_schema():
    assert check(changed(GOOD, "budget.trials", "many"))
    assert check(changed(GOOD, "optimizer.kind", "annealing"))
    assert check(changed(GOOD, "fixed.d_model", "big"))      # a built-in knob's type
    assert check(changed(GOOD, "warm_start.strategy", "copy"))
    assert not check(changed(GOOD, "fixed.my_own_knob", "any text"))   # a user objective's own names


def test_autotune_schema_prints_it_and_writes_it_with_out(tmp_path):
    runner = CliRunner()
    printed = runner.invoke(main, ["schema"])
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.output) == SCHEMA
    out = tmp_path / "study.schema.json"
    written = runner.invoke(main, ["schema", "--out", str(out)])
    assert written.exit_code == 0, written.output
    assert json.loads(out.read_text()) == SCHEMA
    again = runner.invoke(main, ["schema", "--out", str(out)])
    assert again.exit_code == 2 and "--force" in again.output
    assert runner.invoke(main, ["schema", "--out", str(out), "--force"]).exit_code == 0


def test_the_jsonschema_package_agrees_where_it_is_installed():
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator
    validator.check_schema(SCHEMA)
    for path in SHIPPED:
        validator(SCHEMA).validate(_read_yaml(path))
    for _, doc, path, value in MISSPELLED:
        assert not validator(SCHEMA).is_valid(changed(doc, path, value)), path
