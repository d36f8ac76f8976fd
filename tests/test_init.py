"""`autotune init` writes a starter study that validates and runs, and never overwrites by accident."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from autotune.cli import main

REPO = Path(__file__).resolve().parents[1]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_init_writes_study_yaml_here_and_it_validates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("init")
    assert result.exit_code == 0 and "wrote study.yaml" in result.output
    text = (tmp_path / "study.yaml").read_text()
    assert text.startswith("# A starter study") and "autotune best study" in text
    result = invoke("validate", "study.yaml")
    assert result.exit_code == 0, result.output


def test_init_refuses_to_overwrite_without_force(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("mine\n")
    result = CliRunner().invoke(main, ["init", str(path)])
    assert result.exit_code == 2
    assert f"{path} exists; pass --force" in result.output
    assert path.read_text() == "mine\n"
    assert invoke("init", str(path), "--force").exit_code == 0
    assert path.read_text().startswith("# A starter study")


def test_init_creates_the_folder_it_names(tmp_path):
    assert invoke("init", str(tmp_path / "studies" / "new.yaml")).exit_code == 0
    assert "autotune run " in (tmp_path / "studies" / "new.yaml").read_text()


@pytest.mark.slow
def test_init_then_validate_then_a_one_trial_run(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO))

    def autotune(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "autotune", *args], capture_output=True,
                              text=True, cwd=tmp_path, env=env, timeout=300)

    assert autotune("init").returncode == 0
    assert autotune("validate", "study.yaml").returncode == 0
    run = autotune("run", "study.yaml", "--trials", "1", "--no-live", "--no-estimate")
    assert run.returncode == 0, run.stdout + run.stderr
    assert autotune("best", "study").returncode == 0


def test_init_has_help_with_an_example():
    result = invoke("init", "--help")
    assert result.exit_code == 0 and "Example" in result.output and "--force" in result.output
