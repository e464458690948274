"""Per-window cost of online session adaptation (issue 24), beside the library's own update.

``bci bench adaptation``: one window at a time, as the live loop adapts, for Riemannian
re-centring of ``C x C`` covariance matrices and Euclidean alignment of ``C x T`` signals:

- ours: :class:`pipelines.alignment.OnlineReference` (one geodesic step toward the window's
  matrix, outlier check, then ``M^{-1/2}``) plus applying it to the window;
- peer: pyRiemann's ``Whitening.partial_fit`` (its incremental geodesic mean) plus
  ``Whitening.transform`` on the same window;
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

        def step(m, ref=ours):
            ref.update(m)
            return ref.inv_sqrt @ m @ ref.inv_sqrt

        rows.append(_row("re-centring (covariances)", c, "ours: OnlineReference", _times(step, C), floor))
        peer = Whitening(metric="riemann").fit(C[:20])

        def peer_step(m, w=peer):
            w.partial_fit(m[None], alpha=0.05)
            return w.transform(m[None])

        rows.append(_row("re-centring (covariances)", c, "pyRiemann Whitening.partial_fit", _times(peer_step, C), floor))
        ea = OnlineReference(np.eye(c), "euclid")

        def ea_step(x, ref=ea):
            ref.update(x @ x.T / x.shape[1])
            return ref.inv_sqrt @ x

        floor_ea = float(np.median(_times(lambda x: inv @ x, X)))
        rows.append(_row("Euclidean alignment (signals)", c, "floor: fixed reference applied", _times(lambda x: inv @ x, X), floor_ea))
        rows.append(_row("Euclidean alignment (signals)", c, "ours: OnlineReference", _times(ea_step, X), floor_ea))
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
