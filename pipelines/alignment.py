"""Alignment against session/run shift: Euclidean alignment and Riemannian re-centering.

Both estimate a reference from a set of trials and map it to the identity, so data of
different sessions (or subjects) share one centre:

* :func:`euclidean_alignment` / :class:`EuclideanAlignment` act on signals
  ``(n, C, T)``: ``X_i -> R^{-1/2} X_i`` with ``R`` the arithmetic mean of the trials'
  ``X_i X_i^T / T`` (He & Wu [1]_), so the aligned trials' mean covariance is ``I``;
* :class:`RiemannianRecentering` acts on SPD matrices ``(n, D, D)``:
  ``C_i -> M^{-1/2} C_i M^{-1/2}`` with ``M`` their Riemannian mean (Zanini et al.
  [2]_), so the re-centred matrices have Riemannian mean ``I``. It is pyRiemann's
  ``Whitening`` (the building block of ``pyriemann.transfer.TLCenter``), with groups
  and test-time adaptation.

Each fits a reference on the training trials; ``fit_transform(X, groups=...)`` aligns
each training group (session/run) to its own reference, and ``adapt=True`` makes
``transform`` estimate the reference from the batch it receives (unsupervised
test-time adaptation: pass one session or run per call, several trials each).

References
----------
.. [1] He, H., & Wu, D. (2020). Transfer learning for brain-computer interfaces: A
   Euclidean space data alignment approach. IEEE TBME, 67(2), 399-410.
.. [2] Zanini, P., Congedo, M., Jutten, C., Said, S., & Berthoumieu, Y. (2018).
   Transfer learning: a Riemannian geometry framework with applications to
   brain-computer interfaces. IEEE TBME, 65(5), 1107-1116.
"""

from __future__ import annotations

import numpy as np
from pyriemann.geometry.base import invsqrtm
from pyriemann.geometry.covariance import covariances
from pyriemann.preprocessing import Whitening
from sklearn.base import BaseEstimator, TransformerMixin

from bci.errors import DataError

from .validation import check_trials


def euclidean_alignment(X) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean alignment of trials to their own reference.

    Parameters
    ----------
    X : array, shape (n_trials, n_channels, n_times)

    Returns
    -------
    X_aligned : array, shape (n_trials, n_channels, n_times)
        ``R^{-1/2} X_i``; the mean of ``X_aligned_i X_aligned_i^T / T`` is the identity.
    R_inv_sqrt : array, shape (n_channels, n_channels)
        ``R^{-1/2}``, ``R`` the mean of the trials' ``X_i X_i^T / T``.
    """
    X = check_trials(X)
    reference = covariances(X, estimator="scm", assume_centered=True).mean(axis=0)
    if np.linalg.matrix_rank(reference) < reference.shape[0]:
        raise DataError(
            f"the mean of X X^T/T over {len(X)} trials is singular (rank "
            f"{np.linalg.matrix_rank(reference)} < {reference.shape[0]} channels): "
            f"constant, duplicated or too few samples"
        )
    r_inv_sqrt = invsqrtm(reference)
    return r_inv_sqrt @ X, r_inv_sqrt


def _check_groups(groups, n: int) -> np.ndarray:
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise DataError(f"groups must have one entry per trial ({n}); found shape {groups.shape}")
    return groups


def _check_adapt_batch(X, adapt: bool, what: str) -> None:
    if adapt and len(X) < 2:
        raise DataError(
            f"adapt=True estimates the {what} reference from each transformed batch; "
            f"a batch of {len(X)} trial maps every trial to the identity: pass a whole "
            f"session or run (several trials), or set adapt=False"
        )


class EuclideanAlignment(TransformerMixin, BaseEstimator):
    """Euclidean alignment of signals, ``(n, C, T) -> (n, C, T)`` (He & Wu).

    Parameters
    ----------
    adapt : bool
        False: ``transform`` applies the reference fitted on the training trials.
        True: ``transform`` aligns each incoming batch to its own reference
        (unsupervised test-time adaptation; one session/run per call).

    Attributes
    ----------
    reference_inv_sqrt_ : array, shape (n_channels, n_channels)
        ``R^{-1/2}`` of all training trials.
    """

    def __init__(self, adapt=False):
        self.adapt = adapt

    def fit(self, X, y=None, groups=None):
        """Estimate the reference ``R^{-1/2}`` from the training trials."""
        _, self.reference_inv_sqrt_ = euclidean_alignment(X)
        self.n_channels_ = self.reference_inv_sqrt_.shape[0]
        return self

    def fit_transform(self, X, y=None, groups=None):
        """Fit, then align the training trials (each group to its own reference)."""
        X = check_trials(X)
        self.fit(X)
        if groups is None:
            return self.reference_inv_sqrt_ @ X
        groups = _check_groups(groups, len(X))
        out = np.empty_like(X)
        for g in np.unique(groups):
            out[groups == g] = euclidean_alignment(X[groups == g])[0]
        return out

    def transform(self, X):
        """Align trials with the fitted reference, or with the batch's own (adapt)."""
        if not hasattr(self, "reference_inv_sqrt_"):
            raise DataError("EuclideanAlignment must be fitted before transform")
        X = check_trials(X)
        if X.shape[1] != self.n_channels_:
            raise DataError(
                f"expected {self.n_channels_} channels (as in fit); found {X.shape[1]}"
            )
        _check_adapt_batch(X, self.adapt, "Euclidean")
        return euclidean_alignment(X)[0] if self.adapt else self.reference_inv_sqrt_ @ X


def _check_spd_batch(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 3 or X.shape[1] != X.shape[2] or len(X) == 0:
        raise DataError(
            f"expected SPD matrices of shape (n_matrices, D, D); found shape {X.shape}"
        )
    if not np.all(np.isfinite(X)) or not np.allclose(X, X.transpose(0, 2, 1)):
        raise DataError("expected symmetric finite matrices; found non-symmetric or NaN input")
    return X


class RiemannianRecentering(TransformerMixin, BaseEstimator):
    """Riemannian re-centering of SPD matrices to the identity (Zanini et al.).

    ``C_i -> M^{-1/2} C_i M^{-1/2}`` with ``M`` the mean (``metric``, Riemannian by
    default) of the reference matrices; pyRiemann's ``Whitening`` does the work.

    Parameters
    ----------
    adapt : bool
        False: ``transform`` uses the mean of the training matrices.
        True: ``transform`` re-centres each incoming batch on its own mean
        (unsupervised test-time adaptation; one session/run per call).
    metric : str
        Mean used as the centre (pyRiemann ``gmean`` metric).

    Attributes
    ----------
    whitening_ : pyriemann.preprocessing.Whitening
        Fitted on all training matrices.
    """

    def __init__(self, adapt=False, metric="riemann"):
        self.adapt = adapt
        self.metric = metric

    def fit(self, X, y=None, groups=None):
        """Estimate the centre of the training matrices."""
        self.whitening_ = Whitening(metric=self.metric).fit(_check_spd_batch(X))
        return self

    def fit_transform(self, X, y=None, groups=None):
        """Fit, then re-centre the training matrices (each group on its own mean)."""
        X = _check_spd_batch(X)
        self.fit(X)
        if groups is None:
            return self.whitening_.transform(X)
        groups = _check_groups(groups, len(X))
        out = np.empty_like(X)
        for g in np.unique(groups):
            out[groups == g] = Whitening(metric=self.metric).fit_transform(X[groups == g])
        return out

    def transform(self, X):
        """Re-centre with the fitted centre, or with the batch's own mean (adapt)."""
        if not hasattr(self, "whitening_"):
            raise DataError("RiemannianRecentering must be fitted before transform")
        X = _check_spd_batch(X)
        if X.shape[1] != self.whitening_.n_components_:
            raise DataError(
                f"expected {self.whitening_.n_components_}x{self.whitening_.n_components_}"
                f" matrices (as in fit); found {X.shape[1]}x{X.shape[2]}"
            )
        _check_adapt_batch(X, self.adapt, "Riemannian")
        if self.adapt:
            return Whitening(metric=self.metric).fit_transform(X)
        return self.whitening_.transform(X)
