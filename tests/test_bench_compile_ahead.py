"""bench/compile_ahead.py runs end to end on a CPU (--tiny): one process a variant, a row each."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_run_trains_each_variant_in_its_own_process(tmp_path):
    out = tmp_path / "ca.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "compile_ahead.py"), "--tiny",
                          "--variants", "eager", "foreground", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = {r["variant"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"eager", "foreground"}
    assert not rows["eager"]["compiled"] and rows["foreground"]["compiled"]
    assert rows["foreground"]["compiled_step_ms"] > 0 and 0 < rows["eager"]["train_share"] <= 1
    assert "| foreground |" in run.stdout


@pytest.mark.slow
def test_compile_helper_bench_compiles_a_block_and_prints_its_phases(tmp_path):
    out = tmp_path / "ch.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "compile_helper.py"), "--blocks", "1",
                          "--layers", "1", "--seq-len", "8", "--backend", "aot_eager", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["ok"] and not row["reused"] and row["train_graph_s"] > 0 and row["wall_s"] >= row["start_s"]
    assert "| 0 | 64 | started |" in run.stdout
