"""Seizure detection: labelled Bonn windows, segment and event metrics, evaluation.

Data (``../shared/data/seizure``, see its README):

- **Bonn** (Andrzejak et al. 2001): sets A-E of 100 single-channel 23.6 s segments at
  173.61 Hz; E is ictal. Tasks: ``"ABCD-E"`` (all non-ictal sets vs E) and ``"A-E"``
  (healthy scalp vs ictal). Each segment is filtered with the configured
  :class:`~bci.preprocess.Preprocessor` in its causal (live) form, resampled to the
  model rate, its first ``settle_s`` seconds (the causal filters' start-up transient)
  dropped, and cut into windows. The files carry no subject identity, so folds are
  *segment-grouped*: the windows of one segment never straddle train and test
  (:func:`segment_folds`).
- **Continuous recordings**: Malow, one 21-channel scalp recording (100 Hz, 500 s)
  with one seizure, documented onset about 350 s, and the recordings of BIDS-EEG
  datasets (``datasets: [{name: bids, path: ROOT}]``) with their ``events.tsv``
  seizures. A detector trained on single-channel Bonn windows runs on every channel;
  the channels' probabilities are combined (:func:`pipelines.seizure.combine_channels`),
  smoothed, thresholded and held for a minimum duration like a clinical detector
  (the one alarm rule, :class:`bci.alarm.AlarmRule`, as live). Its events (:func:`alarm_events`) are scored as SzCORE
  scores them (:mod:`bci.szcore`, timescoring: event and sample sensitivity,
  precision, F1, false positives per 24 h), per recording and pooled, beside the
  detection latency after onset (:func:`latency`).

Metrics are scikit-learn's (:func:`segment_metrics`): accuracy, sensitivity (recall
of "seizure"), specificity (recall of "background"), ROC-AUC, Cohen's kappa.

``bci evaluate CONFIG`` runs :func:`evaluate_seizure` for a config with
``evaluation: {kind: seizure}`` (``configs/seizure_bonn.yaml``); ``bci train`` with
``train: {task: seizure}`` collects its data with :func:`training_data`.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from .alarm import TARGET_FP_PER_24H, AlarmRule, detect_alarms, operating_point, smoothed_trace
from .channels import ChannelSet
from .config import check_keys, from_section
from .environment import machine_description
from .errors import ConfigError, DataError, ModelError
from .io import load_recording
from .model import TrainedModel, inferred_contract
from .preprocess import Preprocessor, TrainingData, sliding_windows
from .szcore import (
    SCORE_COLUMNS,
    bids_recordings,
    parameters_text,
    pooled_scores,
    read_seizures_tsv,
    score_recording,
    write_events_tsv,
)

log = logging.getLogger(__name__)

#: Bonn set letter -> folder name in the shared data.
BONN_FOLDERS = {"A": "A_Z", "B": "B_O", "C": "C_N", "D": "D_F", "E": "E_S"}
#: Task name -> (background sets, seizure sets).
BONN_TASKS = {"ABCD-E": ("ABCD", "E"), "A-E": ("A", "E"), "CD-E": ("CD", "E"), "D-E": ("D", "E")}
CLASSES = ["background", "seizure"]  # sorted: the positive class is last
#: The 19 electrodes of the 10-20 system: the default montage of a saved seizure model.
STANDARD_1020 = [
    "Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz",
    "C4", "T8", "P7", "P3", "Pz", "P4", "P8", "O1", "O2",
]  # fmt: skip


# ----------------------------------------------------------------------- windows
@dataclass
class WindowSpec:
    """Window geometry at the model input: rate, length, hop, and the settling time.

    ``sfreq`` is the model rate (Hz); ``length_s`` and ``hop_s`` the window and hop;
    ``settle_s`` the seconds dropped at the start of each Bonn segment (causal filter
    start-up); ``segment_s`` (optional) MVPFormer's segment length: the window must
    hold a whole number of segments, each a whole number of samples.
    """

    sfreq: float = 100.0
    length_s: float = 4.0
    hop_s: float = 2.0
    settle_s: float = 3.0
    segment_s: float | None = None

    @classmethod
    def from_config(cls, section: dict | None, key: str = "window") -> WindowSpec:
        spec = from_section(cls, section, key)
        for f in fields(cls):
            value = getattr(spec, f.name)
            if value is not None and value < 0:
                raise ConfigError(f"{key}.{f.name}: expected a non-negative number, found {value!r}")
            setattr(spec, f.name, None if value is None else float(value))
        spec.check()
        return spec

    @property
    def n_times(self) -> int:
        return int(round(self.length_s * self.sfreq))

    def check(self) -> None:
        """Errors naming the limit: windows of whole samples (and whole segments)."""
        if self.sfreq <= 0 or self.length_s <= 0 or self.hop_s <= 0:
            raise ConfigError(f"window: sfreq, length_s and hop_s must be positive, found {self}")
        seg = None
        if self.segment_s:
            from models.mvpformer import segment_samples

            seg = segment_samples(self.sfreq, self.segment_s)  # ModelError naming the rate
        n = self.length_s * self.sfreq
        if abs(n - round(n)) > 1e-6:
            raise ConfigError(f"window: {self.length_s} s at {self.sfreq:g} Hz is {n:g} samples, not a whole number")
        if seg:
            if self.n_times % seg:
                raise ConfigError(
                    f"window: {self.n_times} samples is not a whole number of MVPFormer segments of "
                    f"{seg} samples ({self.segment_s} s at {self.sfreq:g} Hz)"
                )


@dataclass
class LabelledWindows:
    """Windows ``X (n, C, T)`` at ``sfreq`` with labels (class names) and segment groups."""

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray  # Bonn segment id of every window, e.g. "E017"
    sfreq: float
    sets: np.ndarray  # Bonn set letter of every window
    task: str = ""
    info: dict = field(default_factory=dict)

    @property
    def y01(self) -> np.ndarray:
        return (self.y == CLASSES[1]).astype(int)


def _bonn_files(root: Path, letters: str) -> list[tuple[str, Path]]:
    files = []
    for letter in letters:
        folder = root / BONN_FOLDERS[letter]
        found = sorted(folder.glob("*.txt")) or sorted(folder.glob("*.TXT"))
        if not found:
            raise DataError(f"{folder}: no Bonn segments (*.txt) for set {letter}")
        files += [(letter, f) for f in found]
    return files


def parse_task(task: str) -> tuple[str, str]:
    """``"ABCD-E"`` -> (background sets, seizure sets)."""
    if task in BONN_TASKS:
        return BONN_TASKS[task]
    neg, sep, pos = str(task).partition("-")
    letters = set(neg + pos)
    if not sep or not neg or not pos or not letters <= set(BONN_FOLDERS) or set(neg) & set(pos):
        raise ConfigError(f"Bonn task: expected sets like 'ABCD-E' or 'A-E' (background-seizure, letters A-E), found {task!r}")
    return neg, pos


def _model_rate_preprocessor(pre: Preprocessor) -> Preprocessor:
    """The same filters without the resampling step (done separately for Bonn)."""
    cfg = pre.to_config()
    cfg["resample"] = None
    return Preprocessor.from_config(cfg)


def preprocess_segment(recording, pre: Preprocessor, spec: WindowSpec) -> np.ndarray:
    """A Bonn segment filtered causally, resampled to ``spec.sfreq``, start-up dropped.

    Bonn's 173.61 Hz has no small rational ratio to common model rates (100 Hz), so
    the fixed-length segment is resampled with MNE's FFT resampler after the causal
    filters; live sources at other rates go through the Preprocessor's own resampler.
    """
    import mne

    filtered = _model_rate_preprocessor(pre).apply(recording, causal=True)
    x = filtered.data
    if abs(filtered.sfreq - spec.sfreq) > 1e-9:
        x = mne.filter.resample(x, up=spec.sfreq, down=filtered.sfreq, npad="auto", verbose="error")
    start = int(round(spec.settle_s * spec.sfreq))
    if x.shape[1] - start < spec.n_times:
        raise DataError(
            f"{Path(recording.provenance.get('path', '?')).name}: {x.shape[1] / spec.sfreq:.2f} s after resampling, "
            f"minus {spec.settle_s:g} s settling, is shorter than one {spec.length_s:g} s window"
        )
    return x[:, start:]


_CACHE: dict = {}


def bonn_windows(
    root, task: str = "ABCD-E", *, preprocessing: Preprocessor | dict | None = None,
    window: WindowSpec | None = None, progress: bool = False,
) -> LabelledWindows:  # fmt: skip
    """Labelled windows of a Bonn task (see the module docstring).

    Returns windows ``(n, 1, T)`` with ``y`` in :data:`CLASSES` and ``groups`` the
    segment id (set letter + file number). Cached per (root, task, settings) in memory.
    """
    from tqdm.auto import tqdm

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (expected the Bonn sets A_Z ... E_S)")
    neg, pos = parse_task(task)
    pre = preprocessing if isinstance(preprocessing, Preprocessor) else Preprocessor.from_config(preprocessing)
    spec = window or WindowSpec()
    spec.check()
    key = (str(root.resolve()), neg + "-" + pos, json.dumps(pre.to_config(), sort_keys=True), repr(spec))
    if key in _CACHE:
        return _CACHE[key]
    X, y, groups, sets = [], [], [], []
    files = _bonn_files(root, neg + pos)
    for letter, path in tqdm(files, desc=f"Bonn {task}", unit="segment", disable=not progress):
        rec = load_recording(path)
        x = preprocess_segment(rec, pre, spec)
        w, _ = sliding_windows(x, spec.sfreq, spec.length_s, spec.hop_s)
        X.append(w)
        label = CLASSES[1] if letter in pos else CLASSES[0]
        y += [label] * len(w)
        groups += [f"{letter}{path.stem[1:]}"] * len(w)
        sets += [letter] * len(w)
    out = LabelledWindows(
        X=np.concatenate(X).astype(np.float32), y=np.asarray(y), groups=np.asarray(groups),
        sfreq=spec.sfreq, sets=np.asarray(sets), task=f"{neg}-{pos}",
        info={"segments": len(files), "windows_per_segment": len(X[0]), "preprocessing": pre.to_config()},
    )  # fmt: skip
    _CACHE[key] = out
    return out


def segment_folds(data: LabelledWindows, n_folds: int = 5, seed: int = 42):
    """Stratified, segment-grouped folds: ``[(train_idx, test_idx), ...]`` over windows."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_seg = {c: len(set(data.groups[data.y == c])) for c in CLASSES}
    if min(n_seg.values()) < n_folds:
        raise DataError(f"{n_folds} folds need at least {n_folds} segments per class, found {n_seg}")
    cv = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return list(cv.split(data.X, data.y, data.groups))


# ----------------------------------------------------------------------- metrics
def segment_metrics(y_true, proba, threshold: float = 0.5) -> dict:
    """Accuracy, sensitivity, specificity, ROC-AUC and Cohen's kappa of binary scores.

    ``y_true`` holds 0/1 (1 = seizure) or class names of :data:`CLASSES`; ``proba``
    the seizure probabilities. A decision is ``proba >= threshold``.
    """
    from sklearn.metrics import (
        accuracy_score,
        cohen_kappa_score,
        recall_score,
        roc_auc_score,
    )

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


def write_detections(path, model, recording, records: list[dict], rule: AlarmRule | None = None) -> int:
    """``bci predict --events``: a seizure model's per-window probabilities (``records``
    of :meth:`~bci.model.TrainedModel.predict_recording`) through the alarm rule (the one
    saved with the model, its operating point, unless given), written as an SzCORE
    ``events.tsv``; confidence is the highest smoothed probability of each event. Returns
    the number of seizures."""
    if CLASSES[1] not in model.classes:
        raise ModelError(f"--events needs a seizure model (a {CLASSES[1]!r} class); {model.name} has {model.classes}")
    times = np.array([r["end_s"] for r in records], dtype=float)
    proba = np.array([r[CLASSES[1]] for r in records], dtype=float)
    hop = float(np.median(np.diff(times))) if len(times) > 1 else model.hop_s
    alarms = detect_alarms(rule or model.alarm_rule(), times, proba)
    events = [(a, b, al["probability"]) for (a, b), al in zip(alarm_events(alarms, hop), alarms)]
    write_events_tsv(path, events, recording.duration)
    return len(events)


# ------------------------------------------------------------ applying models
def channel_probabilities(estimator, X, batch: int = 2048) -> np.ndarray:
    """Seizure probability of every channel of every window, ``(n, C)``, each channel alone.

    Works for any fitted classifier of single-channel windows (a
    :class:`~pipelines.seizure.PerChannel`, a :class:`~pipelines.deep.DeepClassifier`
    or a plain pipeline trained on ``(n, 1, T)``).
    """
    X = np.asarray(X)
    n, c, t = X.shape
    if hasattr(estimator, "channel_proba"):
        return np.concatenate([estimator.channel_proba(X[i : i + batch]) for i in range(0, n, batch)])
    flat = X.reshape(n * c, 1, t)
    p = np.concatenate([estimator.predict_proba(flat[i : i + batch])[:, -1] for i in range(0, len(flat), batch)])
    return p.reshape(n, c)


def joint_probabilities(estimator, X, batch: int = 256) -> np.ndarray | None:
    """MVPFormer with all channels in one token grid (``channel_mode="joint"``), or None."""
    import torch

    final = getattr(estimator, "steps", [[None, estimator]])[-1][1]
    module = getattr(final, "net_", None) and final.module_
    if module is None or not hasattr(module, "channel_mode"):
        return None
    mode = module.channel_mode
    module.channel_mode = "joint"
    module.eval()
    try:
        out = []
        with torch.no_grad():
            for i in range(0, len(X), batch):
                x = torch.as_tensor(final._prepare(X[i : i + batch]))
                out.append(module(x).softmax(-1)[:, -1].numpy())
    finally:
        module.channel_mode = mode
    return np.concatenate(out)


def recording_windows(recording, pre: Preprocessor, spec: WindowSpec, hop_s: float) -> tuple[np.ndarray, np.ndarray]:
    """A continuous recording preprocessed causally (as live), cut into windows.

    Returns ``(windows (n, C, T), decision times (s))``: a window's decision time is
    the time of its last sample.
    """
    processed = pre.apply(recording, causal=True)
    if abs(processed.sfreq - spec.sfreq) > 1e-9:
        raise DataError(
            f"the recording is at {processed.sfreq:g} Hz after preprocessing, the model at {spec.sfreq:g} Hz: "
            "set preprocessing.resample to the model rate"
        )
    if processed.n_times < spec.n_times:
        raise DataError(
            f"the recording lasts {processed.duration:.2f} s, shorter than one {spec.length_s:g} s window "
            f"({spec.n_times} samples at {spec.sfreq:g} Hz)"
        )
    windows, starts = sliding_windows(processed.data, spec.sfreq, spec.length_s, hop_s)
    return windows.astype(np.float32), starts + spec.length_s


# -------------------------------------------------------------------- evaluation
RESULT_COLUMNS = [
    "dataset", "subject", "session", "pipeline", "score", "accuracy", "sensitivity", "specificity",
    "roc_auc", "kappa", "window_accuracy", "window_roc_auc", "time", "fit_time", "predict_time",
    "samples", "n_test", "channels", "recording", "combine", "latency_s", "raw_latency_s", "n_alarms", *SCORE_COLUMNS,
    "evaluation", "scoring", "seed", "params",
]  # fmt: skip
EVAL_KEYS = {"tasks", "n_folds", "threshold", "events"}
EVENT_KEYS = {"recording", "onset_s", "offset_s", "hop_s", "combine", "report_combine", "train_task", "alarm",
              "operating_point", "target_latency_s", "target_false_alarms"}  # fmt: skip


def _model_prep(cfg) -> tuple[Preprocessor, WindowSpec]:
    pre_cfg = dict(cfg.get("preprocessing") or {})
    if pre_cfg.pop("euclidean_alignment", False):
        raise cfg.error("preprocessing.euclidean_alignment", "not used by the seizure evaluation (single-channel windows)")
    pre = Preprocessor.from_config(pre_cfg)
    try:
        spec = WindowSpec.from_config(cfg.get("window"))
    except ConfigError as exc:
        raise cfg.error("window", str(exc)) from None
    if pre.resample and abs(float(pre.resample) - spec.sfreq) > 1e-9:
        raise cfg.error("window.sfreq", f"{spec.sfreq:g} Hz differs from preprocessing.resample ({pre.resample} Hz)")
    return pre, spec


def _check_model_input(estimator, spec: WindowSpec) -> None:
    """MVPFormer limits, checked before any fit: whole segments, at most the time codebook."""
    for _, value in estimator.get_params(deep=True).items():
        if getattr(value, "model", None) == "MVPFormer" and hasattr(value, "module_params"):
            mp = dict(value.module_params or {})
            seg = int(mp.get("segment_len", 2560))
            if spec.n_times % seg:
                raise ConfigError(
                    f"MVPFormer: windows of {spec.n_times} samples ({spec.length_s:g} s at {spec.sfreq:g} Hz) are not "
                    f"a whole number of segments of segment_len={seg} samples"
                )
            if spec.n_times // seg > int(mp.get("max_segments", 110)):
                raise ConfigError(
                    f"MVPFormer: {spec.n_times // seg} segments per window, more than max_segments="
                    f"{mp.get('max_segments', 110)} (the size of the time codebook)"
                )


def _fit(pipeline, X, y, seed: int, sfreq: float):
    from sklearn.base import clone

    from .evaluate import fill_unset

    est = fill_unset(clone(pipeline), seed=seed, sfreq=sfreq)
    t0 = time.perf_counter()
    est.fit(X, y)
    return est, time.perf_counter() - t0


def _predict(est, X, batch: int = 2048) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    p = np.concatenate([est.predict_proba(X[i : i + batch])[:, -1] for i in range(0, len(X), batch)])
    return p, time.perf_counter() - t0


def _malow_path(cfg, events: dict) -> Path:
    data = cfg.get("data") or {}
    return cfg.resolve_path(str(events.get("recording") or data.get("malow") or "../shared/data/seizure/malow"))


def _bids_roots(cfg) -> list[Path]:
    """Roots of the config's ``datasets: [{name: bids, path: ROOT}]`` entries."""
    roots = []
    for i, ds in enumerate(cfg.get("datasets") or []):
        if ds.get("name") != "bids" or set(ds) - {"name", "path", "params"} or ds.get("params") or not ds.get("path"):
            raise cfg.error(f"datasets[{i}]", f"the seizure evaluation reads BIDS-EEG datasets, {{name: bids, path: ROOT}}; found {ds!r}")
        roots.append(cfg.resolve_path(str(ds["path"])))
    return roots


def _continuous_recordings(cfg, events: dict) -> list[dict]:
    """The recordings scored with the detector: Malow (its seizure from ``events``) and
    every recording of the BIDS datasets (seizures from its events.tsv); a seizure end
    of None runs to the end of the recording."""
    malow = _malow_path(cfg, events)
    if not malow.exists():
        raise DataError(f"{malow}: no such recording (evaluation.params.events.recording or data.malow)")
    offset = events.get("offset_s")
    out = [{"dataset": "Malow", "subject": "1", "recording": malow.name, "path": malow,
            "seizures": [(float(events["onset_s"]), None if offset is None else float(offset))]}]  # fmt: skip
    for root in _bids_roots(cfg):
        out += [{"dataset": f"BIDS {root.name}", "subject": bp.subject, "recording": bp.fpath.name, "path": bp.fpath,
                 "seizures": read_seizures_tsv(tsv)} for bp, tsv in bids_recordings(root)]  # fmt: skip
    return out


def evaluate_seizure(cfg, out_dir, progress: bool = True):
    """Bonn segment metrics (cross-validated) and SzCORE event scores on the continuous
    recordings (Malow, BIDS datasets); writes the report.

    Writes ``results.csv`` (one row per task x pipeline x fold, ``session="segments"``,
    and one per continuous recording x pipeline x channel combination,
    ``session="events"``), ``segments.csv`` (out-of-fold probability of every Bonn
    segment), ``traces.csv`` (decision time, probabilities, per recording), ``summary.md``,
    ``malow_trend.png`` and, with ``events``, the detectors trained for them as saved models
    (``models/<pipeline>``, :func:`event_model`). Returns the results frame.
    """
    import mne
    import pandas as pd
    from tqdm.auto import tqdm

    from pipelines.registry import load_pipelines

    mne.set_log_level("ERROR")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = check_keys(cfg["evaluation"].get("params"), EVAL_KEYS, f"{cfg.path}: evaluation.params")
    seed = cfg["seed"]
    pre, spec = _model_prep(cfg)
    bonn_root = cfg.resolve_path(str((cfg.get("data") or {}).get("bonn", "../shared/data/seizure/bonn")))
    if not cfg.get("pipelines"):
        raise cfg.error("pipelines", "expected at least one pipeline (e.g. seizure_bandpower_lr)")
    pipelines = load_pipelines(cfg["pipelines"], cfg)
    for est in pipelines.values():
        _check_model_input(est, spec)
    tasks = params.get("tasks", ["ABCD-E", "A-E"])
    for t in tasks:
        parse_task(t)
    n_folds = int(params.get("n_folds", 5))
    threshold = float(params.get("threshold", 0.5))
    events = params.get("events")
    if events is not None:
        events = check_keys(events, EVENT_KEYS, f"{cfg.path}: evaluation.params.events")
        if "onset_s" not in events:
            raise cfg.error("evaluation.params.events.onset_s", "missing: the seizure onset in seconds")
        detector = AlarmRule.from_config(events.get("alarm"), key="evaluation.params.events.alarm")
        point = events.get("operating_point")
        target = point.get("target_fp_per_24h", TARGET_FP_PER_24H) if isinstance(point, dict) else None
        if point is not None and (set(point) - {"target_fp_per_24h"} or isinstance(target, bool)
                                  or not isinstance(target, (int, float)) or target <= 0):  # fmt: skip
            raise cfg.error("evaluation.params.events.operating_point", f"expected {{target_fp_per_24h: N > 0}}, found {point!r}")
        recordings = _continuous_recordings(cfg, events)
    elif cfg.get("datasets"):
        raise cfg.error("datasets", "continuous recordings are scored with the detector of evaluation.params.events: add that section")
    settings = {
        name: {k: v for k, v in est.get_params(deep=True).items() if isinstance(v, (int, float, str, bool, type(None), list, tuple, dict))}
        for name, est in pipelines.items()
    }  # fmt: skip
    config_text = json.dumps({**cfg, "seed": seed, "pipeline_settings": settings}, indent=2, default=str)
    done, done_segments = _finished_cells(out, config_text)
    (out / "config.json").write_text(config_text)

    rows, seg_rows = [], []
    common = {"evaluation": "seizure", "seed": seed}
    n_cells = len(tasks) * len(pipelines) * n_folds + (len(pipelines) * (1 + len(recordings)) if events else 0)
    bar = tqdm(total=n_cells, desc="seizure", unit="fit", disable=not progress)
    # out-of-fold window probabilities of the events' training task: each pipeline's operating point
    oof: dict = {}
    for task in tasks:
        data = bonn_windows(bonn_root, task, preprocessing=pre, window=spec)
        folds = segment_folds(data, n_folds, seed)
        for name, pipeline in pipelines.items():
            if events and parse_task(task) == parse_task(events.get("train_task", "ABCD-E")):
                oof[name] = (data, np.full(len(data.y), np.nan))
            for k, (train, test) in enumerate(folds):
                key = (f"Bonn {data.task}", f"fold {k + 1}", name)
                if key in done:  # same config, finished by an earlier run: reuse
                    rows.append(done[key])
                    seg_rows += done_segments.get((data.task, name, k + 1), [])
                    bar.update(1)
                    continue
                bar.set_postfix_str(f"{task} {name} fold {k + 1}")
                est, fit_time = _fit(pipeline, data.X[train], data.y[train], seed, spec.sfreq)
                proba, predict_time = _predict(est, data.X[test])
                if name in oof and oof[name][0] is data:
                    oof[name][1][test] = proba
                win = segment_metrics(data.y[test], proba, threshold)
                ids, seg_p, seg_y = per_segment(proba, data.groups[test], data.y[test])
                seg = segment_metrics(seg_y, seg_p, threshold)
                seg_rows += [{"task": data.task, "pipeline": name, "fold": k + 1, "segment": i, "label": int(l), "proba": float(p)}
                             for i, p, l in zip(ids, seg_p, seg_y)]  # fmt: skip
                rows.append({
                    "dataset": f"Bonn {data.task}", "subject": f"fold {k + 1}", "session": "segments", "pipeline": name,
                    "score": seg["accuracy"], **{m: seg[m] for m in ("accuracy", "sensitivity", "specificity", "roc_auc", "kappa")},
                    "window_accuracy": win["accuracy"], "window_roc_auc": win["roc_auc"], "time": fit_time,
                    "fit_time": fit_time, "predict_time": predict_time, "samples": len(train), "n_test": int(seg["n"]),
                    "channels": int(data.X.shape[1]), "scoring": "segment accuracy", **common,
                    "params": json.dumps({"threshold": threshold, "windows_per_segment": data.info["windows_per_segment"]}),
                })  # fmt: skip
                bar.update(1)
        _write(out, rows, seg_rows)

    traces = {}
    if events:
        points = _operating_points(events, detector, oof, spec)
        rows += _events(events, detector, recordings, pipelines, pre, spec, bonn_root, seed, common, traces, bar, points, out)
        _write(out, rows, seg_rows)
        _trace_csv(out / "traces.csv", traces)
        malow = recordings[0]["recording"]
        plot_trend(out / "malow_trend.png", {k[1:]: t for k, t in traces.items() if k[0] == malow}, events, detector)
    bar.close()
    frame = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    title = cfg.get("name", Path(cfg.path).stem)
    summary = summary_markdown(frame, title, cfg, pd.DataFrame(seg_rows), events, detector if events else None, spec, pre, traces)
    (out / "summary.md").write_text(summary)
    return frame


def _operating_points(events, detector: AlarmRule, oof: dict, spec) -> dict:
    """``{pipeline: (rule, report)}``: the threshold for ``events.operating_point.target_fp_per_24h``
    on the pipeline's out-of-fold Bonn window probabilities (as ``bci train`` chooses it)."""
    point = events.get("operating_point")
    if not point:
        return {}
    out = {}
    for name, (data, proba) in oof.items():
        if np.isnan(proba).any():  # folds reused from an earlier run carry no window probabilities
            log.warning("%s: no operating point (folds resumed from an earlier run); delete the output folder to compute it", name)
            continue
        traces = window_traces(data.groups, data.y, proba, spec.length_s, spec.hop_s)
        out[name] = operating_point(detector, traces, float(point.get("target_fp_per_24h", TARGET_FP_PER_24H)))
    return out


def model_folder(pipeline: str) -> str:
    """The folder name of a pipeline's saved event model (``BP+LR`` -> ``BP+LR``, ``a b`` -> ``a_b``)."""
    return re.sub(r"[^\w.+-]", "_", pipeline)


def event_model(name: str, estimator, train: LabelledWindows, pre: Preprocessor, spec: WindowSpec, hop_s: float,
                rule: AlarmRule, seed: int) -> TrainedModel:  # fmt: skip
    """A pipeline fitted on Bonn windows as the saved seizure model ``bci train`` would make
    of it: the 10-20 montage by default, the channels its contract allows, the evaluation's
    preprocessing, window and alarm rule."""
    return TrainedModel(
        name=name, estimator=estimator, classes=list(CLASSES), input_channels=ChannelSet(STANDARD_1020),
        sfreq=spec.sfreq, window_s=spec.length_s, hop_s=hop_s, preprocessing=pre.to_config(), task="seizure",
        channels_contract=inferred_contract(estimator),
        metadata={"seed": seed, "trained_on": [f"Bonn {train.task}"], "n_windows": {c: int((train.y == c).sum()) for c in CLASSES},
                  "alarm": rule.to_config(), "made_by": "bci evaluate (seizure events)"},
    )  # fmt: skip


def _events(events, detector, recordings, pipelines, pre, spec, bonn_root, seed, common, traces, bar, points, out) -> list[dict]:
    """Train every pipeline on all Bonn windows of ``train_task`` and save it as a model
    (``out/models/<pipeline>``, :func:`event_model`); run each on every continuous recording
    and score its events (:func:`bci.szcore.score_recording`), at the config's alarm rule
    and, for the main combination, at the pipeline's operating point (``points``: chosen on
    Bonn, so the row says how that threshold transfers).

    The main combination (``events.combine``, the pipelines' own) goes through the saved
    model's streaming predictor (:meth:`~bci.model.TrainedModel.predict_recording`): its
    alarms are those ``bci stream --model out/models/<pipeline>`` raises on a replay of
    the recording. The other combinations re-combine the same channels' probabilities."""
    from pipelines.seizure import combine_channels

    hop = float(events.get("hop_s", 1.0))
    train = bonn_windows(bonn_root, events.get("train_task", "ABCD-E"), preprocessing=pre, window=spec)
    combine = events.get("combine", "top3")
    extra = [c for c in events.get("report_combine", ["mean", "max"]) if c != combine]
    fitted = {}
    for name, pipeline in pipelines.items():
        bar.set_postfix_str(f"{name} on Bonn {train.task}")
        est, fit_time = _fit(pipeline, train.X, train.y, seed, spec.sfreq)
        model = event_model(name, est, train, pre, spec, hop, detector, seed)
        model.save(out / "models" / model_folder(name))
        fitted[name] = (model, fit_time)
        bar.update(1)
    rows = []
    for rec in recordings:
        signal = load_recording(rec["path"])
        seizures = [(a, signal.duration if b is None else b) for a, b in rec["seizures"]]
        windows, times = recording_windows(signal, pre, spec, hop)
        for name, (model, fit_time) in fitted.items():
            bar.set_postfix_str(f"{rec['recording']} {name}")
            est = model.estimator
            t0 = time.perf_counter()
            # the main combination: the saved model through its streaming predictor, as bci stream runs it
            records = model.predict_recording(signal, hop_s=hop)
            predict_time = time.perf_counter() - t0
            if [round(r["end_s"], 6) for r in records] != [round(float(t), 6) for t in times]:
                raise DataError(f"{name}: the streaming predictor's windows differ from the evaluation's on {rec['recording']}")
            per_channel = channel_probabilities(est, windows)
            variants = {str(c): combine_channels(per_channel, c) for c in extra}
            variants = {str(combine): np.array([r[CLASSES[1]] for r in records]), **variants}
            joint = joint_probabilities(est, windows)
            if joint is not None:
                variants["joint"] = joint
            rules = {how: detector for how in variants}
            if name in points:
                rule_op, _ = points[name]
                variants[f"{combine} @ {rule_op.threshold:g}"] = variants[str(combine)]
                rules[f"{combine} @ {rule_op.threshold:g}"] = rule_op
            for how, proba in variants.items():
                alarms = detect_alarms(rules[how], times, proba)
                scores = score_recording(seizures, alarm_events(alarms, hop), signal.duration)
                traces[(rec["recording"], name, how)] = {
                    "times": times, "proba": proba, "smooth": smoothed_trace(rules[how], times, proba), "alarms": alarms,
                    "per_channel": per_channel if how == str(combine) else None, "channels": list(signal.channels.names),
                    "seizures": seizures, "duration": signal.duration, "hop": hop,
                }  # fmt: skip
                rows.append({
                    "dataset": rec["dataset"], "subject": rec["subject"], "session": "events", "recording": rec["recording"],
                    "pipeline": name, "combine": how, "score": scores["event_f1"], **scores,
                    "latency_s": latency([a["raised_s"] for a in alarms], seizures),
                    "raw_latency_s": latency(times[proba >= rules[how].threshold], seizures), "n_alarms": len(alarms),
                    "time": fit_time, "fit_time": fit_time, "predict_time": predict_time, "samples": len(train.y),
                    "n_test": len(times), "channels": int(windows.shape[1]), "scoring": "SzCORE event F1 (timescoring)",
                    **common, "params": json.dumps({"train_task": train.task, "seizures": seizures, "hop_s": hop,
                                                    "alarm": rules[how].to_config(),
                                                    "operating_point": points[name][1] if rules[how] is not detector else None,
                                                    "alarm_times": [round(a["raised_s"], 2) for a in alarms]}),
                })  # fmt: skip
            bar.update(1)
    return rows


def _finished_cells(out: Path, config_text: str) -> tuple[dict, dict]:
    """Segment cells of an earlier run of the *same* config in ``out`` (resume), else nothing."""
    import pandas as pd

    paths = [out / "config.json", out / "results.csv", out / "segments.csv"]
    if not all(p.is_file() for p in paths) or paths[0].read_text() != config_text:
        return {}, {}
    res = pd.read_csv(paths[1])
    res = res[res.session == "segments"].astype(object).where(res.notna(), None)
    done = {(r["dataset"], r["subject"], r["pipeline"]): r for r in res.to_dict("records")}
    segments: dict = {}
    for r in pd.read_csv(paths[2]).to_dict("records"):
        segments.setdefault((r["task"], r["pipeline"], int(r["fold"])), []).append(r)
    return done, segments


def _write(out: Path, rows, seg_rows) -> None:
    import pandas as pd

    pd.DataFrame(rows, columns=RESULT_COLUMNS).to_csv(out / "results.csv", index=False)
    pd.DataFrame(seg_rows, columns=["task", "pipeline", "fold", "segment", "label", "proba"]).to_csv(out / "segments.csv", index=False)


def _trace_csv(path: Path, traces: dict) -> None:
    import pandas as pd

    frames = [pd.DataFrame({"recording": r, "pipeline": n, "combine": c, "time_s": t["times"], "proba": t["proba"],
                            "smoothed": t["smooth"]}) for (r, n, c), t in traces.items()]  # fmt: skip
    if frames:
        pd.concat(frames).to_csv(path, index=False, float_format="%.5g")


def plot_trend(path: Path, traces: dict, events: dict, detector: AlarmRule) -> None:
    """Probability over the recording per pipeline (combined channels; MVPFormer joint
    dashed), threshold, onset, alarms; bottom: per-channel probabilities of the first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    combine = str(events.get("combine", "top3"))
    names = list(dict.fromkeys(n for n, _ in traces))
    fig, axes = plt.subplots(len(names) + 1, 1, figsize=(10, 2.2 * (len(names) + 1) + 0.6), sharex=True)
    onset = float(events["onset_s"])
    for ax, name in zip(axes, names):
        t = traces[(name, combine)]
        ax.plot(t["times"], t["proba"], lw=0.6, alpha=0.5, color="C0", label=f"channels {combine}")
        ax.plot(t["times"], t["smooth"], lw=1.6, color="C0", label=f"smoothed {detector.smoothing_s:g} s")
        if (name, "joint") in traces:
            j = traces[(name, "joint")]
            ax.plot(j["times"], j["smooth"], lw=1.2, ls="--", color="C2", label="joint 21-channel (smoothed)")
        ax.axhline(detector.threshold, color="k", lw=0.8, ls=":", label="threshold")
        ax.axvline(onset, color="C3", lw=1.5, label=f"onset {onset:g} s")
        for a in t["alarms"]:
            ax.axvline(a["raised_s"], color="C1", lw=1.0, ls="--")
            ax.plot([a["raised_s"]], [1.02], marker="v", color="C1", clip_on=False)
        ax.set_ylim(-0.02, 1.05)
        ax.set_ylabel("P(seizure)")
        ax.set_title(f"{name}: alarms (orange) after {detector.duration_s:g} s above threshold", fontsize=9)
        ax.legend(loc="upper left", fontsize=7, ncol=3)
    t = traces[(names[0], combine)]
    ax = axes[-1]
    mesh = ax.pcolormesh(t["times"], np.arange(len(t["channels"])), t["per_channel"].T, vmin=0, vmax=1, shading="nearest", cmap="magma")
    ax.set_yticks(np.arange(len(t["channels"])), t["channels"], fontsize=6)
    ax.axvline(onset, color="C3", lw=1.5)
    ax.set_title(f"{names[0]}: per-channel P(seizure)", fontsize=9)
    ax.set_xlabel("time (s, decision at the end of each window)")
    fig.colorbar(mesh, ax=axes, fraction=0.02, pad=0.01)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(mean, std=None, digits=3):
    if mean is None or (isinstance(mean, float) and np.isnan(mean)):
        return "n/a"
    return f"{mean:.{digits}f}" if std is None or np.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def segment_table(frame, seg_frame) -> list[str]:
    """Markdown rows: per task and pipeline, fold mean ± std and pooled out-of-fold metrics."""
    lines = []
    seg = frame[frame.session == "segments"]
    for dataset, d in seg.groupby("dataset", sort=False):
        task = dataset.split(" ", 1)[1]
        lines += ["", f"### {dataset} (segment-grouped {d.subject.nunique()}-fold CV)", ""]
        lines.append("| pipeline | accuracy | sensitivity | specificity | ROC-AUC | kappa | pooled acc | pooled AUC | window acc | fit s/fold |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        order = d.groupby("pipeline").accuracy.mean().sort_values(ascending=False).index
        for name in order:
            r = d[d.pipeline == name]
            s = seg_frame[(seg_frame.task == task) & (seg_frame.pipeline == name)]
            pooled = segment_metrics(s.label.to_numpy(), s.proba.to_numpy()) if len(s) else {}
            cells = [_fmt(r[m].mean(), r[m].std()) for m in ("accuracy", "sensitivity", "specificity", "roc_auc", "kappa")]
            lines.append(
                f"| {name} | " + " | ".join(cells) + f" | {_fmt(pooled.get('accuracy'))} | {_fmt(pooled.get('roc_auc'))} | "
                f"{_fmt(r.window_accuracy.mean())} | {r.fit_time.mean():.1f} |"
            )
    return lines


def _rate(scores) -> str:
    """FP/24 h with the hours it was measured on."""
    return f"{_fmt(scores['event_fp_per_24h'], digits=1)} ({scores['hours']:.2f} h)"


def event_table(frame, target_latency: float = 20.0, target_fa: int = 1) -> list[str]:
    """Markdown: SzCORE scores per continuous recording, pipeline and channel combination,
    then pooled over the recordings (counts and hours summed)."""
    ev = frame[frame.session == "events"]
    if ev.empty:
        return []
    lines = []
    for (dataset, recording), d in ev.groupby(["dataset", "recording"], sort=False):
        lines += ["", f"### {dataset}: {recording} ({int(d.event_ref.iloc[0])} seizure(s), {d.hours.iloc[0]:.2f} h)", "",
                  "| pipeline | channels | event sensitivity | event precision | event F1 | TP / FP | FP/24 h (h scored) | "
                  "sample sensitivity | sample precision | sample F1 | latency s | first crossing s | target met |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for _, r in d.iterrows():
            met = r.event_sensitivity == 1 and r.latency_s <= target_latency and r.event_fp <= target_fa
            lines.append(
                f"| {r.pipeline} | {r['combine']} | {_fmt(r.event_sensitivity)} | {_fmt(r.event_precision)} | "
                f"{_fmt(r.event_f1)} | {int(r.event_tp)} / {int(r.event_fp)} | {_rate(r)} | {_fmt(r.sample_sensitivity)} | "
                f"{_fmt(r.sample_precision)} | {_fmt(r.sample_f1)} | {_fmt(r.latency_s, digits=1)} | "
                f"{_fmt(r.raw_latency_s, digits=1)} | {'yes' if met else 'no'} |"
            )
    lines += ["", f"### Pooled over {ev.groupby(['dataset', 'recording']).ngroups} recording(s)", "",
              "| pipeline | channels | seizures | event sensitivity | event precision | event F1 | TP / FP | "
              "FP/24 h (h scored) | sample sensitivity | sample precision | sample F1 |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (name, how), d in ev.groupby(["pipeline", "combine"], sort=False):
        p = pooled_scores(d.to_dict("records"))
        lines.append(
            f"| {name} | {how} | {p['event_ref']} | {_fmt(p['event_sensitivity'])} | {_fmt(p['event_precision'])} | "
            f"{_fmt(p['event_f1'])} | {p['event_tp']} / {p['event_fp']} | {_rate(p)} | {_fmt(p['sample_sensitivity'])} | "
            f"{_fmt(p['sample_precision'])} | {_fmt(p['sample_f1'])} |"
        )
    return lines


def detector_grid(traces: dict, events: dict, detector: AlarmRule) -> list[str]:
    """Post-hoc table: latency / SzCORE false positives of the main combination for other detector settings."""
    combine = str(events.get("combine", "top3"))
    keys = [(r, n) for r, n, c in traces if c == combine]
    if not keys:
        return []
    settings = [(0.0, 0.0), (2.0, 2.0), (5.0, 0.0), (0.0, 5.0), (5.0, 5.0), (10.0, 5.0)]
    lines = ["", f"Detector settings (post hoc, same recordings, channels {combine}, threshold {detector.threshold:g}): "
             "latency s / event false positives (SzCORE).", "",
             "| recording | pipeline | " + " | ".join(f"smooth {a:g} s, hold {b:g} s" for a, b in settings) + " |",
             "|---" * (len(settings) + 2) + "|"]  # fmt: skip
    for rec, name in keys:
        t = traces[(rec, name, combine)]
        cells = []
        for smooth, hold in settings:
            alarms = detect_alarms(AlarmRule(detector.threshold, hold, smooth, detector.warmup_s), t["times"], t["proba"])
            fp = score_recording(t["seizures"], alarm_events(alarms, t["hop"]), t["duration"])["event_fp"]
            cells.append(f"{_fmt(latency([a['raised_s'] for a in alarms], t['seizures']), digits=0)} / {fp}")
        lines.append(f"| {rec} | {name} | " + " | ".join(cells) + " |")
    return lines


def summary_markdown(frame, title, cfg, seg_frame, events, detector, spec, pre, traces=None) -> str:
    lines = [f"# {title}", "", f"Seed {cfg['seed']}; machine: {machine_description()}.", ""]
    lines.append(
        f"Preprocessing (causal, as live): {json.dumps(pre.to_config())}. Windows: {spec.length_s:g} s at {spec.sfreq:g} Hz, "
        f"hop {spec.hop_s:g} s on Bonn, first {spec.settle_s:g} s of each Bonn segment dropped (filter start-up)."
    )
    lines += ["", "## Bonn segments", "",
              "A segment's probability is the mean over its windows; decision at 0.5. Folds are grouped by segment "
              "(the files carry no subject identity, so segments of one patient can fall in train and test). "
              "Accuracy etc.: mean ± std over folds; pooled: all out-of-fold segments together."]  # fmt: skip
    lines += segment_table(frame, seg_frame)
    seg = frame[frame.session == "segments"]
    for dataset, d in seg.groupby("dataset", sort=False):
        best = d.groupby("pipeline").accuracy.mean().sort_values(ascending=False)
        verdict = "meets" if best.iloc[0] >= 0.97 else "misses"
        lines.append(f"\n{dataset}: best **{best.index[0]}** {best.iloc[0]:.3f}, {verdict} the 0.97 target.")
    if events:
        tl = float(events.get("target_latency_s", 20.0))
        tf = int(events.get("target_false_alarms", 1))
        lines += ["", "## Continuous recordings: SzCORE scores", "",
                  f"Trained on all Bonn windows of {events.get('train_task', 'ABCD-E')} (single channel), run on every "
                  f"channel of each recording every {float(events.get('hop_s', 1.0)):g} s; channel probabilities combined "
                  f"('top3' = mean of the 3 highest; 'joint' = MVPFormer on all channels at once). Detector: trailing mean "
                  f"over {detector.smoothing_s:g} s, threshold {detector.threshold:g}, at least {detector.duration_s:g} s "
                  f"above it, no alarm in the first {detector.warmup_s:g} s; an event spans its run above threshold. "
                  f"Reference: Malow from onset {float(events['onset_s']):g} s (documented: about 350 s) to "
                  f"{'the end of the recording' if events.get('offset_s') is None else str(events['offset_s']) + ' s'}; "
                  f"BIDS recordings: the seizures of their events.tsv."
                  + (f" '{events.get('combine', 'top3')} @ T': the same at the pipeline's operating point T, the lowest "
                     f"threshold whose alarms on its out-of-fold Bonn background windows stay within "
                     f"{float(events['operating_point'].get('target_fp_per_24h', TARGET_FP_PER_24H)):g} per 24 h (as `bci train` saves it): "
                     f"how that threshold transfers." if events.get("operating_point") else ""), "",
                  f"Scored as SzCORE scores (Dan et al., Epilepsia 2025) with its reference library timescoring, "
                  f"{parameters_text()}. Event level: a seizure is detected when a detector event overlaps it widened by "
                  f"the tolerances; detector events touching no widened seizure are false positives (FP/24 h with the "
                  f"hours scored: one FP in a 500 s recording is 173 FP/24 h). Sample level: per second. Pooled: counts and "
                  f"hours summed over recordings. Latency: first alarm at or after onset within the seizure (mean over the "
                  f"seizures reached). Target: every seizure detected within {tl:g} s with <= {tf} event false positive. "
                  f"The '{events.get('combine', 'top3')}' rows are the saved models `models/<pipeline>` through their "
                  f"streaming predictor: `bci stream --model models/<pipeline>` raises the same alarms on a replay."]  # fmt: skip
        lines += event_table(frame, tl, tf)
        lines += ["", "'first crossing': first decision within the seizure whose combined (unsmoothed) probability reaches "
                  "the threshold, the model's share of the latency; the rest is the detector's smoothing and minimum "
                  "duration. Windows end at the decision time, so a window needs some seconds of ictal signal."]
        lines += detector_grid(traces or {}, events, detector)
        lines += ["", "![probability trend](malow_trend.png)"]
    return "\n".join(lines) + "\n"


def summary_text(frame) -> str:
    """Console summary for ``bci evaluate``."""
    seg = frame[frame.session == "segments"]
    out = []
    if len(seg):
        agg = seg.groupby(["dataset", "pipeline"])[["accuracy", "sensitivity", "specificity", "roc_auc", "kappa"]].mean()
        out.append(agg.to_string(float_format=lambda v: f"{v:.3f}"))
    ev = frame[frame.session == "events"]
    if len(ev):
        cols = ["recording", "pipeline", "combine", "event_sensitivity", "event_precision", "event_f1", "event_fp_per_24h",
                "hours", "latency_s"]  # fmt: skip
        out.append(ev[cols].to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    return "\n\n".join(out)


# ------------------------------------------------------------------ bci train
def annotated_windows(recording, pre: Preprocessor, spec: WindowSpec, hop_s: float, events) -> tuple[np.ndarray, np.ndarray]:
    """Windows of a continuous annotated recording labelled by seizure annotations.

    A window is "seizure" when an annotation named in ``events`` overlaps its last
    second (the last MVPFormer segment when ``spec.segment_s`` is set), the seizure
    head's label rule; otherwise "background".
    """
    windows, ends = recording_windows(recording, pre, spec, hop_s)
    names = {str(e) for e in (events or ["seizure"])}
    ann = recording.annotations
    spans = [(o, o + d) for o, d, desc in zip(ann.onset, ann.duration, ann.description) if str(desc) in names]
    last = spec.segment_s or 1.0
    y = np.array([
        CLASSES[1] if any(a < end and b > end - last for a, b in spans) else CLASSES[0] for end in ends
    ])  # fmt: skip
    return windows, y


def training_data(cfg, section: dict, pre: Preprocessor, progress: bool = False):
    """Labelled windows for ``bci train`` with ``train: {task: seizure}``.

    ``train.recordings`` lists Bonn folders (labelled by set: ``train.labels``, a task
    such as ``ABCD-E``) and/or continuous recordings with seizure annotations (named by
    ``train.events``, default ``[seizure]``). ``train.window`` is a
    :class:`WindowSpec` mapping (``sfreq`` must equal ``preprocessing.resample``).
    ``train.channels`` is the montage the saved model expects live (default: the 19
    electrodes of the 10-20 system); the detector itself classifies one channel at a
    time, so it is trained on single-channel windows whatever that montage.
    """
    try:
        spec = WindowSpec.from_config(section.get("window"), key="train.window")
    except ConfigError as exc:
        raise cfg.error("train.window", str(exc)) from None
    if not pre.resample or abs(float(pre.resample) - spec.sfreq) > 1e-9:
        raise cfg.error(
            "preprocessing.resample",
            f"a seizure model needs preprocessing.resample equal to train.window.sfreq ({spec.sfreq:g} Hz), "
            f"found {pre.resample!r}: live sources are resampled to the model rate",
        )
    entries = section.get("recordings") or []
    if not entries:
        raise cfg.error("train.recordings", "expected Bonn folders and/or recordings with seizure annotations")
    task = section.get("labels") or "ABCD-E"
    X, y, groups, sources = [], [], [], []
    for entry in entries:
        path = cfg.resolve_path(str(entry))
        if path.is_dir() and any((path / f).is_dir() for f in BONN_FOLDERS.values()):
            data = bonn_windows(path, str(task), preprocessing=pre, window=spec, progress=progress)
            X.append(data.X)
            y.append(data.y)
            groups.append(np.char.add("bonn/", data.groups.astype(str)))
            sources.append(f"Bonn {data.task}")
        else:
            rec = load_recording(path)
            w, labels = annotated_windows(rec, pre, spec, spec.hop_s, section.get("events"))
            X.append(w)
            y.append(labels)
            groups.append(np.full(len(w), path.name))
            sources.append(path.name)
    channels = {w.shape[1] for w in X}
    if len(channels) > 1:
        raise DataError(f"training windows have different channel counts {sorted(channels)}; train on one kind of source")
    X, y = np.concatenate(X), np.concatenate(y)
    found = sorted(set(y.tolist()))
    if found != CLASSES:
        raise DataError(f"seizure training needs both classes {CLASSES}, found {found}")
    montage = section.get("channels") or STANDARD_1020
    log.info("seizure training: %d windows (%s) at %g Hz, deployed on %d channels", len(y), ", ".join(sources), spec.sfreq, len(montage))
    return TrainingData(
        X=X, y=y, groups=np.concatenate(groups), sfreq=spec.sfreq, input_channels=ChannelSet(list(montage)),
        window_s=spec.length_s, classes=list(CLASSES), sources=sources,
    )  # fmt: skip
