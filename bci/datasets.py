"""Datasets for evaluation: MOABB datasets by name, offline-safe, and local epochs folders.

:func:`get_dataset` returns a MOABB dataset object ready for MOABB paradigms and
evaluations. Offline use is the normal case here: MOABB's download provider defaults
to the dataset's own downloader (``MOABB_DOWNLOAD_PROVIDER=upstream``) so no online
index is consulted first; files already in the ``MNE_DATA`` cache load without a
download, and a missing subject fails fast with a :class:`DataError` saying so (a user
with internet gets it downloaded by MOABB as usual).

:func:`local_epochs` (dataset name ``LocalEpochs``) reads a folder of ``<prefix><NN>.npz``
files, each with arrays ``X`` (trials, channels, samples), ``y`` (class codes),
``session``, ``ch_names`` and ``sfreq`` - the BCI Competition IV 2b export in
``../shared/data/bnci2014_004`` is one. MOABB paradigms epoch continuous signals, so
each trial is laid out with one trial-length of mirror padding on both sides (filter
transients fall in the padding, never in the trial) and a stim channel marks its
onset; epoching with the dataset's interval gives the trials back exactly.

:func:`local_recordings` (dataset name ``LocalRecordings``) turns continuous recordings
with event annotations - e.g. the files ``bci record`` / ``bci calibrate`` write - into a
MOABB dataset of one subject whose sessions are the files, so ``bci evaluate`` runs
cross-session evaluation on one's own calibration sessions.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

import mne
import moabb.datasets as mds
import numpy as np
from mne import get_config
from moabb.datasets.base import BaseDataset
from moabb.datasets.utils import dataset_list

from .config import Config
from .errors import ConfigError, DataError
from .io import Recording, load_recording

os.environ.setdefault("MOABB_DOWNLOAD_PROVIDER", "upstream")


def _moabb_dataset_class(name: str):
    cls = getattr(mds, name, None)
    if cls is None or not isinstance(cls, type):
        known = sorted(d.__name__ for d in dataset_list)
        close = [k for k in known if k.lower().startswith(name.lower()[:4])]
        hint = f" (did you mean {', '.join(close[:5])}?)" if close else ""
        raise ConfigError(f"unknown dataset {name!r}{hint}; LocalEpochs reads a folder of .npz epochs")
    return cls


def get_dataset(name: str, **params):
    """A MOABB dataset by class name (``'PhysionetMI'``), or ``'LocalEpochs'`` (``path=``).

    PhysionetMI keeps only the imagery runs asked for: its feet runs (6, 10, 14) are
    dropped unless ``feet_runs`` is given, since left/right paradigms never use them.
    """
    local = {"LocalEpochs": local_epochs, "LocalRecordings": local_recordings}
    if name in local:
        try:
            return local[name](**params)
        except TypeError as exc:
            raise ConfigError(f"dataset {name}: {exc}") from None
    feet_runs = params.pop("feet_runs", [])
    cls = _moabb_dataset_class(name)
    try:
        dataset = cls(**params)
    except TypeError as exc:
        raise ConfigError(f"dataset {name}: {exc}") from None
    if name == "PhysionetMI":
        dataset.feet_runs = list(feet_runs)
    return dataset


def load_subject_data(paradigm, dataset, subject: int, **kwargs):
    """``paradigm.get_data`` for one subject, with a clear error when it is not available."""
    if subject not in dataset.subject_list:
        raise DataError(
            f"{dataset.code}: subject {subject} does not exist (subjects: "
            f"{dataset.subject_list[0]}..{dataset.subject_list[-1]})"
        )
    try:
        return paradigm.get_data(dataset, [subject], **kwargs)
    except (OSError, ConnectionError) as exc:  # requests' ConnectionError is an OSError

        where = get_config("MNE_DATA") or "~/mne_data"
        raise DataError(
            f"{dataset.code}: subject {subject} is not in the local cache ({where}) and could not "
            f"be downloaded ({type(exc).__name__}); set MNE_DATA to a folder holding it"
        ) from None


def local_epochs(path, classes=None, paradigm="imagery", unit_factor=1e-6, code="LocalEpochs"):
    """The MOABB dataset over a folder of per-subject ``.npz`` epochs.

    Parameters
    ----------
    path : str
        Folder holding ``<prefix>NN.npz`` files (``NN`` = subject number).
    classes : dict
        Class code -> class name, e.g. ``{1: 'left_hand', 2: 'right_hand'}`` (the default).
    paradigm : str
        MOABB paradigm family (``'imagery'``).
    unit_factor : float
        Factor from the file's units to volts (``1e-6`` when the file is in microvolts).
    """

    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: epochs folder not found")
    files = {}
    for f in sorted(folder.glob("*.npz")):
        m = re.search(r"(\d+)$", f.stem)
        if m:
            files[int(m.group(1))] = f
    if not files:
        raise DataError(f"{folder}: no <name>NN.npz epoch files")
    classes = {int(k): str(v) for k, v in (classes or {1: "left_hand", 2: "right_hand"}).items()}
    first = _read_npz(files[min(files)], classes)
    n_sessions = len(np.unique(first["session"]))
    interval = [0.0, first["X"].shape[2] / float(first["sfreq"])]

    class _LocalEpochs(BaseDataset):
        __doc__ = f"Epochs from {folder} (MOABB dataset built by bci.datasets.local_epochs)."

        def __init__(self):
            super().__init__(
                subjects=sorted(files),
                sessions_per_subject=n_sessions,
                events={name: code_ for code_, name in classes.items()},
                code=code,
                interval=interval,
                paradigm=paradigm,
            )
            self.folder = folder

        def _get_single_subject_data(self, subject):
            return _subject_raws(_read_npz(files[subject], classes), unit_factor)

        def data_path(self, subject, path=None, force_update=False, update_path=None, verbose=None):
            return [str(files[subject])]

    _LocalEpochs.__name__ = code
    return _LocalEpochs()


def local_recordings(path, events, interval, paradigm="imagery", code="LocalRecordings"):
    """The MOABB dataset over continuous recordings of one person: one session per file.

    Parameters
    ----------
    path : str or list of str
        Recording files (any format :func:`bci.io.load_recording` reads) or glob patterns;
        sorted by name, file ``i`` becomes session ``i``.
    events : dict
        Annotation description -> class name, e.g. ``{'left_hand': 'left_hand'}`` for
        ``bci calibrate`` files or ``{'T1': 'left_hand', 'T2': 'right_hand'}`` for PhysioNet.
    interval : [start, end]
        Trial window in seconds after each event onset.
    """

    patterns = [path] if isinstance(path, (str, Path)) else list(path)
    files = [Path(f) for p in patterns for f in (sorted(glob.glob(str(p))) or [str(p)])]
    missing = [str(f) for f in files if not f.exists()]
    if missing or not files:
        raise DataError(f"LocalRecordings: no recording at {', '.join(missing) or path}")
    if not isinstance(events, dict) or not events:
        raise ConfigError(f"LocalRecordings: events must map annotation names to classes, found {events!r}")
    classes = sorted(set(map(str, events.values())))
    codes = {name: i + 1 for i, name in enumerate(classes)}

    class _LocalRecordings(BaseDataset):
        __doc__ = f"Recordings {', '.join(f.name for f in files)} (built by bci.datasets.local_recordings)."

        def __init__(self):
            super().__init__(
                subjects=[1], sessions_per_subject=len(files), events=codes, code=code,
                interval=[float(v) for v in interval], paradigm=paradigm,
            )  # fmt: skip

        def _get_single_subject_data(self, subject):
            out = {}
            for i, f in enumerate(files):
                raw = load_recording(f).to_raw()
                ann = raw.annotations
                keep = [j for j, d in enumerate(ann.description) if d in events]
                if not keep:
                    raise DataError(f"{f}: none of the events {sorted(events)} occur (annotations: {sorted(set(ann.description))})")
                raw.set_annotations(ann[keep])
                raw.annotations.rename({k: str(v) for k, v in events.items() if k in set(ann.description)})
                out[str(i)] = {"0": raw}
            return out

        def data_path(self, subject, path=None, force_update=False, update_path=None, verbose=None):
            return [str(f) for f in files]

    _LocalRecordings.__name__ = code
    return _LocalRecordings()


def _read_npz(path: Path, classes: dict[int, str]) -> dict:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in ("X", "y", "session", "ch_names", "sfreq")}
    except KeyError as exc:
        raise DataError(f"{path}: missing array {exc.args[0]!r} (need X, y, session, ch_names, sfreq)") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    X, y, session = arrays["X"], arrays["y"], arrays["session"]
    if X.ndim != 3:
        raise DataError(f"{path}: X must be (trials, channels, samples), found shape {X.shape}")
    if not len(X) == len(y) == len(session):
        raise DataError(f"{path}: X has {len(X)} trials but y has {len(y)} and session {len(session)}")
    if X.shape[1] != len(arrays["ch_names"]):
        raise DataError(f"{path}: X has {X.shape[1]} channels but ch_names lists {len(arrays['ch_names'])}")
    unknown = sorted(set(np.unique(y).tolist()) - set(classes))
    if unknown:
        raise DataError(f"{path}: unknown class labels {unknown}; the config's classes are {classes}")
    for s in np.unique(session):
        present = np.unique(y[session == s])
        if len(present) < 2:
            raise DataError(f"{path}: session {s} holds only class {present.tolist()}; need at least two")
    return arrays


def _subject_raws(arrays: dict, unit_factor: float) -> dict:
    """One MNE Raw per session: mirror-padded trials and a stim channel at each onset."""

    X, y, session = arrays["X"], arrays["y"], arrays["session"]
    sfreq = float(arrays["sfreq"])
    names = [str(n) for n in arrays["ch_names"]]
    n_times = X.shape[2]
    out = {}
    for s in np.unique(session):
        trials = X[session == s].astype(np.float64) * unit_factor
        labels = y[session == s]
        padded = np.concatenate([trials[:, :, ::-1], trials, trials[:, :, ::-1]], axis=2)
        data = np.concatenate(list(padded), axis=1)
        stim = np.zeros((1, data.shape[1]))
        stim[0, np.arange(len(trials)) * 3 * n_times + n_times] = labels
        info = mne.create_info(names + ["STI"], sfreq, ["eeg"] * len(names) + ["stim"])
        raw = mne.io.RawArray(np.vstack([data, stim]), info, verbose="error")
        raw.set_montage("standard_1020", on_missing="ignore")
        out[f"{int(s)}"] = {"0": raw}
    return out


def training_recordings(cfg: Config, section: dict) -> list[tuple[str, Recording, tuple | None]]:
    """``(group, recording, trial_interval)`` for every run of the configured data.

    MOABB datasets give one recording per (subject, session, run) with their trial
    interval; local files give one recording each (group = file name).
    """
    out = []
    mne_data = (cfg.get("data") or {}).get("mne_data")
    if mne_data and not os.environ.get("MNE_DATA"):
        os.environ["MNE_DATA"] = str(cfg.resolve_path(mne_data))
    for i, spec in enumerate(cfg.get("datasets") or []):
        dataset = get_dataset(spec["name"], **spec.get("params", {}))
        subjects = spec.get("subjects") or list(dataset.subject_list)
        missing = [s for s in subjects if s not in dataset.subject_list]
        if missing:
            raise cfg.error(f"datasets[{i}].subjects", f"{dataset.code} has no subjects {missing}")
        interval = tuple(float(v) for v in dataset.interval)
        for subject in subjects:
            try:
                data = dataset.get_data([subject])
            except (OSError, ConnectionError):
                raise DataError(f"{dataset.code}: subject {subject} is not in the local cache and could not be downloaded; set MNE_DATA") from None
            for session, runs in data[subject].items():
                for run, raw in runs.items():
                    rec = Recording.from_raw(raw, provenance={"dataset": dataset.code})
                    out.append((f"{dataset.code}/s{subject}/{session}/{run}", rec, interval))
    for path in recording_paths(cfg, section):
        out.append((Path(path).name, load_recording(path), None))
    return out


def recording_paths(cfg: Config, section: dict) -> list[str]:
    """The files of ``section["recordings"]`` (paths and glob patterns), in order; a path that
    matches nothing is kept (loading it then says it is missing)."""
    out = []
    for entry in section.get("recordings") or []:
        pattern = str(cfg.resolve_path(str(entry))) if not glob.has_magic(str(entry)) else str(entry)
        out += sorted(glob.glob(pattern)) or [pattern]
    return out
