"""End to end: the shipped studies train the real model through `autotune run`."""
from __future__ import annotations

import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from click.testing import CliRunner

from autotune.cli import main

REPO = Path(__file__).resolve().parents[1]


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def shipped(tmp_path: Path, name: str, *, steps: int, eval_every: int) -> Path:
    """``studies/NAME`` as shipped (space, model, task, optimizer, pruner), training ``steps``
    instead of its few hundred: the checks here hold for any length with two evaluations."""
    doc = yaml.safe_load((REPO / "studies" / name).read_text())
    doc["trainer"].update(steps=steps, eval_every=eval_every)
    if isinstance(doc.get("space"), str):     # a space file, relative to the study file
        doc["space"] = str((REPO / "studies" / doc["space"]).resolve())
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.slow
def test_quickstart_trains_the_real_model_in_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'autotune.db'}"
    result = run("run", str(shipped(tmp_path, "quickstart.yaml", steps=100, eval_every=50)),
                 "--storage", url, "--trials", "2", "--no-live")
    assert result.exit_code == 0, result.output
    trials = optuna.load_study(study_name="quickstart", storage=url).get_trials()
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 2
    done = [t for t in finished if t.state.name == "COMPLETE"]
    assert done, [t.user_attrs.get("fail_reason") for t in trials]
    metrics = done[0].user_attrs["metrics"]
    for name in ("val_loss", "accuracy", "latency_ms", "params_total", "params_active", "tokens_per_s"):
        assert name in metrics
    assert metrics["params_active"] <= metrics["params_total"]
    assert done[0].value == pytest.approx(metrics["val_loss"])
    assert len(done[0].intermediate_values) >= 2  # the learning curve the pruner saw
    assert "best trial" in result.output
    for t in finished:                                 # where each trial's slot time went
        parts = t.user_attrs["time_s"]
        assert {"setup", "compile", "train", "eval", "report", "total"} <= set(parts)
        assert parts["train"] > 0
        assert sum(v for k, v in parts.items() if k != "total") == pytest.approx(parts["total"], rel=0.05)
        assert t.user_attrs["compile"]["reason"] == "eager on CPU"
    status = run("status", "--storage", url)
    assert "time in training steps: " in status.output


@pytest.mark.slow
def test_flat_form_study_gives_accuracy_and_latency(tmp_path):
    url = f"sqlite:///{tmp_path / 'autotune.db'}"
    result = run("run", str(shipped(tmp_path, "flat_legacy.yaml", steps=50, eval_every=25)),
                 "--storage", url, "--trials", "2", "--no-live")
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="flat-legacy", storage=url)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    done = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert len(done) == 2
    m = done[0].user_attrs["metrics"]
    assert done[0].values == [pytest.approx(m["accuracy"]), pytest.approx(m["latency"])]


@pytest.mark.slow
@pytest.mark.postgres
def test_quickstart_in_postgresql(tmp_path, pg_url):
    name = f"quickstart-{uuid.uuid4().hex[:8]}"
    path = shipped(tmp_path, "quickstart.yaml", steps=100, eval_every=50)
    result = CliRunner().invoke(main, ["run", str(path), "--storage", pg_url, "--study", name, "--trials", "1",
                                       "--no-live"])
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name=name, storage=pg_url)
    assert len([t for t in study.get_trials() if t.state.name in ("COMPLETE", "PRUNED")]) == 1
    optuna.delete_study(study_name=name, storage=pg_url)
