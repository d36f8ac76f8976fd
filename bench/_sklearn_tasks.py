"""The scikit-learn family of bench/search_quality.py: real hyperparameter optimisation.

Owns: ``SklearnTask`` (a callable x -> validation error: builds a model from x, scores it with a
fixed cross-validation on a dataset that ships with scikit-learn, so no download) and ``MODELS``,
the estimators by name. Every task is deterministic (fixed folds, fixed ``random_state``, one
thread). The spaces and the best known values are in ``_quality_problems`` (family ``sklearn``).
scikit-learn is imported only when a task is first evaluated, so the rest of the suite runs without
it (``pip install -e ".[bench]"`` installs it).
Must not know about: optimizers, statistics, regret.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

INSTALL_HINT = 'the sklearn family needs scikit-learn: pip install -e ".[bench]"'


def sklearn_available() -> bool:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


_DATA: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def _dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name not in _DATA:
        from sklearn import datasets

        _DATA[name] = getattr(datasets, f"load_{name}")(return_X_y=True)
    return _DATA[name]


@dataclass(frozen=True)
class SklearnTask:
    """x (decoded by ``params``: names in the order of the problem's vars) -> validation error.

    ``MODELS[model](params)`` builds the estimator; the error is 1 - mean CV accuracy (classification) or
    mean CV MSE / var(y), i.e. 1 - R^2, at most 10 (regression), over ``folds`` shuffled folds
    (seed 0). A fit that fails scores as the worst value (1, or 10).
    """

    dataset: str
    model: str                            # a key of MODELS
    names: tuple[str, ...]
    levels: tuple[tuple[Any, ...], ...]   # per var: its string levels (x holds the index), or ()
    folds: int = 5
    regression: bool = False

    def params(self, x) -> dict[str, Any]:
        out = {}
        for name, levels, value in zip(self.names, self.levels, x):
            out[name] = levels[int(value)] if levels else value
        return out

    def __call__(self, x) -> float:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score

        X, y = _dataset(self.dataset)
        split = KFold if self.regression else StratifiedKFold
        cv = split(self.folds, shuffle=True, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", RuntimeWarning)    # overflow of a diverging fit
            warnings.simplefilter("ignore", UserWarning)
            try:
                scores = cross_val_score(MODELS[self.model](self.params(x)), X, y, cv=cv,
                                         scoring="neg_mean_squared_error" if self.regression else None,
                                         error_score=np.nan)
            except (ValueError, FloatingPointError):
                return 1.0 if not self.regression else 10.0
        if self.regression:
            value = float(-np.mean(scores) / np.var(y))
            # A diverged fit (sigmoid or polynomial kernel, tiny alpha) counts as 10x predicting the mean.
            return min(value, 10.0) if np.isfinite(value) else 10.0
        return float(1.0 - np.mean(scores)) if np.all(np.isfinite(scores)) else 1.0


# -- the models -----------------------------------------------------------------------------------

def _scaled(model):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), model)


def _svc(p):
    from sklearn.svm import SVC

    return _scaled(SVC(C=p["C"], gamma=p["gamma"], kernel=p["kernel"], degree=int(p["degree"])))


def _sgd(p):
    from sklearn.linear_model import SGDClassifier

    return _scaled(SGDClassifier(alpha=p["alpha"], loss=p["loss"], penalty=p["penalty"],
                                 l1_ratio=p["l1_ratio"], max_iter=int(p["max_iter"]), tol=None,
                                 random_state=0))


def _mlp(p):
    from sklearn.neural_network import MLPClassifier

    return _scaled(MLPClassifier(hidden_layer_sizes=(int(p["hidden_units"]),), activation=p["activation"],
                                 alpha=p["alpha"], learning_rate_init=p["learning_rate_init"],
                                 max_iter=60, random_state=0))


def _hgb(p):
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        learning_rate=p["learning_rate"], max_iter=int(p["max_iter"]),
        max_leaf_nodes=int(p["max_leaf_nodes"]), min_samples_leaf=int(p["min_samples_leaf"]),
        l2_regularization=p["l2_regularization"], early_stopping=False, random_state=0)


def _kernel_ridge(p):
    from sklearn.kernel_ridge import KernelRidge

    return _scaled(KernelRidge(alpha=p["alpha"], kernel=p["kernel"], gamma=p["gamma"],
                               degree=int(p["degree"])))


MODELS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "svc": _svc, "sgd": _sgd, "mlp": _mlp, "hgb": _hgb, "kernel_ridge": _kernel_ridge,
}
