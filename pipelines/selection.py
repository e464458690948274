"""Order/lag selection for augmented covariances.

Two routes, as in Carrara & Papadopoulo [1]_:

* supervised: :class:`AugmentedGridSearch`, a cross-validated order x lag x SVC grid
  (MOABB's ``AUG_TANG_SVM_grid``: ``AugmentedDataset`` + ``Covariances`` +
  ``TangentSpace`` + ``SVC`` in a ``GridSearchCV``) that computes the augmented
  covariances once per (order, lag) and the tangent space once per (order, lag, fold),
  instead of once per grid point and fold;
* data-driven (no labels, no grid): :mod:`pipelines.embedding` (AMI lag, false nearest
  neighbours order), used here by ``AugmentedGridSearch(orders="auto", lags="auto")``.

References
----------
.. [1] Carrara, I., & Papadopoulo, T. (2024). Classification of BCI-EEG based on the
   augmented covariance matrix. IEEE TBME. arXiv:2302.04508.
"""

from __future__ import annotations

from itertools import product

import numpy as np
from scipy.stats import rankdata
from joblib import Parallel, delayed, parallel_config
from pyriemann.tangentspace import TangentSpace
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import get_scorer
from sklearn.model_selection import StratifiedKFold, check_cv
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC

from bci.errors import ConfigError, DataError, ModelError

from .augmented import AugmentedCovariances, augmented_covariances, check_augmentation
from .embedding import select_lag_ami, select_order_fnn
from .validation import check_positive_int, check_trials


def _grid_axis(values, name: str) -> tuple[int, ...] | str:
    if isinstance(values, str):
        if values != "auto":
            raise ConfigError(f"{name} must be 'auto' or a list of integers; found {values!r}")
        return values
    values = tuple(check_positive_int(v, name) for v in values)
    if not values:
        raise ConfigError(f"{name} is empty")
    return values


def _binary_roc_auc(y_true, decision, positive) -> float:
    """ROC-AUC of decision values (Mann-Whitney U with mid-ranks, = roc_auc_score)."""
    ranks = rankdata(decision)
    pos = y_true == positive
    n_pos = pos.sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (len(pos) - n_pos)))


def default_scoring(n_classes: int) -> str:
    """The scoring MOABB's paradigms use: ROC-AUC for two classes, accuracy for more."""
    return "roc_auc" if n_classes == 2 else "accuracy"


def _scorer(scoring: str, classes):
    """``scorer(clf, X, y)``; binary ROC-AUC without scikit-learn's per-call checks."""
    if scoring == "roc_auc" and len(classes) == 2:
        return lambda clf, X, y: _binary_roc_auc(y, clf.decision_function(X), classes[1])
    return get_scorer(scoring)


def _score_order_lag(X, y, order, lag, estimator, shrinkage, metric, shared, folds, svc_grid, scorer):
    """CV scores of every SVC setting at one (order, lag), shape (n_settings, n_folds).

    The augmented covariances are computed once for all trials; the tangent space is
    fitted once on all of them (``shared``: its reference uses no label) or once per
    fold on the fold's training part. Returns ``(scores, covs, ts)`` with ``ts`` the
    shared fitted ``TangentSpace`` (None per fold).
    """
    covs = augmented_covariances(X, order, lag, estimator, shrinkage)
    ts = TangentSpace(metric=metric).fit(covs) if shared else None
    feats = ts.transform(covs) if shared else None
    scores = np.empty((len(svc_grid), len(folds)))
    for f, (train, test) in enumerate(folds):
        if not shared:
            feats = TangentSpace(metric=metric).fit(covs[train]).transform(covs)
        for s, params in enumerate(svc_grid):
            clf = SVC(**params).fit(feats[train], y[train])
            scores[s, f] = scorer(clf, feats[test], y[test])
    return scores, covs, ts


class AugmentedGridSearch(ClassifierMixin, BaseEstimator):
    """ACM + tangent space + SVM with cross-validated order/lag/SVC selection.

    The search space and the result are those of MOABB's ``AUG_TANG_SVM_grid``
    (``GridSearchCV`` over ``AugmentedDataset`` order and lag, ``SVC`` ``C`` and
    ``kernel``, on ``Covariances`` + ``TangentSpace``), but the work is shared: the
    augmented covariances of all training trials are computed once per (order, lag)
    (they depend on no label), the tangent-space reference once per (order, lag) (or
    per fold, see ``reference``), and only the SVCs are fitted per grid point. The
    refit on all training trials reuses the matrices of the best (order, lag); only
    those are kept in memory during the search.

    With ``orders="auto"`` / ``lags="auto"`` the order/lag come from the data-driven
    selection (:func:`select_lag_ami`, :func:`select_order_fnn`) on the training
    trials, and only the SVC settings are cross-validated.

    Parameters
    ----------
    orders, lags : sequence of int | "auto"
        Candidate orders and lags (MOABB: 1..10 each).
    Cs, kernels : sequence
        Candidate ``SVC`` ``C`` and ``kernel`` values (MOABB: 0.5, 1, 1.5 and rbf,
        linear).
    estimator : {"oas", "lwf", "scm", "cov", "shrinkage"}
        Covariance estimator (see :func:`pipelines.augmented.augmented_covariances`;
        MOABB's grid uses "cov", singular once ``C*order`` nears the kept samples).
    shrinkage : float
        Coefficient of the "shrinkage" estimator.
    metric : str
        Tangent-space metric (pyRiemann ``TangentSpace``).
    reference : {"shared", "fold"}
        Where the tangent-space reference (the ``metric`` mean) is estimated during the
        search. "shared": once per (order, lag) on all training trials - it uses no
        label, and the refit reuses it, so the search costs one mean per (order, lag).
        "fold": on each inner fold's training part, exactly as ``GridSearchCV`` over
        MOABB's pipeline (``cv`` times the means).
    cv : int | CV splitter
        Inner cross-validation; an int means ``StratifiedKFold(cv, shuffle=True,
        random_state=random_state)`` (MOABB's inner CV is 3 such folds).
    scoring : str | None
        scikit-learn scorer name; None: the evaluation's scoring when ``bci evaluate``
        runs it (as MOABB's inner search), else "roc_auc" for two classes, "accuracy"
        for more.
    max_order, max_lag : int
        Search ranges of the "auto" selections.
    n_jobs : int
        Parallel (order, lag) points (joblib); workers run BLAS single-threaded.
    random_state : int | None
        Seed of the inner CV shuffle and of the "auto" series subsampling.

    Attributes
    ----------
    best_params_ : dict
        ``{"order", "lag", "C", "kernel"}`` of the best mean CV score.
    best_score_ : float
    cv_results_ : dict of lists
        ``order, lag, C, kernel, mean_test_score, std_test_score`` per grid point.
    best_estimator_ : Pipeline
        ``AugmentedCovariances`` + ``TangentSpace`` + ``SVC`` fitted on all trials.
    classes_ : array
    """

    def __init__(
        self,
        orders=tuple(range(1, 11)),
        lags=tuple(range(1, 11)),
        Cs=(0.5, 1.0, 1.5),
        kernels=("rbf", "linear"),
        estimator="oas",
        shrinkage=0.1,
        metric="riemann",
        reference="shared",
        cv=3,
        scoring=None,
        max_order=10,
        max_lag=10,
        n_jobs=1,
        random_state=None,
    ):
        self.orders = orders
        self.lags = lags
        self.Cs = Cs
        self.kernels = kernels
        self.estimator = estimator
        self.shrinkage = shrinkage
        self.metric = metric
        self.reference = reference
        self.cv = cv
        self.scoring = scoring
        self.max_order = max_order
        self.max_lag = max_lag
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _candidates(self, X) -> list[tuple[int, int]]:
        """(order, lag) pairs to try, each validated against the trial size up front."""
        orders, lags = _grid_axis(self.orders, "orders"), _grid_axis(self.lags, "lags")
        if lags == "auto":
            lags = (select_lag_ami(X, self.max_lag, random_state=self.random_state),)
        if orders == "auto":
            if len(lags) != 1:
                raise ConfigError("orders='auto' needs lags='auto' or a single lag")
            orders = (
                select_order_fnn(X, lags[0], self.max_order, random_state=self.random_state),
            )
        # lag-major, as GridSearchCV walks MOABB's grid (keys sorted: lag before order), so
        # that tied scores pick the same point (the first)
        pairs = [(order, lag) for lag in lags for order in orders]
        _, C, T = X.shape
        for order, lag in pairs:  # a clear error before any long work starts
            check_augmentation(C, T, order, lag, self.estimator)
        return pairs

    def fit(self, X, y):
        """Cross-validate the grid on (X, y), then refit the best setting on all of X."""
        X = check_trials(X)
        y = np.asarray(y)
        if len(y) != len(X):
            raise DataError(f"X has {len(X)} trials but y has {len(y)} labels")
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise DataError(f"need at least 2 classes to fit; found {self.classes_}")
        pairs = self._candidates(X)
        svc_grid = [{"C": c, "kernel": k} for c, k in product(self.Cs, self.kernels)]
        cv = (
            StratifiedKFold(self.cv, shuffle=True, random_state=self.random_state)
            if isinstance(self.cv, int)
            else check_cv(self.cv, y, classifier=True)
        )
        folds = list(cv.split(X, y))
        if self.reference not in ("shared", "fold"):
            raise ConfigError(f"reference must be 'shared' or 'fold'; found {self.reference!r}")
        args = (
            self.estimator, self.shrinkage, self.metric, self.reference == "shared",
            folds, svc_grid, _scorer(self.scoring or default_scoring(len(self.classes_)), self.classes_),
        )
        with parallel_config(backend="loky", inner_max_num_threads=1):  # no BLAS oversubscription
            results = Parallel(n_jobs=self.n_jobs, return_as="generator")(
                delayed(_score_order_lag)(X, y, o, lag, *args) for o, lag in pairs
            )
            rows, best = [], (-np.inf, None)
            for (order, lag), (scores, covs, ts) in zip(pairs, results):
                means = scores.mean(axis=1)
                rows += [(order, lag, p, m, sd) for p, m, sd in zip(svc_grid, means, scores.std(1))]
                if np.nanmax(means, initial=-np.inf) > best[0]:  # keep only the best matrices
                    best = (np.nanmax(means), (order, lag, svc_grid[np.nanargmax(means)], covs, ts))
        self.cv_results_ = {
            "order": [r[0] for r in rows],
            "lag": [r[1] for r in rows],
            "C": [r[2]["C"] for r in rows],
            "kernel": [r[2]["kernel"] for r in rows],
            "mean_test_score": [float(r[3]) for r in rows],
            "std_test_score": [float(r[4]) for r in rows],
        }
        if best[1] is None:
            raise ModelError("every grid point scored NaN")
        order, lag, params, covs, ts = best[1]
        self.best_params_ = {"order": order, "lag": lag, **params}
        self.best_score_ = float(best[0])
        acm = AugmentedCovariances(order, lag, self.estimator, self.shrinkage).fit(X)
        ts = ts if ts is not None else TangentSpace(metric=self.metric).fit(covs)
        svc = SVC(**params).fit(ts.transform(covs), y)
        self.best_estimator_ = Pipeline(
            [("augmentedcovariances", acm), ("tangentspace", ts), ("svc", svc)]
        )
        return self

    def _fitted(self) -> Pipeline:
        if not hasattr(self, "best_estimator_"):
            raise ModelError("AugmentedGridSearch must be fitted before predicting")
        return self.best_estimator_

    def predict(self, X):
        """Class of each trial, from the refitted best pipeline."""
        return self._fitted().predict(X)

    def decision_function(self, X):
        """SVC decision values of the refitted best pipeline (used for ROC-AUC)."""
        return self._fitted().decision_function(X)
