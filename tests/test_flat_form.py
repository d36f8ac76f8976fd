"""A flat study pasted from another tool runs as it is: aliases, machine-sized defaults, parallelism."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from autotune import knobs, spec as spec_mod
from autotune.cli import main
from autotune.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "flat_example.yaml"
ALGORITHMS = {"bayesian": "tpe", "evolutionary": "evolution", "hybrid": "hybrid", "random": "random"}


@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


def with_algorithm(tmp_path: Path, algorithm: str) -> Path:
    path = tmp_path / "flat_example.yaml"
    path.write_text(FIXTURE.read_text(encoding="utf-8").replace("algorithm: bayesian",
                                                                 f"algorithm: {algorithm}"),
                    encoding="utf-8")
    return path


def test_the_users_file_is_kept_verbatim_in_studies_and_as_the_fixture():
    assert (REPO / "studies" / "flat_example.yaml").read_bytes() == FIXTURE.read_bytes()
    assert FIXTURE.read_text(encoding="utf-8").startswith("# 配置文件示例\noptimization:\n")


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_the_flat_example_validates_for_each_algorithm(tmp_path, cpu_only, algorithm):
    path = with_algorithm(tmp_path, algorithm)
    result = CliRunner().invoke(main, ["validate", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "space      2 parameters: lr, batch_size" in result.output
    assert f"optimizer  {ALGORITHMS[algorithm]}" in result.output


def test_the_flat_example_means_lr_and_batch_size_with_cpu_defaults(cpu_only):
    spec = load_spec(FIXTURE)
    params = {p.name: (p.type, p.low, p.high, p.log) for p in spec.space.params}
    assert params == {"lr": ("float", 1e-5, 1e-2, False), "batch_size": ("int", 16, 256, False)}
    assert spec.flat_defaults_for == "cpu"
    expected = {**knobs.CPU_DEFAULTS["trainer"], **knobs.CPU_DEFAULTS["fixed"]}
    del expected["batch_size"]                      # searched: no default
    assert dict(spec.flat_defaults) == expected
    assert spec.trainer_dict["steps"] == 150 and spec.fixed_dict["d_model"] == 64
    assert (spec.parallel.workers, spec.parallel.evals, spec.parallel.fit_cores) == (8, 8, True)


def test_with_a_gpu_the_flat_example_gets_the_moe_sparse_middle_configuration(monkeypatch):
    monkeypatch.setattr(spec_mod, "machine_has_gpu", lambda: True)
    spec = load_spec(FIXTURE)
    assert spec.flat_defaults_for == "gpu"
    assert (spec.trainer_dict["seq_len"], spec.fixed_dict["d_model"], spec.fixed_dict["num_experts"]) == \
        (2048, 384, 8)


def test_settings_the_flat_file_gives_win_over_the_defaults(tmp_path, cpu_only):
    path = tmp_path / "flat.yaml"
    path.write_text(FIXTURE.read_text(encoding="utf-8")
                    + "trainer: {num_steps: 30}\nfixed: {hidden_size: 32}\n", encoding="utf-8")
    spec = load_spec(path)
    assert spec.trainer_dict["steps"] == 30 and spec.fixed_dict["d_model"] == 32
    assert "steps" not in dict(spec.flat_defaults) and "d_model" not in dict(spec.flat_defaults)


def test_a_flat_study_on_text_gets_no_recall_task_sizes(tmp_path, cpu_only):
    data = tmp_path / "data.txt"
    data.write_text("hello world\n" * 2000)
    path = tmp_path / "flat.yaml"
    path.write_text(FIXTURE.read_text(encoding="utf-8")
                    + f"trainer: {{task: text, data_path: {data}}}\n", encoding="utf-8")
    trainer = load_spec(path).trainer_dict
    assert trainer["task"] == "text" and trainer["seq_len"] == 64
    assert not {"num_pairs", "num_queries", "task_vocab"} & set(trainer)


@pytest.mark.slow
def test_the_flat_example_runs_and_best_answers_with_canonical_names(tmp_path):
    # the file as pasted, shortened to 10 steps so that the test is quick (the README measures
    # the unshortened first trial)
    path = tmp_path / "flat_example.yaml"
    path.write_text(FIXTURE.read_text(encoding="utf-8") + "trainer: {steps: 10, eval_every: 5}\n",
                    encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    run = subprocess.run([sys.executable, "-m", "autotune", "run", str(path), "--trials", "1",
                          "--storage", url, "--no-live", "--no-estimate"],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert sum(line.startswith("flat study: model/trainer defaults for CPU") for line in lines) == 1
    assert sum(line.startswith("parallel: 8 workers asked") or line.startswith("parallel: ")
               for line in lines) == 1
    best = subprocess.run([sys.executable, "-m", "autotune", "best", "flat_example", "--storage", url],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert best.returncode == 0, best.stderr
    assert "lr:" in best.stdout and "batch_size:" in best.stdout and "learning_rate" not in best.stdout
