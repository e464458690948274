"""Headset workflow: ``bci record``, ``bci calibrate``, training from the recording, feedback.

Every stream here is a real liblsl stream on loopback; every wait is bounded. The
round trip replays a real PhysioNet run (S001R04, 64 channels at 160 Hz, its T0/T1/T2
annotations as the marker stream) at high speed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import EEGBCI

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # the cue and feedback windows
pylsl = pytest.importorskip("pylsl")

RUN = EEGBCI / "S001" / "S001R04.edf"
ROOT = Path(__file__).resolve().parents[1]
MOTOR = ["FC3", "FC4", "C3", "Cz", "C4", "CP3", "CP4"]


def _name(prefix: str) -> str:
    """A stream name no other test (or concurrent run) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_until(cond, timeout: float, what: str, step: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@pytest.fixture(scope="module")
def source_run(data_dir):
    from bci.io import load_recording

    if not RUN.exists():
        pytest.skip(f"{RUN} is not present")
    return load_recording(RUN)


def _train_config(tmp_path: Path, recordings, events, *, pipeline="ts_svm", tmin=0.5, tmax=2.5, channels=MOTOR) -> Path:
    cfg = {
        "name": "headset test", "seed": 3, "preprocessing": {"bandpass": [8, 30]},
        "train": {"pipeline": pipeline, "channels": channels, "events": events, "tmin": tmin, "tmax": tmax,
                  "recordings": [str(r) for r in recordings]},
    }  # fmt: skip
    path = tmp_path / "train_local.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# ------------------------------------------------------------------ bci record
@pytest.fixture(scope="module")
def recorded(source_run, tmp_path_factory):
    """S001R04 replayed at 25x, recorded with ``bci record`` (the CLI, in this process)."""
    from bci.cli import main
    from realtime.replay import Replay

    tmp = tmp_path_factory.mktemp("record")
    name = _name("rec")
    out = tmp / "s001r04.fif"
    replay = Replay(source_run, name, speed=25.0, wait_for_consumer=20.0).start()
    try:
        t0 = time.perf_counter()
        code = main(["record", "--source", name, "--out", str(out), "--seconds", f"{source_run.duration:g}",
                     "--flush", "0.5", "--timeout", "10"])  # fmt: skip
        seconds = time.perf_counter() - t0
    finally:
        replay.stop()
    assert code == 0
    return out, seconds


@pytest.mark.slow
def test_record_replayed_run_same_samples_and_events(recorded, source_run):
    from bci.io import load_recording

    out, seconds = recorded
    assert seconds < 30
    assert not Path(str(out) + ".parts").exists()
    back = load_recording(out)
    assert back.sfreq == source_run.sfreq
    assert back.channels.names == source_run.channels.names
    assert back.channels.types == source_run.channels.types
    assert back.data.shape == source_run.data.shape
    # float32 microvolts on the wire, float32 volts in the file
    np.testing.assert_allclose(back.data, source_run.data, rtol=1e-6, atol=1e-10)
    a, b = back.annotations, source_run.annotations
    assert list(a.description) == list(b.description)
    np.testing.assert_allclose(a.onset, b.onset, atol=0.5 / source_run.sfreq)
    assert not [d for d in a.description if d.startswith("BAD")]  # no gap at 25x on loopback
    import mne

    assert mne.io.read_raw_fif(out, verbose="error").info["meas_date"] is not None


@pytest.fixture(scope="module")
def recorded_model(recorded, tmp_path_factory):
    """``bci train`` (the CLI) on the recorded run: T1 -> left_hand, T2 -> right_hand."""
    from bci.cli import main

    out, _ = recorded
    tmp = tmp_path_factory.mktemp("model")
    cfg = _train_config(tmp, [out], {"T1": "left_hand", "T2": "right_hand"})
    assert main(["train", str(cfg), "--out", str(tmp / "model"), "--no-progress"]) == 0
    return tmp / "model"


@pytest.mark.slow
def test_recording_trains_and_predicts(recorded, recorded_model, tmp_path):
    from bci.cli import main
    from bci.model import TrainedModel

    out, _ = recorded
    model = TrainedModel.load(recorded_model)
    assert model.classes == ["left_hand", "right_hand"]
    assert model.metadata["n_windows"] == {"left_hand": 8, "right_hand": 7}
    assert model.metadata["trained_on"] == [out.name]
    pred = tmp_path / "pred.json"
    assert main(["predict", str(recorded_model), str(out), "--json", str(pred), "--hop", "1.0"]) == 0
    records = json.loads(pred.read_text())
    assert records and {"file", "start_s", "end_s", "left_hand", "right_hand"} <= set(records[0])
    assert all(abs(r["left_hand"] + r["right_hand"] - 1) < 1e-6 for r in records)
    assert records[-1]["end_s"] <= 125.0 + 1e-6


def _record_cmd(name: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bci.cli", "record", "--source", name, "--out", str(out), "--timeout", "20", *extra]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.slow
def test_killed_recorder_leaves_readable_parts_and_ctrl_c_closes_cleanly(source_run, tmp_path):
    """SIGKILL: every flushed segment is a readable FIF and --recover builds the file.
    SIGINT (Ctrl-C): the file is finished and the parts removed."""
    import mne

    from bci.cli import main
    from bci.io import load_recording
    from realtime.recording import complete_parts, parts_dir
    from realtime.replay import Replay

    names = {"kill": _name("kill"), "int": _name("int")}
    outs = {k: tmp_path / f"{k}.fif" for k in names}
    # each replay starts when its recorder is connected, so recordings start at sample 0
    replays = {k: Replay(source_run, n, speed=4.0, wait_for_consumer=30.0).start() for k, n in names.items()}
    # started with SIGINT ignored, as a shell starts background jobs: Ctrl-C must still work
    procs = {k: subprocess.Popen(_record_cmd(n, outs[k], "--flush", "0.3"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=_env(), cwd=ROOT,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
             for k, n in names.items()}  # fmt: skip
    try:
        for k in names:
            wait_until(lambda k=k: len(complete_parts(parts_dir(outs[k]))) >= 3 or procs[k].poll() is not None, 40,
                       f"3 segments from the {k} recorder")  # fmt: skip
            assert procs[k].poll() is None, procs[k].communicate()
        procs["kill"].send_signal(signal.SIGKILL)
        procs["int"].send_signal(signal.SIGINT)
        out_int, err_int = procs["int"].communicate(timeout=90)
        procs["kill"].communicate(timeout=10)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
        for r in replays.values():
            r.stop()
    # Ctrl-C: clean exit, finished file, no parts left
    assert procs["int"].returncode == 0, err_int
    assert "wrote" in out_int
    assert not parts_dir(outs["int"]).exists()
    rec = load_recording(outs["int"])
    np.testing.assert_allclose(rec.data, source_run.data[:, : rec.n_times], rtol=1e-6, atol=1e-10)
    # SIGKILL: no file, but readable parts holding a prefix of the signal
    assert procs["kill"].returncode == -signal.SIGKILL
    assert not outs["kill"].exists()
    parts = complete_parts(parts_dir(outs["kill"]))
    assert len(parts) >= 3
    first = mne.io.read_raw_fif(parts[0][0], preload=True, verbose="error")
    np.testing.assert_allclose(first.get_data(), source_run.data[:, : first.n_times], rtol=1e-6, atol=1e-10)
    flushed = sum(mne.io.read_raw_fif(p, verbose="error").n_times for p, _ in parts)
    assert main(["record", "--source", "x", "--out", str(outs["kill"])]) == 2  # refuses: parts of an interrupted recording
    assert main(["record", "--recover", "--out", str(outs["kill"])]) == 0
    rec = load_recording(outs["kill"])
    assert rec.n_times >= flushed > 0  # (a part may have been completed after the listing)
    np.testing.assert_allclose(rec.data, source_run.data[:, : rec.n_times], rtol=1e-6, atol=1e-10)
    recorded_events = [(o, d) for o, d in zip(rec.annotations.onset, rec.annotations.description)]
    expected = [(o, d) for o, d in zip(source_run.annotations.onset, source_run.annotations.description) if o < rec.duration - 0.2]
    assert [d for _, d in recorded_events][: len(expected)] == [d for _, d in expected]
    assert not parts_dir(outs["kill"]).exists()


def test_segments_assemble_gaps_markers_and_recover(tmp_path):
    """The file format alone (no LSL): segments as they come, assembled with each marker on
    its nearest sample, a timestamp jump as BAD_gap, a marker-stream loss as
    BAD_markers_lost; the parts of a writer that died are recovered."""
    from bci.channels import ChannelSet
    from bci.io import load_recording
    from realtime.recording import GAP, MARKERS_LOST, SegmentWriter, assemble, complete_parts, parts_dir, recover

    sfreq, chans = 100.0, ChannelSet(["C3", "C4"], ["eeg", "eeg"])
    x = np.vstack([np.arange(300), -np.arange(300)]) * 1e-6
    ts = 1000.0 + np.arange(300) / sfreq
    ts[200:] += 0.5  # 50 samples never arrived after sample 199
    out = tmp_path / "rec.fif"
    writer = SegmentWriter(out, chans, sfreq, epoch_utc=1.7e9, header={"markers": "mk"})
    writer.append(x[:, :120], ts[:120])
    assert writer.flush() == 120 and len(complete_parts(writer.parts)) == 1
    writer.add_marker(ts[30] + 0.004, "left")
    writer.add_event(ts[150], "markers_lost", 150)
    writer.append(x[:, 120:250], ts[120:250])
    writer.flush()
    writer.add_event(ts[220], "markers_back", 220)
    writer.add_marker(ts[240] - 0.003, "right")
    writer.add_marker(ts[0] - 1.0, "early")  # before the first sample: dropped
    writer.append(x[:, 250:], ts[250:])
    writer.flush()
    writer.close()
    summary = assemble(writer.parts, out)
    assert (summary.n_samples, summary.n_parts, summary.dropped_markers) == (300, 3, 1)
    assert summary.markers == {"left": 1, "right": 1}
    assert summary.gaps == [(1.99, 0.5)] and summary.markers_lost == [(1.5, 0.7)]
    assert not parts_dir(out).exists()
    back = load_recording(out)
    np.testing.assert_allclose(back.data, x, rtol=1e-6, atol=1e-12)
    ann = back.annotations
    assert list(ann.description) == ["left", MARKERS_LOST, GAP, "right"]
    np.testing.assert_allclose(ann.onset, [0.30, 1.5, 1.99, 2.40], atol=1e-6)  # float32 in the file
    np.testing.assert_allclose(ann.duration, [0.0, 0.7, 0.02, 0.0], atol=1e-6)
    import mne

    assert mne.io.read_raw_fif(out, verbose="error").info["meas_date"].timestamp() == pytest.approx(1.7e9 + 1000.0)

    # died after two flushes: the unflushed samples are lost, a torn marker line and a
    # half-written segment are ignored
    out = tmp_path / "died.fif"
    writer = SegmentWriter(out, chans, sfreq, epoch_utc=0.0)
    for a, b in ((0, 100), (100, 150)):
        writer.append(x[:, a:b], ts[a:b])
        writer.flush()
    writer.add_marker(ts[120], "left")
    writer.append(x[:, 150:200], ts[150:200])
    writer.close()
    with open(writer.parts / "markers.tsv", "a") as fh:
        fh.write("1001.3")
    (writer.parts / "part-00002.tmp_raw.fif").write_bytes(b"half")
    summary = recover(out)
    assert summary.recovered and (summary.n_samples, summary.n_parts) == (150, 2) and summary.markers == {"left": 1}
    np.testing.assert_allclose(load_recording(out).data, x[:, :150], rtol=1e-6, atol=1e-12)
    assert not parts_dir(out).exists()


class _Source:
    """A headset-like outlet without channel meta-data, with explicit sample timestamps."""

    def __init__(self, name: str, sfreq: float = 100.0, n_channels: int = 3):
        self.name, self.sfreq, self.n_channels = name, sfreq, n_channels
        self.t0 = pylsl.local_clock() - 30.0  # every stamp lies in the past
        self.k = 0  # next sample index (timestamps follow it)
        self.values: list[np.ndarray] = []
        self.open()

    def open(self):
        info = pylsl.StreamInfo(self.name, "EEG", self.n_channels, self.sfreq, pylsl.cf_float32, self.name + "-id")
        self.outlet = pylsl.StreamOutlet(info)

    def close(self):
        self.outlet = None

    def push(self, n: int, skip: int = 0):
        self.k += skip
        idx = np.arange(self.k, self.k + n)
        x = (idx[:, None] * np.arange(1, self.n_channels + 1)[None, :]).astype(np.float32)  # microvolts
        self.outlet.push_chunk(x, (self.t0 + idx / self.sfreq).tolist())
        self.values.append(x)
        self.k += n

    def stamp(self, index: float) -> float:
        return self.t0 + index / self.sfreq


def test_gaps_lost_streams_and_unlabelled_channels(tmp_path, caplog):
    """Timestamp jumps and a lost/returning signal stream -> BAD_gap (never filled); a lost
    marker stream -> BAD_markers_lost, recording goes on; no labels -> ch1..chN."""
    from bci.io import load_recording
    from realtime.recorder import Recorder
    from realtime.recording import GAP, MARKERS_LOST

    name = _name("gap")
    src = _Source(name)
    minfo = lambda: pylsl.StreamInfo(name + "-mk", "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, name + "-mk")
    mk = pylsl.StreamOutlet(minfo())
    out = tmp_path / "gap.fif"
    rec = Recorder(name, out, markers=name + "-mk", flush_s=0.2, timeout=5)
    rec.start(max_wall_s=30)
    try:
        src.push(50)
        mk.push_sample(["left"], src.stamp(20))
        wait_until(lambda: rec.n_samples >= 50 and rec.writer.n_markers == 1, 5, "first samples and marker")
        src.push(50, skip=40)  # 40 samples never sent: a gap of 0.4 s
        wait_until(lambda: rec.n_samples >= 100, 5, "samples after the gap")
        mk = None  # the marker outlet disappears
        wait_until(lambda: rec.markers_lost, 5, "marker stream loss")
        src.push(30)
        wait_until(lambda: rec.n_samples >= 130, 5, "samples while markers are lost")
        mk = pylsl.StreamOutlet(minfo())
        wait_until(lambda: not rec.markers_lost, 15, "marker stream return")
        mk.push_sample(["right"], src.stamp(src.k + 10))
        src.push(20)
        wait_until(lambda: rec.n_samples >= 150 and rec.writer.n_markers == 2, 5, "marker after the return")
        src.close()  # the headset's outlet goes away
        wait_until(lambda: rec.stream_lost, 5, "signal stream loss")
        src.k += 100  # one second passes while it is gone
        src.open()
        wait_until(lambda: not rec.stream_lost, 15, "signal stream return")
        src.push(40)
        wait_until(lambda: rec.n_samples >= 190, 5, "samples after the return")
    finally:
        summary = rec.stop()
    assert summary.n_samples == 190 and not summary.labelled
    back = load_recording(out)
    assert back.channels.names == ("ch1", "ch2", "ch3")
    np.testing.assert_allclose(back.data * 1e6, np.concatenate(src.values).T, rtol=1e-6, atol=1e-4)  # nothing filled in
    ann = back.annotations
    gaps = [(o, e["missing_s"]) for o, d, e in zip(ann.onset, ann.description, ann.extras) if d == GAP]
    assert len(gaps) == 2
    np.testing.assert_allclose(gaps[0], (0.49, 0.40), atol=1e-4)  # junction between samples 49 and 50 (clock offsets: µs)
    np.testing.assert_allclose(gaps[1], (1.49, 1.00), atol=1e-4)
    markers = {d: o for o, d in zip(ann.onset, ann.description) if not d.startswith("BAD")}
    assert markers == pytest.approx({"left": 0.20, "right": 1.40}, abs=1e-6)
    lost = [(o, dur) for o, dur, d in zip(ann.onset, ann.duration, ann.description) if d == MARKERS_LOST]
    assert lost == [pytest.approx((1.00, 0.30), abs=1e-6)]  # samples 100..129 arrived while it was gone
    assert "no channel labels" in caplog.text


def test_channel_names_types_units_from_stream_metadata(tmp_path):
    """Labels, types and units of desc/channels: volts for voltage channels whatever the
    unit, a trigger channel's values kept as they are (not taken for microvolts)."""
    from bci.io import load_recording
    from realtime.recorder import Recorder

    name = _name("meta")
    info = pylsl.StreamInfo(name, "EEG", 4, 250.0, pylsl.cf_float32, name)
    chans = info.desc().append_child("channels")
    for label, kind, unit in (("C3", "EEG", "microvolts"), ("EEG C4-REF", "EEG", "mV"), ("HEOG", "EOG", "V"), ("TRIG", "STIM", "")):
        ch = chans.append_child("channel")
        ch.append_child_value("label", label)
        ch.append_child_value("type", kind)
        ch.append_child_value("unit", unit)
    outlet = pylsl.StreamOutlet(info)
    x = np.tile(np.array([[10.0, 0.02, 1e-4, 3.0]], np.float32), (50, 1))  # 10 uV, 20 uV (in mV), 100 uV (in V), trigger 3
    rec = Recorder(name, tmp_path / "meta.fif", seconds=0.2, timeout=5, flush_s=0.1)
    rec.start(max_wall_s=15)
    wait_until(lambda: rec.inlet is not None and outlet.have_consumers(), 5, "the recorder to connect")
    outlet.push_chunk(x, (pylsl.local_clock() - np.arange(49, -1, -1) / 250.0).tolist())
    summary = rec.join(15)
    assert summary.n_samples == 50 and summary.labelled
    back = load_recording(tmp_path / "meta.fif")
    assert back.channels.names == ("C3", "C4", "HEOG", "TRIG")
    assert back.channels.types == ("eeg", "eeg", "eog", "stim")
    np.testing.assert_allclose(back.data[:, 0], [10e-6, 20e-6, 100e-6, 3.0], rtol=1e-6)


def test_record_bad_input(tmp_path, capsys):
    from bci.cli import main
    from bci.errors import DataError, StreamError
    from realtime.recorder import Recorder
    from realtime.recording import check_output, parts_dir, recover

    with pytest.raises(DataError, match="ending in .fif"):
        check_output(tmp_path / "x.edf")
    with pytest.raises(DataError, match="does not exist"):
        check_output(tmp_path / "nope" / "x.fif")
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match="is not a folder"):
        check_output(tmp_path / "file" / "x.fif")
    (tmp_path / "old.fif").write_text("")
    with pytest.raises(DataError, match="never overwritten"):
        check_output(tmp_path / "old.fif")
    parts_dir(tmp_path / "cut.fif").mkdir()
    with pytest.raises(DataError, match="--recover"):
        check_output(tmp_path / "cut.fif")
    with pytest.raises(DataError, match="not enough free disk space"):
        check_output(tmp_path / "big.fif", need_bytes=1 << 62)
    with pytest.raises(DataError, match="nothing to recover"):
        recover(tmp_path / "none.fif")
    # the disk check runs once the stream's size is known, before the parts folder exists
    name = _name("bad")
    src = _Source(name)
    with pytest.raises(DataError, match="not enough free disk space"):
        Recorder(name, tmp_path / "full.fif", need_bytes=1 << 62, timeout=5).open()
    assert not parts_dir(tmp_path / "full.fif").exists()
    with pytest.raises(StreamError, match="no LSL stream with name='no-such-marker"):
        Recorder(name, tmp_path / "m.fif", markers="no-such-marker-stream", timeout=0.5).open()
    assert not parts_dir(tmp_path / "m.fif").exists()
    del src
    with pytest.raises(DataError, match="positive duration"):
        Recorder(name, tmp_path / "s.fif", seconds=-1)
    # the command line: one clear line, exit code 2, before any stream is looked for
    for argv, message in [
        (["record", "--source", "x", "--out", str(tmp_path / "nope" / "x.fif")], "does not exist"),
        (["record", "--out", str(tmp_path / "y.fif")], "needs --source"),
        (["record", "--source", _name("absent"), "--out", str(tmp_path / "z.fif"), "--timeout", "0.3"], "no LSL stream"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err


# ------------------------------------------------------------- bci calibrate
def _calibration_yaml(tmp_path: Path, **over) -> Path:
    section = {"classes": ["left_hand", "right_hand"], "trials_per_class": 4, "fixation": 0.05, "cue": 0.3,
               "rest": [0.05, 0.1], "start_delay": 0.05, "max_repeats": 2, "marker_stream": _name("calib"), **over}  # fmt: skip
    path = tmp_path / f"calibration-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump({"seed": 11, "calibration": section}))
    return path


def test_trial_order_balanced_seeded_and_bounded_runs():
    from bci.paradigm import trial_order

    for seed in range(20):
        order = trial_order(["left_hand", "right_hand", "feet"], 10, seed, max_repeats=2)
        assert sorted(order) == sorted(["left_hand", "right_hand", "feet"] * 10)
        runs = max(len(list(g)) for _, g in __import__("itertools").groupby(order))
        assert runs <= 2
    assert trial_order(["a", "b"], 20, 3) == trial_order(["a", "b"], 20, 3)
    assert trial_order(["a", "b"], 20, 3) != trial_order(["a", "b"], 20, 4)
    assert trial_order(["a", "b"], 5, 0, max_repeats=1) in (["a", "b"] * 5, ["b", "a"] * 5)


def test_schedule_timing_markers_and_result():
    """Every screen of a session and its start time; the cue's marker is its class."""
    import dataclasses

    from bci.paradigm import REST_MARKER, CalibrationConfig, CalibrationResult, build_schedule

    cal = CalibrationConfig(classes=["left_hand", "right_hand"], trials_per_class=3, fixation=0.5, cue=1.0,
                            rest=(0.5, 1.5), start_delay=2.0, seed=5)  # fmt: skip
    schedule = build_schedule(cal)
    steps = schedule.steps
    assert (steps[0].state, steps[0].t, steps[-1].state) == ("ready", 0.0, "done")
    trials = [steps[1 + 3 * i : 4 + 3 * i] for i in range(cal.n_trials)]
    assert [tuple(s.state for s in t) for t in trials] == [("fixation", "cue", "rest")] * 6
    assert trials[0][0].t == 2.0
    for i, (fix, cue, rest) in enumerate(trials):
        assert cue.t - fix.t == pytest.approx(0.5) and rest.t - cue.t == pytest.approx(1.0)
        assert (fix.marker, cue.marker, cue.cls, rest.marker) == (None, schedule.order[i], schedule.order[i], REST_MARKER)
        assert fix.trial == cue.trial == rest.trial == i
        following = trials[i + 1][0].t if i + 1 < len(trials) else steps[-1].t
        assert 0.5 <= following - rest.t <= 1.5
    assert sorted(schedule.order) == ["left_hand"] * 3 + ["right_hand"] * 3
    assert cal.duration_range() == (14.0, 20.0) and 14.0 < schedule.duration < 20.0
    assert cal.describe() == "6 trials (left_hand x3, right_hand x3), about 14-20 s"
    assert build_schedule(cal) == schedule  # seeded: the same session every time
    no_fixation = build_schedule(dataclasses.replace(cal, fixation=0.0, rest=(1.0, 1.0)))
    assert [s.state for s in no_fixation.steps[1:5]] == ["cue", "rest", "cue", "rest"]
    assert [s.t for s in no_fixation.steps[1:5]] == [2.0, 3.0, 4.0, 5.0]
    recording = type("Summary", (), {"markers": {"left_hand": 3, "right_hand": 2, "rest": 5}})()
    result = CalibrationResult.of_session(cal, schedule, "x.fif", shown=6, aborted=False, recording=recording)
    assert (result.path, result.trials_shown, result.trials_planned, result.order) == ("x.fif", 6, 6, schedule.order)


def test_calibration_config_errors(tmp_path):
    from bci.errors import ConfigError
    from bci.paradigm import load_calibration

    cal = load_calibration(ROOT / "configs" / "calibration_lr.yaml")
    assert cal.classes == ["left_hand", "right_hand"] and cal.n_trials == 40
    assert 250 < cal.duration_range()[0] <= cal.duration_range()[1] < 400
    for over, message in [
        ({"classes": ["left_hand", "jump"]}, "unknown class 'jump'"),
        ({"classes": ["left_hand"]}, "at least 2 classes"),
        ({"classes": ["feet", "feet"]}, "listed twice"),
        ({"trials_per_class": 0}, "positive whole number"),
        ({"trials_per_class": 2.5}, "positive whole number"),
        ({"cue": 0}, "at least one screen frame"),
        ({"cue": -1.0}, "at least one screen frame"),
        ({"fixation": 0.005}, "shorter than one screen frame"),
        ({"rest": [2.0, 1.0]}, "0 <= min <= max"),
        ({"rest": "long"}, "seconds or [min, max]"),
        ({"trials_per_class": 5000, "cue": 4.0}, "keep one file under"),
        ({"max_repeats": 0}, "positive whole number"),
        ({"marker_stream": ""}, "LSL stream name"),
        ({"colour": "red"}, "unknown key"),
    ]:
        with pytest.raises(ConfigError, match=__import__("re").escape(message)):
            load_calibration(_calibration_yaml(tmp_path, **over))
    bad = tmp_path / "none.yaml"
    bad.write_text("seed: 1\n")
    with pytest.raises(ConfigError, match="calibration: missing"):
        load_calibration(bad)


@pytest.mark.slow
def test_calibration_session_offscreen_recorded_and_trainable(source_run, tmp_path, capsys):
    """The cue window runs offscreen while a replayed headset is recorded: markers are
    published at the cues, balanced, and the file trains with bci train."""
    from bci.cli import main
    from bci.io import load_recording
    from bci.paradigm import build_schedule, load_calibration
    from gui.calibration import run_calibration
    from realtime.replay import Replay

    cfg = _calibration_yaml(tmp_path)
    cal = load_calibration(cfg)
    schedule = build_schedule(cal)
    name = _name("headset")
    out = tmp_path / "calibration_1.fif"
    # a 4x replay: the cues (0.3 s of wall clock) span 1.2 s of signal
    with Replay(source_run, name, speed=4.0, markers=False):
        result = run_calibration(cfg, name, out, timeout=10, flush_s=0.5, max_wall_s=30, screenshot=tmp_path / "cue.png")
    assert not result.aborted and result.trials_shown == result.trials_planned == 8
    assert result.order == schedule.order and sorted(result.order) == ["left_hand"] * 4 + ["right_hand"] * 4
    assert result.recording.markers == {"left_hand": 4, "right_hand": 4, "rest": 8}
    assert (tmp_path / "cue.png").stat().st_size > 1000
    rec = load_recording(out)
    cues = [(o, d) for o, d in zip(rec.annotations.onset, rec.annotations.description) if d != "rest"]
    assert [d for _, d in cues] == schedule.order  # in the order shown
    rests = [o for o, d in zip(rec.annotations.onset, rec.annotations.description) if d == "rest"]
    # cue -> rest: 0.3 s of wall clock = 1.2 s of the 4x signal (Qt timers on a loaded machine: loose bound)
    np.testing.assert_allclose(np.array(rests) - np.array([o for o, _ in cues]), 1.2, atol=0.4)
    train_cfg = _train_config(tmp_path, [out], ["left_hand", "right_hand"], tmin=0.0, tmax=0.75)
    assert main(["train", str(train_cfg), "--out", str(tmp_path / "model"), "--no-progress"]) == 0
    assert "trained TS+SVM on 8 windows (left_hand: 4, right_hand: 4)" in capsys.readouterr().out


def test_calibrate_bad_input(tmp_path, capsys):
    from bci.cli import main

    good = _calibration_yaml(tmp_path)
    for argv, message in [
        (["calibrate", str(_calibration_yaml(tmp_path, classes=["left_hand", "nose"])), "--source", "x", "--out", str(tmp_path / "a.fif")],
         "unknown class 'nose'"),
        (["calibrate", str(_calibration_yaml(tmp_path, rest=[1.0, 0.5])), "--source", "x", "--out", str(tmp_path / "a.fif")],
         "0 <= min <= max"),
        (["calibrate", str(good), "--source", "x", "--out", str(tmp_path / "no" / "a.fif")], "does not exist"),
        (["calibrate", str(good), "--source", _name("absent"), "--out", str(tmp_path / "b.fif"), "--timeout", "0.3"], "no LSL stream"),
    ]:  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not list(tmp_path.glob("*.parts"))


# ----------------------------------------------------------------- feedback
@pytest.mark.slow
def test_feedback_view_follows_the_decoder_with_a_paradigm(recorded, recorded_model, tmp_path):
    """The live decoder (realtime.Decoder on a replay of the recording) drives the cursor
    through its callback; its bci-out outlet carries the same probabilities; a feedback
    paradigm shows its cues and ends the session."""
    from gui.feedback import stream_feedback
    from realtime.decoder import Decoder
    from realtime.probabilities import ProbabilityInlet
    from realtime.replay import Replay

    out, _ = recorded
    name, outlet = _name("fb"), _name("bci-out")
    paradigm = _calibration_yaml(tmp_path, trials_per_class=1, cue=0.4, rest=[0.1, 0.1])
    with Replay(out, name, speed=2.0, markers=False):
        decoder = Decoder(recorded_model, name, {"outlet_name": outlet, "marker_name": outlet + "-markers", "hop_s": 0.25})
        decoder.start()
        try:
            inlet = ProbabilityInlet(outlet, timeout=5)
            first = time.monotonic()
            result = stream_feedback(decoder, paradigm=paradigm, seconds=20)
            took = time.monotonic() - first
            published = inlet.latest()
        finally:
            decoder.stop()
    assert not result.aborted and result.trials_shown == 2 and took < 10
    assert result.decisions_seen > 0 and not decoder.callbacks  # the view's callback is removed afterwards
    assert result.last.shape == (2,) and abs(result.last.sum() - 1) < 1e-6
    assert any(np.allclose(result.last, d.smoothed) for d in decoder.recent)
    assert -1 <= result.cursor <= 1
    # bci-out: one channel per class (labels), the decoder's smoothed probabilities
    assert inlet.classes == ["left_hand", "right_hand"]
    assert published is not None and any(np.allclose(published[0], d.smoothed) for d in decoder.recent)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_bci_stream_feedback_command(recorded, recorded_model, tmp_path, capsys):
    """``bci stream --feedback --paradigm CONFIG`` (offscreen): cues run, decisions flow,
    the session ends with the paradigm and the decoder stops cleanly."""
    from bci.cli import main
    from realtime.replay import Replay

    out, _ = recorded
    name = _name("cli-fb")
    paradigm = _calibration_yaml(tmp_path, trials_per_class=1, cue=0.5, rest=[0.1, 0.1])
    with Replay(out, name, speed=2.0, markers=False):
        code = main(["stream", "--model", str(recorded_model), "--source", name, "--feedback", "--paradigm", str(paradigm)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "stopped:" in text and "stream losses 0" in text
    assert int(text.split("stopped: ")[1].split(" decisions")[0]) > 0


def test_probability_inlet_loss_and_return():
    """A bci-out outlet that closes: polls return at once (state lost, last values kept);
    a decoder restarted under the same name is picked up again."""
    from realtime.probabilities import ProbabilityInlet

    name = _name("bci-out")

    def outlet():
        info = pylsl.StreamInfo(name, "Probabilities", 3, pylsl.IRREGULAR_RATE, pylsl.cf_double64, uuid.uuid4().hex)
        chans = info.desc().append_child("channels")
        for label in ("left_hand", "right_hand", "source_time"):
            chans.append_child("channel").append_child_value("label", label)
        return pylsl.StreamOutlet(info)

    out = outlet()
    inlet = ProbabilityInlet(name, timeout=5)
    assert inlet.classes == ["left_hand", "right_hand"] and inlet.latest() is None
    out.push_sample([0.3, 0.7, 123.0])
    wait_until(lambda: inlet.latest() is not None, 5, "the first probabilities")
    np.testing.assert_allclose(inlet.latest()[0], [0.3, 0.7])
    out = None
    wait_until(lambda: inlet.latest() is not None and inlet.state == "lost", 5, "the loss")
    t0 = time.monotonic()
    assert inlet.latest()[1] == "right_hand" and time.monotonic() - t0 < 0.5
    out = outlet()
    wait_until(lambda: inlet.latest() is not None and inlet.state == "running" and inlet.inlet is not None, 15, "the return")
    out.push_sample([0.9, 0.1, 124.0])
    wait_until(lambda: inlet.latest()[1] == "left_hand", 5, "probabilities after the return")
    inlet.close()


def test_feedback_view_cursor_and_bars():
    from bci.paradigm import cursor_position, layout
    from gui.app import ensure_qapp
    from gui.feedback import FeedbackView

    assert layout(["right_hand", "left_hand"]) == (1, 0) and layout(["T1", "T2"]) == (0, 1) and layout(["a", "b", "c"]) is None
    assert cursor_position(np.array([0.2, 0.8]), 0, 1) == pytest.approx(0.6)
    ensure_qapp()
    view = FeedbackView(["left_hand", "right_hand"], ease=1.0)
    view.set_probabilities([0.9, 0.1], "running")
    view.tick()
    assert view.cursor == pytest.approx(-0.8)
    img = view.grab().toImage()
    assert img.width() > 0
    bars = FeedbackView(["left_hand", "right_hand", "feet"], ease=0.5)
    bars.set_probabilities([0.2, 0.2, 0.6])
    bars.tick()
    np.testing.assert_allclose(bars.shown, [0.2667, 0.2667, 0.4667], atol=1e-3)
    with pytest.raises(Exception, match="3 classes got 2"):
        bars.set_probabilities([0.5, 0.5])
    bars.grab()


def test_feedback_ctrl_c_closes_the_view():
    """Ctrl-C in the terminal reaches Python while Qt's loop runs, and ends the session."""
    import signal

    from PySide6 import QtCore

    from gui.app import ensure_qapp
    from gui.feedback import run_feedback
    from realtime.probabilities import DecisionQueue

    ensure_qapp()
    queue = DecisionQueue(["left_hand", "right_hand"])
    QtCore.QTimer.singleShot(300, lambda: signal.raise_signal(signal.SIGINT))
    t0 = time.monotonic()
    result = run_feedback(queue, seconds=10)
    assert result.aborted and time.monotonic() - t0 < 5 and result.decisions_seen == 0 and result.frames > 0
