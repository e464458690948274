"""The one seizure alarm rule (bci.alarm): incremental, and offline as a loop over it."""

import math
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bci.alarm import AlarmRule, detect_alarms, operating_point
from bci.errors import ConfigError, DataError
from tests.conftest import eeg_outlet


def batch_alarms(times, proba, threshold, duration_s, smoothing_s, warmup_s):
    """Obviously correct, whole-trace: smoothed runs above threshold, each alarm once it lasted duration_s."""
    times, proba = np.asarray(times, float), np.asarray(proba, float)
    window = [proba[(times > t - smoothing_s) & (times <= t)] if smoothing_s > 0 else [p] for t, p in zip(times, proba)]
    smooth = np.array([math.fsum(w) / len(w) for w in window])
    above = (smooth >= threshold) & (times >= warmup_s)
    out, i = [], 0
    while i < len(times):
        if not above[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(times) and above[j + 1]:
            j += 1
        reached = np.flatnonzero(times[i : j + 1] - times[i] >= duration_s - 1e-9)
        if len(reached):
            out.append((times[i], times[i + reached[0]], times[j]))
        i = j + 1
    return out


def test_known_trace_onsets_raises_and_ends():
    times = np.arange(4.0, 500.0, 1.0)  # decisions at the end of 4 s windows, hop 1 s
    p = np.full(times.shape, 0.05)
    p[(times >= 100) & (times < 103)] = 0.95  # 3 s blip: shorter than the duration, no alarm
    p[(times >= 200) & (times < 215)] = 0.95  # 15 s artefact: one false alarm
    p[times >= 362] = 0.9  # the seizure, to the end of the recording
    rule = AlarmRule(threshold=0.5, duration_s=5.0, smoothing_s=0.0, warmup_s=10.0)
    alarms = detect_alarms(rule, times, p)
    assert [(a["onset_s"], a["raised_s"], a["end_s"]) for a in alarms] == [(200.0, 205.0, 214.0), (362.0, 367.0, 499.0)]
    # warm-up: a high start (filter transient) raises nothing
    assert detect_alarms(rule, times, np.where(times < 12, 0.99, 0.0)) == []
    # trailing smoothing over 5 s delays the crossing: the mean of 5 decisions >= 0.5 needs 3 at 0.9
    smoothed = detect_alarms(AlarmRule(0.5, 5.0, 5.0), times, p)
    assert smoothed[-1]["raised_s"] == pytest.approx(364.0 + 5.0)


def test_incremental_events_name_the_channels_of_the_run():
    rule = AlarmRule(threshold=0.5, duration_s=4.0, smoothing_s=2.0, top_channels=2)
    t = np.arange(0, 60, 0.5)
    p = np.full(t.shape, 0.1)
    p[(t >= 10) & (t < 12)] = 0.95  # a 2 s excursion: shorter than the duration
    p[(t >= 30) & (t < 45)] = 0.95
    p[t >= 50] = 0.9
    events = [e for ti, pi in zip(t, p) for e in rule.update(ti, pi, {"T7": 3.0, "F7": 2.0, "O1": 0.5})]
    events += rule.finish()
    assert [e["event"] for e in events] == ["alarm", "end", "alarm", "end"]
    first = events[0]
    # the smoothed probability (2 s mean of 0.5 s decisions) crosses 0.5 at 30.5 s; +4 s -> raised at 34.5 s
    assert (first["onset_s"], first["raised_s"]) == (pytest.approx(30.5), pytest.approx(34.5))
    assert first["channels"] == ["T7", "F7"] and first["probability"] == pytest.approx(0.95)
    # the last decision whose 2 s mean is still >= 0.5: (0.95 + 0.95 + 0.1 + 0.1) / 4 at 45.5 s
    assert events[1]["end_s"] == pytest.approx(45.5)
    assert events[2]["onset_s"] == pytest.approx(50.5)  # (0.1 + 0.1 + 0.9 + 0.9) / 4 is exactly 0.5
    assert events[3]["end_s"] == pytest.approx(59.5)  # still running when the recording ended


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.sampled_from([0.25, 0.5, 1.0, 2.0]), min_size=1, max_size=120),
    levels=st.lists(st.floats(0, 1), min_size=120, max_size=120),
    threshold=st.sampled_from([0.3, 0.5, 0.8]),
    duration_s=st.sampled_from([0.0, 1.0, 5.0]),
    smoothing_s=st.sampled_from([0.0, 1.0, 3.0]),
    warmup_s=st.sampled_from([0.0, 4.0]),
)
def test_detect_alarms_equals_the_whole_trace_definition(steps, levels, threshold, duration_s, smoothing_s, warmup_s):
    times = np.cumsum(steps)
    proba = np.asarray(levels[: len(times)])
    rule = AlarmRule(threshold, duration_s, smoothing_s, warmup_s)
    got = [(a["onset_s"], a["raised_s"], a["end_s"]) for a in detect_alarms(rule, times, proba)]
    want = batch_alarms(times, proba, threshold, duration_s, smoothing_s, warmup_s)
    np.testing.assert_allclose(np.reshape(got, (-1, 3)), np.reshape(want, (-1, 3)))


def test_config_section_round_trip_and_errors():
    rule = AlarmRule.from_config({"threshold": 0.7, "duration_s": 5, "warmup_s": 10}, key="evaluation.alarm")
    assert AlarmRule.from_config(rule.to_config()) == rule
    assert rule.to_config() == {"threshold": 0.7, "duration_s": 5, "smoothing_s": 5.0, "warmup_s": 10, "top_channels": 3}
    with pytest.raises(ConfigError, match=r"^evaluation\.alarm\.threshold: expected a probability"):
        AlarmRule.from_config({"threshold": 1.5}, key="evaluation.alarm")
    with pytest.raises(ConfigError, match=r"alarm\.min_duration_s: unknown key; allowed: duration_s, smoothing_s, threshold"):
        AlarmRule.from_config({"min_duration_s": 5})
    with pytest.raises(ConfigError, match=r"alarm\.duration_s: expected a number"):
        AlarmRule.from_config({"duration_s": "10"})
    with pytest.raises(DataError, match="must increase"):
        rule.update(5.0, 0.1)
        rule.update(5.0, 0.1)
    assert rule.update(6.0, float("nan")) == []  # a missing probability is skipped


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def seizure_model(tmp_path_factory, data_dir):
    """The shipped band-power seizure detector, trained as ``bci train configs/train_seizure_bandpower_lr.yaml``."""
    from bci.training import train

    out = tmp_path_factory.mktemp("seizure") / "model"
    cwd = os.getcwd()
    os.chdir(ROOT)  # the config names ../shared/data relative to the project
    try:
        train(ROOT / "configs/train_seizure_bandpower_lr.yaml", out, progress=False)
    finally:
        os.chdir(cwd)
    return out


def test_operating_point_is_the_lowest_threshold_within_the_target():
    t = np.arange(1.0, 61.0)  # one decision per second, 60 s per trace
    quiet, blip, seizure = np.full(60, 0.1), np.full(60, 0.1), np.full(60, 0.1)
    blip[20:30] = 0.6  # background that looks like a seizure to a low threshold
    seizure[30:] = 0.9
    traces = [(t, quiet, False, 60.0), (t, blip, False, 60.0), (t, seizure, True, 60.0)]
    rule = AlarmRule(duration_s=5.0, smoothing_s=0.0, warmup_s=10.0)
    chosen, report = operating_point(rule, traces, target_fp_per_24h=1.0)
    assert chosen.threshold == 0.65 and chosen.duration_s == 5.0 and chosen.warmup_s == 10.0  # settings kept
    assert (report["false_alarms"], report["sensitivity"], report["reached"]) == (0, 1.0, True)
    assert report["hours"] == pytest.approx(120 / 3600) and report["resolution_fp_per_24h"] == pytest.approx(720.0)
    # a target the data cannot meet: the fewest false alarms, the highest threshold on ties
    always = np.full(60, 0.99)
    chosen, report = operating_point(rule, [(t, always, False, 60.0), (t, seizure, True, 60.0)], 1.0)
    assert (chosen.threshold, report["false_alarms"], report["reached"]) == (0.95, 1, False)
    with pytest.raises(DataError, match="without seizures"):
        operating_point(rule, [(t, seizure, True, 60.0)], 1.0)
    with pytest.raises(ConfigError, match="target_fp_per_24h"):
        operating_point(rule, traces, 0)


def test_saved_operating_point_is_the_rule_of_predict_and_stream(seizure_model, data_dir, tmp_path):
    import pandas as pd

    from bci.cli import main
    from bci.io import load_recording
    from bci.model import TrainedModel
    from gui.app import load_dashboard_config
    from realtime.decoder import DecoderConfig

    model = TrainedModel.load(seizure_model)
    point = model.metadata["operating_point"]
    # chosen on out-of-fold Bonn probabilities for train.operating_point.target_fp_per_24h
    assert point["reached"] and point["fp_per_24h"] <= point["target_fp_per_24h"] == 24.0
    assert model.alarm_rule() == AlarmRule(point["threshold"], 5.0, 5.0, 10.0) and point["threshold"] != 0.5
    assert model.alarm_rule({"threshold": 0.7}) == AlarmRule(0.7)  # a config's section overrides it
    # bci predict --events runs the model's rule
    malow = data_dir / "seizure/malow"
    assert main(["predict", str(seizure_model), str(malow), "--events", str(tmp_path / "e.tsv")]) == 0
    rows = model.predict_recording(load_recording(malow))
    expected = detect_alarms(model.alarm_rule(), [r["end_s"] for r in rows], [r["seizure"] for r in rows])
    events = pd.read_csv(tmp_path / "e.tsv", sep="\t")
    assert expected and list(events.onset) == [max(0.0, a["onset_s"] - model.hop_s) for a in expected]
    # bci stream and the dashboard: their shipped configs leave the rule to the model
    assert DecoderConfig.load().alarm is None and load_dashboard_config()["alarm"] is None


def live_alarms(model, rec, **config) -> tuple[list[tuple[float, float]], int, dict]:
    """``rec`` streamed over LSL (1 s per push, every due window decoded) through ``bci stream``'s
    loop with ``model``: the (onset, raised) of every alarm marker, the alarm-end count, the summary."""
    import re
    import time
    import uuid

    import pylsl

    from realtime.decoder import Decoder, DecoderConfig

    tag = uuid.uuid4().hex[:8]
    outlet = eeg_outlet(f"rec-{tag}", rec.channels.names, rec.sfreq, channel_format="double64")
    cfg = DecoderConfig.load(outlet_name=f"out-{tag}", marker_name=f"mk-{tag}", resolve_timeout_s=3.0, **config)
    decoder = Decoder(model, f"rec-{tag}", cfg).open()
    found = pylsl.resolve_byprop("name", cfg.marker_name, timeout=3.0)
    assert found, "the decoder's marker stream"
    marker_inlet = pylsl.StreamInlet(found[0])
    marker_inlet.open_stream(timeout=3.0)
    markers = []
    x = rec.data * 1e6
    step = int(rec.sfreq)
    try:
        deadline = time.monotonic() + 60
        for start in range(0, x.shape[1], step):
            outlet.push_chunk(np.ascontiguousarray(x[:, start : start + step].T))
            total = min(start + step, x.shape[1])
            while decoder.inlet.stats.samples < total:
                assert time.monotonic() < deadline, "the live loop fell behind"
                decoder.poll()
                time.sleep(0.001)
            markers += [m[0] for m in marker_inlet.pull_chunk(timeout=0.0)[0]]
        time.sleep(0.2)
        markers += [m[0] for m in marker_inlet.pull_chunk(timeout=0.0)[0]]
    finally:
        decoder.stop()
    raised = [tuple(float(v) for v in re.findall(r"(?:onset|raised)=([\d.]+)s", m)) for m in markers if m.startswith("alarm: seizure")]
    return raised, sum(m.startswith("alarm end: seizure") for m in markers), decoder.summary()


def test_live_decoder_raises_the_alarms_the_offline_rule_reports(seizure_model, data_dir):
    """Malow through the live loop (LSL, causal preprocessing, one decision per second, the
    evaluation config's alarm section) raises the alarms that detect_alarms finds offline on
    the same saved model's predictions: one rule, the same latencies and false alarms."""
    from bci.config import load_config
    from bci.io import load_recording
    from bci.model import TrainedModel

    events = load_config(ROOT / "configs/seizure_bonn.yaml")["evaluation"]["params"]["events"]
    rule = AlarmRule.from_config(events["alarm"])
    model = TrainedModel.load(seizure_model)
    rec = load_recording(data_dir / "seizure/malow")

    offline = model.predict_recording(rec)
    expected = detect_alarms(rule, [r["end_s"] for r in offline], [r["seizure"] for r in offline])
    assert expected, "the Bonn-trained detector raises an alarm on Malow"
    raised, ended, summary = live_alarms(model, rec, smoothing="none", alarm=rule.to_config())
    assert summary["dropped_windows"] == 0
    assert raised == [(a["onset_s"], a["raised_s"]) for a in expected]
    assert ended == len(expected) - (expected[-1]["end_s"] == offline[-1]["end_s"])  # the last may run to the end


def test_evaluate_reports_the_alarms_bci_stream_raises(data_dir, tmp_path):
    """bci evaluate's seizure events on Malow (latency, false alarms, alarm times) are what its
    saved detector raises when Malow is replayed through bci stream with the model's own rule."""
    import json

    import pandas as pd
    import yaml

    from bci.cli import main
    from bci.io import load_recording
    from bci.model import TrainedModel

    cfg = yaml.safe_load((ROOT / "configs/seizure_bonn.yaml").read_text())
    cfg["data"] = {"bonn": str(data_dir / "seizure/bonn"), "malow": str(data_dir / "seizure/malow")}
    cfg["pipelines"] = ["seizure_bandpower_lr"]
    cfg["evaluation"]["params"].update(tasks=["ABCD-E"], n_folds=2)
    path = tmp_path / "seizure.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    assert main(["evaluate", str(path), "--out", str(out)]) == 0
    rows = pd.read_csv(out / "results.csv")
    row = rows[(rows.session == "events") & (rows["combine"] == "top3")].iloc[0]
    reported = json.loads(row.params)["alarm_times"]
    assert reported and row.n_alarms == len(reported)

    model = TrainedModel.load(out / "models" / "BP+LR")
    assert model.alarm_rule() == AlarmRule.from_config(cfg["evaluation"]["params"]["events"]["alarm"])
    raised, _, summary = live_alarms(model, load_recording(data_dir / "seizure/malow"), smoothing="none")
    assert summary["dropped_windows"] == 0
    assert [round(r, 2) for _, r in raised] == reported
    onset = cfg["evaluation"]["params"]["events"]["onset_s"]
    assert row.latency_s == pytest.approx(min(r for _, r in raised if r >= onset) - onset)


def test_operating_point_config_is_checked(tmp_path):
    import yaml

    from bci.config import load_config
    from bci.training import validate_train_section

    def section(**train):
        path = tmp_path / "t.yaml"
        path.write_text(yaml.safe_dump({"train": {"pipeline": "seizure_bandpower_lr", "task": "seizure",
                                                  "recordings": ["x"], **train}}))  # fmt: skip
        return validate_train_section(load_config(path))

    assert section(operating_point={"target_fp_per_24h": 2, "cv": 0})["operating_point"]["cv"] == 0
    for train, key in (({"operating_point": {"target_fp_per_24h": 0}}, "operating_point.target_fp_per_24h"),
                       ({"operating_point": {"cv": 1}}, "operating_point.cv"),
                       ({"operating_point": {"fp": 1}}, "train.operating_point"),
                       ({"alarm": {"threshold": 2}}, "train.alarm.threshold"),
                       ({"task": "classification", "operating_point": {}}, "for seizure models")):  # fmt: skip
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            section(**train)
