"""SzCORE scoring (timescoring), SzCORE/BIDS events.tsv out (bci predict --events) and in (BIDS datasets)."""

from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from conftest import BIDS_SEIZURES, SEIZURE_CHANNELS, synthetic_seizure_raw
from timescoring import scoring
from timescoring.annotations import Annotation

from bci.cli import main
from bci.errors import DataError, ModelError
from bci.seizure import RESULT_COLUMNS, event_table, write_detections
from bci.szcore import (
    COLUMNS,
    EVENT_PARAMETERS,
    annotation,
    bids_recordings,
    parameters_text,
    pooled_scores,
    read_seizures_tsv,
    score_recording,
    write_events_tsv,
)

# One hour, three seizures. The detector finds the first (overlap), the second (10 s after
# its end, inside the 60 s end tolerance), misses the third, and raises two false events.
REF = [(100.0, 140.0), (1000.0, 1060.0), (2000.0, 2030.0)]
HYP = [(90.0, 130.0), (1100.0, 1110.0), (2500.0, 2510.0), (3000.0, 3005.0)]


# ------------------------------------------------------------------------ scoring
def test_scores_equal_timescoring_and_hand_counts():
    s = score_recording(REF, HYP, 3600.0)
    assert (s["event_ref"], s["event_tp"], s["event_fp"]) == (3, 2, 2)
    assert s["event_sensitivity"] == pytest.approx(2 / 3)
    assert s["event_precision"] == pytest.approx(2 / 4)
    assert s["event_f1"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
    assert s["event_fp_per_24h"] == pytest.approx(2 * 24) and s["hours"] == pytest.approx(1.0)
    # seconds: 30 of the 130 seizure seconds flagged; 10 + 10 + 10 + 5 flagged outside them
    assert (s["sample_ref"], s["sample_tp"], s["sample_fp"]) == (130, 30, 35)
    assert s["sample_sensitivity"] == pytest.approx(30 / 130) and s["sample_precision"] == pytest.approx(30 / 65)
    # timescoring itself, built from its own event-list constructor, at its default parameters
    ref, hyp = Annotation(REF, 1, 3600), Annotation(HYP, 1, 3600)
    for level, theirs in (("event", scoring.EventScoring(ref, hyp)), ("sample", scoring.SampleScoring(ref, hyp))):
        for key, attr in (("sensitivity", "sensitivity"), ("precision", "precision"), ("f1", "f1"), ("fp_per_24h", "fpRate")):
            assert s[f"{level}_{key}"] == pytest.approx(getattr(theirs, attr))
        assert (s[f"{level}_tp"], s[f"{level}_fp"], s[f"{level}_ref"]) == (theirs.tp, theirs.fp, theirs.refTrue)
    assert vars(EVENT_PARAMETERS) == vars(scoring.EventScoring.Parameters())
    assert "toleranceStart 30 s" in parameters_text() and "minDurationBetweenEvents 90 s" in parameters_text()


def test_close_events_merge_and_long_events_split():
    # two detections 50 s apart are one event (< 90 s); a 700 s seizure is three (300 + 300 + 100 s)
    s = score_recording([(1000.0, 1700.0)], [(100.0, 110.0), (160.0, 170.0)], 3600.0)
    assert (s["event_ref"], s["event_tp"], s["event_fp"]) == (3, 0, 1)
    # a detection 20 s before onset is within the 30 s start tolerance: not a false positive
    early = score_recording([(500.0, 540.0)], [(470.0, 480.0)], 3600.0)
    assert (early["event_tp"], early["event_fp"]) == (1, 0)
    assert annotation([(1.4, 3.6)], 5.0).mask.tolist() == [False, True, True, True, False]
    with pytest.raises(DataError, match="within the recording"):
        score_recording([(500.0, 4000.0)], [], 3600.0)


def test_report_pools_recordings_with_timescoring_formulas():
    one = score_recording(REF, HYP, 3600.0)
    two = score_recording([(600.0, 660.0)], [(610.0, 650.0)], 1800.0)  # 1 seizure, found, no false event
    pooled = pooled_scores([one, two])
    assert (pooled["event_ref"], pooled["event_tp"], pooled["event_fp"]) == (4, 3, 2)
    assert pooled["event_sensitivity"] == pytest.approx(3 / 4) and pooled["event_precision"] == pytest.approx(3 / 5)
    assert pooled["event_f1"] == pytest.approx(6 / 9) and pooled["event_fp_per_24h"] == pytest.approx(2 / 1.5 * 24)
    assert pooled["hours"] == pytest.approx(1.5) and pooled["sample_tp"] == 30 + 40
    rows = [{"dataset": "D", "recording": rec, "session": "events", "pipeline": "BP+LR", "combine": "top3",
             "latency_s": 5.0, "raw_latency_s": 2.0, **scores} for rec, scores in (("a", one), ("b", two))]  # fmt: skip
    text = "\n".join(event_table(pd.DataFrame(rows, columns=RESULT_COLUMNS)))
    assert "| BP+LR | top3 | 0.667 | 0.500 | 0.571 | 2 / 2 | 48.0 (1.00 h) |" in text  # recording a
    assert "| BP+LR | top3 | 4 | 0.750 | 0.600 | 0.667 | 3 / 2 | 32.0 (1.50 h) |" in text  # pooled


# ------------------------------------------------------------------- events.tsv
def test_events_tsv_in_szcore_format(tmp_path):
    path = write_events_tsv(tmp_path / "x_events.tsv", [(12.0, 40.5, 0.912345)], 300.0)
    frame = pd.read_csv(path, sep="\t", keep_default_na=False)
    assert list(frame.columns) == COLUMNS
    assert frame.iloc[0].to_dict() == {
        "onset": 12.0, "duration": 28.5, "eventType": "sz", "confidence": 0.9123, "channels": "n/a",
        "dateTime": "1970-01-01 00:00:00", "recordingDuration": 300.0,  # never the acquisition date
    }  # fmt: skip
    assert read_seizures_tsv(path) == [(12.0, 40.5)]
    none = pd.read_csv(write_events_tsv(tmp_path / "y_events.tsv", [], 300.0), sep="\t", keep_default_na=False)
    assert none.to_dict("records") == [{"onset": 0.0, "duration": 300.0, "eventType": "bckg", "confidence": "n/a",
                                        "channels": "n/a", "dateTime": "1970-01-01 00:00:00", "recordingDuration": 300.0}]  # fmt: skip
    assert read_seizures_tsv(tmp_path / "y_events.tsv") == []
    (tmp_path / "bad.tsv").write_text("start\tlabel\n1\tsz\n")
    with pytest.raises(DataError, match="expected columns onset, duration and eventType"):
        read_seizures_tsv(tmp_path / "bad.tsv")


def test_bids_dataset_recordings_and_their_seizures(seizure_bids, tmp_path):
    found = bids_recordings(seizure_bids)
    assert [bp.subject for bp, _ in found] == list(BIDS_SEIZURES)
    for bp, events in found:
        assert bp.fpath.suffix == ".edf" and events.name.endswith("_events.tsv")
        assert read_seizures_tsv(events) == [BIDS_SEIZURES[bp.subject]]  # mne-bids writes trial_type
    with pytest.raises(DataError, match="not a BIDS dataset"):
        bids_recordings(tmp_path)


# ------------------------------------------------------------ bci predict --events
def test_bci_predict_events_read_back_and_scored(seizure_bids, tmp_path, capsys):
    train_raw = synthetic_seizure_raw(240.0, (60.0, 120.0), seed=7)
    train_raw.save(tmp_path / "train_raw.fif", verbose="error")
    cfg = {
        "name": "synthetic seizure detector", "seed": 0,
        "preprocessing": {"bandpass": [0.5, 40], "resample": 100},
        "train": {"task": "seizure", "pipeline": "seizure_bandpower_lr", "recordings": [str(tmp_path / "train_raw.fif")],
                  "events": ["sz"], "window": {"sfreq": 100, "length_s": 4.0, "hop_s": 2.0, "settle_s": 3.0, "segment_s": 1.0},
                  "hop": 1.0, "channels": SEIZURE_CHANNELS},
    }  # fmt: skip
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "train.yaml"), "--out", str(tmp_path / "model"), "--no-progress"]) == 0
    (bp, reference), *_ = bids_recordings(seizure_bids)
    out = tmp_path / "hyp_events.tsv"
    assert main(["predict", str(tmp_path / "model"), str(bp.fpath), "--events", str(out)]) == 0
    assert f"seizure event(s) to {out}" in capsys.readouterr().out
    # read back unchanged as SzCORE reads it: pandas, tab-separated, its columns and values
    frame = pd.read_csv(out, sep="\t", keep_default_na=False)
    assert list(frame.columns) == COLUMNS and set(frame.eventType) == {"sz"}
    assert (frame.recordingDuration == 300.0).all() and frame.confidence.between(0.5, 1).all()
    hypothesis = list(zip(frame.onset, frame.onset + frame.duration))
    scores = score_recording(read_seizures_tsv(reference), hypothesis, 300.0)
    assert (scores["event_tp"], scores["event_fp"]) == (1, 0), frame
    assert read_seizures_tsv(out) == hypothesis
    assert set(frame.dateTime) == {"1970-01-01 00:00:00"}  # SzCORE's format, never the acquisition date
    # bad input: one line, exit 2
    assert main(["predict", str(tmp_path / "model"), str(bp.fpath), str(bp.fpath), "--events", str(out)]) == 2
    assert capsys.readouterr().err.strip() == "error: --events writes the events.tsv of one recording; found 2 paths"
    with pytest.raises(ModelError, match="needs a seizure model"):
        write_detections(out, SimpleNamespace(classes=["left_hand", "right_hand"], name="mi"), None, [])
