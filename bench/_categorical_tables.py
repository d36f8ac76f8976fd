"""The categorical, architecture-like problems of bench/search_quality.py's ``categorical`` family:
their tables, fixed at construction from a seeded ``RandomState``, and each one's exact minimum by
dynamic programming (checked against brute force on small instances in
tests/test_bench_search_quality.py).

Owns: ``NKLandscape`` (Kauffman's NK model), ``PairwiseGrid`` (a cell of pairwise-interacting ops),
``NKWithFloats`` (per-layer choices with floats). ``_quality_problems`` builds the problems on them.
Must not know about: optimizers, statistics, search spaces.
"""
from __future__ import annotations

import math

import numpy as np


class NKLandscape:
    """Kauffman's NK model with adjacent, circular neighbourhoods, minimized: N genes of A levels;
    gene i contributes ``table[i][x_i, x_i+1, ..., x_i+K]`` (indices mod N), a fixed uniform draw
    in [0, 1); f is the mean contribution. ``minimum`` is exact (dynamic programming over windows of
    K genes, for each of the A^K values of the first K genes)."""

    def __init__(self, n: int, a: int, k: int, seed: int) -> None:
        if not 1 <= k < n:
            raise ValueError("NK: need 1 <= K < N")
        self.n, self.a, self.k = n, a, k
        self.table = np.random.RandomState(seed).uniform(size=(n,) + (a,) * (k + 1))

    def __call__(self, x) -> float:
        g = [int(round(v)) for v in x[: self.n]]
        return float(sum(self.table[i][tuple(g[(i + j) % self.n] for j in range(self.k + 1))]
                         for i in range(self.n)) / self.n)

    def minimum(self) -> float:
        n, a, k, t = self.n, self.a, self.k, self.table
        best = math.inf
        for head in np.ndindex(*(a,) * k):            # x_0 .. x_{K-1}
            # cost[s] over the last K assigned genes s = (x_{j-K}, ..., x_{j-1}); only one state so far
            cost = np.full((a,) * k, math.inf)
            cost[head] = 0.0
            for j in range(k, n):                    # assign x_j: gene j-K's window is complete
                cost = (cost[..., None] + t[j - k]).min(axis=0)
            for tail in np.ndindex(*(a,) * k):       # x_{N-K} .. x_{N-1}: the wrapped genes remain
                genes = tail + head
                rest = sum(t[n - k + m][genes[m:m + k + 1]] for m in range(k))
                best = min(best, cost[tail] + rest)
        return float(best / n)


class PairwiseGrid:
    """A 'cell' search space: R cells x E edges, each edge one of A ops; f is a sum of fixed random
    unary terms (op on edge) and pairwise terms between consecutive edges of a cell and between the
    same edge of consecutive cells (an energy on an R x E grid, as in pairwise Markov random fields).
    ``minimum`` is exact: dynamic programming over the E columns, each state the R ops of a column."""

    def __init__(self, rows: int, edges: int, a: int, seed: int) -> None:
        rng = np.random.RandomState(seed)
        self.rows, self.edges, self.a = rows, edges, a
        self.unary = rng.uniform(size=(rows, edges, a))
        self.along = rng.uniform(size=(rows, edges - 1, a, a))      # edge e -- edge e+1 of a cell
        self.across = rng.uniform(size=(max(0, rows - 1), edges, a, a))   # cell r -- cell r+1

    def _column(self, e: int, ops: tuple[int, ...]) -> float:
        return float(sum(self.unary[r, e, ops[r]] for r in range(self.rows))
                     + sum(self.across[r, e, ops[r], ops[r + 1]] for r in range(self.rows - 1)))

    def __call__(self, x) -> float:
        g = np.array([int(round(v)) for v in x[: self.rows * self.edges]]).reshape(self.rows, self.edges)
        total = sum(self._column(e, tuple(g[:, e])) for e in range(self.edges))
        total += sum(self.along[r, e, g[r, e], g[r, e + 1]]
                     for r in range(self.rows) for e in range(self.edges - 1))
        return float(total / (self.rows * self.edges))

    def minimum(self) -> float:
        states = list(np.ndindex(*(self.a,) * self.rows))
        cost = np.array([self._column(0, s) for s in states])
        for e in range(1, self.edges):
            step = np.array([[sum(self.along[r, e - 1, s[r], u[r]] for r in range(self.rows))
                              for u in states] for s in states])
            cost = (cost[:, None] + step).min(axis=0) + np.array([self._column(e, u) for u in states])
        return float(cost.min() / (self.rows * self.edges))


class NKWithFloats:
    """Per-layer categorical choices (an NK landscape) plus learning-rate-like floats in [0, 1]
    whose best value depends on the first choice: ``nk(x_cat) + weight * sum_j (u_j - c_j[x_0])^2``.
    Every architecture can reach the float term's minimum 0, so f* is the landscape's minimum."""

    def __init__(self, nk: NKLandscape, n_float: int, weight: float, seed: int) -> None:
        self.nk, self.n_float, self.weight = nk, n_float, weight
        self.centre = np.random.RandomState(seed).uniform(0.15, 0.85, size=(n_float, nk.a))

    def __call__(self, x) -> float:
        first = int(round(x[0]))
        u = np.asarray(x[self.nk.n: self.nk.n + self.n_float], dtype=float)
        return self.nk(x) + float(self.weight * ((u - self.centre[:, first]) ** 2).sum())
