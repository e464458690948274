"""The live loop's model call, faster than the estimator's own ``predict_proba``.

:func:`compile_proba` gives, for a fitted estimator, one of:

- :class:`FastProba` for tangent-space + linear pipelines, in closed form (below);
- :class:`pipelines.deep.OnnxProba` for a deep classifier alone: its network exported to
  ONNX and run by ONNX Runtime, one trial at a time;
- None: the estimator's own ``predict_proba`` is used.

A fitted ``... -> TangentSpace -> linear classifier`` pipeline (optionally inside
scikit-learn's ``CalibratedClassifierCV`` with Platt scaling) decides a window with one
matrix function and a dot product:

- the reference's ``M^{-1/2}`` is computed once (pyRiemann recomputes it, a second
  eigendecomposition, on every ``transform``);
- the linear decision on the tangent vector ``upper(logm(P C P))`` is
  ``trace(Q logm(P C P))`` with ``Q`` the classifier's weights as a symmetric matrix
  (off-diagonal weights divided by ``sqrt(2)``, ``upper``'s weighting undone), i.e.
  ``sum_k log(l_k) v_k' Q v_k`` over the eigenpairs of ``P C P``: one ``eigh``, one
  matrix product, no logm matrix rebuilt and no vector built;
- then the bias and the sigmoid (Platt's ``a``, ``b`` or logistic regression's).

The steps before the tangent space (covariances, augmented covariances, ...) run as
fitted. :func:`compile_proba` returns None for anything else (the estimator's own
``predict_proba`` is then used) and the compiled function checks, on every call, that the
fitted arrays it copied are still the estimator's (a refit falls back to a recompile).
The probabilities equal the pipeline's to rounding (``tests/test_fastpath.py``).
"""

from __future__ import annotations

import math

import numpy as np

from .deep import DeepClassifier, OnnxProba
from .validation import flat_steps

__all__ = ["FastProba", "compile_proba"]


def _linear(final):
    """``(w, b)`` of a fitted binary linear classifier's decision function, or None."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC, LinearSVC

    if len(getattr(final, "classes_", ())) != 2:
        return None
    if isinstance(final, SVC):
        if final.kernel != "linear":
            return None
    elif not isinstance(final, (LinearSVC, LogisticRegression, LinearDiscriminantAnalysis)):
        return None
    coef, intercept = np.asarray(final.coef_, dtype=np.float64), np.asarray(final.intercept_, dtype=np.float64)
    if coef.shape[0] != 1 or intercept.shape != (1,):
        return None
    return coef[0].copy(), float(intercept[0])


def _fitted_state(estimator) -> tuple:
    """Objects a refit replaces (held, so compared by identity)."""
    state = []
    for step in flat_steps(estimator):
        for name in ("reference_", "_dual_coef_", "coef_", "intercept_", "calibrated_classifiers_", "support_vectors_"):
            value = step.__dict__.get(name)
            if value is not None:
                state.append(value)
    return tuple(state)


class FastProba:
    """``estimator.predict_proba`` in closed form (see the module docstring)."""

    def __init__(self, estimator, head: list, reference: np.ndarray, w: np.ndarray, b: float, platt: tuple | None):
        from pyriemann.geometry.base import invsqrtm

        self.estimator, self.head = estimator, head
        self.P = np.ascontiguousarray(invsqrtm(np.asarray(reference, dtype=np.float64)))
        n = self.P.shape[0]
        if w.shape != (n * (n + 1) // 2,):
            raise ValueError("tangent vector length does not match the reference")
        rows, cols = np.triu_indices(n)
        Q = np.zeros((n, n))
        off = rows != cols
        Q[rows, cols] = np.where(off, w / math.sqrt(2.0), w)  # upper's sqrt(2) on each of the two mirrored entries
        Q[cols, rows] = Q[rows, cols]
        self.Q, self.b, self.platt = Q, b, platt
        self._state = _fitted_state(estimator)

    def valid(self) -> bool:
        """Whether the estimator still holds the fitted arrays this was compiled from."""
        now = _fitted_state(self.estimator)
        return len(now) == len(self._state) and all(a is b for a, b in zip(now, self._state))

    def decision(self, X: np.ndarray) -> np.ndarray:
        """The linear classifier's decision ``(n,)`` for trials ``X`` (the pipeline's input)."""
        C = X
        for step in self.head:
            C = step.transform(C)
        C = np.asarray(C, dtype=np.float64)
        W = self.P @ C @ self.P
        vals, vecs = np.linalg.eigh(W)
        # trace(Q V diag(log l) V') = sum_k log(l_k) (V' Q V)_kk
        quad = np.einsum("nik,nik->nk", self.Q @ vecs, vecs)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.einsum("nk,nk->n", np.log(vals), quad) + self.b

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, 2)`` in the estimator's ``classes_`` order."""
        d = self.decision(X)
        z = -(self.platt[0] * d + self.platt[1]) if self.platt is not None else d
        p = 1.0 / (1.0 + np.exp(-z))  # scipy's expit, without the import on the hot path
        return np.column_stack([1.0 - p, p])


def compile_proba(estimator) -> FastProba | OnnxProba | None:
    """A :class:`FastProba` for ``estimator`` or None when it is not of a supported form:
    ``[transformers ->] TangentSpace(metric="riemann") -> binary linear classifier``
    (linear SVC, LinearSVC, logistic regression, LDA), bare (logistic regression only:
    its probabilities are the sigmoid of the decision) or in a ``CalibratedClassifierCV``
    with ``ensemble=False`` and ``method="sigmoid"``; an :class:`~pipelines.deep.OnnxProba`
    for a pipeline that is one fitted :class:`~pipelines.deep.DeepClassifier`."""
    steps = flat_steps(estimator)
    if len(steps) == 1 and isinstance(steps[0], DeepClassifier):
        return steps[0].onnx_proba()
    try:
        from pyriemann.tangentspace import TangentSpace
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.linear_model import LogisticRegression
    except ImportError:  # pragma: no cover - both are dependencies
        return None
    platt, inner = None, estimator
    if isinstance(estimator, CalibratedClassifierCV):
        cals = getattr(estimator, "calibrated_classifiers_", None)
        if not cals or len(cals) != 1 or len(estimator.classes_) != 2:
            return None
        cal = cals[0]
        if cal.method != "sigmoid" or len(cal.calibrators) != 1:
            return None
        inner = cal.estimator
        if list(getattr(inner, "classes_", [])) != list(estimator.classes_):
            return None
        platt = (float(cal.calibrators[0].a_), float(cal.calibrators[0].b_))
    steps = flat_steps(inner)
    if len(steps) < 2 or not isinstance(steps[-2], TangentSpace):
        return None
    ts, final = steps[-2], steps[-1]
    if ts.metric not in ("riemann", {"mean": "riemann", "map": "riemann"}) or ts.tsupdate:
        return None
    if getattr(ts, "reference_", None) is None or any(isinstance(s, TangentSpace) for s in steps[:-2]):
        return None
    if platt is None and not (isinstance(final, LogisticRegression) and getattr(final, "multi_class", "auto") in ("auto", "deprecated", "ovr")):
        return None
    linear = _linear(final)
    if linear is None:
        return None
    head = steps[:-2]
    if any(not hasattr(s, "transform") for s in head):
        return None
    try:
        return FastProba(estimator, head, ts.reference_, *linear, platt)
    except (ValueError, np.linalg.LinAlgError):
        return None
