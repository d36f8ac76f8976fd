"""bench/compile_ahead.py runs end to end on a CPU (--tiny): one process a variant, a row each."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
