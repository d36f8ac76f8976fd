"""The statistics of bench/search_quality.py: ranks, a Friedman test and paired Wilcoxon tests.

Owns: pure functions over a table ``scores[block][kind]`` (lower is better; a block is one task x
seed run of every kind under the same budget and trials in flight):
- ``friedman``: do the kinds differ at all? (``scipy.stats.friedmanchisquare`` over the blocks
  where every kind ran), with the mean rank of each kind;
- ``wilcoxon_vs``: one kind (the hybrid) against each other kind, paired over blocks
  (``scipy.stats.wilcoxon``, two-sided), with wins/ties/losses and Holm-adjusted p-values;
- ``verdict``: wins / ties / trails at a significance level.
Must not know about: optimizers, problems, how scores were made.
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import scipy.stats

Scores = Mapping[Hashable, Mapping[str, float]]   # block -> kind -> score (lower is better)

TIE_TOLERANCE = 1e-9   # |a - b| below this counts as a tie (both at the optimum, say)


def complete_blocks(scores: Scores, kinds: Sequence[str]) -> list[Hashable]:
    """Blocks in which every kind has a score."""
    return [b for b, row in scores.items() if all(k in row for k in kinds)]


def mean_ranks(scores: Scores, kinds: Sequence[str]) -> dict[str, float]:
    """Mean rank of each kind (1 = best; ties share the average rank) over complete blocks."""
    blocks = complete_blocks(scores, kinds)
    if not blocks:
        return {}
    ranks = np.array([scipy.stats.rankdata(_rounded([scores[b][k] for k in kinds])) for b in blocks])
    return {k: float(r) for k, r in zip(kinds, ranks.mean(axis=0))}


def friedman(scores: Scores, kinds: Sequence[str]) -> dict:
    """Friedman chi-square test that all kinds perform alike, over the complete blocks."""
    blocks = complete_blocks(scores, kinds)
    out = {"n_blocks": len(blocks), "mean_rank": mean_ranks(scores, kinds),
           "statistic": None, "p_value": None}
    if len(kinds) < 3 or len(blocks) < 2:
        return out
    columns = [_rounded([scores[b][k] for b in blocks]) for k in kinds]
    if all(len(set(row)) == 1 for row in zip(*columns)):
        out.update(statistic=0.0, p_value=1.0)   # every block a full tie: nothing differs
        return out
    result = scipy.stats.friedmanchisquare(*columns)
    out.update(statistic=float(result.statistic), p_value=float(result.pvalue))
    return out


def wilcoxon_vs(scores: Scores, kind: str, others: Sequence[str]) -> dict[str, dict]:
    """``kind`` against each of ``others``: paired two-sided Wilcoxon signed-rank over blocks.

    Per other kind: n (pairs), wins / ties / losses of ``kind``, the median difference and the
    signed rank sum (kind - other; negative: ``kind`` is better), p (raw) and p_holm (Holm over
    ``others``).
    Zero differences are dropped, as Wilcoxon's original test does.
    """
    out: dict[str, dict] = {}
    for other in others:
        pairs = [(row[kind], row[other]) for row in scores.values() if kind in row and other in row]
        diff = np.array(_rounded([a - b for a, b in pairs]))
        wins, losses = int((diff < 0).sum()), int((diff > 0).sum())
        nonzero = diff[diff != 0]
        p, signed = 1.0, 0.0
        if len(nonzero):
            p = float(scipy.stats.wilcoxon(nonzero).pvalue)
            signed = float((np.sign(nonzero) * scipy.stats.rankdata(np.abs(nonzero))).sum())
        out[other] = {"n": len(pairs), "wins": wins, "ties": len(pairs) - wins - losses,
                      "losses": losses, "median_diff": float(np.median(diff)) if len(diff) else 0.0,
                      "signed_rank_sum": signed, "p": p}
    for other, p_holm in zip(out, holm([row["p"] for row in out.values()])):
        out[other]["p_holm"] = p_holm
    return out


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    m = len(p_values)
    order = np.argsort(p_values)
    adjusted = np.empty(m)
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * p_values[j]))
        adjusted[j] = running
    return adjusted.tolist()


def verdict(test: Mapping[str, float], alpha: float = 0.05) -> str:
    """'wins' / 'trails' (Holm-adjusted p < alpha; by the sign of the signed rank sum) or 'ties'."""
    if test["p_holm"] >= alpha or test["signed_rank_sum"] == 0:
        return "ties"
    return "wins" if test["signed_rank_sum"] < 0 else "trails"


def _rounded(values: Sequence[float]) -> list[float]:
    """Scores equal within TIE_TOLERANCE become equal (float noise is not a win)."""
    return [round(float(v) / TIE_TOLERANCE) * TIE_TOLERANCE for v in values]
