"""Augmented-covariance pipelines: ours vs MOABB's ``AUG_TANG_SVM_grid``, in one run.

On PhysionetMI left/right imagery (MOABB's ``LeftRightImagery``, 8-32 Hz, 0-3 s,
offline through ``MNE_DATA``), for each subject and the same stratified outer folds:

* ``moabb``: ``GridSearchCV`` over ``AugmentedDataset`` + ``Covariances("cov")`` +
  ``TangentSpace("riemann")`` + ``SVC`` (order x lag x C x kernel, inner
  ``StratifiedKFold(3, shuffle=True)``), built as MOABB's ``AUG_TANG_SVM_grid.yml``;
* ``grid``: our ``AugmentedGridSearch`` searching exactly as that (same grid, inner
  folds, scoring, np.cov matrices, tangent-space reference per inner fold, ties) but
  with covariances computed once per (order, lag);
* ``auto``: ours with order/lag from AMI + false nearest neighbours (SVC C/kernel
  still cross-validated).

Reports ROC-AUC (mean over outer folds) and fit+predict wall time per subject and
their ratios, then covariance throughput (matrices/s) of
:func:`pipelines.augmented.augmented_covariances` against ``AugmentedDataset`` +
``Covariances`` on all 64 channels. MOABB's full grid is 10 x 10 orders/lags on all
channels, hours per subject on 2 cores; the defaults use 11 central channels, and
``--quick`` a 5 x 5 grid, 3 outer folds and subjects 1-3.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from functools import partial
from pathlib import Path

import numpy as np

from bci.cli import parse_subjects
from benchmarks.common import emit

MOTOR_CHANNELS = ("FC3", "FC4", "C5", "C3", "C1", "Cz", "C2", "C4", "C6", "CP3", "CP4")
SVC_GRID = {"Cs": (0.5, 1.0, 1.5), "kernels": ("rbf", "linear")}


def _load(subject: int, channels):
    """(X, y) of one PhysionetMI subject, left/right imagery, offline."""
    os.environ.setdefault("MNE_DATA", str(Path(__file__).parents[2] / "shared" / "data" / "mne_data"))
    import mne
    from moabb.paradigms import LeftRightImagery

    from bci.datasets import get_dataset, load_subject_data

    mne.set_log_level("ERROR")
    paradigm = LeftRightImagery(channels=list(channels) if channels else None)
    X, y, _ = load_subject_data(paradigm, get_dataset("PhysionetMI", imagined=True), subject)
    return X, y


def moabb_acm_grid(orders, lags, seed: int):
    """MOABB's ``AUG_TANG_SVM_grid`` pipeline wrapped as MOABB's evaluations do."""
    from moabb.pipelines.features import AugmentedDataset
    from pyriemann.estimation import Covariances
    from pyriemann.tangentspace import TangentSpace
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import SVC

    pipe = make_pipeline(
        AugmentedDataset(), Covariances(estimator="cov"), TangentSpace(metric="riemann"),
        SVC(kernel="rbf"),
    )
    grid = {
        "augmenteddataset__order": list(orders),
        "augmenteddataset__lag": list(lags),
        "svc__C": list(SVC_GRID["Cs"]),
        "svc__kernel": list(SVC_GRID["kernels"]),
    }
    inner = StratifiedKFold(3, shuffle=True, random_state=seed)
    return GridSearchCV(pipe, grid, cv=inner, scoring="roc_auc", refit=True, n_jobs=1)


def _ours(selection: str, orders, lags, seed: int):
    from pipelines.selection import AugmentedGridSearch

    if selection == "auto":
        return AugmentedGridSearch(orders="auto", lags="auto", random_state=seed, **SVC_GRID)
    return AugmentedGridSearch(orders=orders, lags=lags, estimator="cov", reference="fold", random_state=seed, **SVC_GRID)


def _chosen(model) -> str:
    p = model.best_params_
    order = p.get("order", p.get("augmenteddataset__order"))
    lag = p.get("lag", p.get("augmenteddataset__lag"))
    return f"{order}/{lag}"


def score_subject(X, y, orders, lags, n_folds: int, seed: int) -> dict:
    """Outer-CV ROC-AUC and wall time of the three pipelines on one subject."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    builders = {
        "moabb": lambda: moabb_acm_grid(orders, lags, seed),
        "grid": lambda: _ours("grid", orders, lags, seed),
        "auto": lambda: _ours("auto", orders, lags, seed),
    }
    y = np.asarray(y)
    folds = list(StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(X, y))
    row: dict = {}
    for name, build in builders.items():
        aucs, chosen, start = [], [], time.perf_counter()
        for train, test in folds:
            model = build().fit(X[train], y[train])
            aucs.append(roc_auc_score(y[test] == max(y), model.decision_function(X[test])))
            chosen.append(_chosen(model))
        row[f"auc_{name}"] = float(np.mean(aucs))
        row[f"time_{name}_ms"] = 1000 * (time.perf_counter() - start)
        row[f"order/lag_{name}"] = " ".join(chosen)
    row["speedup_grid"] = row["time_moabb_ms"] / row["time_grid_ms"]
    row["speedup_auto"] = row["time_moabb_ms"] / row["time_auto_ms"]
    return row


def _best_time(fn, repeats: int):
    """(best wall time in s, last output) of ``repeats`` calls."""
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def moabb_covariances(X, order: int, lag: int, estimator: str):
    """MOABB's route: ``AugmentedDataset`` (explicit embedding) + ``Covariances``."""
    from moabb.pipelines.features import AugmentedDataset
    from pyriemann.estimation import Covariances

    embedded = AugmentedDataset(order=order, lag=lag).transform(X)
    return Covariances(estimator=estimator).transform(embedded)


def covariance_throughput(X, settings, repeats: int = 3) -> list[dict]:
    """Matrices per second: ours vs ``AugmentedDataset`` + ``Covariances`` (best of repeats)."""
    from pipelines.augmented import augmented_covariances

    rows = []
    for estimator, order, lag in settings:
        t_ours, ours_out = _best_time(partial(augmented_covariances, X, order, lag, estimator), repeats)
        t_moabb, moabb_out = _best_time(partial(moabb_covariances, X, order, lag, estimator), repeats)
        rows.append({
            "estimator": estimator, "order": order, "lag": lag,
            "matrix": f"{X.shape[1] * order}x{X.shape[1] * order}",
            "ours_matrices_per_s": len(X) / t_ours,
            "moabb_matrices_per_s": len(X) / t_moabb,
            "speedup": t_moabb / t_ours,
            "max_rel_diff": float(np.max(np.abs(ours_out - moabb_out)) / np.max(np.abs(moabb_out))),
        })
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the comparison; print both tables; return (and optionally save) all rows."""
    parser = argparse.ArgumentParser(prog="bci bench acm", description=__doc__.split("\n")[0])
    parser.add_argument("--json", metavar="PATH", help="write the rows as JSON records")
    parser.add_argument("--subjects", default=None, help="e.g. 1-10 or 1,3,5 (default 1-10; --quick 1-3)")
    parser.add_argument("--quick", action="store_true", help="5x5 grid, 3 outer folds, subjects 1-3")
    parser.add_argument("--channels", default=",".join(MOTOR_CHANNELS), help="comma list or 'all'")
    parser.add_argument("--max-order-lag", type=int, default=None, help="grid 1..N (default 10; --quick 5)")
    parser.add_argument("--folds", type=int, default=None, help="outer folds (default 5; --quick 3)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads for both sides (default 1)")
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(args.threads):
        records = _run(args)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(records, indent=2))
    return records


def _run(args) -> list[dict]:

    subjects = parse_subjects(args.subjects or ("1-3" if args.quick else "1-10"))
    top = args.max_order_lag or (5 if args.quick else 10)
    n_folds = args.folds or (3 if args.quick else 5)
    channels = None if args.channels == "all" else args.channels.split(",")
    grid = tuple(range(1, top + 1))
    warnings.filterwarnings("ignore")  # MOABB grid points with singular matrices score NaN

    rows = []
    for subject in subjects:
        X, y = _load(subject, channels)
        row = {"subject": subject, "n_trials": len(X), "n_channels": X.shape[1]}
        rows.append({**row, **score_subject(X, y, grid, grid, n_folds, args.seed)})
    mean = {"subject": "mean"}
    for key in rows[0]:
        if key != "subject" and isinstance(rows[0][key], float):
            mean[key] = float(np.mean([r[key] for r in rows]))
    mean["speedup_grid"] = mean["time_moabb_ms"] / mean["time_grid_ms"]
    mean["speedup_auto"] = mean["time_moabb_ms"] / mean["time_auto_ms"]
    rows.append(mean)
    emit(
        rows,
        f"ACM+TS+SVM, PhysionetMI left/right, {n_folds}-fold ROC-AUC, grid 1..{top} x 1..{top}"
        " x C x kernel (ours: grid with cache, auto = AMI+FNN) vs MOABB AUG_TANG_SVM_grid",
    )
    X_all, _ = _load(subjects[0], None)
    settings = [("cov", 2, 2), ("cov", 4, 4), ("cov", 6, 3), ("oas", 4, 4), ("oas", 8, 4)]
    if args.quick:
        settings = settings[:1] + settings[2:4]
    throughput = covariance_throughput(X_all, settings)
    emit(throughput, f"augmented covariance throughput, subject {subjects[0]}, {len(X_all)} trials x "
         f"{X_all.shape[1]} channels x {X_all.shape[2]} samples")
    return [{"table": "scores", **r} for r in rows] + [{"table": "throughput", **r} for r in throughput]


if __name__ == "__main__":
    main()
