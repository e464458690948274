"""Seizure metrics: segment metrics (scikit-learn's), per-segment probabilities, alarm events and latency."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, cohen_kappa_score, recall_score, roc_auc_score

from ..errors import DataError
from .data import CLASSES


def segment_metrics(y_true, proba, threshold: float = 0.5) -> dict:
    """Accuracy, sensitivity, specificity, ROC-AUC and Cohen's kappa of binary scores.

    ``y_true`` holds 0/1 (1 = seizure) or class names of :data:`CLASSES`; ``proba``
    the seizure probabilities. A decision is ``proba >= threshold``.
    """
    y = np.asarray(y_true)
    if y.dtype.kind in "US":
        y = (y == CLASSES[1]).astype(int)
    p = np.asarray(proba, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1 or len(y) == 0:
        raise DataError(f"expected one probability per label, found {p.shape} for {y.shape}")
    pred = (p >= threshold).astype(int)
    both = len(np.unique(y)) == 2
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "sensitivity": float(recall_score(y, pred, pos_label=1, zero_division=np.nan)),
        "specificity": float(recall_score(y, pred, pos_label=0, zero_division=np.nan)),
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "kappa": float(cohen_kappa_score(y, pred)),
        "n": len(y),
        "n_seizure": int(y.sum()),
    }


def per_segment(proba, groups, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean window probability of every segment: ``(segment ids, proba, labels 0/1)``."""
    groups = np.asarray(groups)
    ids, inverse = np.unique(groups, return_inverse=True)
    sums = np.bincount(inverse, weights=np.asarray(proba, dtype=np.float64))
    counts = np.bincount(inverse)
    y = np.asarray(y)
    if y.dtype.kind in "US":
        y = (y == CLASSES[1]).astype(int)
    labels = np.zeros(len(ids), dtype=int)
    labels[inverse] = y
    return ids, sums / counts, labels


def alarm_events(alarms: list[dict], hop_s: float) -> list[tuple[float, float]]:
    """The detector's seizures ``(onset_s, end_s)``: each alarm's run above threshold
    (:func:`bci.alarm.detect_alarms`), every decision standing for the ``hop_s`` seconds
    that end at it."""
    return [(max(0.0, a["onset_s"] - hop_s), a["end_s"]) for a in alarms]


def latency(times, seizures) -> float:
    """Mean delay from each seizure's onset to the first of ``times`` within it
    (``onset <= t <= end``), over the seizures reached; NaN when none is."""
    times = np.asarray(times, dtype=float)
    delays = [times[(times >= a) & (times <= b)].min() - a for a, b in seizures if ((times >= a) & (times <= b)).any()]
    return float(np.mean(delays)) if delays else float("nan")


def window_traces(groups, y, proba, window_s: float, hop_s: float) -> list[tuple]:
    """Training windows as the alarm rule would see them live: one trace per recording or
    segment (``groups``, windows in time order ``hop_s`` apart), ``(times, seizure probability,
    has a seizure window, duration_s)``, the input of :func:`bci.alarm.operating_point`."""
    groups, y, proba = np.asarray(groups), np.asarray(y), np.asarray(proba, dtype=float)
    traces = []
    for group in dict.fromkeys(groups.tolist()):
        rows = np.flatnonzero(groups == group)
        times = window_s + hop_s * np.arange(len(rows))
        traces.append((times, proba[rows], bool((y[rows] == CLASSES[1]).any()), hop_s * len(rows)))
    return traces

