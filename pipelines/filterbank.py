"""Filter bank: each trial band-passed into several bands, the bands stacked as channels.

``(n, C, T) -> (n, C * n_bands, T)``, band-major (all channels of the first band, then
the second, ...). A covariance estimator after it sees the power of every channel in
every band and the cross-channel coupling within and across bands, so one SPD matrix
per trial carries what filter-bank CSP spreads over one model per band; tangent space,
MDM and re-centering apply unchanged.

The filters are zero-phase Butterworth band-passes (``scipy.signal.sosfiltfilt``) applied
to each trial (window) on its own, so a live decoder's window gets exactly the filtering
of an offline epoch of the same length.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, sosfiltfilt
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from bci.errors import ConfigError, DataError


class FilterBank(TransformerMixin, BaseEstimator):
    """Band-pass each trial into ``bands`` and stack the bands as channels.

    Parameters
    ----------
    bands : sequence of (low, high)
        Pass bands in Hz, each ``0 < low < high < sfreq / 2``.
    sfreq : float or None
        Sampling rate in Hz (``bci evaluate``/``bci train`` fill it from the data).
    order : int
        Butterworth order of each band-pass (applied forwards and backwards).
    """

    def __init__(self, bands=((8, 12), (12, 16), (16, 20), (20, 24), (24, 30)), sfreq=None, order=4):
        self.bands = bands
        self.sfreq = sfreq
        self.order = order

    def fit(self, X, y=None):
        X = self._check(X)
        if self.sfreq is None or not float(self.sfreq) > 0:
            raise ConfigError(f"FilterBank needs the sampling rate in Hz (sfreq), found {self.sfreq!r}")
        bands = np.asarray(self.bands, dtype=float)
        if bands.ndim != 2 or bands.shape[1] != 2 or not (bands[:, 0] > 0).all() or not (bands[:, 0] < bands[:, 1]).all():
            raise ConfigError(f"FilterBank.bands: expected [[low, high], ...] with 0 < low < high, found {self.bands!r}")
        if bands.max() >= float(self.sfreq) / 2:
            raise ConfigError(
                f"FilterBank.bands: {bands.max():g} Hz is not below Nyquist "
                f"({float(self.sfreq) / 2:g} Hz at {float(self.sfreq):g} Hz)"
            )
        self.sos_ = [butter(int(self.order), band, btype="bandpass", fs=float(self.sfreq), output="sos") for band in bands]
        self.n_channels_ = X.shape[1]
        return self

    def transform(self, X):
        check_is_fitted(self, "sos_")
        X = self._check(X)
        if X.shape[1] != self.n_channels_:
            raise DataError(f"FilterBank was fitted on {self.n_channels_} channels, found {X.shape[1]}")
        try:
            return np.concatenate([sosfiltfilt(sos, X, axis=-1) for sos in self.sos_], axis=1)
        except ValueError as err:  # scipy: "The length of the input vector x must be greater than padlen"
            raise DataError(f"FilterBank: trials of {X.shape[-1]} samples are too short for order-{self.order} band-passes ({err})") from None

    @staticmethod
    def _check(X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 3 or X.shape[0] == 0:
            raise DataError(f"FilterBank expects trials of shape (n_trials, n_channels, n_times), found {X.shape}")
        return X
