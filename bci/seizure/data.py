"""Seizure data: Bonn segments as labelled windows, continuous recordings cut as live, ``bci train``'s data.

**Bonn** (Andrzejak et al. 2001): sets A-E of 100 single-channel 23.6 s segments at 173.61 Hz;
E is ictal. Tasks: ``"ABCD-E"`` (all non-ictal sets vs E) and ``"A-E"`` (healthy scalp vs
ictal). Each segment is filtered with the configured :class:`~bci.preprocess.Preprocessor` in
its causal (live) form, resampled to the model rate, its first ``settle_s`` seconds (the causal
filters' start-up transient) dropped, and cut into windows. The files carry no subject
identity, so folds are *segment-grouped* (:func:`segment_folds`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold
from tqdm.auto import tqdm

from models.mvpformer import segment_samples

from ..channels import ChannelSet
from ..config import from_section
from ..errors import ConfigError, DataError
from ..io import load_recording
from ..preprocess import Preprocessor, TrainingData, sliding_windows

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


_CACHE: dict = {}  # Bonn windows per (root, task, preprocessing, window): folds and events reuse them


def bonn_windows(
    root, task: str = "ABCD-E", *, preprocessing: Preprocessor | dict | None = None,
    window: WindowSpec | None = None, progress: bool = False,
) -> LabelledWindows:  # fmt: skip
    """Labelled windows of a Bonn task (see the module docstring).

    Returns windows ``(n, 1, T)`` with ``y`` in :data:`CLASSES` and ``groups`` the
    segment id (set letter + file number). Cached per (root, task, settings) in memory.
    """
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
    n_seg = {c: len(set(data.groups[data.y == c])) for c in CLASSES}
    if min(n_seg.values()) < n_folds:
        raise DataError(f"{n_folds} folds need at least {n_folds} segments per class, found {n_seg}")
    cv = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return list(cv.split(data.X, data.y, data.groups))


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

