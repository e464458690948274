"""Augmented covariances (pipelines.augmented) and order/lag selection (pipelines.embedding, pipelines.selection)."""

import numpy as np
import pytest
from scipy.signal import lfilter
from sklearn.base import clone

from bci.errors import ConfigError, DataError
from pipelines import selection
from pipelines.augmented import AugmentedCovariances, augmented_covariances
from pipelines.embedding import select_lag_ami, select_order_fnn
from pipelines.selection import AugmentedGridSearch


def slow_augmented(X, order, lag, estimator):
    """Obviously correct: explicit delay embedding, then one estimator call per trial."""
    from pyriemann.geometry.covariance import covariances

    T = X.shape[-1]
    n_kept = T if order == 1 else T - order * lag
    out = []
    for trial in X:
        embedded = np.vstack([trial[:, p * lag : p * lag + n_kept] for p in range(order)])
        if estimator == "cov":
            out.append(np.cov(embedded))
        else:
            out.append(covariances(embedded[None], estimator=estimator)[0])
    return np.array(out)


@pytest.mark.parametrize("order, lag", [(1, 1), (2, 1), (3, 2), (4, 5), (6, 3)])
@pytest.mark.parametrize("estimator", ["scm", "cov", "oas", "lwf"])
def test_matches_explicit_embedding(order, lag, estimator):
    rng = np.random.default_rng(order * 10 + lag)
    X = rng.standard_normal((4, 3, 90)) + 5.0  # offsets: centring must be per window
    X[:, 1] += 0.5 * X[:, 0]
    ours = augmented_covariances(X, order, lag, estimator)
    ref = slow_augmented(X, order, lag, estimator)
    assert ours.shape == (4, 3 * order, 3 * order)
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())


def test_fixed_shrinkage_formula():
    X = np.random.default_rng(0).standard_normal((2, 3, 50))
    scm = augmented_covariances(X, 2, 2, "scm")
    shrunk = augmented_covariances(X, 2, 2, "shrinkage", shrinkage=0.3)
    mu = np.trace(scm, axis1=1, axis2=2)[:, None, None] / 6
    np.testing.assert_allclose(shrunk, 0.7 * scm + 0.3 * mu * np.eye(6), rtol=1e-12)


@pytest.mark.parametrize("order, lag", [(1, 1), (3, 2), (5, 4)])
def test_equals_moabb_augmented_dataset(order, lag):
    from moabb.pipelines.features import AugmentedDataset
    from pyriemann.estimation import Covariances

    X = np.random.default_rng(1).standard_normal((5, 4, 120))
    theirs = Covariances("scm").transform(AugmentedDataset(order=order, lag=lag).transform(X))
    np.testing.assert_allclose(augmented_covariances(X, order, lag, "scm"), theirs, rtol=1e-10)


@pytest.mark.parametrize("estimator", ["oas", "lwf"])
def test_spd_when_dimension_reaches_samples(estimator):
    # PhysionetMI's size: 64 channels x 481 samples; order 8 gives 512 > 481 - 8 samples.
    X = np.random.default_rng(2).standard_normal((1, 64, 481))
    covs = augmented_covariances(X, 8, 1, estimator)
    assert covs.shape == (1, 512, 512)
    np.testing.assert_allclose(covs, covs.transpose(0, 2, 1), atol=0)
    assert np.linalg.eigvalsh(covs).min() > 1e-3 * np.trace(covs[0]) / 512


def test_clear_errors():
    X = np.random.default_rng(3).standard_normal((2, 64, 481))
    with pytest.raises(DataError, match="singular"):
        augmented_covariances(X, 8, 1, "scm")
    with pytest.raises(DataError, match="leaves"):
        augmented_covariances(X[:, :2, :20], 5, 4)
    with pytest.raises(ConfigError, match="order"):
        augmented_covariances(X, 0, 1)
    with pytest.raises(ConfigError, match="estimator"):
        augmented_covariances(X, 1, 1, "bogus")
    with pytest.raises(DataError, match="n_trials, n_channels, n_times"):
        augmented_covariances(X[0])
    with pytest.raises(DataError, match="NaN"):
        augmented_covariances(np.full((1, 2, 10), np.nan))
    est = AugmentedCovariances(order=8, lag=1, estimator="cov")
    with pytest.raises(DataError, match="singular"):
        est.fit(X)  # at fit, before any transform


def test_estimator_is_sklearn_transformer():
    X = np.random.default_rng(4).standard_normal((3, 2, 60))
    est = AugmentedCovariances(order=3, lag=2, estimator="scm")
    assert clone(est).get_params()["order"] == 3
    out = est.fit_transform(X)
    np.testing.assert_allclose(out, augmented_covariances(X, 3, 2, "scm"))
    assert (est.order_, est.lag_) == (3, 2)
    with pytest.raises(DataError, match="2 channels"):
        est.transform(X[:, :1])


def damped_oscillator(n_series, n_times, period, r=0.995, seed=0):
    """AR(2) x(t) = 2r cos(w) x(t-1) - r^2 x(t-2) + e(t), w = 2 pi / period."""
    w = 2 * np.pi / period
    poles = [r * np.exp(1j * w), r * np.exp(-1j * w)]
    e = np.random.default_rng(seed).standard_normal((n_series, n_times + 500))
    return lfilter([1.0], np.real(np.poly(poles)), e, axis=-1)[:, None, 500:]


@pytest.mark.parametrize("tau", [2, 3, 4])
def test_auto_selection_recovers_ar2_oscillator(tau):
    # An AR(2) oscillation of period 4*tau: its average mutual information first
    # dips at the quarter period (lag tau) and it unfolds in 2 dimensions (order 2).
    X = damped_oscillator(16, 480, 4 * tau, seed=tau)
    assert select_lag_ami(X, 10, random_state=0) == tau
    assert select_order_fnn(X, tau, 6, random_state=0) == 2
    est = AugmentedCovariances(order="auto", lag="auto", max_order=6, random_state=0).fit(X)
    assert (est.order_, est.lag_) == (2, tau)
    assert est.transform(X).shape == (16, 2, 2)


def test_grid_search_computes_each_order_lag_once(monkeypatch):
    calls = []

    def counting(X, order, lag, *args, **kwargs):
        calls.append((order, lag))
        return augmented_covariances(X, order, lag, *args, **kwargs)

    monkeypatch.setattr(selection, "augmented_covariances", counting)
    rng = np.random.default_rng(5)
    y = np.repeat([0, 1], 12)
    X = damped_oscillator(24, 200, 8, r=0.9, seed=5)
    X = np.concatenate([X, damped_oscillator(24, 200, 5, r=0.9, seed=6)], axis=1)
    X[y == 1, 1] *= 2.0  # class 1: louder second channel
    X += 0.1 * rng.standard_normal(X.shape)
    search = AugmentedGridSearch(orders=(1, 2, 3), lags=(1, 2), random_state=0).fit(X, y)
    assert sorted(calls) == sorted((o, lag) for o in (1, 2, 3) for lag in (1, 2))
    assert len(search.cv_results_["mean_test_score"]) == 6 * 6  # x 3 C x 2 kernels
    assert set(search.best_params_) == {"order", "lag", "C", "kernel"}
    assert search.best_score_ == max(search.cv_results_["mean_test_score"])
    assert search.best_score_ > 0.9
    assert np.mean(search.predict(X) == y) > 0.9


def test_grid_search_fold_reference_matches_moabb_gridsearchcv():
    """reference="fold" reproduces GridSearchCV over MOABB's pipeline, score for score."""
    from moabb.pipelines.features import AugmentedDataset
    from pyriemann.estimation import Covariances
    from pyriemann.tangentspace import TangentSpace
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import SVC

    rng = np.random.default_rng(6)
    y = np.repeat([0, 1], 10)
    X = rng.standard_normal((20, 2, 80))
    X[y == 1, 1] += 0.8 * X[y == 1, 0]
    ours = AugmentedGridSearch(
        orders=(1, 2), lags=(1, 3), Cs=(0.5, 1.0), kernels=("rbf", "linear"),
        estimator="cov", reference="fold", random_state=0,
    ).fit(X, y)
    pipe = make_pipeline(AugmentedDataset(), Covariances("cov"), TangentSpace(), SVC())
    grid = {"augmenteddataset__order": [1, 2], "augmenteddataset__lag": [1, 3],
            "svc__C": [0.5, 1.0], "svc__kernel": ["rbf", "linear"]}
    theirs = GridSearchCV(
        pipe, grid, cv=StratifiedKFold(3, shuffle=True, random_state=0), scoring="roc_auc"
    ).fit(X, y)
    key = {(p["augmenteddataset__order"], p["augmenteddataset__lag"], p["svc__C"],
            p["svc__kernel"]): s
           for p, s in zip(theirs.cv_results_["params"], theirs.cv_results_["mean_test_score"])}
    r = ours.cv_results_
    for o, lag, c, k, s in zip(r["order"], r["lag"], r["C"], r["kernel"], r["mean_test_score"]):
        assert s == pytest.approx(key[(o, lag, c, k)], abs=1e-9)
    assert ours.best_score_ == pytest.approx(theirs.best_score_, abs=1e-9)
    best = theirs.best_params_  # ties broken alike: the first point in GridSearchCV's order
    assert ours.best_params_ == {"order": best["augmenteddataset__order"], "lag": best["augmenteddataset__lag"],
                                 "C": best["svc__C"], "kernel": best["svc__kernel"]}
    np.testing.assert_allclose(ours.decision_function(X), theirs.decision_function(X), atol=1e-8)


def test_grid_search_errors_before_work():
    X = np.random.default_rng(7).standard_normal((6, 2, 30))
    y = np.repeat([0, 1], 3)
    with pytest.raises(DataError, match="leaves"):
        AugmentedGridSearch(orders=(1, 10), lags=(1, 5)).fit(X, y)
    with pytest.raises(ConfigError, match="orders"):
        AugmentedGridSearch(orders="best").fit(X, y)
    with pytest.raises(DataError, match="2 classes"):
        AugmentedGridSearch(orders=(1,), lags=(1,)).fit(X, np.zeros(6))


def test_grid_search_breaks_ties_in_gridsearchcv_order():
    """Class = sign of a 3-sample lagged coupling: invisible at order 1, perfectly separable
    at (order 2, lag 3) and (order 4, lag 1). GridSearchCV walks lags before orders and keeps
    the first best, (4, 1); so must ours, or it reports another point than MOABB's."""
    from moabb.pipelines.features import AugmentedDataset
    from pyriemann.estimation import Covariances
    from pyriemann.tangentspace import TangentSpace
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import SVC

    rng = np.random.default_rng(11)
    y = np.repeat([0, 1], 15)
    X = rng.standard_normal((30, 2, 240))
    X[:, 1, 3:] += np.where(y == 1, 1.0, -1.0)[:, None] * X[:, 0, :-3]
    ours = AugmentedGridSearch(orders=(1, 2, 4), lags=(1, 3), Cs=(1.0,), kernels=("linear",),
                               estimator="cov", reference="fold", random_state=0).fit(X, y)
    theirs = GridSearchCV(
        make_pipeline(AugmentedDataset(), Covariances("cov"), TangentSpace(), SVC(kernel="linear")),
        {"augmenteddataset__order": [1, 2, 4], "augmenteddataset__lag": [1, 3]},
        cv=StratifiedKFold(3, shuffle=True, random_state=0), scoring="roc_auc",
    ).fit(X, y)
    assert theirs.best_score_ == ours.best_score_ == 1.0
    assert (ours.best_params_["order"], ours.best_params_["lag"]) == (
        theirs.best_params_["augmenteddataset__order"], theirs.best_params_["augmenteddataset__lag"]) == (4, 1)
