"""Per-window cost of online session adaptation (issue 24), beside the library's own update.

``bci bench adaptation``: one window at a time, as the live loop adapts, for Riemannian
re-centring of ``C x C`` covariance matrices and Euclidean alignment of ``C x T`` signals:

- ours, decision path: what the window's decision waits for in the live loop. The window is
  aligned with the reference of the windows before it (``M^{-1/2}`` applied); the move of the
  reference (:class:`pipelines.alignment.OnlineReference`) follows the publish
  (:meth:`pipelines.alignment.OnlineAdaptation.flush`);
- ours, update: that move, timed on its own (outlier check, one geodesic step toward the
  window's matrix, the new ``M^{+-1/2}``: two ``eigh`` for re-centring, one for Euclidean
  alignment): the CPU each window costs besides the decision;
- peer: pyRiemann's ``Whitening.partial_fit`` (its incremental geodesic mean) plus
  ``Whitening.transform`` on the same window: the update on the decision path;
- floor: applying a fixed ``M^{-1/2}`` (no adaptation).

Target (issue 24): <= 1 ms per window at 64 channels. Median and p99 over ``--windows``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from pyriemann.estimation import Covariances
from pyriemann.preprocessing import Whitening

from pipelines.alignment import OnlineReference

from .common import emit


def _times(fn, items) -> np.ndarray:
    out = np.empty(len(items))
    for i, item in enumerate(items):
        t0 = time.perf_counter()
        fn(item)
        out[i] = time.perf_counter() - t0
    return out * 1e3


def _deferred(ref: OnlineReference, items, apply, matrix=lambda m: m) -> tuple[np.ndarray, np.ndarray]:
    """Times of the live loop's two parts per window: aligning it with the current reference
    (before the decision) and the reference's move with it (after the publish)."""
    decide, update = np.empty(len(items)), np.empty(len(items))
    for i, item in enumerate(items):
        t0 = time.perf_counter()
        apply(item, ref.inv_sqrt)
        t1 = time.perf_counter()
        ref.update(matrix(item))
        decide[i], update[i] = t1 - t0, time.perf_counter() - t1
    return decide * 1e3, update * 1e3


def _row(case: str, channels: int, what: str, ms: np.ndarray, floor: float) -> dict:
    p50 = float(np.median(ms))
    return {"case": case, "channels": channels, "method": what, "p50 ms": p50, "p99 ms": float(np.percentile(ms, 99)),
            "x floor": p50 / floor, "<= 1 ms": "yes" if p50 <= 1.0 else "no"}  # fmt: skip


def run(channels=(3, 22, 64), n_windows: int = 300, n_times: int = 500, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for c in channels:
        mixing = rng.standard_normal((c, c)) / np.sqrt(c) + np.eye(c)
        X = np.einsum("ij,njt->nit", mixing, rng.standard_normal((n_windows, c, n_times)))
        C = Covariances("oas").fit_transform(X)
        start = C[:20].mean(axis=0)
        inv = np.linalg.inv(np.linalg.cholesky(start)).T  # any fixed whitening: the floor's matrix product
        floor = float(np.median(_times(lambda m: inv.T @ m @ inv, C)))
        rows.append(_row("re-centring (covariances)", c, "floor: fixed reference applied", _times(lambda m: inv.T @ m @ inv, C), floor))
        ours = OnlineReference(start, "riemann")
        decide, update = _deferred(ours, C, lambda m, a: a @ m @ a)
        rows.append(_row("re-centring (covariances)", c, "ours, decision path", decide, floor))
        rows.append(_row("re-centring (covariances)", c, "ours, update (after the publish)", update, floor))
        peer = Whitening(metric="riemann").fit(C[:20])

        def peer_step(m, w=peer):
            w.partial_fit(m[None], alpha=0.05)
            return w.transform(m[None])

        rows.append(_row("re-centring (covariances)", c, "pyRiemann Whitening.partial_fit", _times(peer_step, C), floor))
        ea = OnlineReference(np.eye(c), "euclid")
        floor_ea = float(np.median(_times(lambda x: inv @ x, X)))
        rows.append(_row("Euclidean alignment (signals)", c, "floor: fixed reference applied", _times(lambda x: inv @ x, X), floor_ea))
        decide, update = _deferred(ea, X, lambda x, a: a @ x, lambda x: x @ x.T / x.shape[1])
        rows.append(_row("Euclidean alignment (signals)", c, "ours, decision path", decide, floor_ea))
        rows.append(_row("Euclidean alignment (signals)", c, "ours, update (after the publish)", update, floor_ea))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="bci bench adaptation", description=__doc__.split("\n")[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[3, 22, 64])
    parser.add_argument("--windows", type=int, default=300)
    parser.add_argument("--json", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    rows = run(tuple(args.channels), args.windows)
    emit(rows, "Online adaptation: cost per window (one window at a time)", args.json, group="case")


if __name__ == "__main__":
    main()
