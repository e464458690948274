"""Seizure detectors applied: per-channel and joint probabilities, the saved event model, ``bci predict --events``."""

from __future__ import annotations

import re

import numpy as np

from ..alarm import AlarmRule, detect_alarms
from ..channels import ChannelSet
from ..errors import ModelError
from ..model import TrainedModel, inferred_contract
from ..preprocess import Preprocessor
from ..szcore import write_events_tsv
from .data import CLASSES, STANDARD_1020, LabelledWindows, WindowSpec
from .metrics import alarm_events


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

