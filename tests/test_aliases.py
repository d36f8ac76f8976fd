"""Knob names people use elsewhere: each maps to one canonical name, wherever a knob is named."""
from __future__ import annotations

import textwrap

import pytest

from autotune import knobs
from autotune.objective_ref import builtin_fields
from autotune.spec import SpecError, load_spec


def study(tmp_path, body: str, name: str = "s.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


NATIVE = """
    space:
      learning_rate: {type: float, low: 1e-4, high: 1e-2, log: true}
      topk: [1, 2]
      attention: [sparse, dense]
      sparsity: {type: float, low: 0.2, high: 0.7, when: {attention: sparse}}
      experts: {type: categorical, choices: [2, 4], when: {topk: 2}}
    objectives: [{metric: val_loss, direction: minimize}]
    budget: {trials: 2}
    trainer: {max_steps: 20, bs: 8}
    fixed: {hidden_size: 32, layers: 1, heads: 2, ffn_dim: 64}
"""


def test_aliases_become_canonical_names_in_space_conditions_trainer_and_fixed(tmp_path):
    spec = load_spec(study(tmp_path, NATIVE))
    assert spec.space.names == ("lr", "top_k", "attention", "keep_ratio", "num_experts")
    params = {p.name: p for p in spec.space.params}
    assert params["num_experts"].when == (("top_k", (2,)),)
    assert spec.trainer_dict == {"steps": 20, "batch_size": 8}
    assert spec.fixed_dict == {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_ff": 64}


def test_a_sparsity_range_becomes_the_keep_ratio_range_one_minus_it(tmp_path):
    keep = {p.name: p for p in load_spec(study(tmp_path, NATIVE)).space.params}["keep_ratio"]
    assert (keep.type, keep.low, keep.high, keep.log) == ("float", 0.3, 0.8, False)


def test_sparsity_choices_fixed_values_and_conditions_are_complemented(tmp_path):
    spec = load_spec(study(tmp_path, """
        space:
          sparsity_ratio: [0.25, 0.5]
          window: {type: categorical, choices: [16, 32], when: {sparsity_ratio: 0.5}}
        objectives: [{metric: val_loss, direction: minimize}]
        budget: {trials: 2}
    """))
    params = {p.name: p for p in spec.space.params}
    assert params["keep_ratio"].choices == (0.75, 0.5)
    assert params["window"].when == (("keep_ratio", (0.5,)),)
    fixed = load_spec(study(tmp_path, """
        space: {lr: {type: float, low: 1e-3, high: 1e-2}}
        objectives: [{metric: val_loss, direction: minimize}]
        budget: {trials: 2}
        fixed: {sparsity: 0.7}
    """, "f.yaml")).fixed_dict
    assert fixed == {"keep_ratio": 0.3}


@pytest.mark.parametrize("param, key, words", [
    ("{type: float, low: 0.1, high: 0.9, log: true}", "space.sparsity.log", "drop log, or search keep_ratio"),
    ("{type: int, low: 0, high: 1}", "space.sparsity.type", "use type: float"),
    ("{type: float, low: 0.5, high: 1.5}", "space.sparsity.high", "between 0 and 1"),
])
def test_a_sparsity_that_cannot_become_a_keep_ratio_is_refused(tmp_path, param, key, words):
    path = study(tmp_path, f"""
        space: {{sparsity: {param}}}
        objectives: [{{metric: val_loss, direction: minimize}}]
        budget: {{trials: 2}}
    """)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert err.value.key == key and words in err.value.problem


@pytest.mark.parametrize("space, fixed, words", [
    ("{lr: [0.001], learning_rate: [0.01]}", "{}", "'learning_rate' and 'lr'"),
    ("{learning_rate: [0.001]}", "{lr_max: 0.01}", "'lr_max' and 'learning_rate'"),
    ("{topk: [1, 2]}", "{top_k: 2}", "'top_k' and 'topk'"),
])
def test_an_alias_and_its_canonical_name_together_is_an_error_naming_both(tmp_path, space, fixed, words):
    path = study(tmp_path, f"""
        space: {space}
        objectives: [{{metric: val_loss, direction: minimize}}]
        budget: {{trials: 2}}
        fixed: {fixed}
    """)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert words in err.value.problem and "keep one" in err.value.problem


@pytest.mark.parametrize("name, hint", [("learning_rat", "learning_rate"), ("num_expert", "num_experts"),
                                        ("topkk", "topk")])
def test_an_unknown_name_suggests_a_knob_or_an_alias(tmp_path, name, hint):
    path = study(tmp_path, f"""
        space: {{{name}: {{type: float, low: 0.1, high: 0.2}}}}
        objectives: [{{metric: val_loss, direction: minimize}}]
        budget: {{trials: 2}}
    """)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert err.value.key == f"space.{name}"
    assert f"did you mean {hint!r}" in err.value.problem


def test_a_users_own_objective_gets_its_names_as_written(tmp_path):
    path = study(tmp_path, """
        space: {learning_rate: {type: float, low: 0.1, high: 0.2}, sparsity: [0.5]}
        objectives: [{metric: val_loss, direction: minimize}]
        budget: {trials: 2}
        objective: tests.user_objectives:quadratic
    """)
    spec = load_spec(path)
    assert spec.space.names == ("learning_rate", "sparsity")
    assert spec.space.params[1].choices == (0.5,)


def test_every_alias_names_a_real_knob_and_is_not_one_itself():
    fields = builtin_fields()
    assert set(knobs.ALIASES.values()) <= set(fields)
    assert not set(knobs.ALIASES) & set(fields)
    for section in ("trainer", "fixed"):
        assert set(knobs.CPU_DEFAULTS[section]) <= set(fields)
        assert set(knobs.GPU_DEFAULTS[section]) <= set(fields)


def test_a_bad_value_under_an_alias_is_reported_under_the_key_as_written(tmp_path):
    path = study(tmp_path, """
        space: {lr: [0.001]}
        objectives: [{metric: val_loss, direction: minimize}]
        budget: {trials: 2}
        fixed: {hidden_size: big}
    """)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert err.value.key == "fixed.hidden_size (d_model)" and "must be int" in err.value.problem
