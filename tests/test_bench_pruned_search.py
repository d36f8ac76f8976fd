"""bench/pruned_search.py: its 'before' variant is the hybrid as it was, and a run reports both budgets."""
from __future__ import annotations

from tests.bench_scripts import load_bench


def test_the_complete_only_variant_ignores_pruned_trials_in_its_start_up():
    ps = load_bench("pruned_search")
    before, shipped = ps._sampler("hybrid_complete_only", 0), ps._sampler("hybrid", 0)
    assert before.inner._in_startup(3, 11, n_pruned=7)        # 3 complete: still starting up
    assert not shipped.inner._in_startup(3, 11, n_pruned=7)   # both behind the duplicate guard


def test_a_run_reports_regret_and_complete_trials_at_each_budget():
    ps = load_bench("pruned_search")
    name, variant, seed, out = ps.run(("branin-2", "tpe", 100, 2))
    assert (name, variant, seed) == ("branin-2", "tpe", 100) and set(out) == set(ps.BUDGETS)
    assert all(0.0 <= out[b]["regret"] < 1.0 for b in ps.BUDGETS)
    assert 3 <= out[50]["complete"] <= out[100]["complete"] < 100   # the pruner cut some
