"""Per-window cost of online session adaptation (issue 24), beside the library's own update.

``bci bench adaptation``: one window at a time, as the live loop adapts, for Riemannian
re-centring of ``C x C`` covariance matrices and Euclidean alignment of ``C x T`` signals:

- ours, decision path: what the window's decision waits for in the live loop. The window is
  aligned with the reference of the windows before it (``M^{-1/2}`` applied); the move of the
  reference (:class:`pipelines.alignment.OnlineReference`) follows the publish
  (:meth:`pipelines.alignment.OnlineAdaptation.flush`);
- ours, update: that move, timed on its own (outlier check, one geodesic step toward the
  window's matrix, the new ``M^{+-1/2}``: two ``eigh`` for re-centring, one for Euclidean
  alignment): the CPU a moving window costs besides the decision;
- ours, live stream: all the adaptation CPU per decoded window (decision path, plus the update
  on the windows that move the reference) at the live loop's 62.5 ms hop with 2 s windows,
  where one window per window length moves it (:class:`bci.predictor.StreamPredictor`'s
  ``stride_s``): 1 in 32;
- peer: pyRiemann's ``Whitening.partial_fit`` (its incremental geodesic mean) plus
  ``Whitening.transform`` on the same window: the update on the decision path;
- floor: applying a fixed ``M^{-1/2}`` (no adaptation).

Target (issue 24): <= 1 ms per window at 64 channels (the mean). Median, p99 and mean over
``--windows``.
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


#: The live loop's windows that move the reference: one per window length, 2 s windows at a 62.5 ms hop.
LIVE_STRIDE = 32


def _deferred(ref: OnlineReference, items, apply, matrix=lambda m: m, every: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Times of the live loop's two parts per window: aligning it with the current reference
    (before the decision) and, on every ``every``-th window, the reference's move with it
    (after the publish; 0 on the others)."""
    decide, update = np.empty(len(items)), np.zeros(len(items))
    for i, item in enumerate(items):
        t0 = time.perf_counter()
        apply(item, ref.inv_sqrt)
        t1 = time.perf_counter()
        if i % every == 0:
            ref.update(matrix(item))
            update[i] = time.perf_counter() - t1
        decide[i] = t1 - t0
    return decide * 1e3, update * 1e3


def _row(case: str, channels: int, what: str, ms: np.ndarray, floor: float) -> dict:
    p50, mean = float(np.median(ms)), float(np.mean(ms))
    return {"case": case, "channels": channels, "method": what, "p50 ms": p50, "p99 ms": float(np.percentile(ms, 99)),
            "mean ms": mean, "x floor": mean / floor, "<= 1 ms": "yes" if mean <= 1.0 else "no"}  # fmt: skip


def _adapting(case: str, channels: int, make, items, apply, floor: float, matrix=lambda m: m) -> list[dict]:
    """The decision path and the update, every window moving the reference, then the live stream."""
    decide, update = _deferred(make(), items, apply, matrix)
    decide_live, update_live = _deferred(make(), items, apply, matrix, every=LIVE_STRIDE)
    return [_row(case, channels, "ours, decision path", decide, floor),
            _row(case, channels, "ours, update (after the publish)", update, floor),
            _row(case, channels, f"ours, live stream (1 move in {LIVE_STRIDE} windows)", decide_live + update_live, floor)]  # fmt: skip


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
        rows += _adapting("re-centring (covariances)", c, lambda: OnlineReference(start, "riemann"), C, lambda m, a: a @ m @ a, floor)
        peer = Whitening(metric="riemann").fit(C[:20])

        def peer_step(m, w=peer):
            w.partial_fit(m[None], alpha=0.05)
            return w.transform(m[None])

        rows.append(_row("re-centring (covariances)", c, "pyRiemann Whitening.partial_fit", _times(peer_step, C), floor))
        floor_ea = float(np.median(_times(lambda x: inv @ x, X)))
        rows.append(_row("Euclidean alignment (signals)", c, "floor: fixed reference applied", _times(lambda x: inv @ x, X), floor_ea))
        rows += _adapting("Euclidean alignment (signals)", c, lambda: OnlineReference(np.eye(c), "euclid"), X,
                          lambda x, a: a @ x, floor_ea, lambda x: x @ x.T / x.shape[1])  # fmt: skip
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
