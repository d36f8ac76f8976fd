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


def test_the_run_gets_the_warning_from_a_thread_while_its_workers_start(monkeypatch):
    # `autotune run` works the estimate out beside the scheduler (it imports torch and times a step:
    # seconds before the first trial otherwise) and hands the warning to the progress view
    from autotune.cli import _estimate_meanwhile

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    notices = []

    class Progress:
        def notice(self, text):
            notices.append(text)

    thread = _estimate_meanwhile(load_spec(REPO / "studies" / "quickstart.yaml", timeout="1s"), Progress())
    thread.join(timeout=120)
    assert not thread.is_alive() and len(notices) == 1
    assert "the study's timeout of 1 s" in notices[0]


def test_a_notice_goes_above_the_live_view_and_to_stderr_without_it(capsys):
    import io

    from rich.console import Console

    from autotune.progress import LiveProgress, PlainProgress

    PlainProgress().notice("warning: plain")
    assert capsys.readouterr().err == "warning: plain\n"
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    live = LiveProgress(console=console)
    live.start("s", ["minimize"], ["val_loss"], 3)
    try:
        live.notice("warning: live")
    finally:
        live.close()
    assert "warning: live" in console.file.getvalue() and "warning: live" not in capsys.readouterr().err
