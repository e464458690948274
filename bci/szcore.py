"""Seizure detection scored as the field scores it: SzCORE (Dan et al., Epilepsia 2025).

- **Scoring**: :func:`score_recording` turns a reference and a hypothesis (lists of
  ``(onset_s, end_s)`` seizures) into the masks szcore-evaluation builds (1 Hz, a
  recording's length in whole seconds) and scores them with ``timescoring``, SzCORE's
  reference library, at its default parameters (:data:`EVENT_PARAMETERS`: 30 s tolerance
  before onset, 60 s after offset, any overlap, events longer than 5 min split, events
  closer than 90 s merged): event and sample sensitivity, precision, F1, false positives
  per 24 h. :func:`pooled_scores` sums the counts of several recordings and applies
  timescoring's own formulas to the sums.
- **events.tsv**: :func:`write_events_tsv` writes SzCORE's BIDS / HED-SCORE annotation
  format (``onset, duration, eventType, confidence, channels, dateTime,
  recordingDuration``; ``sz`` for a seizure, ``artf`` for an artefact a reviewer marked,
  one ``bckg`` row for a recording without any; optionally BIDS's ``trial_type`` too);
  :func:`read_seizures_tsv` reads the seizures of such a file, or of a BIDS
  ``events.tsv`` written by MNE-BIDS (``trial_type`` column).
- **BIDS-EEG datasets**: :func:`bids_recordings` lists the EEG/iEEG recordings of a BIDS
  root (MNE-BIDS) with their ``events.tsv``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from mne_bids import find_matching_paths
from timescoring import scoring
from timescoring.annotations import Annotation

from .errors import DataError

#: Label rate (Hz) of the masks and of the sample scoring, as in szcore-evaluation.
FS = 1
#: timescoring's default event-scoring parameters (SzCORE's).
EVENT_PARAMETERS = scoring.EventScoring.Parameters()
#: SzCORE's events.tsv columns, in order.
COLUMNS = ["onset", "duration", "eventType", "confidence", "channels", "dateTime", "recordingDuration"]
SEIZURE, BACKGROUND = "sz", "bckg"
#: eventType of an artefact (the TUH EEG Events corpus's code, beside its ``bckg``).
ARTEFACT = "artf"
#: Keys of :func:`score_recording` and :func:`pooled_scores`.
SCORE_COLUMNS = ["hours"] + [
    f"{level}_{key}" for level in ("event", "sample") for key in ("ref", "tp", "fp", "sensitivity", "precision", "f1", "fp_per_24h")
]
#: dateTime of every exported row: SzCORE's "start unknown". A recording's acquisition date
#: is a patient identifier (HIPAA), so no export carries it; scoring uses onsets only.
UNKNOWN_START = "1970-01-01 00:00:00"
SIGNAL_EXTENSIONS = [".edf", ".bdf", ".vhdr", ".set", ".fif"]


# ----------------------------------------------------------------------- scoring
def parameters_text() -> str:
    """The scoring parameters, as the report states them."""
    p = EVENT_PARAMETERS
    return (
        f"timescoring defaults: toleranceStart {p.toleranceStart:g} s, toleranceEnd {p.toleranceEnd:g} s, "
        f"minOverlap {p.minOverlap:g}, maxEventDuration {p.maxEventDuration:g} s, "
        f"minDurationBetweenEvents {p.minDurationBetweenEvents:g} s; labels at {FS} Hz"
    )


def annotation(events, duration_s: float) -> Annotation:
    """A timescoring :class:`Annotation` of ``(onset_s, end_s)`` events over ``duration_s``
    (szcore-evaluation's mask: whole seconds, events rounded to the label rate)."""
    mask = np.zeros(int(duration_s * FS), dtype=bool)
    for onset, end in events:
        mask[round(onset * FS) : round(end * FS)] = True
    return Annotation(mask, FS)


def _scores(level: str, s: scoring._Scoring) -> dict:
    return {
        f"{level}_ref": int(s.refTrue), f"{level}_tp": int(s.tp), f"{level}_fp": int(s.fp),
        f"{level}_sensitivity": float(s.sensitivity), f"{level}_precision": float(s.precision),
        f"{level}_f1": float(s.f1), f"{level}_fp_per_24h": float(s.fpRate),
    }  # fmt: skip


def score_recording(reference, hypothesis, duration_s: float) -> dict:
    """SzCORE event and sample scores of one recording, with the hours scored.

    ``event_ref`` counts the reference seizures after timescoring's merging and
    splitting; ``sample_*`` counts are seconds.
    """
    for name, events in (("reference", reference), ("hypothesis", hypothesis)):
        outside = [(a, b) for a, b in events if not 0 <= a <= b <= duration_s + 1e-9]
        if outside:
            raise DataError(f"{name} event {outside[0]} s does not lie within the recording [0, {duration_s:g}] s")
    ref, hyp = annotation(reference, duration_s), annotation(hypothesis, duration_s)
    return {
        "hours": len(ref.mask) / FS / 3600.0,
        **_scores("event", scoring.EventScoring(ref, hyp, EVENT_PARAMETERS)),
        **_scores("sample", scoring.SampleScoring(ref, hyp, FS)),
    }


class _Counts(scoring._Scoring):
    """timescoring's formulas applied to counts summed over recordings."""

    def __init__(self, tp: int, fp: int, ref: int, seconds: float):
        self.tp, self.fp, self.refTrue, self.fs, self.numSamples = tp, fp, ref, 1, seconds
        self.computeScores()


def pooled_scores(rows) -> dict:
    """Event and sample scores of several recordings pooled: counts and hours summed
    (``rows``: mappings with the keys :func:`score_recording` returns)."""
    rows = list(rows)
    hours = sum(r["hours"] for r in rows)
    out = {"hours": hours}
    for level in ("event", "sample"):
        counts = [sum(int(r[f"{level}_{k}"]) for r in rows) for k in ("tp", "fp", "ref")]
        out.update(_scores(level, _Counts(*counts, seconds=hours * 3600.0)))
    return out


# ------------------------------------------------------------------- events.tsv
def events_frame(events, duration_s: float, *, trial_type: bool = False) -> pd.DataFrame:
    """SzCORE annotations of a recording: one row per ``(onset_s, end_s, confidence)``
    (``sz``) or ``(onset_s, end_s, confidence, eventType)`` (e.g. ``artf`` for an
    artefact; a confidence of None is ``n/a``, as for a human reviewer's marks), or one
    ``bckg`` row spanning the recording when there is none. ``trial_type`` adds BIDS's
    ``trial_type`` column (the same codes), which MNE-BIDS reads as descriptions."""
    rows = [(e[0], e[1] - e[0], e[3] if len(e) > 3 else SEIZURE, "n/a" if e[2] is None else round(float(e[2]), 4)) for e in events]
    rows = rows or [(0.0, duration_s, BACKGROUND, "n/a")]
    frame = pd.DataFrame(
        [(round(o, 3), round(d, 3), kind, conf, "n/a", UNKNOWN_START, round(duration_s, 3)) for o, d, kind, conf in rows],
        columns=COLUMNS,
    )
    if trial_type:
        frame["trial_type"] = frame["eventType"]
    return frame


def write_events_tsv(path, events, duration_s: float, *, trial_type: bool = False) -> Path:
    """Write :func:`events_frame` to ``path`` (tab-separated, BIDS ``n/a`` for missing)."""
    path = Path(path)
    try:
        events_frame(events, duration_s, trial_type=trial_type).to_csv(path, sep="\t", index=False)
    except OSError as exc:
        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def read_seizures_tsv(path) -> list[tuple[float, float]]:
    """The seizures ``(onset_s, end_s)`` of an events.tsv: rows whose ``eventType``
    (SzCORE), else ``trial_type`` (BIDS, MNE-BIDS), is ``seizure`` or starts with ``sz``
    (HED-SCORE seizure codes: ``sz``, ``sz_foc_a``, ...; ``bckg`` is background)."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, sep="\t", dtype={"eventType": str, "trial_type": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: cannot read as a tab-separated events file ({exc})") from None
    label = next((c for c in ("eventType", "trial_type") if c in frame), None)
    if label is None or not {"onset", "duration"} <= set(frame):
        raise DataError(f"{path}: expected columns onset, duration and eventType (or trial_type), found {', '.join(frame)}")
    kind = frame[label].fillna("").str.strip()
    sz = frame[(kind == "seizure") | kind.str.startswith(SEIZURE)]
    return [(float(o), float(o) + float(d)) for o, d in zip(sz.onset, sz.duration)]


# ----------------------------------------------------------------- BIDS datasets
def bids_recordings(root) -> list[tuple[object, Path]]:
    """``(BIDSPath, events.tsv path)`` of every EEG/iEEG recording under a BIDS root."""
    root = Path(root)
    if not (root / "dataset_description.json").is_file():
        raise DataError(f"{root}: not a BIDS dataset (no dataset_description.json)")
    paths = find_matching_paths(root, datatypes=["eeg", "ieeg"], suffixes=["eeg", "ieeg"], extensions=SIGNAL_EXTENSIONS)
    if not paths:
        raise DataError(f"{root}: no EEG/iEEG recordings ({', '.join(SIGNAL_EXTENSIONS)}) in this BIDS dataset")
    out = []
    for bp in sorted(paths, key=lambda p: str(p.fpath)):
        events = bp.copy().update(suffix="events", extension=".tsv").fpath
        if not events.is_file():
            raise DataError(f"{bp.fpath}: no {events.name} beside it (the seizure annotations to score against)")
        out.append((bp, events))
    return out
