"""``trainer.batching`` in a study file: tokens or cost, and cost only for the variable-length text task."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from autotune.cli import main
from autotune.spec import SpecError, load_spec


def study(tmp_path: Path, trainer: dict, space: dict | None = None, fixed: dict | None = None) -> Path:
    (tmp_path / "lines.txt").write_text("".join(f"{'ab' * (i % 20 + 1)}\n" for i in range(200)))
    doc = {"study": "b", "storage": f"sqlite:///{tmp_path / 'b.db'}",
           "space": {"lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2}, **(space or {})},
           "objectives": [{"metric": "val_loss", "direction": "minimize"}],
           "trainer": {"steps": 20, **trainer}, "fixed": fixed or {}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def text(tmp_path: Path) -> dict:
    return {"task": "text", "data_path": str(tmp_path / "lines.txt"), "eot_token": 10, "seq_len": 32}


def test_cost_batching_of_the_text_task_loads(tmp_path):
    spec = load_spec(study(tmp_path, {**text(tmp_path), "batching": "cost", "max_batch_size": 64}))
    assert dict(spec.trainer)["batching"] == "cost"


@pytest.mark.parametrize("where", ["trainer", "fixed", "space"])
def test_cost_batching_of_the_synthetic_task_is_refused_naming_the_key(tmp_path, where):
    if where == "space":
        path = study(tmp_path, {}, space={"batching": {"type": "categorical", "choices": ["tokens", "cost"]}})
        key = "space.batching.choices"
    else:
        path = study(tmp_path, {"batching": "cost"} if where == "trainer" else {},
                     fixed={"batching": "cost"} if where == "fixed" else None)
        key = f"{where}.batching"
    with pytest.raises(SpecError) as error:
        load_spec(path)
    assert error.value.key == key and "task: text" in error.value.problem and "'mqar'" in error.value.problem


def test_an_unknown_batching_exits_2_naming_file_key_and_choices(tmp_path):
    path = study(tmp_path, {**text(tmp_path), "batching": "costs"})
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{path}: trainer.batching: 'costs' is not a batching; choose tokens or cost" in result.output
