"""Seizure detection: metrics, Bonn windows, training, event detection, bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bci.alarm import AlarmRule, detect_alarms
from bci.errors import ConfigError, DataError, ModelError
from bci.seizure import (
    CLASSES,
    WindowSpec,
    bonn_windows,
    channel_probabilities,
    alarm_events,
    latency,
    parse_task,
    per_segment,
    recording_windows,
    segment_folds,
    segment_metrics,
)
from bci.szcore import score_recording
from models.mvpformer import MVPFormer, combine_channel_probabilities
from pipelines.seizure import (
    BandPower,
    PerChannel,
    combine_channels,
    make_seizure_pipeline,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "seizure"
BONN, MALOW = DATA / "bonn", DATA / "malow"
PRE = {"bandpass": [0.5, 40], "resample": 100}
SPEC = WindowSpec(sfreq=100, length_s=4.0, hop_s=2.0, settle_s=3.0, segment_s=1.0)
needs_data = pytest.mark.skipif(not BONN.exists(), reason="../shared/data/seizure is not present")


# ------------------------------------------------------------------- metrics
def test_segment_metrics_known_values():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.2, 0.1, 0.3, 0.6, 0.2, 0.1, 0.4])
    m = segment_metrics(y, p)
    # TP 3, FN 1, TN 5, FP 1
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["sensitivity"] == pytest.approx(0.75)
    assert m["specificity"] == pytest.approx(5 / 6)
    # kappa = (po - pe) / (1 - pe), pe = 0.4*0.4 + 0.6*0.6
    assert m["kappa"] == pytest.approx((0.8 - 0.52) / (1 - 0.52))
    # AUC over 24 positive/negative pairs: 0.9, 0.8, 0.7 beat all 6; 0.2 beats 2 and ties 1: 20.5/24
    assert m["roc_auc"] == pytest.approx(20.5 / 24)
    assert segment_metrics(np.array(CLASSES)[y], p) == m  # class names work too
    with pytest.raises(DataError, match="one probability per label"):
        segment_metrics(y, p[:-1])


def test_per_segment_means_and_combination_rules():
    ids, p, y = per_segment([0.2, 0.4, 0.9, 0.7], ["b", "b", "a", "a"], [0, 0, 1, 1])
    assert list(ids) == ["a", "b"] and np.allclose(p, [0.8, 0.3]) and list(y) == [1, 0]
    probs = np.array([[0.1, 0.9, 0.5, 0.2], [0.0, 0.0, 0.3, 0.0]])
    assert np.allclose(combine_channels(probs, "mean"), [0.425, 0.075])
    assert np.allclose(combine_channels(probs, "max"), [0.9, 0.3])
    assert np.allclose(combine_channels(probs, "top2"), [0.7, 0.15])
    assert np.allclose(combine_channels(probs, 10), combine_channels(probs, "mean"))  # k capped at C
    two = torch.as_tensor(np.stack([1 - probs, probs], -1))
    for how in ("mean", "max", "top2", 3):
        np.testing.assert_allclose(combine_channel_probabilities(two, how)[:, 1].numpy(), combine_channels(probs, how))
    with pytest.raises(ConfigError, match="top<k>"):
        combine_channels(probs, "median")


def test_alarm_events_latency_and_szcore_scores_on_a_synthetic_trace():
    # the rule itself is tested in tests/test_alarm.py; here: its alarms as scored events
    times = np.arange(4.0, 500.0, 1.0)  # decision at the end of 4 s windows, hop 1 s
    p = np.full(times.shape, 0.05)
    p[(times >= 100) & (times < 103)] = 0.95  # 3 s blip: shorter than the duration, no alarm
    p[(times >= 200) & (times < 215)] = 0.95  # 15 s artefact: one false alarm
    p[times >= 362] = 0.9  # the seizure, 12 s after the documented onset
    alarms = detect_alarms(AlarmRule(threshold=0.5, duration_s=5.0, smoothing_s=0.0, warmup_s=10.0), times, p)
    assert [a["raised_s"] for a in alarms] == [205.0, 367.0]
    # events: each run above threshold, a decision standing for the second that ends at it
    assert alarm_events(alarms, 1.0) == [(199.0, 214.0), (361.0, 499.0)]
    assert latency([a["raised_s"] for a in alarms], [(350.0, 500.0)]) == pytest.approx(17.0)
    scores = score_recording([(350.0, 500.0)], alarm_events(alarms, 1.0), 500.0)  # the artefact: one false positive
    assert (scores["event_tp"], scores["event_fp"], scores["event_fp_per_24h"]) == (1, 1, pytest.approx(86400 / 500))
    # a seizure that ends before the detector fires is missed
    assert np.isnan(latency([a["raised_s"] for a in alarms], [(350.0, 360.0)]))


# -------------------------------------------------------------------- Bonn data
@needs_data
def test_bonn_windows_labels_and_segment_grouped_folds():
    d = bonn_windows(BONN, "A-E", preprocessing=PRE, window=SPEC)
    # 23.6 s at 100 Hz = 2360 samples, minus 3 s: 2060 -> (2060 - 400) // 200 + 1 = 9 windows
    assert d.X.shape == (200 * 9, 1, 400) and d.X.dtype == np.float32
    assert (d.y == "seizure").sum() == 100 * 9 and set(d.sets) == {"A", "E"}
    assert all(d.y[d.sets == "E"] == "seizure") and all(d.y[d.sets == "A"] == "background")
    assert len(set(d.groups)) == 200 and {g[0] for g in d.groups} == {"A", "E"}
    # volts, band-passed: no DC, scalp A around tens of microvolts, ictal E larger
    assert abs(d.X.mean()) < 5e-6
    assert 1e-5 < np.median(d.X[d.sets == "A"].std(-1)) < np.median(d.X[d.sets == "E"].std(-1)) < 1e-3
    folds = segment_folds(d, 5, seed=0)
    seen = np.concatenate([te for _, te in folds])
    assert sorted(seen) == list(range(len(d.y)))
    for train, test in folds:
        assert not set(d.groups[train]) & set(d.groups[test])
        assert 0.4 < d.y01[test].mean() < 0.6  # stratified
    assert parse_task("ABCD-E") == ("ABCD", "E")
    with pytest.raises(ConfigError, match="ABCD-E"):
        parse_task("A-F")


@needs_data
def test_bandpower_lr_trains_well_above_chance_on_bonn():
    d = bonn_windows(BONN, "A-E", preprocessing=PRE, window=SPEC)
    train, test = segment_folds(d, 5, seed=0)[0]
    clf = make_seizure_pipeline("BP+LR", sfreq=100.0).fit(d.X[train], d.y[train])
    p = clf.predict_proba(d.X[test])[:, 1]
    ids, ps, ys = per_segment(p, d.groups[test], d.y[test])
    m = segment_metrics(ys, ps)
    assert m["accuracy"] >= 0.95 and m["roc_auc"] >= 0.98
    # heterogeneity: the single-channel model runs on 3 channels, one at a time
    X3 = np.concatenate([d.X[test[:6]]] * 3, axis=1)
    per_ch = channel_probabilities(clf, X3)
    assert per_ch.shape == (6, 3) and np.allclose(per_ch, p[:6, None])
    assert np.allclose(clf.predict_proba(X3)[:, 1], p[:6])


@needs_data
def test_tiny_mvpformer_short_training_above_chance():
    from pipelines.deep import make_deep_pipeline

    torch.set_num_threads(1)
    d = bonn_windows(BONN, "A-E", preprocessing=PRE, window=SPEC)
    train, test = segment_folds(d, 5, seed=0)[0]
    clf = make_deep_pipeline(
        "MVPFormer", size="tiny", segment_len=100, n_layers=1, drop_prob=0.0, channel_mode="independent",
        channel_combine="top3", max_epochs=3, lr=3e-3, batch_size=64, sfreq=100.0, seed=0,
    )  # fmt: skip
    clf.fit(d.X[train], d.y[train])
    p = clf.predict_proba(d.X[test])[:, 1]
    m = segment_metrics(d.y[test], p)
    assert m["roc_auc"] > 0.8 and m["accuracy"] > 0.7, m
    # trained on one channel, it takes 21: each channel alone, top-3 mean
    X21 = np.repeat(d.X[test[:4]], 21, axis=1)
    assert np.allclose(clf.predict_proba(X21)[:, 1], p[:4], atol=1e-5)


# -------------------------------------------------------------- MVPFormer head
def test_mvpformer_independent_channels_match_per_channel_runs():
    torch.manual_seed(0)
    kw = dict(size="tiny", segment_len=64, drop_prob=0.0, n_layers=1)
    joint = MVPFormer(**kw).eval()
    indep = MVPFormer(**kw, channel_mode="independent", channel_combine="top2").eval()
    indep.load_state_dict(joint.state_dict())
    x = torch.randn(3, 5, 2 * 64)
    with torch.no_grad():
        single = torch.stack([joint(x[:, c : c + 1]).softmax(-1) for c in range(5)], 1)  # (B, C, 2)
        out = indep(x).exp()
        assert torch.allclose(out, combine_channel_probabilities(single, "top2"), atol=1e-6)
        assert torch.allclose(indep(x[:, :1]).exp(), joint(x[:, :1]).softmax(-1), atol=1e-6)
        assert torch.allclose(indep.channel_weights(x), single, atol=1e-6)
    with pytest.raises(ModelError, match="channel_mode"):
        MVPFormer(channel_mode="pooled")
    with pytest.raises(ModelError, match="channel_combine"):
        MVPFormer(channel_mode="independent", channel_combine="median")


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("mode", ["joint", "independent"])
def test_bad_input_names_the_limit(mode):
    model = MVPFormer(size="tiny", segment_len=100, n_layers=1, channel_mode=mode).eval()
    with pytest.raises(ModelError, match="max_channels=128"):
        model(torch.randn(1, 129, 200))
    with pytest.raises(ModelError, match="max_segments=110"):
        model(torch.randn(1, 1, 111 * 100))
    with pytest.raises(ModelError, match="shorter than one segment"):
        model(torch.randn(1, 1, 99))
    # Bonn's native rate does not divide a 1 s segment
    with pytest.raises(ModelError, match="173.61 Hz.*whole, positive number of samples"):
        WindowSpec(sfreq=173.61, length_s=4.0, segment_s=1.0).check()
    with pytest.raises(ConfigError, match="not a whole number of MVPFormer segments"):
        WindowSpec(sfreq=100, length_s=4.5, segment_s=1.0).check()


def test_short_recording_and_bad_estimator_input():
    from bci.channels import ChannelSet
    from bci.io import Recording
    from bci.preprocess import Preprocessor

    rec = Recording(np.random.default_rng(0).standard_normal((2, 250)) * 1e-5, 100.0, ChannelSet(["C3", "C4"]))
    with pytest.raises(DataError, match="shorter than one 4 s window"):
        recording_windows(rec, Preprocessor(bandpass=[0.5, 40]), SPEC, hop_s=1.0)
    with pytest.raises(DataError, match="at 250 Hz after preprocessing, the model at 100 Hz"):
        recording_windows(rec, Preprocessor(resample=250), SPEC, hop_s=1.0)
    with pytest.raises(ConfigError, match="Nyquist"):
        BandPower(sfreq=60).fit(np.zeros((2, 1, 400)))
    with pytest.raises(ConfigError, match="unknown seizure pipeline"):
        make_seizure_pipeline("SVM")
    with pytest.raises(DataError, match="n_windows, n_channels, n_times"):
        PerChannel(make_seizure_pipeline("BP+LR", sfreq=100)).fit(np.zeros((4, 400)), [0, 1, 0, 1])


# --------------------------------------------------------- CLI and saved model
@needs_data
def test_bci_evaluate_seizure_config_writes_tables_and_plot(tmp_path, capsys, seizure_bids):
    import pandas as pd
    import yaml

    from bci.cli import main
    from bci.szcore import pooled_scores

    cfg = yaml.safe_load((ROOT / "configs" / "seizure_bonn.yaml").read_text())
    cfg["data"] = {"bonn": str(BONN), "malow": str(MALOW)}
    cfg["datasets"] = [{"name": "bids", "path": str(seizure_bids)}]  # two synthetic recordings, one seizure each
    cfg["evaluation"]["params"].update(tasks=["A-E"], n_folds=2)
    cfg["evaluation"]["params"]["events"]["train_task"] = "A-E"  # its folds give the operating point
    cfg["pipelines"] = ["seizure_bandpower_lr"]
    path = tmp_path / "sz.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["evaluate", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    res = pd.read_csv(tmp_path / "out" / "results.csv")
    seg = res[res.session == "segments"]
    assert len(seg) == 2 and (seg.accuracy > 0.9).all() and set(seg.dataset) == {"Bonn A-E"}
    ev = res[res.session == "events"]
    at_point = sorted(c for c in set(ev["combine"]) if c.startswith("top3 @ "))
    assert len(at_point) == 1 and set(ev["combine"]) == {"top3", "mean", "max", *at_point}
    assert set(ev.dataset) == {"Malow", f"BIDS {seizure_bids.name}"}
    assert ev.recording.nunique() == 3 and (ev.groupby("recording").size() == 4).all()
    # the main combination again at the threshold chosen on the out-of-fold Bonn windows
    params = json.loads(ev[ev["combine"] == at_point[0]].iloc[0].params)
    point = params["operating_point"]
    assert at_point[0] == f"top3 @ {point['threshold']:g}" and params["alarm"]["threshold"] == point["threshold"]
    assert point["target_fp_per_24h"] == 24 and point["fp_per_24h"] <= 24 or not point["reached"]
    top3 = ev[(ev["combine"] == "top3") & (ev.dataset == "Malow")].iloc[0]
    # the Bonn-trained detector flags the Malow seizure (onset ~350 s) with at most one false positive
    assert top3.event_ref == 1 and top3.event_tp == 1 and top3.event_fp <= 1 and 0 <= top3.latency_s <= 40
    assert top3.hours == pytest.approx(500 / 3600) and top3.event_fp_per_24h == pytest.approx(top3.event_fp * 24 / top3.hours)
    bids = ev[ev.dataset != "Malow"]
    assert (bids.event_ref == 1).all() and np.allclose(bids.hours, 300 / 3600)
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| BP+LR |" in summary and "0.97 target" in summary and "toleranceStart 30 s" in summary
    assert "### Pooled over 3 recording(s)" in summary and "FP/24 h (h scored)" in summary
    pooled = pooled_scores(ev[ev["combine"] == "top3"].to_dict("records"))
    assert f"| BP+LR | top3 | 3 | {pooled['event_sensitivity']:.3f} | {pooled['event_precision']:.3f} |" in summary
    assert "first crossing" in summary and "Detector settings (post hoc" in summary
    assert 0 <= top3.raw_latency_s <= top3.latency_s
    assert (tmp_path / "out" / "malow_trend.png").stat().st_size > 10_000
    cfg["evaluation"]["params"]["events"]["onset"] = 350
    path.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert main(["evaluate", str(path), "--out", str(tmp_path / "bad")]) == 2
    assert "evaluation.params.events.onset: unknown key; allowed: " in capsys.readouterr().err
    del cfg["evaluation"]["params"]["events"]["onset"]
    cfg["datasets"] = [{"name": "CHBMIT", "path": str(seizure_bids)}]
    path.write_text(yaml.safe_dump(cfg))
    assert main(["evaluate", str(path), "--out", str(tmp_path / "bad")]) == 2
    assert "datasets[0]: the seizure evaluation reads BIDS-EEG datasets" in capsys.readouterr().err


@needs_data
def test_bci_train_seizure_model_runs_on_21_malow_channels(tmp_path):
    from bci.io import load_recording
    from bci.model import TrainedModel
    from bci.training import train

    cfg_path = ROOT / "configs" / "train_seizure_bandpower_lr.yaml"
    import yaml

    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["train"]["recordings"] = [str(BONN)]
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    train(path, tmp_path / "model", progress=False)
    model = TrainedModel.load(tmp_path / "model")
    assert model.task == "seizure" and model.classes == CLASSES
    assert len(model.channels) == 21 and model.sfreq == 100.0 and model.n_times == 400
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["metadata"]["n_windows"] == {"background": 3600, "seizure": 900}
    rec = load_recording(MALOW)
    processed, _ = model.prepare_recording(rec)
    quiet = processed.data[None, :, 100 * 100 : 104 * 100]
    ictal = processed.data[None, :, 380 * 100 : 384 * 100]
    p = model.predict_proba(np.concatenate([quiet, ictal]))
    assert p[0, 1] < 0.2 and p[1, 1] > 0.8


def test_annotated_recording_windows_label_the_last_segment():
    import mne

    from bci.channels import ChannelSet
    from bci.io import Recording
    from bci.preprocess import Preprocessor
    from bci.seizure import annotated_windows

    rng = np.random.default_rng(0)
    rec = Recording(rng.standard_normal((2, 60 * 100)) * 1e-5, 100.0, ChannelSet(["C3", "C4"]),
                    annotations=mne.Annotations([30.0], [10.0], ["seizure"]))  # fmt: skip
    X, y = annotated_windows(rec, Preprocessor(bandpass=[0.5, 40]), SPEC, 1.0, ["seizure"])
    ends = np.arange(4.0, 61.0, 1.0)
    assert X.shape == (len(ends), 2, 400)
    # seizure when (end - 1 s, end] overlaps [30, 40]
    assert list(ends[y == "seizure"]) == list(np.arange(31.0, 41.0))
