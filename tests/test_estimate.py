"""Before the first trial, `autotune run` warns when one trial would take hours on this machine."""
from __future__ import annotations

from pathlib import Path

from autotune import estimate
from autotune.spec import load_spec

REPO = Path(__file__).resolve().parents[1]


def test_the_largest_configuration_takes_the_top_of_every_range():
    config = estimate.largest_config(load_spec(REPO / "studies" / "moe_sparse.yaml"))
    assert (config["d_model"], config["n_layers"], config["num_experts"], config["top_k"],
            config["batch_size"], config["seq_len"]) == (512, 8, 32, 4, 64, 2048)


def test_a_gpu_sized_study_on_a_cpu_warns_with_the_estimate_and_how_to_shrink_it(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    text = estimate.warning_for(load_spec(REPO / "studies" / "moe_sparse.yaml"))
    assert text is not None and text.startswith("warning: no GPU found: one trial may take ~")
    for words in ("on this CPU", "more than an hour", "fewer trainer steps", "smaller seq_len",
                  "a machine with a GPU", "--no-estimate"):
        assert words in text


def test_a_quick_study_gets_no_warning(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert estimate.warning_for(load_spec(REPO / "studies" / "quickstart.yaml")) is None


def test_a_trial_longer_than_the_timeout_warns_naming_the_timeout(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    spec = load_spec(REPO / "studies" / "quickstart.yaml", timeout="1s")
    assert "the study's timeout of 1 s" in estimate.warning_for(spec)
