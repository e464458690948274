"""Seizure-detection building blocks: spectral band powers and per-channel decisions.

- :class:`BandPower`: Welch band powers (:func:`scipy.signal.welch`) of every channel,
  as log absolute powers and/or relative powers (a fraction of the total), the classic
  feature set of EEG seizure detectors; ``(n, C, T) -> (n, C * n_bands [* 2])``.
- :class:`PerChannel`: trains a classifier on single-channel windows and applies it to
  windows with *any* number of channels, one channel at a time, combining the
  channels' seizure probabilities (mean, max, or mean of the k most probable). This is
  how a detector trained on one channel (Bonn segments) runs on a 21-channel montage.
- :func:`combine_channels`: that combination, on an ``(n, C)`` probability array.

The positive ("seizure") class is the *last* of the sorted class labels (e.g.
``["background", "seizure"]``).
"""

from __future__ import annotations

import numpy as np
from pyriemann.tangentspace import TangentSpace
from scipy.integrate import trapezoid
from scipy.signal import welch
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from bci.errors import ConfigError, DataError

from .augmented import AugmentedCovariances

__all__ = ["DEFAULT_BANDS", "SEIZURE_PIPELINES", "BandPower", "PerChannel", "combine_channels", "make_seizure_pipeline"]

#: delta, theta, alpha, beta, low gamma (Hz).
DEFAULT_BANDS = ((0.5, 4.0), (4.0, 8.0), (8.0, 13.0), (13.0, 30.0), (30.0, 40.0))


def _trials(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 3 or X.shape[0] == 0:
        raise DataError(f"expected windows of shape (n_windows, n_channels, n_times), found {X.shape}")
    if not np.isfinite(X).all():
        raise DataError("windows hold NaN/inf samples")
    return X


class BandPower(TransformerMixin, BaseEstimator):
    """Welch band powers per channel: ``(n, C, T) -> (n, C * n_bands * k)``.

    Parameters
    ----------
    sfreq : float or None
        Sampling rate in Hz (the evaluation fills it from the data when None).
    bands : sequence of (low, high)
        Frequency bands in Hz; each must lie below Nyquist.
    features : {"log", "relative", "both"}
        ``"log"``: log10 of the absolute band power (amplitude-sensitive);
        ``"relative"``: band power divided by the power summed over all bands
        (amplitude-free spectral shape); ``"both"``: the two, concatenated.
    nperseg : int or None
        Welch segment length in samples (default: 2 s, at most the window).
    """

    def __init__(self, sfreq=None, bands=DEFAULT_BANDS, features="both", nperseg=None):
        self.sfreq = sfreq
        self.bands = bands
        self.features = features
        self.nperseg = nperseg

    def fit(self, X, y=None):
        X = _trials(X)
        if self.sfreq is None or not float(self.sfreq) > 0:
            raise ConfigError(f"BandPower needs the sampling rate in Hz (sfreq), found {self.sfreq!r}")
        if self.features not in ("log", "relative", "both"):
            raise ConfigError(f"BandPower.features: expected 'log', 'relative' or 'both', found {self.features!r}")
        nyq = float(self.sfreq) / 2
        bands = np.asarray(self.bands, dtype=float)
        if bands.ndim != 2 or bands.shape[1] != 2 or not (bands[:, 0] < bands[:, 1]).all():
            raise ConfigError(f"BandPower.bands: expected [[low, high], ...] with low < high, found {self.bands!r}")
        if bands.max() > nyq:
            raise ConfigError(f"BandPower.bands: {bands.max():g} Hz is above Nyquist ({nyq:g} Hz at {self.sfreq:g} Hz)")
        self.bands_ = bands
        self.n_channels_ = X.shape[1]
        return self

    def transform(self, X):
        check_is_fitted(self, "bands_")
        X = _trials(X)
        if X.shape[1] != self.n_channels_:
            raise DataError(f"BandPower was fitted on {self.n_channels_} channels, found {X.shape[1]}")
        sfreq = float(self.sfreq)
        nperseg = min(X.shape[-1], int(self.nperseg or round(2 * sfreq)))
        freqs, psd = welch(X, fs=sfreq, nperseg=nperseg, axis=-1)
        powers = []
        for low, high in self.bands_:
            sel = (freqs >= low) & (freqs <= high)
            if sel.sum() < 2:
                raise DataError(
                    f"band {low:g}-{high:g} Hz holds {sel.sum()} Welch bin(s) of {freqs[1]:g} Hz: "
                    "use longer windows or wider bands"
                )
            powers.append(trapezoid(psd[..., sel], freqs[sel], axis=-1))
        bp = np.stack(powers, axis=-1) + 1e-30  # (n, C, B)
        out = []
        if self.features in ("log", "both"):
            out.append(np.log10(bp))
        if self.features in ("relative", "both"):
            out.append(bp / bp.sum(-1, keepdims=True))
        return np.concatenate(out, axis=-1).reshape(len(X), -1)


def combine_channels(proba: np.ndarray, combine="mean") -> np.ndarray:
    """Combine per-channel seizure probabilities ``(n, C) -> (n,)``.

    ``combine``: ``"mean"``, ``"max"``, or an integer ``k`` (or ``"top<k>"``, e.g.
    ``"top3"``): the mean of the ``k`` largest probabilities of each row (``k`` is
    capped at the channel count), i.e. "at least k channels look ictal".
    """
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] == 0:
        raise DataError(f"expected per-channel probabilities (n_windows, n_channels), found {p.shape}")
    if combine == "mean":
        return p.mean(1)
    if combine == "max":
        return p.max(1)
    k = combine
    if isinstance(k, str) and k.startswith("top") and k[3:].isdigit():
        k = int(k[3:])
    if isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 1:
        k = min(int(k), p.shape[1])
        return np.sort(p, axis=1)[:, -k:].mean(1)
    raise ConfigError(f"channel combination: expected 'mean', 'max', 'top<k>' or an integer k >= 1, found {combine!r}")


class PerChannel(ClassifierMixin, BaseEstimator):
    """A classifier of single-channel windows applied channel by channel.

    ``fit(X (n, C, T), y)`` trains a clone of ``estimator`` on the ``n * C``
    single-channel windows (each with its window's label). ``predict_proba`` accepts
    windows with any channel count: every channel is classified alone and the
    channels' positive-class probabilities are combined (:func:`combine_channels`).
    So a detector trained on one channel runs unchanged on a full montage.

    Parameters
    ----------
    estimator : classifier with ``predict_proba`` on ``(n, 1, T)`` windows
    combine : "mean" | "max" | int | "top<k>"
        How the channels' probabilities are combined (binary tasks; with more classes
        only "mean" is allowed).

    Attributes
    ----------
    estimator_ : the fitted single-channel classifier
    classes_ : its classes; the positive one is ``classes_[-1]``
    """

    def __init__(self, estimator=None, combine="top3"):
        self.estimator = estimator
        self.combine = combine

    def fit(self, X, y, **fit_params):
        X = _trials(X)
        y = np.asarray(y)
        if self.estimator is None:
            raise ConfigError("PerChannel needs an estimator")
        n, c, t = X.shape
        self.estimator_ = clone(self.estimator).fit(X.reshape(n * c, 1, t), np.repeat(y, c), **fit_params)
        self.classes_ = np.asarray(self.estimator_.classes_)
        if len(self.classes_) != 2 and self.combine != "mean":
            raise ConfigError(f"PerChannel: combine={self.combine!r} needs two classes, found {len(self.classes_)}")
        combine_channels(np.zeros((1, 1)), self.combine)  # validate now
        return self

    def channel_proba(self, X) -> np.ndarray:
        """Positive-class probability of every channel of every window, ``(n, C)``."""
        check_is_fitted(self, "estimator_")
        X = _trials(X)
        n, c, t = X.shape
        return self.estimator_.predict_proba(X.reshape(n * c, 1, t))[:, -1].reshape(n, c)

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        X = _trials(X)
        if len(self.classes_) != 2:
            n, c, t = X.shape
            return self.estimator_.predict_proba(X.reshape(n * c, 1, t)).reshape(n, c, -1).mean(1)
        p = combine_channels(self.channel_proba(X), self.combine)
        return np.stack([1 - p, p], axis=1)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(1)]


#: Names accepted by :func:`make_seizure_pipeline`.
SEIZURE_PIPELINES = ("BP+LR", "ACM+TS+LR")


def make_seizure_pipeline(name: str, *, combine="top3", sfreq=None, C: float = 1.0, random_state=None, **params):
    """A per-channel seizure detector (:class:`PerChannel`) by name, unfitted.

    ``"BP+LR"``: :class:`BandPower` (``bands``, ``features``, ``nperseg``) ->
    standardisation -> logistic regression. ``"ACM+TS+LR"``: augmented covariances of
    the single channel (:class:`pipelines.AugmentedCovariances`, ``order``/``lag``,
    time-delay embedding) -> pyRiemann tangent space -> standardisation -> logistic
    regression. ``C`` is the regularisation of the logistic regression; ``combine``
    how channels are combined on multi-channel input.
    """

    lr = LogisticRegression(C=C, max_iter=2000, random_state=random_state)
    if name == "BP+LR":
        allowed = {"bands", "features", "nperseg"}
        front = [BandPower(sfreq=sfreq, **_only(params, allowed, name))]
    elif name == "ACM+TS+LR":
        allowed = {"order", "lag", "estimator"}
        opts = {"order": 8, "lag": 2, **_only(params, allowed, name)}
        front = [AugmentedCovariances(**opts), TangentSpace(metric="riemann")]
    else:
        raise ConfigError(f"unknown seizure pipeline {name!r}; expected one of {', '.join(SEIZURE_PIPELINES)}")
    return PerChannel(make_pipeline(*front, StandardScaler(), lr), combine=combine)


def _only(params: dict, allowed: set, name: str) -> dict:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(f"{name}: unknown parameter {unknown[0]!r}; accepted: {', '.join(sorted(allowed | {'combine', 'sfreq', 'C', 'random_state'}))}")
    return params
