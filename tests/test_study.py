"""Study assembly (autotune/study.py): what the CLI and every bench script run."""
from __future__ import annotations

import pytest

from autotune import study as study_mod
from autotune.spec import parse_spec


def spec_for(tmp_path, **extra):
    raw = {"study": "assembled", "storage": f"sqlite:///{tmp_path / 's.db'}",
           "space": {"x": {"type": "float", "low": 0, "high": 1}},
           "objectives": [{"metric": "val_loss", "direction": "minimize"}],
           "objective": "user_objectives:quadratic", **extra}
    return parse_spec(raw, base_dir=tmp_path, default_name="assembled")


def test_prepare_creates_the_study_with_the_optimizers_options_and_resumes_it(tmp_path):
    spec = spec_for(tmp_path, optimizer={"kind": "tpe", "seed": 3, "n_startup_trials": 7})
    study = study_mod.prepare(spec)
    assert study.study_name == "assembled" and study.metric_names == ["val_loss"]
    tpe = getattr(study.sampler, "inner", study.sampler)  # inside the duplicate guard
    assert tpe._n_startup_trials == 7                     # options reach the sampler (bench scripts lost them)
    study.enqueue_trial({"x": 0.5})
    again = study_mod.prepare(spec)
    assert len(again.get_trials()) == 1                   # resumed, not recreated


def test_joining_a_study_that_does_not_exist_is_bad_input_and_writes_nothing(tmp_path):
    spec = spec_for(tmp_path)
    with pytest.raises(study_mod.StudyError, match="no study 'assembled' to join"):
        study_mod.prepare(spec, join_only=True)
    assert study_mod.prepare(spec, join_only=True, create=True).study_name == "assembled"


def test_run_trains_the_specs_objective_until_the_budget_is_spent(tmp_path):
    spec = spec_for(tmp_path, budget={"trials": 2}, parallel={"workers": 1}, trainer={"steps": 2})
    study = study_mod.prepare(spec)
    result = study_mod.run(spec, study)
    assert result.completed == 2 and result.stopped_by == "trials"
