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
from pyriemann.utils.distance import distance
from pyriemann.utils.geodesic import geodesic
from pyriemann.preprocessing import Whitening
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import make_pipeline

from bci.errors import DataError

from .fastpath import compile_proba
from .validation import check_trials, class_probabilities, flat_steps


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


# --------------------------------------------------------------------------- online
#: Defaults of the online reference: the training centre counts as ``prior`` trials, a new
#: trial weighs ``max(1 / (n + prior), forgetting)`` (n: trials accepted so far, this one
#: included), no rejection during the first ``warmup`` trials, then trials farther from the
#: reference than the mean + ``reject_z`` standard deviations of the accepted distances are
#: decoded but do not move it.
ONLINE_DEFAULTS = {"forgetting": 0.01, "prior": 1.0, "warmup": 10, "reject_z": 3.0}


class OnlineReference:
    """A re-centring reference that follows a stream of unlabelled trials.

    The reference ``M`` (an SPD matrix) starts at the training centre and moves toward each
    accepted trial's matrix ``C`` along the geodesic of ``metric`` (pyRiemann's
    :func:`~pyriemann.utils.geodesic.geodesic`: Riemannian for re-centering, Euclidean, i.e. the
    running arithmetic mean, for Euclidean alignment): ``M <- geodesic(M, C, w)`` with the weight
    ``w`` of :data:`ONLINE_DEFAULTS`. So the first trials of a session re-centre it as a
    whole-session (transductive) mean would, and a long session keeps a memory of about
    ``1 / forgetting`` trials.
    """

    def __init__(self, reference: np.ndarray, metric: str = "riemann", *, forgetting: float = 0.01, prior: float = 1.0,
                 warmup: int = 10, reject_z: float = 3.0):  # fmt: skip
        if not 0 <= forgetting <= 1 or prior < 0 or warmup < 0 or reject_z <= 0:
            raise DataError(f"online reference: expected 0 <= forgetting <= 1, prior >= 0, warmup >= 0 and reject_z > 0; "
                            f"found {forgetting}, {prior}, {warmup}, {reject_z}")  # fmt: skip
        self.metric, self.forgetting, self.prior = metric, float(forgetting), float(prior)
        self.warmup, self.reject_z = int(warmup), float(reject_z)
        self.load_state_dict({"reference": reference, "n_accepted": 0, "n_rejected": 0, "distance_sum": 0.0, "distance_sq": 0.0})

    def update(self, C: np.ndarray) -> bool:
        """Move the reference toward ``C`` unless ``C`` is an outlier; returns whether it moved.

        Riemannian metric: one eigendecomposition of the whitened ``W = M^{-1/2} C M^{-1/2}``
        gives both the distance (``||log W||``) and the step (``M^{1/2} W^w M^{1/2}``, pyRiemann's
        geodesic), and one of the new ``M`` its square roots: two per window, not five."""
        if self.metric == "riemann":
            lam, V = np.linalg.eigh(self.inv_sqrt @ C @ self.inv_sqrt)
            if lam.min() <= 0:
                raise DataError("online reference: the window's matrix is not positive definite")
            d = float(np.sqrt(np.sum(np.log(lam) ** 2)))
        else:
            d = float(distance(self.reference, C, metric=self.metric))
        n = self.n_accepted
        if n >= self.warmup and n > 1:
            mean = self.distance_sum / n
            std = np.sqrt(max(self.distance_sq / n - mean * mean, 0.0))
            if d > mean + self.reject_z * std:
                self.n_rejected += 1
                return False
        self.n_accepted = n + 1
        self.distance_sum += d
        self.distance_sq += d * d
        w = max(1.0 / (self.n_accepted + self.prior), self.forgetting)
        if self.metric == "riemann":
            step = (V * lam**w) @ V.T
            self._set(self._sqrt @ step @ self._sqrt)
        else:
            self._set(geodesic(self.reference, C, w, metric=self.metric))
        return True

    def _set(self, reference: np.ndarray) -> None:
        """The reference and its square roots (one eigendecomposition)."""
        reference = (reference + reference.T) / 2
        lam, V = np.linalg.eigh(reference)
        if lam.min() <= 0:
            raise DataError("online reference: the reference is not positive definite")
        self.reference = reference
        self._sqrt = (V * np.sqrt(lam)) @ V.T
        self.inv_sqrt = (V / np.sqrt(lam)) @ V.T

    def state_dict(self) -> dict:
        """The reference and its counters (plain arrays and numbers: ``np.savez`` them)."""
        return {"reference": self.reference, "n_accepted": self.n_accepted, "n_rejected": self.n_rejected,
                "distance_sum": self.distance_sum, "distance_sq": self.distance_sq}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        reference = np.asarray(state["reference"], dtype=np.float64)
        if reference.ndim != 2 or reference.shape[0] != reference.shape[1]:
            raise DataError(f"online reference: expected a square matrix, found shape {reference.shape}")
        self._set(reference)
        self.n_accepted, self.n_rejected = int(state["n_accepted"]), int(state["n_rejected"])
        self.distance_sum, self.distance_sq = float(state["distance_sum"]), float(state["distance_sq"])


def alignment_steps(estimator) -> list:
    """The :class:`EuclideanAlignment` and :class:`RiemannianRecentering` steps of a pipeline."""
    return [s for s in flat_steps(estimator) if isinstance(s, (EuclideanAlignment, RiemannianRecentering))]


def _inverse_square(inv_sqrt: np.ndarray) -> np.ndarray:
    """``M`` from ``M^{-1/2}`` (symmetric)."""
    return np.linalg.inv(inv_sqrt @ inv_sqrt)


class OnlineAdaptation:
    """A fitted pipeline whose alignment follows the stream, one trial (window) at a time.

    The alignment is the pipeline's :class:`EuclideanAlignment` or
    :class:`RiemannianRecentering` step, or a signal-level Euclidean alignment matrix given
    as ``signal_alignment`` (a saved model's, applied before the pipeline). Its reference
    becomes an :class:`OnlineReference` seeded with the one fitted on the training trials;
    :meth:`predict_proba` takes trials in stream order, and each is aligned with the reference
    of the trials before it and then joins it (unless ``update`` is False: the training
    reference, fixed). A trial never sees a later one (no look-ahead). The last trial's
    update waits for :meth:`flush` (or the next trial): the live loop publishes a decision
    first and moves the reference after, so the update (two ``eigh`` at 64 channels) is not
    part of the decision's latency. The results do not depend on when :meth:`flush` runs.

    Parameters
    ----------
    estimator : fitted sklearn Pipeline (or estimator when ``signal_alignment`` is given)
    signal_alignment : array (C, C), optional
    update : bool
    **options : the :class:`OnlineReference` settings (:data:`ONLINE_DEFAULTS`)
    """

    def __init__(self, estimator, signal_alignment: np.ndarray | None = None, *, update: bool = True, **options):
        unknown = sorted(set(options) - set(ONLINE_DEFAULTS))
        if unknown:
            raise DataError(f"online adaptation: unknown option(s) {', '.join(unknown)}; expected {', '.join(ONLINE_DEFAULTS)}")
        options = {**ONLINE_DEFAULTS, **options}
        self.update = bool(update)
        self._fast = False  # the tail's fast path: compiled at the first decision
        self._pending: np.ndarray | None = None  # the last aligned trial's matrix, not yet in the reference
        steps = flat_steps(estimator)
        at = [i for i, s in enumerate(steps) if isinstance(s, (EuclideanAlignment, RiemannianRecentering))]
        if signal_alignment is not None:
            self.kind, self.head, self.tail = "signals", None, estimator
            self.reference = OnlineReference(_inverse_square(signal_alignment), "euclid", **options)
        elif at:
            i, step = at[0], steps[at[0]]
            self.head = make_pipeline(*steps[:i]) if i else None  # the fitted steps themselves
            self.tail = make_pipeline(*steps[i + 1 :])
            if isinstance(step, EuclideanAlignment):
                self.kind = "signals"
                self.reference = OnlineReference(_inverse_square(step.reference_inv_sqrt_), "euclid", **options)
            else:
                self.kind = "matrices"
                self.reference = OnlineReference(_inverse_square(step.whitening_.filters_), step.metric, **options)
        else:
            raise DataError("online adaptation needs an alignment: a EuclideanAlignment or RiemannianRecentering "
                            "step, or a signal alignment matrix")  # fmt: skip

    @classmethod
    def supports(cls, estimator, signal_alignment=None) -> bool:
        """Whether ``estimator`` (with ``signal_alignment``) has an alignment to adapt."""
        return signal_alignment is not None or bool(alignment_steps(estimator))

    def flush(self) -> bool:
        """Move the reference with the last aligned trial (if it has not yet); returns whether
        there was one. :meth:`predict_proba` does it before each trial."""
        if self._pending is None:
            return False
        pending, self._pending = self._pending, None
        self.reference.update(pending)
        return True

    def state_dict(self) -> dict:
        """The reference's state (:meth:`OnlineReference.state_dict`) with every decoded trial in it."""
        self.flush()
        return self.reference.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict` of an earlier stream; a trial of this one whose move is
        still pending is dropped with the reference it would have moved."""
        self._pending = None
        self.reference.load_state_dict(state)

    def _align(self, x: np.ndarray, move: bool) -> np.ndarray:
        self.flush()
        z = x[None] if self.head is None else self.head.transform(x[None])
        inv_sqrt = self.reference.inv_sqrt
        move = move and self.update
        if self.kind == "signals":
            if move:
                self._pending = covariances(z, estimator="scm", assume_centered=True)[0]
            return inv_sqrt @ z
        if move:
            self._pending = z[0]
        return inv_sqrt @ z @ inv_sqrt

    def predict_proba(self, X, moves=None) -> np.ndarray:
        """Class probabilities of trials ``X`` taken in order, each aligned with the reference of
        the trials before it; the tail's fast path (:func:`~pipelines.fastpath.compile_proba`)
        decides when it has one. ``moves`` (a bool per trial, default all True) says which
        trials then move the reference: the live loop's overlapping windows share their signal,
        so only one window per stride does (:class:`bci.predictor.StreamPredictor`)."""
        X = check_trials(X)
        moves = np.ones(len(X), dtype=bool) if moves is None else np.asarray(moves, dtype=bool)
        if moves.shape != (len(X),):
            raise DataError(f"moves: expected one flag per trial ({len(X)}); found shape {moves.shape}")
        if self._fast is False or (self._fast is not None and not self._fast.valid()):
            self._fast = compile_proba(self.tail)
        decide = self._fast if self._fast is not None else lambda z: class_probabilities(self.tail, z)
        return np.vstack([decide(self._align(x, m)) for x, m in zip(X, moves)])
