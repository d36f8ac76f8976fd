"""Best trials at a bound of their range: the notes that say a range is worth widening."""
from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState, create_trial

from autotune.edges import best_trials, edge_notes

LR = FloatDistribution(1e-3, 2e-2, log=True)
LAYERS = IntDistribution(2, 4)
MIN, MAX = [StudyDirection.MINIMIZE], [StudyDirection.MAXIMIZE]


def _trial(value, lr, layers=3, **kw):
    return create_trial(params={"lr": lr, "n_layers": layers},
                        distributions={"lr": LR, "n_layers": LAYERS}, value=value, **kw)


def _study(best_lrs, rest=12, **kw):
    """The best trials at ``best_lrs`` (values 0.1, 0.2, ...), ``rest`` worse ones spread mid-range."""
    good = [_trial(0.1 * (i + 1), lr, **kw) for i, lr in enumerate(best_lrs)]
    spread = [_trial(5.0 + i, 10 ** (-3 + 1.3 * (i + 1) / (rest + 1))) for i in range(rest)]
    return good + spread


def test_best_trials_pressing_the_low_end_of_a_log_range_are_named():
    notes = edge_notes(_study([1e-3, 1.001e-3, 1.02e-3]), MIN)
    assert notes == ["lr: 3 of the 3 best trials are at the low end of its range (0.001): "
                     "better values may lie below it; widen the range"]


def test_an_int_parameter_at_its_high_end_when_maximizing():
    trials = [_trial(-v, 5e-3, layers=4 if v < 1 else 3) for v in (0.1, 0.2, 0.3)]
    trials += [_trial(-5.0 - i, 5e-3, layers=2 + i % 2) for i in range(12)]
    assert edge_notes(trials, MAX) == ["n_layers: 3 of the 3 best trials are at the high end of its "
                                       "range (4): better values may lie above it; widen the range"]


@pytest.mark.parametrize("best_lrs, rest", [
    ([1e-3, 4e-3, 1e-2], 12),     # one of three at the end: not most
    ([1e-3, 1.1e-3, 1e-3], 5),    # 8 complete trials: too early to say
    ([1.2e-3, 1.3e-3, 1.4e-3], 12),  # near, but more than 2 % of the log range inside it
])
def test_no_note_without_most_best_trials_at_an_end(best_lrs, rest):
    assert edge_notes(_study(best_lrs, rest), MIN) == []


def test_infeasible_pruned_and_failed_trials_are_not_among_the_best():
    infeasible = [_trial(0.01, 1e-3, system_attrs={"constraints": [1.0]}) for _ in range(3)]
    pruned = [create_trial(state=TrialState.PRUNED, params={"lr": 1e-3}, distributions={"lr": LR})]
    trials = infeasible + pruned + _study([5e-3, 6e-3, 7e-3])
    assert [t.params["lr"] for t in best_trials(trials, MIN)[:3]] == [5e-3, 6e-3, 7e-3]
    assert edge_notes(trials, MIN) == []


def test_the_pareto_front_is_judged_for_several_objectives():
    front = [create_trial(params={"lr": 1e-3}, distributions={"lr": LR}, values=[a, 1.0 - a])
             for a in (0.1, 0.5, 0.9)]
    dominated = [create_trial(params={"lr": 1e-2}, distributions={"lr": LR}, values=[2.0 + i, 2.0])
                 for i in range(10)]
    notes = edge_notes(front + dominated, MIN * 2)
    assert len(notes) == 1 and notes[0].startswith("lr: 3 of the 3 best trials are at the low end")


def test_status_and_the_run_summary_say_it(tmp_path):
    from click.testing import CliRunner
    from rich.console import Console

    from autotune.cli import main
    from autotune.progress import print_summary
    url = f"sqlite:///{tmp_path / 'edges.db'}"
    study = optuna.create_study(study_name="edges", storage=url)
    for t in _study([1e-3, 1e-3, 1.01e-3]):
        study.add_trial(t)
    detail = CliRunner().invoke(main, ["status", "edges", "--storage", url])
    assert detail.exit_code == 0, detail.output
    assert "range       lr: 3 of the 3 best trials are at the low end of its range (0.001)" in detail.output
    console = Console(record=True, width=200)
    print_summary(study, url, console=console)
    assert "note: lr: 3 of the 3 best trials are at the low end" in console.export_text()


def test_the_report_summary_says_it(tmp_path):
    from autotune import report
    study = optuna.create_study(study_name="edges", storage=f"sqlite:///{tmp_path / 'r.db'}")
    for t in _study([1e-3, 1e-3, 1.01e-3]):
        study.add_trial(t)
    page = report.write_report(study, tmp_path / "r.html").read_text()
    summary = page.split('id="summary"')[1].split("</section>")[0]
    assert "<td>range</td><td>lr: 3 of the 3 best trials are at the low end of its range (0.001)" in summary
