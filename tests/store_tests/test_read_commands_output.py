"""What read-only commands write and print when the store holds hostile text: ``export`` / ``report``
never overwrite or follow a link unasked, and never turn a study name into a path; ``status``
prints no terminal escape sequence; CSV cells are no spreadsheet formulas."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from autotune import store
from autotune.cli import main

optuna.logging.set_verbosity(optuna.logging.WARNING)

ESC_NAME = "evil\x1b]0;pwned\x07\x1b[2J\x1b[31mname"


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _store(tmp_path: Path, name: str = "s") -> str:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    study = optuna.create_study(storage=store.open_storage(url), study_name=name)
    study.set_user_attr("autotune", {"metrics": ["loss\x1b[1m"]})
    cells = ("=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)", "plain")
    for cell in cells:
        study.enqueue_trial({"kind": cell})
        trial = study.ask()
        trial.suggest_categorical("kind", cells)
        trial.set_user_attr("note", cell)
        study.tell(trial, 1.0)
    return url


# --- 14. output files ----------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["export", "s", "--format", "csv"], ["report", "s"]],
                         ids=["export", "report"])
def test_an_existing_output_file_is_kept_unless_forced(command, tmp_path):
    url, out = _store(tmp_path), tmp_path / "out.file"
    out.write_text("mine")
    result = invoke(*command, "--storage", url, "--out", str(out))
    assert result.exit_code == 2 and f"{out} exists; pass --force" in result.output
    assert out.read_text() == "mine"
    assert invoke(*command, "--storage", url, "--out", str(out), "--force").exit_code == 0
    assert out.read_text() != "mine"


@pytest.mark.parametrize("command", [["export", "s", "--format", "csv"], ["report", "s"]],
                         ids=["export", "report"])
def test_output_never_goes_through_a_symbolic_link(command, tmp_path):
    url, victim, link = _store(tmp_path), tmp_path / "victim.txt", tmp_path / "out.file"
    victim.write_text("precious")
    link.symlink_to(victim)
    result = invoke(*command, "--storage", url, "--out", str(link))
    assert result.exit_code == 2 and "symbolic link" in result.output
    assert invoke(*command, "--storage", url, "--out", str(link), "--force").exit_code == 0
    assert victim.read_text() == "precious"
    assert not link.is_symlink() and link.stat().st_size > 0


def test_a_study_name_never_becomes_a_path_of_the_default_report(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    url = _store(tmp_path, name="../escaped")
    result = invoke("report", "../escaped", "--storage", url)
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "escaped-report.html").exists()
    assert [p.name for p in work.iterdir()] == ["_escaped-report.html"]


def test_an_export_to_a_new_file_is_readable_like_any_file_written(tmp_path):
    url, out = _store(tmp_path), tmp_path / "trials.csv"
    assert invoke("export", "s", "--storage", url, "--out", str(out)).exit_code == 0
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir() if "trials" in p.name] == ["trials.csv"]  # no temporary


# --- 15. injection -------------------------------------------------------------------------------

def test_status_prints_no_terminal_escape_sequence(tmp_path):
    url = _store(tmp_path, name=ESC_NAME)
    result = invoke("status", "--storage", url)
    assert result.exit_code == 0
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "evilname: 5 trials" in result.output and "best loss 1" in result.output


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(tmp_path):
    url = _store(tmp_path)
    result = invoke("export", "s", "--storage", url, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [r["param.kind"] for r in rows] == ["'=HYPERLINK(\"http://x\")", "'+1+1", "'-2+3",
                                               "'@SUM(A1)", "plain"]
    assert [r["attr.note"] for r in rows] == [r["param.kind"] for r in rows]
    assert all([v for k, v in r.items() if k.startswith("value.")] == ["1.0"] for r in rows)
