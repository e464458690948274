"""Input checks and small helpers shared by the scikit-learn estimators of this package."""

from __future__ import annotations

from numbers import Integral

import numpy as np

from bci.errors import ConfigError, DataError


def check_trials(X, name: str = "X") -> np.ndarray:
    """Return ``X`` as a finite float64 array of shape (n_trials, n_channels, n_times)."""
    X = np.asarray(X)
    if X.ndim != 3:
        raise DataError(
            f"{name} must be trials of shape (n_trials, n_channels, n_times); "
            f"found an array of shape {X.shape}"
        )
    if X.shape[0] == 0 or X.shape[1] == 0 or X.shape[2] == 0:
        raise DataError(f"{name} is empty: shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number) or np.iscomplexobj(X):
        raise DataError(f"{name} must hold real numbers; found dtype {X.dtype}")
    X = X.astype(np.float64, copy=False)
    if not np.all(np.isfinite(X)):
        raise DataError(f"{name} contains NaN or infinite values")
    return X


def check_positive_int(value, name: str) -> int:
    """``value`` as an int, or ConfigError unless it is a positive integer (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ConfigError(f"{name} must be a positive integer; found {value!r}")
    return int(value)


def class_probabilities(estimator, X) -> np.ndarray:
    """``predict_proba`` of a fitted classifier, or, for one without (an SVM that was not
    calibrated), its decisions as one-hot rows in the order of ``classes_``."""
    if hasattr(estimator, "predict_proba"):
        return np.asarray(estimator.predict_proba(X), dtype=np.float64)
    classes = list(estimator.classes_)
    return np.eye(len(classes))[[classes.index(c) for c in estimator.predict(X)]]


def flat_steps(estimator) -> list:
    """The estimators of a (possibly nested) fitted pipeline, in order; an estimator alone is one step."""
    steps = getattr(estimator, "steps", None)
    if steps is None:
        return [estimator]
    return [e for _, s in steps if s is not None and s != "passthrough" for e in flat_steps(s)]
