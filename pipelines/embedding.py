"""Delay-embedding parameters from the data, without labels.

The data-driven route of Carrara & Papadopoulo [1]_ for augmented covariances: the lag at
the first minimum of the average mutual information between ``x(t)`` and ``x(t + lag)``
(Fraser & Swinney [2]_), then the order (embedding dimension) at which the false nearest
neighbours vanish (Kennel et al. [3]_): :func:`select_lag_ami`, :func:`select_order_fnn`,
used by ``AugmentedCovariances(order="auto", lag="auto")`` and by
``AugmentedGridSearch(orders="auto", lags="auto")``.

References
----------
.. [1] Carrara, I., & Papadopoulo, T. (2024). Classification of BCI-EEG based on the
   augmented covariance matrix. IEEE TBME. arXiv:2302.04508.
.. [2] Fraser, A. M., & Swinney, H. L. (1986). Independent coordinates for strange
   attractors from mutual information. Physical Review A, 33(2), 1134.
.. [3] Kennel, M. B., Brown, R., & Abarbanel, H. D. I. (1992). Determining embedding
   dimension for phase-space reconstruction using a geometrical construction.
   Physical Review A, 45(6), 3403.
"""

from __future__ import annotations

import numpy as np

from bci.errors import DataError

from .validation import check_positive_int, check_trials


def _series(X, max_series: int, random_state) -> np.ndarray:
    """(n_series, n_times) rows of the (trial, channel) series, subsampled at random."""
    X = check_trials(X)
    rows = X.reshape(-1, X.shape[-1])
    if len(rows) > max_series:
        rng = np.random.default_rng(random_state)
        rows = rows[np.sort(rng.choice(len(rows), max_series, replace=False))]
    return rows


def average_mutual_information(
    X, max_lag: int, *, n_bins: int = 8, max_series: int = 256, random_state=None
) -> np.ndarray:
    """Average mutual information between ``x(t)`` and ``x(t + k)``, k = 0..max_lag.

    Each (trial, channel) series is cut into ``n_bins`` equally populated bins (ranks),
    the joint histogram of ``(x(t), x(t+k))`` gives the mutual information in nats, and
    the curve is averaged over (at most ``max_series``, randomly drawn) series.

    Parameters
    ----------
    X : array, shape (n_trials, n_channels, n_times)
    max_lag : int
        Largest delay, in samples (must be < n_times - 1).

    Returns
    -------
    ami : array, shape (max_lag + 1,)
    """
    max_lag = check_positive_int(max_lag, "max_lag")
    n_bins = check_positive_int(n_bins, "n_bins")
    x = _series(X, max_series, random_state)
    n_series, n_times = x.shape
    if max_lag >= n_times - 1:
        raise DataError(f"max_lag={max_lag} needs trials longer than {n_times} samples")
    ranks = np.argsort(np.argsort(x, axis=1, kind="stable"), axis=1)
    bins = ranks * n_bins // n_times
    offset = (np.arange(n_series) * n_bins * n_bins)[:, None]
    ami = np.empty(max_lag + 1)
    for k in range(max_lag + 1):
        cell = offset + bins[:, : n_times - k] * n_bins + bins[:, k:]
        joint = np.bincount(cell.ravel(), minlength=n_series * n_bins**2)
        joint = joint.reshape(n_series, n_bins, n_bins) / (n_times - k)
        outer = joint.sum(2)[:, :, None] * joint.sum(1)[:, None, :]
        nz = joint > 0
        ami[k] = np.sum(joint[nz] * np.log(joint[nz] / outer[nz])) / n_series
    return ami


def select_lag_ami(X, max_lag: int = 10, **kwargs) -> int:
    """Lag at the first local minimum of the average mutual information (AMI).

    The first ``k`` in ``1..max_lag-1`` with ``AMI(k) <= AMI(k-1)`` and
    ``AMI(k) < AMI(k+1)``; when the curve keeps decreasing up to ``max_lag``,
    ``max_lag``. Keyword arguments go to :func:`average_mutual_information`.
    """
    ami = average_mutual_information(X, max_lag, **kwargs)
    for k in range(1, max_lag):
        if ami[k] <= ami[k - 1] and ami[k] < ami[k + 1]:
            return k
    return int(max_lag)


def false_nearest_neighbours(
    X,
    lag: int,
    max_order: int,
    *,
    rtol: float = 15.0,
    atol: float = 2.0,
    theiler: int | None = None,
    max_series: int = 32,
    random_state=None,
) -> np.ndarray:
    """Fraction of false nearest neighbours for embedding dimensions 1..max_order.

    For dimension ``m`` each point ``y_i = (x_i, x_{i+lag}, .., x_{i+(m-1)lag})`` gets
    its nearest neighbour ``y_j`` (excluding ``|i - j| <= theiler``, temporal
    neighbours); the pair is false when adding the coordinate ``x_{i+m*lag}`` separates
    them: ``|x_{i+m lag} - x_{j+m lag}| / R_m > rtol`` or ``R_{m+1} / R_A > atol``
    (Kennel et al., criteria 1 and 2; ``R_A`` the series' standard deviation). The same
    ``n_times - max_order*lag`` points serve every ``m``; distances grow incrementally
    with ``m``. Averaged over at most ``max_series`` random (trial, channel) series.

    Returns
    -------
    fractions : array, shape (max_order,)
        ``fractions[m - 1]`` for dimension ``m``.
    """
    lag = check_positive_int(lag, "lag")
    max_order = check_positive_int(max_order, "max_order")
    theiler = lag if theiler is None else int(theiler)
    x = _series(X, max_series, random_state)
    n_series, n_times = x.shape
    n_points = n_times - max_order * lag
    if n_points < 2 * theiler + 10:
        raise DataError(
            f"false nearest neighbours up to order {max_order} at lag {lag} leave "
            f"{n_points} of {n_times} samples; need at least {2 * theiler + 10}"
        )
    idx = np.arange(n_points)
    # +inf on temporal neighbours: they stay excluded as the distances accumulate.
    excluded = np.where(np.abs(idx[:, None] - idx[None, :]) <= theiler, np.inf, 0.0)
    r_a = x.std(axis=1)
    false = np.zeros(max_order)
    for start in range(0, n_series, 16):  # bounded memory: 16 x N x N distances
        xs = x[start : start + 16]
        sq = np.broadcast_to(excluded, (len(xs), n_points, n_points)).copy()
        for m in range(1, max_order + 1):
            coord = xs[:, (m - 1) * lag : (m - 1) * lag + n_points]
            sq += (coord[:, :, None] - coord[:, None, :]) ** 2
            nn = np.argmin(sq, axis=2)
            r_m = np.sqrt(np.take_along_axis(sq, nn[:, :, None], axis=2)[:, :, 0])
            nxt = xs[:, m * lag : m * lag + n_points]
            gap = np.abs(nxt - np.take_along_axis(nxt, nn, axis=1))
            with np.errstate(divide="ignore", invalid="ignore"):
                crit1 = np.where(r_m > 0, gap / r_m, np.where(gap > 0, np.inf, 0.0)) > rtol
            crit2 = np.sqrt(r_m**2 + gap**2) > atol * r_a[start : start + 16, None]
            false[m - 1] += np.sum(np.mean(crit1 | crit2, axis=1))
    return false / n_series


def select_order_fnn(
    X, lag: int, max_order: int = 10, *, threshold: float = 0.1, **kwargs
) -> int:
    """Order (embedding dimension) from false nearest neighbours.

    The smallest ``m`` whose false-neighbour fraction is at most ``threshold``; when no
    dimension up to ``max_order`` gets there (noisy signals), the smallest ``m`` with
    the lowest fraction. Keyword arguments go to :func:`false_nearest_neighbours`.
    """
    fractions = false_nearest_neighbours(X, lag, max_order, **kwargs)
    below = np.flatnonzero(fractions <= threshold)
    return int(below[0] + 1 if len(below) else np.argmin(fractions) + 1)
