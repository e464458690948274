"""Builders of the Riemannian pipelines, by name (the names results.csv carries).

=============  =================================================================
name           pipeline
=============  =================================================================
ACM+TS+SVM     ``AugmentedGridSearch``: augmented covariances + tangent space + SVC,
               order/lag/C/kernel by cached grid search (``selection="grid"``) or
               order/lag by AMI + FNN (``selection="auto"``); ``selection="fixed"``
               gives a plain pipeline with the ``order``/``lag`` given
ACM+MDM        ``AugmentedCovariances`` + ``MDM`` (order/lag "auto" unless given)
ACM+FgMDM      ``AugmentedCovariances`` + ``FgMDM``
TS+SVM         ``Covariances`` + ``TangentSpace`` + ``SVC``
TS+LR          ``Covariances`` + ``TangentSpace`` + ``LogisticRegression``
MDM            ``Covariances`` + ``MDM``
FgMDM          ``Covariances`` + ``FgMDM``
=============  =================================================================

Options shared by all: ``estimator`` (covariance estimator, default "oas"),
``bands`` (a :class:`~pipelines.filterbank.FilterBank` first: ``[[8, 12], [12, 16], ...]``
in Hz, the bands stacked as channels), ``align=True`` (Euclidean alignment of the signals first), ``recenter=True``
(Riemannian re-centering of the SPD matrices; not with a searched ACM+TS+SVM) and
``adapt=True`` (both re-estimate their reference on each predicted batch: pass one
session/run at a time). ``fit_params`` may route ``groups`` to them, e.g.
``pipe.fit(X, y, euclideanalignment__groups=runs)``.
"""

from __future__ import annotations

from pyriemann.classification import MDM, FgMDM
from pyriemann.estimation import Covariances
from pyriemann.tangentspace import TangentSpace
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.svm import SVC

from bci.errors import ConfigError

from .alignment import EuclideanAlignment, RiemannianRecentering
from .augmented import AugmentedCovariances
from .filterbank import FilterBank
from .selection import AugmentedGridSearch

RIEMANN_PIPELINES = ("ACM+TS+SVM", "ACM+MDM", "ACM+FgMDM", "TS+SVM", "TS+LR", "MDM", "FgMDM")

_COMMON = {"estimator": "oas", "bands": None, "align": False, "recenter": False, "adapt": False}
_ACM = {"order": "auto", "lag": "auto", "max_order": 10, "max_lag": 10, "random_state": None}
_SEARCH = {
    "selection": "grid",
    "orders": tuple(range(1, 11)),
    "lags": tuple(range(1, 11)),
    "Cs": (0.5, 1.0, 1.5),
    "kernels": ("rbf", "linear"),
    "cv": 3,
    "reference": "shared",
    "scoring": None,
    "n_jobs": 1,
    "C": 1.0,
    "kernel": "rbf",
}
_DEFAULTS = {
    "ACM+TS+SVM": {**_COMMON, **_ACM, **_SEARCH},
    "ACM+MDM": {**_COMMON, **_ACM},
    "ACM+FgMDM": {**_COMMON, **_ACM},
    "TS+SVM": {**_COMMON, "C": 1.0, "kernel": "linear"},
    "TS+LR": {**_COMMON, "C": 1.0},
    "MDM": dict(_COMMON),
    "FgMDM": dict(_COMMON),
}


def _classifier(name: str, p: dict):
    if name.endswith("TS+SVM"):
        return [TangentSpace(metric="riemann"), SVC(C=p["C"], kernel=p["kernel"])]
    if name == "TS+LR":
        return [TangentSpace(metric="riemann"), LogisticRegression(C=p["C"], max_iter=1000)]
    return [FgMDM(metric="riemann") if name.endswith("FgMDM") else MDM(metric="riemann")]


def make_riemann_pipeline(name: str, **params) -> Pipeline:
    """Build the named pipeline (see the module docstring), unfitted.

    Raises :class:`bci.errors.ConfigError` for an unknown name, an unknown parameter
    (the message lists the accepted ones) or an unsupported combination.
    """
    if name not in _DEFAULTS:
        raise ConfigError(f"unknown Riemannian pipeline {name!r}; known: {', '.join(RIEMANN_PIPELINES)}")
    unknown = sorted(set(params) - set(_DEFAULTS[name]))
    if unknown:
        raise ConfigError(
            f"pipeline {name}: unknown parameter(s) {unknown}; accepted: {sorted(_DEFAULTS[name])}"
        )
    p = {**_DEFAULTS[name], **params}
    steps = [FilterBank(bands=p["bands"])] if p["bands"] is not None else []
    if p["align"]:
        steps.append(EuclideanAlignment(adapt=p["adapt"]))
    if name == "ACM+TS+SVM" and p["selection"] != "fixed":
        if p["selection"] not in ("grid", "auto"):
            raise ConfigError(
                f"ACM+TS+SVM: selection must be 'grid', 'auto' or 'fixed'; found {p['selection']!r}"
            )
        if p["recenter"]:
            raise ConfigError(
                "ACM+TS+SVM: recenter=True needs selection='fixed' (the searched "
                "pipeline has no re-centering step); use align=True instead"
            )
        auto = p["selection"] == "auto"
        search = AugmentedGridSearch(
            orders="auto" if auto else p["orders"],
            lags="auto" if auto else p["lags"],
            Cs=p["Cs"],
            kernels=p["kernels"],
            estimator=p["estimator"],
            cv=p["cv"],
            reference=p["reference"],
            scoring=p["scoring"],
            max_order=p["max_order"],
            max_lag=p["max_lag"],
            n_jobs=p["n_jobs"],
            random_state=p["random_state"],
        )
        return make_pipeline(*steps, search)
    if name.startswith("ACM"):
        steps.append(
            AugmentedCovariances(
                order=p["order"],
                lag=p["lag"],
                estimator=p["estimator"],
                max_order=p["max_order"],
                max_lag=p["max_lag"],
                random_state=p["random_state"],
            )
        )
    else:
        steps.append(Covariances(estimator=p["estimator"]))
    if p["recenter"]:
        steps.append(RiemannianRecentering(adapt=p["adapt"]))
    return make_pipeline(*steps, *_classifier(name, p))

