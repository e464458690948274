"""Seizure detection: labelled Bonn windows, segment and event metrics, detectors, evaluation.

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

Modules: :mod:`.data` (Bonn windows, continuous recordings cut as live, training data),
:mod:`.metrics`, :mod:`.detector` (detectors applied, the saved event model, ``bci predict
--events``), :mod:`.evaluation` (the evaluation kind) and :mod:`.report` (its tables and plot).
"""

from .data import (
    BONN_FOLDERS,
    BONN_TASKS,
    CLASSES,
    STANDARD_1020,
    LabelledWindows,
    WindowSpec,
    annotated_windows,
    bonn_windows,
    parse_task,
    recording_windows,
    segment_folds,
    training_data,
)
from .detector import channel_probabilities, event_model, joint_probabilities, model_folder, write_detections
from .evaluation import RESULT_COLUMNS, evaluate_seizure
from .metrics import alarm_events, latency, per_segment, segment_metrics, window_traces
from .report import event_table, summary_markdown, summary_text

__all__ = [
    "BONN_FOLDERS", "BONN_TASKS", "CLASSES", "RESULT_COLUMNS", "STANDARD_1020", "LabelledWindows", "WindowSpec",
    "alarm_events", "annotated_windows", "bonn_windows", "channel_probabilities", "evaluate_seizure", "event_model",
    "event_table", "joint_probabilities", "latency", "model_folder", "parse_task", "per_segment", "recording_windows",
    "segment_folds", "segment_metrics", "summary_markdown", "summary_text", "training_data", "window_traces",
    "write_detections",
]  # fmt: skip
