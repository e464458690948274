"""Online session adaptation (issue 24): the running reference, the pseudo-online evaluation,
and the live loop giving the pseudo-online evaluation's decisions on a replayed 2b session."""

import json
import time
import uuid

import numpy as np
import pytest
import yaml
from pyriemann.utils.mean import mean_riemann

from bci.errors import DataError
from pipelines.alignment import OnlineReference
from tests.conftest import eeg_outlet

TWO_B = {
    "name": "2b pseudo-online (test)",
    "seed": 42,
    "datasets": [{"name": "LocalEpochs", "subjects": [1], "params": {"classes": {1: "left_hand", 2: "right_hand"}}}],
    "paradigm": {"name": "LeftRightImagery", "params": {"fmin": 8, "fmax": 30}},
    "evaluation": {"kind": "pseudo_online", "scoring": "accuracy", "params": {"train_sessions": [1, 2, 3], "test_sessions": [4, 5]}},
    "pipelines": ["ts_lr_recentered"],
}


def _spd(rng, n, d, scale=1.0):
    A = rng.standard_normal((n, d, 3 * d))
    return scale * A @ A.transpose(0, 2, 1) / (3 * d)


def test_running_reference_is_the_session_mean_without_forgetting():
    rng = np.random.default_rng(0)
    C = _spd(rng, 40, 4)
    ref = OnlineReference(np.eye(4), "euclid", forgetting=0.0, prior=0.0, warmup=100)
    for c in C:
        assert ref.update(c)
    np.testing.assert_allclose(ref.reference, C.mean(axis=0), rtol=1e-10)  # the running arithmetic mean, exactly
    np.testing.assert_allclose(ref.inv_sqrt @ ref.reference @ ref.inv_sqrt, np.eye(4), atol=1e-10)
    riem = OnlineReference(np.eye(4), "riemann", forgetting=0.0, prior=0.0, warmup=100)
    for c in C:
        riem.update(c)
    # the incremental geodesic mean approaches the Karcher mean of the session
    karcher = mean_riemann(C)
    assert np.linalg.norm(riem.reference - karcher) / np.linalg.norm(karcher) < 0.05


def test_riemannian_step_is_pyriemanns_geodesic():
    from pyriemann.utils.distance import distance_riemann
    from pyriemann.utils.geodesic import geodesic_riemann

    rng = np.random.default_rng(2)
    C = _spd(rng, 3, 5)
    ref = OnlineReference(C[0], "riemann", forgetting=0.0, prior=1.0, warmup=100)
    ref.update(C[1])  # weight 1/2
    np.testing.assert_allclose(ref.reference, geodesic_riemann(C[0], C[1], 0.5), rtol=1e-9)
    expected = geodesic_riemann(ref.reference, C[2], 1 / 3)
    d = distance_riemann(ref.reference, C[2])
    ref.update(C[2])
    np.testing.assert_allclose(ref.reference, expected, rtol=1e-9)
    assert ref.distance_sq == pytest.approx(distance_riemann(C[0], C[1]) ** 2 + d**2)


def test_outliers_do_not_move_the_reference_and_state_round_trips():
    rng = np.random.default_rng(1)
    C = _spd(rng, 30, 4)
    ref = OnlineReference(np.eye(4), "riemann", warmup=10, reject_z=3.0)
    for c in C:
        ref.update(c)
    before = ref.reference.copy()
    assert not ref.update(C[0] * 1e4)  # an artefact: far outside the distances seen
    np.testing.assert_array_equal(ref.reference, before)
    assert ref.n_rejected == 1
    again = OnlineReference(np.eye(4), "riemann")
    again.load_state_dict(ref.state_dict())
    assert again.update(C[3]) == ref.update(C[3])
    np.testing.assert_allclose(again.reference, ref.reference)
    with pytest.raises(DataError, match="expected 0 <= forgetting <= 1"):
        OnlineReference(np.eye(4), forgetting=2.0)


def test_each_trial_is_aligned_before_it_moves_the_reference_and_flush_timing_does_not_matter():
    """OnlineAdaptation aligns trial k with the reference of trials < k; the move it makes waits
    for flush() (the live loop's, after publishing) or the next trial, with the same results."""
    from pyriemann.tangentspace import TangentSpace
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from pipelines.alignment import OnlineAdaptation, RiemannianRecentering

    rng = np.random.default_rng(2)
    C = np.concatenate([_spd(rng, 40, 4), _spd(rng, 40, 4, scale=3.0)])
    y = np.repeat([0, 1], 40)
    pipe = make_pipeline(RiemannianRecentering(), TangentSpace(), LogisticRegression()).fit(C, y)
    test = _spd(rng, 12, 4, scale=5.0)  # a shifted session
    batch, lazy, eager = (OnlineAdaptation(pipe) for _ in range(3))
    ref0 = lazy.reference.reference.copy()
    whole = batch.predict_proba(test)
    steps = []
    for i, c in enumerate(test):
        steps.append(lazy.predict_proba(c[None]))
        if i == 0:  # decided with the training reference; the move is still pending
            np.testing.assert_array_equal(lazy.reference.reference, ref0)
        eager.predict_proba(c[None])
        assert eager.flush() and not eager.flush()  # the live loop's call after publishing
    np.testing.assert_allclose(np.vstack(steps), whole, rtol=0, atol=1e-12)
    lazy.flush()
    np.testing.assert_allclose(lazy.reference.reference, eager.reference.reference, rtol=1e-12)
    assert lazy.reference.n_accepted == len(test) and not np.allclose(lazy.reference.reference, ref0)
    saved = lazy.state_dict()
    lazy.predict_proba(test[:1])  # a trial of another stream, its move pending ...
    lazy.load_state_dict(saved)  # ... dropped with the reference it would have moved
    assert not lazy.flush() and lazy.reference.n_accepted == len(test)
    np.testing.assert_array_equal(lazy.reference.reference, saved["reference"])
    fixed = OnlineAdaptation(pipe, update=False)
    np.testing.assert_allclose(fixed.predict_proba(test[:1]), whole[:1], rtol=0, atol=1e-12)  # trial 1: training reference


@pytest.fixture(scope="module")
def pseudo_online_run(tmp_path_factory, data_dir):
    """bci evaluate on subject 1 of 2b, pseudo-online, TS+LR re-centred; and the fitted pieces."""
    from bci.cli import main

    cfg = json.loads(json.dumps(TWO_B))
    cfg["datasets"][0]["params"]["path"] = str(data_dir / "bnci2014_004")
    tmp = tmp_path_factory.mktemp("po")
    (tmp / "po.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["evaluate", str(tmp / "po.yaml"), "--out", str(tmp / "out"), "--no-progress"]) == 0
    return tmp


def test_pseudo_online_evaluation_compares_the_three_modes(pseudo_online_run):
    import pandas as pd

    rows = pd.read_csv(pseudo_online_run / "out" / "results.csv")
    assert sorted(rows.pipeline.unique()) == [f"TS+LR (re-centred) | {m}" for m in ("incremental", "none", "transductive")]
    assert sorted(rows.session.astype(str).unique()) == ["4", "5"]
    for _, row in rows.iterrows():
        params = json.loads(row.params)
        assert len(params["correct"]) == row.n_test and row.accuracy == pytest.approx(np.mean(params["correct"]))
    by_mode = rows.groupby(rows.pipeline.str.rsplit(" | ", n=1).str[1]).accuracy.mean()
    assert by_mode["incremental"] > by_mode["none"]  # the session's own reference helps, trial by trial
    summary = (pseudo_online_run / "out" / "summary.md").read_text()
    assert "## Pseudo-online" in summary and (pseudo_online_run / "out" / "learning_curve.png").stat().st_size > 1000


@pytest.fixture(scope="module")
def session_4(pseudo_online_run):
    """The pseudo-online run's TS+LR of subject 1 (fitted on sessions 1-3 as bci evaluate fits it)
    as a streaming model, and session 4's trials and labels."""
    from sklearn.base import clone

    from bci.config import load_config
    from bci.evaluate import _group_fit_params, _load, data_sfreq, plan, session_model
    from pipelines.registry import fill_unset

    cfg = load_config(pseudo_online_run / "po.yaml")
    paradigm, pipelines, jobs = plan(cfg)
    X, y, meta = _load(paradigm, jobs[0][0], [1])
    sessions = meta.session.astype(str).to_numpy()
    train, test = np.isin(sessions, ["1", "2", "3"]), sessions == "4"
    sfreq = data_sfreq(paradigm, jobs[0][0], X.shape[-1])
    ((name, pipeline),) = pipelines.items()
    est = fill_unset(clone(pipeline), seed=42, sfreq=sfreq, scoring="accuracy")
    est.fit(X[train], y[train], **_group_fit_params(est, sessions[train]))
    return session_model(name, est, X.shape[1], X.shape[2], sfreq), X[test], y[test]


def test_overlapping_windows_move_the_reference_once_per_window_length(session_4):
    """Live, windows overlap (hop < window) and share their samples: by default only one window
    per window length of new signal moves the reference, so the decisions on the trials' own
    windows are the pseudo-online ones whatever the hop; ``stride_s: 0`` lets every window move
    it (a memory of 1/forgetting windows, a few seconds at a short hop)."""
    from bci.evaluate import play_session

    model, X, _ = session_4
    X = X[:12]
    offline = play_session(model, X, adapt=True)
    stream = np.concatenate(list(X), axis=1)  # the trials back to back, one continuous stream
    hop = model.n_times // 7  # 1001 samples a trial: windows end on every trial's end
    assert model.n_times == 7 * hop
    runs = {}
    for key, options in (("default", None), ("every", {"stride_s": 0})):
        pred = model.stream(model.sfreq, model.input_channels, hop_s=hop / model.sfreq, catch_up=True, flat_uv=0.0,
                            adapt=True, adapt_options=options)  # fmt: skip
        proba, ends = [], []
        for start in range(0, stream.shape[1], 100):
            if pred.push(stream[:, start : start + 100]) is not None:
                proba += [w.proba for w in pred.windows]
                ends += [w.end for w in pred.windows]
        pred.flush_adaptation()  # the last window's move
        runs[key] = (np.array(proba), np.array(ends), pred.adaptation.reference)
    proba, ends, ref = runs["default"]
    assert len(ends) == 7 * len(X) - 6 and ref.n_accepted + ref.n_rejected == len(X)
    on_trials = np.isin(ends, model.n_times * np.arange(1, len(X) + 1))
    np.testing.assert_allclose(proba[on_trials], offline, rtol=0, atol=1e-10)
    proba, ends, ref = runs["every"]
    assert ref.n_accepted + ref.n_rejected == len(ends)
    assert not np.allclose(proba[on_trials], offline, atol=1e-3)
    for bad, match in (({"stride_s": -1}, "stride_s: expected seconds >= 0"), ({"stride_s": True}, "stride_s: expected"),
                       ({"forget": 0.1}, "unknown option")):
        with pytest.raises(DataError, match=match):
            model.stream(model.sfreq, model.input_channels, adapt=True, adapt_options=bad)


def test_bci_stream_gives_the_pseudo_online_decisions_on_a_replayed_session(pseudo_online_run, session_4):
    """Session 4 of subject 1 replayed over LSL, trial after trial, through the live loop with
    adaptation on: the same probabilities, trial by trial, as the pseudo-online evaluation's
    incremental mode, whose accuracy it also reproduces."""
    import pandas as pd

    from bci.evaluate import play_session
    from realtime.decoder import Decoder, DecoderConfig

    model, X_test, y_test = session_4
    name = model.name
    offline = play_session(model, X_test, adapt=True)

    rows = pd.read_csv(pseudo_online_run / "out" / "results.csv")
    row = rows[(rows.pipeline == f"{name} | incremental") & (rows.session.astype(str) == "4")].iloc[0]
    labels = np.asarray(model.classes)[offline.argmax(axis=1)]
    assert (labels == y_test).astype(int).tolist() == json.loads(row.params)["correct"]

    tag = uuid.uuid4().hex[:8]
    outlet = eeg_outlet(f"2b-{tag}", model.input_channels.names, model.sfreq, channel_format="double64")
    decoder = Decoder(model, f"2b-{tag}", DecoderConfig.load(outlet_name=f"o-{tag}", marker_name=f"m-{tag}", resolve_timeout_s=3.0,
                                                             smoothing="none", adapt=True)).open()  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        for i, trial in enumerate(X_test):
            outlet.push_chunk(np.ascontiguousarray(trial.T * 1e6))
            while decoder.telemetry.decisions < i + 1:
                assert time.monotonic() < deadline, "the live loop fell behind"
                decoder.poll()
                time.sleep(0.001)
    finally:
        decoder.stop()
    assert "adapt on" in decoder.status_line() and "one per 4 s" in decoder.status_line()
    live = np.vstack([d.proba for d in decoder.recent])
    assert live.shape == offline.shape and decoder.summary()["dropped_windows"] == 0
    np.testing.assert_allclose(live, offline, atol=1e-6)


@pytest.mark.slow
def test_bci_train_learns_from_other_subjects_beside_ones_own_calibration(tmp_path, data_dir, capsys, monkeypatch):
    """The headset workflow's transfer: ``bci train`` on one's own calibration recording plus
    other subjects' runs (a MOABB dataset), each run re-centred on its own; the model streams
    one's next run with the adapting reference and decodes it above chance."""
    import mne

    from bci.cli import main
    from bci.io import load_recording
    from bci.model import TrainedModel

    monkeypatch.setenv("MNE_DATA", str(data_dir / "mne_data"))
    runs = data_dir / "mne_data/MNE-eegbci-data/files/eegmmidb/1.0.0/S001"
    for i, run in enumerate(("S001R04.edf", "S001R08.edf"), start=1):  # one's two calibration sessions
        own = mne.io.read_raw_edf(runs / run, preload=True, verbose="error")
        own.annotations.rename({"T1": "left_hand", "T2": "right_hand", "T0": "rest"})
        own.save(tmp_path / f"calibration_{i}_raw.fif", verbose="error")
    cfg = {
        "name": "transfer test", "seed": 3, "preprocessing": {"bandpass": [8, 30]},
        "datasets": [{"name": "PhysionetMI", "subjects": [2, 3], "params": {"imagined": True}}],
        "train": {"pipeline": "ts_lr_recentered", "channels": ["FC3", "FC4", "C3", "Cz", "C4", "CP3", "CP4"],
                  "events": ["left_hand", "right_hand"], "tmin": 0.5, "tmax": 2.5,
                  "recordings": [str(tmp_path / "calibration_*_raw.fif")]},
    }  # fmt: skip
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "train.yaml"), "--out", str(tmp_path / "model"), "--no-progress"]) == 0
    assert "trained TS+LR (re-centred) on" in capsys.readouterr().out
    meta = json.loads((tmp_path / "model" / "model.json").read_text())["metadata"]
    assert meta["trained_on"] == ["PhysionetMotorImagery/s2", "PhysionetMotorImagery/s3", "calibration_1_raw.fif", "calibration_2_raw.fif"]
    model = TrainedModel.load(tmp_path / "model")
    # one's next run (S001R12), as live: pushed through the streaming predictor, adapting
    rec = load_recording(runs / "S001R12.edf")
    records = model.predict_recording(rec, hop_s=0.25)
    ends = np.array([r["end_s"] for r in records])
    hits = []
    for onset, label in zip(rec.annotations.onset, rec.annotations.description):
        if label in ("T1", "T2"):  # the decision 2.5 s after each cue (the trained window, 0.5-2.5 s)
            r = records[int(np.argmin(np.abs(ends - onset - 2.5)))]
            hits.append(max(model.classes, key=lambda c: r[c]) == {"T1": "left_hand", "T2": "right_hand"}[label])
    assert len(hits) == 15 and np.mean(hits) > 0.6  # 0.8 (12 of 15)
    # bci predict runs the same predictor: adapting by default, the training reference with --no-adapt
    for flag, expected in ((None, records), ("--no-adapt", model.predict_recording(rec, hop_s=0.25, adapt=False))):
        out = tmp_path / f"predict{flag or ''}.json"
        assert main(["predict", str(tmp_path / "model"), str(runs / "S001R12.edf"), "--hop", "0.25", "--json", str(out)]
                    + ([flag] if flag else [])) == 0  # fmt: skip
        got = json.loads(out.read_text())
        np.testing.assert_allclose([r["left_hand"] for r in got], [r["left_hand"] for r in expected], atol=1e-12)
    assert not np.allclose([r["left_hand"] for r in records], [r["left_hand"] for r in expected], atol=1e-3)


def test_bench_windows_chooses_on_the_training_sessions(tmp_path, data_dir, capsys):
    """``bci bench windows``: each window scored by leave-one-session-out on sessions 1-3, the
    best inner mean chosen; the test sessions' score is printed beside it; bad windows are
    one-line errors."""
    from bci.cli import main
    from bci.errors import ConfigError
    from benchmarks.windows import parse_window, run

    out = tmp_path / "windows.json"
    assert main(["bench", "windows", "--pipeline", "ts_lr_recentered", "--windows", "0-4", "0.5-3.5", "--subjects", "1",
                 "--no-progress", "--json", str(out)]) == 0  # fmt: skip
    rows = json.loads(out.read_text())
    assert [r["window (s)"] for r in rows] == ["0-4", "0.5-3.5"] and "leave-one-session-out" in capsys.readouterr().out
    chosen = [r for r in rows if r["chosen"] == "yes"]
    assert len(chosen) == 1 and chosen[0]["inner mean"] == max(r["inner mean"] for r in rows)
    assert all(0.4 < r["inner mean"] <= 1 and 0.4 < r["test (not used)"] <= 1 for r in rows)
    assert rows[0]["inner mean"] != rows[1]["inner mean"]  # the windows were cut
    assert parse_window("0.5-3.5") == (0.5, 3.5)
    for bad in ("3-1", "a-b", "2"):
        with pytest.raises(ConfigError, match="expected START-STOP"):
            parse_window(bad)
    with pytest.raises(ConfigError, match="ends after the epochs"):
        run(pipeline="ts_lr_recentered", windows=["0-5"], subjects=[1], progress=False)
