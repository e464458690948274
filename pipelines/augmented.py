"""Augmented covariance matrices (ACM) computed from lagged auto-covariances.

The augmented covariance matrix of Carrara & Papadopoulo [1]_ is the covariance of the
delay-embedded signal: ``order`` copies of the ``C`` channels, copy ``p`` delayed by
``p * lag`` samples (Takens' embedding; the matrix is the block Yule-Walker matrix of an
AR model of that order). MOABB builds it by materialising the ``C*order x T`` embedded
signal of every trial (``moabb.pipelines.features.AugmentedDataset``) and then calling
``pyriemann.estimation.Covariances``; here the same matrices are obtained without that
copy, from ``order`` batched ``C x C`` lagged products plus short edge corrections.

Embedding convention (exactly MOABB's ``AugmentedDataset``): for ``order == 1`` the
trial is used unchanged (all ``T`` samples); for ``order >= 2`` block ``p`` (rows
``p*C .. p*C + C - 1``) is ``X[:, p*lag : p*lag + L]`` with ``L = T - order*lag`` kept
samples (so the last ``lag`` samples of the trial are never used, as in MOABB).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from bci.errors import ConfigError, DataError

from .embedding import select_lag_ami, select_order_fnn
from .validation import check_positive_int, check_trials

ESTIMATORS = ("oas", "lwf", "scm", "cov", "shrinkage")
_UNSHRUNK = ("scm", "cov")


def n_kept_samples(n_times: int, order: int, lag: int) -> int:
    """Samples per embedded copy: ``n_times`` for order 1, else ``n_times - order*lag``."""
    return n_times if order == 1 else n_times - order * lag


def check_augmentation(
    n_channels: int, n_times: int, order: int, lag: int, estimator: str = "oas"
) -> int:
    """Validate an (order, lag, estimator) choice for trials of the given size.

    Returns the number of kept samples ``L``. Raises :class:`bci.errors.DataError` when
    the embedding leaves fewer than 2 samples, or when an unshrunk estimator ("scm",
    "cov") would give a singular ``C*order`` matrix (``C*order > L - 1``); raises
    :class:`bci.errors.ConfigError` for an unknown estimator or a non-positive
    order/lag.
    """
    order = check_positive_int(order, "order")
    lag = check_positive_int(lag, "lag")
    if estimator not in ESTIMATORS:
        raise ConfigError(f"estimator must be one of {ESTIMATORS}; found {estimator!r}")
    n_kept = n_kept_samples(n_times, order, lag)
    if n_kept < 2:
        raise DataError(
            f"order*lag = {order}*{lag} = {order * lag} leaves {n_kept} of the "
            f"{n_times} samples per trial; at least 2 are needed (lower order or lag, "
            f"or use longer trials)"
        )
    dim = n_channels * order
    if estimator in _UNSHRUNK and dim > n_kept - 1:
        raise DataError(
            f"order*C = {order}*{n_channels} = {dim} exceeds the {n_kept - 1} degrees of "
            f"freedom of the {n_kept} samples left after the embedding "
            f"(order={order}, lag={lag}): the {estimator!r} matrix would be singular; "
            f"use estimator='oas', 'lwf' or 'shrinkage', or lower the order"
        )
    return n_kept


def _lagged_products(X: np.ndarray, order: int, lag: int, n_kept: int) -> np.ndarray:
    """Raw sums ``S[p, q] = sum_{t<L} x(t + p*lag) x(t + q*lag)^T``, shape (n, o, C, o, C).

    Block-Toeplitz up to the window edges: ``S[p, p+d]`` is the lag-``d*lag`` product
    over the window starting at ``p*lag``, i.e. ``S[0, d]`` plus the difference of the
    ``lag``-sample segments entering at the tail and leaving at the head. So each
    diagonal costs one ``C x L x C`` batched matmul plus ``C x lag x C`` corrections.
    """
    n, C, _ = X.shape
    S = np.empty((n, order, C, order, C))
    if order > 1:
        # (n, order, C, lag) head segments [k*lag, (k+1)*lag) and tail segments
        # [L + k*lag, L + (k+1)*lag), k = 0..order-1 (together they span [0, T)).
        head = X[:, :, : order * lag].reshape(n, C, order, lag).transpose(0, 2, 1, 3)
        tail = X[:, :, n_kept:].reshape(n, C, order, lag).transpose(0, 2, 1, 3)
    for d in range(order):
        base = X[:, :, :n_kept] @ X[:, :, d * lag : d * lag + n_kept].transpose(0, 2, 1)
        blocks = [base]
        if order - 1 - d > 0:
            k = order - 1 - d
            gain = tail[:, :k] @ tail[:, d : d + k].transpose(0, 1, 3, 2)
            gain -= head[:, :k] @ head[:, d : d + k].transpose(0, 1, 3, 2)
            blocks.extend((base[:, None] + np.cumsum(gain, axis=1)).transpose(1, 0, 2, 3))
        for p, block in enumerate(blocks):
            S[:, p, :, p + d, :] = block
            if d:
                S[:, p + d, :, p, :] = block.transpose(0, 2, 1)
    return S


def _window_means(X: np.ndarray, order: int, lag: int, n_kept: int) -> np.ndarray:
    """Means of the ``order`` embedded copies, shape (n, order, C).

    Window ``p`` is window ``p - 1`` plus its entering tail segment minus its leaving
    head segment (the same sliding as :func:`_lagged_products`).
    """
    n, C, _ = X.shape
    sums = np.empty((n, order, C))
    sums[:, 0] = X[:, :, :n_kept].sum(axis=-1)
    if order > 1:
        head = X[:, :, : (order - 1) * lag].reshape(n, C, order - 1, lag).sum(axis=-1)
        tail = X[:, :, n_kept : n_kept + (order - 1) * lag].reshape(n, C, order - 1, lag)
        gain = (tail.sum(axis=-1) - head).transpose(0, 2, 1)
        sums[:, 1:] = sums[:, :1] + np.cumsum(gain, axis=1)
    return sums / n_kept


def _sum_fourth_moments(X, means, order: int, lag: int, n_kept: int) -> np.ndarray:
    """``sum_t ||z_t||^4`` of the centred embedded vectors z_t (Ledoit-Wolf's beta)."""
    sq_norm = np.zeros((X.shape[0], n_kept))
    for p in range(order):
        window = X[:, :, p * lag : p * lag + n_kept] - means[:, p, :, None]
        sq_norm += np.einsum("nct,nct->nt", window, window)
    return np.sum(sq_norm**2, axis=-1)


def augmented_covariances(
    X, order: int = 1, lag: int = 1, estimator: str = "oas", shrinkage: float = 0.1
) -> np.ndarray:
    """Augmented covariance matrices of trials, without materialising the embedding.

    Parameters
    ----------
    X : array, shape (n_trials, n_channels, n_times)
        Real multichannel trials.
    order : int
        Embedding dimension ``p`` (number of delayed copies; 1 = plain covariance).
    lag : int
        Delay ``tau`` between copies, in samples.
    estimator : {"oas", "lwf", "scm", "cov", "shrinkage"}
        Estimator applied to the centred embedded signal, each identical to
        ``pyriemann.utils.covariance.covariances`` of the explicit embedding: "scm"
        empirical covariance (divides by L), "cov" ``np.cov`` (divides by L - 1), "oas"
        oracle approximating shrinkage, "lwf" Ledoit-Wolf, "shrinkage" a fixed
        ``(1 - shrinkage) * scm + shrinkage * trace(scm)/dim * I`` (scikit-learn's
        ``shrunk_covariance``). The shrunk ones stay SPD when ``C*order`` approaches or
        exceeds the kept samples (PhysionetMI: 64 channels x 481 samples).
    shrinkage : float
        Coefficient of the "shrinkage" estimator, in [0, 1].

    Returns
    -------
    covs : array, shape (n_trials, n_channels*order, n_channels*order)
        Row/column ``p*C + c`` is channel ``c`` delayed by ``p*lag`` samples (MOABB's
        ``AugmentedDataset`` layout). The trials used are those of the module docstring.

    Notes
    -----
    With ``L`` kept samples, the cost is ``order`` batched ``C x L x C`` products plus
    ``order**2 * C**2 * lag`` for the window edges, against ``order**2`` times the first
    term (and a ``C*order x L`` copy per trial) for the explicit embedding.

    References
    ----------
    .. [1] Carrara, I., & Papadopoulo, T. (2024). Classification of BCI-EEG based on
       the augmented covariance matrix. IEEE TBME. arXiv:2302.04508.
    """
    X = check_trials(X)
    n, C, T = X.shape
    n_kept = check_augmentation(C, T, order, lag, estimator)
    if estimator == "shrinkage" and not 0.0 <= float(shrinkage) <= 1.0:
        raise ConfigError(f"shrinkage must lie in [0, 1]; found {shrinkage!r}")
    # Covariances do not change under a constant shift per channel; removing each
    # channel's trial mean keeps S/L - m m^T free of cancellation.
    X = X - X.mean(axis=-1, keepdims=True)
    dim = C * order
    means = _window_means(X, order, lag, n_kept)
    S = _lagged_products(X, order, lag, n_kept).reshape(n, dim, dim)
    m = means.reshape(n, dim)
    S /= n_kept
    emp = np.subtract(S, m[:, :, None] * m[:, None, :], out=S)
    if estimator == "scm":
        return emp
    if estimator == "cov":
        emp *= n_kept / (n_kept - 1.0)
        return emp

    mu = np.trace(emp, axis1=1, axis2=2) / dim
    if estimator == "shrinkage":
        coef = np.full(n, float(shrinkage))
    elif dim == 1:
        coef = np.zeros(n)
    elif estimator == "oas":  # scikit-learn's oas()
        alpha = np.mean(emp**2, axis=(1, 2))
        num = alpha + mu**2
        den = (n_kept + 1.0) * (alpha - mu**2 / dim)
        with np.errstate(divide="ignore", invalid="ignore"):
            coef = np.where(den == 0, 1.0, np.minimum(num / den, 1.0))
    else:  # "lwf": scikit-learn's ledoit_wolf_shrinkage()
        beta_ = _sum_fourth_moments(X, means, order, lag, n_kept)
        delta_ = np.sum(emp**2, axis=(1, 2))
        beta = (beta_ / n_kept - delta_) / (dim * n_kept)
        delta = (delta_ - 2.0 * mu * mu * dim + dim * mu**2) / dim
        beta = np.minimum(beta, delta)
        with np.errstate(divide="ignore", invalid="ignore"):
            coef = np.where(beta == 0, 0.0, beta / delta)
    emp *= (1.0 - coef)[:, None, None]
    emp[:, np.arange(dim), np.arange(dim)] += (coef * mu)[:, None]
    return emp


class AugmentedCovariances(TransformerMixin, BaseEstimator):
    """Augmented covariance matrices: ``(n, C, T) -> (n, C*order, C*order)`` SPD.

    Thin estimator over :func:`augmented_covariances` (see it for the embedding and
    the estimators). With ``order="auto"`` and/or ``lag="auto"`` the values are chosen
    at ``fit`` from the training trials, the data-driven route of [1]_: the lag at the
    first minimum of the average mutual information
    (:func:`pipelines.embedding.select_lag_ami`), then the order from false nearest
    neighbours (:func:`pipelines.embedding.select_order_fnn`).

    Parameters
    ----------
    order : int | "auto"
        Embedding dimension (number of delayed copies).
    lag : int | "auto"
        Delay between copies, in samples.
    estimator : {"oas", "lwf", "scm", "cov", "shrinkage"}
        Covariance estimator; the shrunk ones stay SPD for large ``C*order``.
    shrinkage : float
        Coefficient of the "shrinkage" estimator.
    max_order, max_lag : int
        Search ranges of the "auto" selections.
    random_state : int | None
        Seed of the subsampling of series in the "auto" selections.

    Attributes
    ----------
    order_, lag_ : int
        The order and lag used by ``transform``.
    n_channels_, n_times_ : int
        Shape of the training trials.

    References
    ----------
    .. [1] Carrara, I., & Papadopoulo, T. (2024). Classification of BCI-EEG based on
       the augmented covariance matrix. IEEE TBME. arXiv:2302.04508.
    """

    def __init__(
        self,
        order=1,
        lag=1,
        estimator="oas",
        shrinkage=0.1,
        max_order=10,
        max_lag=10,
        random_state=None,
    ):
        self.order = order
        self.lag = lag
        self.estimator = estimator
        self.shrinkage = shrinkage
        self.max_order = max_order
        self.max_lag = max_lag
        self.random_state = random_state

    def fit(self, X, y=None):
        """Check the trials and the embedding; resolve "auto" order/lag on ``X``."""
        X = check_trials(X)
        _, C, T = X.shape
        lag, order = self.lag, self.order
        if lag == "auto" or order == "auto":
            if lag == "auto":
                lag = select_lag_ami(X, self.max_lag, random_state=self.random_state)
            if order == "auto":
                order = select_order_fnn(
                    X, check_positive_int(lag, "lag"), self.max_order,
                    random_state=self.random_state,
                )
        check_augmentation(C, T, order, lag, self.estimator)
        self.order_, self.lag_ = int(order), int(lag)
        self.n_channels_, self.n_times_ = C, T
        return self

    def transform(self, X):
        """Augmented covariance matrix of each trial, shape (n, C*order_, C*order_)."""
        if not hasattr(self, "order_"):
            raise DataError("AugmentedCovariances must be fitted before transform")
        X = check_trials(X)
        if X.shape[1] != self.n_channels_:
            raise DataError(
                f"expected trials with {self.n_channels_} channels (as in fit); "
                f"found {X.shape[1]}"
            )
        return augmented_covariances(
            X, self.order_, self.lag_, self.estimator, self.shrinkage
        )
