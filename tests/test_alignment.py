"""Euclidean alignment and Riemannian re-centering (pipelines.alignment), and the builders."""

import numpy as np
import pytest
from pyriemann.geometry.covariance import covariances
from pyriemann.geometry.mean import mean_riemann

from bci.errors import ConfigError, DataError
from pipelines.alignment import EuclideanAlignment, RiemannianRecentering, euclidean_alignment
from bci.evaluate import chosen_params
from pipelines.riemann import RIEMANN_PIPELINES, make_riemann_pipeline


def sessions(seed=0, n=12, C=4, T=100):
    """Two 'sessions' of trials whose spatial mixing differs."""
    rng = np.random.default_rng(seed)
    A, B = rng.standard_normal((C, C)), 3 * rng.standard_normal((C, C))
    return A @ rng.standard_normal((n, C, T)), B @ rng.standard_normal((n, C, T))


def uncentred_cov(X):
    return covariances(X, estimator="scm", assume_centered=True)


def test_euclidean_aligned_covariances_average_to_identity():
    X, _ = sessions()
    aligned, r_inv_sqrt = euclidean_alignment(X)
    np.testing.assert_allclose(uncentred_cov(aligned).mean(axis=0), np.eye(4), atol=1e-12)
    np.testing.assert_allclose(aligned, r_inv_sqrt @ X)
    ref = uncentred_cov(X).mean(axis=0)
    np.testing.assert_allclose(r_inv_sqrt @ ref @ r_inv_sqrt, np.eye(4), atol=1e-12)


def test_euclidean_alignment_adapt_and_groups():
    X1, X2 = sessions()
    ea = EuclideanAlignment().fit(X1)
    fixed = ea.transform(X2)  # session 1's reference applied to session 2: not identity
    assert np.abs(uncentred_cov(fixed).mean(0) - np.eye(4)).max() > 0.5
    adapted = EuclideanAlignment(adapt=True).fit(X1).transform(X2)
    np.testing.assert_allclose(uncentred_cov(adapted).mean(0), np.eye(4), atol=1e-12)
    both = np.concatenate([X1, X2])
    groups = np.repeat([1, 2], 12)
    out = EuclideanAlignment().fit_transform(both, groups=groups)
    for g in (1, 2):
        np.testing.assert_allclose(uncentred_cov(out[groups == g]).mean(0), np.eye(4), atol=1e-12)
    with pytest.raises(DataError, match="batch of 1 trial"):
        EuclideanAlignment(adapt=True).fit(X1).transform(X2[:1])
    with pytest.raises(DataError, match="4 channels"):
        ea.transform(X2[:, :3])


def test_riemannian_recentering_mean_is_identity():
    X1, X2 = sessions(1)
    C1, C2 = covariances(X1, "oas"), covariances(X2, "oas")
    rc = RiemannianRecentering()
    out = rc.fit_transform(C1)
    np.testing.assert_allclose(mean_riemann(out), np.eye(4), atol=1e-6)
    fixed = rc.transform(C2)
    assert np.abs(mean_riemann(fixed) - np.eye(4)).max() > 0.5
    adapted = RiemannianRecentering(adapt=True).fit(C1).transform(C2)
    np.testing.assert_allclose(mean_riemann(adapted), np.eye(4), atol=1e-6)
    groups = np.repeat([0, 1], 12)
    out = RiemannianRecentering().fit_transform(np.concatenate([C1, C2]), groups=groups)
    for g in (0, 1):
        np.testing.assert_allclose(mean_riemann(out[groups == g]), np.eye(4), atol=1e-6)
    with pytest.raises(DataError, match="SPD matrices"):
        rc.transform(X1)


def test_builders_fit_and_report_choices():
    X = np.random.default_rng(2).standard_normal((32, 3, 120))
    y = np.tile([0, 1], 16)
    X[y == 1, 0] *= 3.0
    for name in RIEMANN_PIPELINES:
        params = {"orders": (1, 2), "lags": (1,)} if name == "ACM+TS+SVM" else {}
        if name.startswith("ACM") and name != "ACM+TS+SVM":
            params = {"max_order": 4, "max_lag": 5, "random_state": 0}
        pipe = make_riemann_pipeline(name, **params).fit(X, y)
        assert np.mean(pipe.predict(X) == y) > 0.8, name
        chosen = chosen_params(pipe)
        found = {k.rsplit("__", 1)[-1] for k in chosen}
        assert (found >= {"order", "lag"}) == name.startswith("ACM"), name
    pipe = make_riemann_pipeline("MDM", recenter=True, adapt=True, align=True)
    assert [type(s).__name__ for s in pipe] == [
        "EuclideanAlignment", "Covariances", "RiemannianRecentering", "MDM"]
    with pytest.raises(ConfigError, match="unknown Riemannian pipeline"):
        make_riemann_pipeline("CSP+LDA")
    with pytest.raises(ConfigError, match="accepted"):
        make_riemann_pipeline("MDM", order=2)
    with pytest.raises(ConfigError, match="recenter"):
        make_riemann_pipeline("ACM+TS+SVM", recenter=True)


def test_filter_bank_separates_bands_and_feeds_the_builders():
    from pipelines.filterbank import FilterBank

    sfreq, t = 250.0, np.arange(500) / 250.0
    rng = np.random.default_rng(3)
    X = 0.01 * rng.standard_normal((4, 2, t.size))
    X[:, 0] += np.sin(2 * np.pi * 10 * t)  # channel 0: 10 Hz; channel 1: 22 Hz
    X[:, 1] += np.sin(2 * np.pi * 22 * t)
    bands = [[8, 12], [20, 24]]
    out = FilterBank(bands=bands, sfreq=sfreq).fit(X).transform(X)
    assert out.shape == (4, 4, t.size)  # band-major: [ch0 8-12, ch1 8-12, ch0 20-24, ch1 20-24]
    power = (out[..., 100:-100] ** 2).mean(axis=(0, 2))
    assert power[0] > 0.4 and power[3] > 0.4 and power[1] < 0.01 and power[2] < 0.01

    # class = which channel carries 10 Hz: invisible to broadband power, plain in the 8-12 band
    y = np.tile([0, 1], 20)
    Z = 0.3 * rng.standard_normal((40, 2, t.size))
    Z[np.arange(40), y] += np.sin(2 * np.pi * 10 * t)
    Z[np.arange(40), 1 - y] += np.sin(2 * np.pi * 22 * t)
    pipe = make_riemann_pipeline("TS+LR", bands=bands, recenter=True).set_params(filterbank__sfreq=sfreq)
    assert [type(s).__name__ for s in pipe][:2] == ["FilterBank", "Covariances"]
    assert np.mean(pipe.fit(Z[:20], y[:20]).predict(Z[20:]) == y[20:]) == 1.0

    with pytest.raises(ConfigError, match="sampling rate"):
        FilterBank().fit(X)
    with pytest.raises(ConfigError, match="Nyquist"):
        FilterBank(bands=[[8, 130]], sfreq=sfreq).fit(X)
    with pytest.raises(ConfigError, match="low < high"):
        FilterBank(bands=[[12, 8]], sfreq=sfreq).fit(X)
    with pytest.raises(DataError, match="too short"):
        FilterBank(bands=bands, sfreq=sfreq).fit(X).transform(X[..., :20])
    with pytest.raises(DataError, match="fitted on 2 channels"):
        FilterBank(bands=bands, sfreq=sfreq).fit(X).transform(X[:, :1])
