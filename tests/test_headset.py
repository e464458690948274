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


@pytest.mark.slow
def test_recording_trains_and_predicts(recorded, tmp_path, capsys):
    from bci.cli import main
    from bci.model import TrainedModel

    out, _ = recorded
    cfg = _train_config(tmp_path, [out], {"T1": "left_hand", "T2": "right_hand"})
    assert main(["train", str(cfg), "--out", str(tmp_path / "model"), "--no-progress"]) == 0
    model = TrainedModel.load(tmp_path / "model")
    assert model.classes == ["left_hand", "right_hand"]
    assert model.metadata["n_windows"] == {"left_hand": 8, "right_hand": 7}
    assert model.metadata["trained_on"] == [out.name]
    pred = tmp_path / "pred.json"
    assert main(["predict", str(tmp_path / "model"), str(out), "--json", str(pred), "--hop", "1.0"]) == 0
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
    from realtime.recorder import complete_parts, parts_dir
    from realtime.replay import Replay

    names = {"kill": _name("kill"), "int": _name("int")}
    outs = {k: tmp_path / f"{k}.fif" for k in names}
    # each replay starts when its recorder is connected, so recordings start at sample 0
    replays = {k: Replay(source_run, n, speed=4.0, wait_for_consumer=30.0).start() for k, n in names.items()}
    procs = {k: subprocess.Popen(_record_cmd(n, outs[k], "--flush", "0.3"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=_env(), cwd=ROOT) for k, n in names.items()}  # fmt: skip
    try:
        for k in names:
            wait_until(lambda k=k: len(complete_parts(parts_dir(outs[k]))) >= 3 or procs[k].poll() is not None, 40,
                       f"3 segments from the {k} recorder")  # fmt: skip
            assert procs[k].poll() is None, procs[k].communicate()
        procs["kill"].send_signal(signal.SIGKILL)
        procs["int"].send_signal(signal.SIGINT)
        out_int, err_int = procs["int"].communicate(timeout=30)
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
    from realtime.recorder import GAP, MARKERS_LOST, Recorder

    name = _name("gap")
    src = _Source(name)
    minfo = lambda: pylsl.StreamInfo(name + "-mk", "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, name + "-mk")  # noqa: E731
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


def test_record_bad_input(tmp_path, capsys):
    from bci.cli import main
    from bci.errors import DataError, StreamError
    from realtime.recorder import Recorder, check_output, parts_dir

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
        from realtime.recorder import recover

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
