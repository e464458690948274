"""The seizure-monitoring dashboard (gui/): offscreen Qt, real recordings, bounded waits.

Covers: the SQLite event log (WAL, durability across reopen, acknowledgements, CSV,
no identifiers), the alarm rule, montages / display filters / decimation against
bci.preprocess on the Malow recording, the trace view's sensitivity and montage,
the whole window fed by a replayed real recording over LSL (alarm from a synthetic
probability crossing the threshold, written to SQLite, acknowledged, screenshot),
stream loss and recovery, clean shutdown, and the command line.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import sqlite3
import threading
import time

import numpy as np
import pytest

from bci.errors import ConfigError, DataError

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def qapp():
    from realtime import quiet_liblsl

    quiet_liblsl()
    from gui.app import ensure_qapp

    return ensure_qapp(offscreen=True)


@pytest.fixture(scope="module")
def malow(data_dir):
    from bci.io import load_recording

    return load_recording(data_dir / "seizure" / "malow")


def pump(app, condition, timeout: float) -> bool:
    """Process Qt events until ``condition()`` holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        app.processEvents()
        if condition():
            return True
        time.sleep(0.01)
    app.processEvents()
    return bool(condition())


def _config(**changes) -> dict:
    from gui.app import load_dashboard_config

    cfg = load_dashboard_config()
    cfg.update(refresh_hz=30, window_size=[1400, 850], lost_after_s=0.6)
    cfg["alarm"] = {"threshold": 0.5, "duration_s": 2.0, "smoothing_s": 1.0}
    cfg.update(changes)
    return cfg


def _not_blank(path) -> tuple[bool, float]:
    from PySide6 import QtGui

    img = QtGui.QImage(str(path))
    assert not img.isNull(), f"{path} is not a readable image"
    img = img.convertToFormat(QtGui.QImage.Format_RGB32)
    arr = np.frombuffer(img.constBits(), np.uint8, img.sizeInBytes()).reshape(img.height(), -1)[:, : img.width() * 4]
    return bool(arr.std() > 20), float(arr.std())


# --------------------------------------------------------------------- event log
def test_event_log_is_durable_wal_and_exports_csv(tmp_path):
    from gui.eventlog import EventLog

    path = tmp_path / "log" / "events.sqlite"
    log = EventLog(path)
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    log.log("session_start", "test")
    alarm = log.log("alarm", "seizure alarm", stream_time_s=352.5, details={"onset_s": 350.0, "channels": ["T7", "P7"]})
    # another connection sees the alarm at once: it was committed, not buffered
    other = sqlite3.connect(path)
    assert other.execute("SELECT kind, stream_time_s FROM events WHERE id=?", (alarm,)).fetchone() == ("alarm", 352.5)
    assert [a.id for a in log.unacknowledged_alarms()] == [alarm]
    log.close()  # "crash": nothing else flushed

    log = EventLog(path)  # restart: the history is there, the alarm still waits
    assert [e.kind for e in log.events()] == ["session_start", "alarm"]
    assert log.get(alarm).details["channels"] == ["T7", "P7"]
    assert [a.id for a in log.unacknowledged_alarms()] == [alarm]
    log.acknowledge(alarm, "reviewed, clinical seizure")
    log.note("patient moved", stream_time_s=360.0)
    with pytest.raises(DataError, match="no alarm with id"):
        log.acknowledge(9999)
    with pytest.raises(ValueError, match="patient identifiers"):
        log.log("note", "x", details={"subject_info": {"last_name": "Doe"}})
    with pytest.raises(ValueError, match="unknown event kind"):
        log.log("bogus")
    log.close()

    log = EventLog(path)
    assert log.unacknowledged_alarms() == []
    ack = log.events("ack")[0]
    assert (ack.alarm_id, ack.message) == (alarm, "reviewed, clinical seizure")
    assert [e.kind for e in log.events(limit=2)] == ["ack", "note"]
    csv = log.export_csv(tmp_path / "out" / "events.csv").read_text().splitlines()
    assert csv[0] == "id,wall_time,stream_time_s,kind,alarm_id,message,details"
    assert len(csv) == 5 and ",alarm,," in csv[2] and "352.500" in csv[2] and "reviewed, clinical seizure" in csv[3]
    log.close()

    path.with_name("junk.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(DataError, match="cannot open as an SQLite event log"):
        EventLog(path.with_name("junk.sqlite"))


# --------------------------------------------------------------------- alarm rule
def test_alarm_monitor_logs_each_alarm_in_the_deciding_thread(tmp_path):
    from bci.alarm import AlarmRule
    from gui.alarms import AlarmMonitor
    from gui.eventlog import EventLog

    # the monitor logs each alarm (in the caller's thread) before the GUI sees it
    log = EventLog(tmp_path / "e.sqlite")
    mon = AlarmMonitor(AlarmRule(0.5, 1.0, 0.0), log)
    worker = threading.Thread(target=lambda: [mon.process(i * 0.25, 0.9 if i % 40 >= 20 else 0.0) for i in range(200)])
    worker.start()
    worker.join(10)
    assert not worker.is_alive()
    decisions, new = mon.take()
    assert len(decisions) == 200 and len(new) == 5
    assert [a.id for a in new] == [e.id for e in log.events("alarm")]  # logged in order
    assert [a.onset_s for a in new] == [5.0, 15.0, 25.0, 35.0, 45.0]
    mon.acknowledge(new[0].id, "ok")
    assert [a.id for a in mon.unacknowledged()] == [a.id for a in new[1:]]
    log.close()


# ---------------------------------------------------------------- display pipeline
def test_montages_and_filters_match_bci_preprocess_on_malow(malow):
    from bci.preprocess import Preprocessor, reference_matrix
    from gui.display import (
        DisplayProcessor,
        DisplaySettings,
        available_montages,
        channel_groups,
        data_channels,
    )

    ch = data_channels(malow.channels)
    assert available_montages(ch) == ["referential", "average", "double_banana"]
    raw = malow.data[:, :3000]
    chunks = np.array_split(np.arange(3000), 37)

    off = DisplayProcessor(malow.sfreq, ch, 5000, DisplaySettings("referential", None, None, None))
    for idx in chunks:
        off.push(raw[:, idx])
    np.testing.assert_allclose(off.read(0, 3000), raw * 1e6, rtol=1e-5, atol=1e-3)  # microvolts, unfiltered

    off.update(raw, 0, montage="average")
    avg = off.read(0, 3000)
    np.testing.assert_allclose(avg.sum(axis=0), 0.0, atol=1e-2)
    np.testing.assert_allclose(avg[0], (raw[0] - raw.mean(axis=0)) * 1e6, rtol=1e-4, atol=1e-2)

    off.update(raw, 0, montage="double_banana")
    assert off.names[:4] == ["Fp1-F7", "F7-T7", "T7-P7", "P7-O1"] and len(off.names) == 18
    i, j = ch.index("Fp1"), ch.index("F7")
    np.testing.assert_allclose(off.read(0, 3000)[0], (raw[i] - raw[j]) * 1e6, rtol=1e-4, atol=1e-2)
    groups = channel_groups(off.names, "double_banana")
    assert [off.names[r] for r in groups["Left temporal"]] == ["Fp1-F7", "F7-T7", "T7-P7", "P7-O1"]

    # display filters are bci.preprocess's causal streaming filters, started at the signal's level
    filt = DisplayProcessor(malow.sfreq, ch, 5000, DisplaySettings("double_banana", 0.5, 30.0, None))
    for idx in chunks:
        filt.push(raw[:, idx])
    expected, _, names = Preprocessor(reference="double_banana", bandpass=(0.5, 30.0)).process_array(
        raw - raw[:, :1], malow.sfreq, ch, causal=True)  # fmt: skip
    assert names == filt.names
    np.testing.assert_allclose(filt.read(0, 3000), expected * 1e6, rtol=1e-4, atol=1e-2)
    # re-processing the buffer after a settings change gives the same as streaming
    filt.update(raw, 0, highpass=None)
    ref, _ = reference_matrix(ch, "double_banana")
    expected = Preprocessor(bandpass=(None, 30.0)).process_array(ref @ raw, malow.sfreq, type(ch)(filt.names), causal=True)[0]
    np.testing.assert_allclose(filt.read(0, 3000), expected * 1e6, rtol=1e-4, atol=1e-2)
    with pytest.raises(ConfigError, match="high-pass"):
        filt.update(raw, 0, highpass=40.0)
    assert filt.settings.highpass is None  # a refused change leaves the settings alone

    # iEEG: contacts grouped by electrode (139-channel EDF)
    names = [f"{e}{k}" for e in "ABCDEFGHI" for k in range(1, 17)]
    groups = channel_groups(names, "referential")
    assert len(groups) == 10 and groups["Electrode C"] == list(range(32, 48))


def test_minmax_decimation_and_cache_match_brute_force():
    from bci.channels import ChannelSet
    from gui.display import (
        Decimator,
        DisplayProcessor,
        DisplaySettings,
        minmax_decimate,
    )

    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 1000)).astype(np.float32)
    idx, out = minmax_decimate(x[:, 103:977], 103, 10)
    # bins aligned on absolute indices: [103,110), [110,120), ..., [970,977)
    assert idx[0] == 103 and idx[2] == 110 and idx[-1] == 970 and out.shape == (3, 2 * 88)
    np.testing.assert_array_equal(out[:, 2], x[:, 110:120].min(1))
    np.testing.assert_array_equal(out[:, 3], x[:, 110:120].max(1))
    np.testing.assert_array_equal(out[:, -1], x[:, 970:977].max(1))
    assert minmax_decimate(x, 0, 1)[1] is x

    proc = DisplayProcessor(100.0, ChannelSet(["a", "b", "c"]), 2000, DisplaySettings("referential", None, None, None))
    dec = Decimator()
    for stop in range(200, 1000, 37):  # a scrolling page, then review backwards
        proc.push(x[:, stop - 37 if stop > 200 else 0 : stop] * 1e-6)
        i0 = max(0, stop - 500)
        got = dec.page(proc, [0, 2], i0, stop, 7)
        want = minmax_decimate(proc.read(i0, stop, [0, 2]), i0, 7)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_allclose(got[1], want[1])
    got = dec.page(proc, [1], 100, 600, 7)
    np.testing.assert_allclose(got[1], minmax_decimate(proc.read(100, 600, [1]), 100, 7)[1])


# ---------------------------------------------------------------------- trace view
def test_trace_view_sensitivity_montage_and_review(qapp, malow):
    from gui.display import data_channels
    from gui.traces import TraceView

    ch = data_channels(malow.channels)
    view = TraceView(malow.sfreq, ch, 60.0, {"montage": "referential", "highpass": None, "lowpass": None, "notch": None,
                                             "sensitivity_uv_mm": 10, "pixels_per_mm": 4.0, "page_s": 10})  # fmt: skip
    view.resize(1200, 800)
    view.show()
    qapp.processEvents()
    raw = malow.data[:, :2000]
    view.push(raw)
    assert view.refresh()
    x, ink = view.plotted()
    width = int(view.vb.width())
    assert ink.shape[1] <= width + 2  # min/max decimated to the pixel width (1000 samples < width here: one column each)
    ticks = view.plot.getPlotItem().getAxis("left")._tickLevels[0]
    assert [t[1] for t in ticks] == list(ch.names)
    offsets = np.array([t[0] for t in ticks])
    np.testing.assert_allclose(x, np.arange(1000, 2000) / malow.sfreq)  # page = samples 1000..2000 (stream 10-20 s)

    def lit(ink, y_mm):  # is the pixel of each column's y (mm) inked? (the image spans [-height, 0], row 0 at the top)
        rows = np.floor(-y_mm * ink.shape[0] / -view.vb.viewRange()[1][0]).astype(int)
        assert (rows >= 0).all() and (rows < ink.shape[0]).all()
        return ink[rows, np.arange(len(rows))]

    uv = (raw[-1, 1000:2000] * 1e6).astype(np.float32)  # the last channel (Pz: its -160 uV offset keeps it on screen)
    assert lit(ink, offsets[-1] - uv / 10).all()  # every sample lit, negative up, 10 uV/mm
    view.set_sensitivity(20)
    view.refresh()
    ink = view.plotted()[1]
    assert lit(ink, offsets[-1] - uv / 20).all()
    moved = np.abs(uv / 20 - uv / 10) * 4.0 > 3  # pixels apart at 4 px/mm
    assert moved.sum() > 100 and lit(ink, offsets[-1] - uv / 10)[moved].mean() < 0.5  # not where 10 uV/mm puts it

    view.change(None, montage="double_banana")  # no feed: the buffer restarts
    view.push(raw)
    view.refresh()
    ticks = view.plot.getPlotItem().getAxis("left")._tickLevels[0]
    assert [t[1] for t in ticks][:2] == ["Fp1-F7", "F7-T7"] and len(ticks) == 18
    dv = ((raw[0, 1000:2000] - raw[12, 1000:2000]) * 1e6).astype(np.float32)
    assert lit(view.plotted()[1], ticks[0][0] - dv / 20).all()

    # review: pause, page back; new data do not move the page; live again follows the newest
    end = view.latest_s
    view.set_live(False)
    view.show_page_ending(end - 5)
    view.push(malow.data[:, 2000:2500])
    view.refresh()
    assert view.page_window() == (end - 15, end - 5) and view.plotted()[0][0] == pytest.approx(end - 15)
    assert view.paused_label.isVisible()
    view.set_live(True)
    view.refresh()
    assert view.page_window() == (end - 5, end + 5)
    view.close()


def test_trace_view_with_139_channel_ieeg(qapp, data_dir):
    from bci.io import load_recording
    from gui.display import data_channels
    from gui.traces import TraceView

    rec = load_recording(data_dir / "formats" / "test_reduced.edf")
    ch = data_channels(rec.channels)
    assert len(ch) == 138 and "Status" not in ch.names  # the trigger channel is not drawn
    view = TraceView(rec.sfreq, ch, 30.0, {"montage": "referential", "channels_per_screen": 32})
    view.resize(1200, 800)
    view.show()
    view.push(rec.data[[rec.channels.index(n) for n in ch.names]])
    view.refresh()
    qapp.processEvents()
    assert len(view.visible_names()) == 32 and view.vscroll.isVisible() and view.vscroll.maximum() == 138 - 32
    view.vscroll.setValue(100)
    view.refresh()
    assert view.visible_names()[0] == ch.names[100]
    view.set_group("Electrode C")
    view.refresh()
    assert view.visible_names() == [f"C{i}" for i in range(1, 17)] and not view.vscroll.isVisible()
    x, ink = view.plotted()
    assert 0.55 < ink.any(0).mean() < 0.65 and x[ink.any(0)].max() == pytest.approx(view.latest_s, abs=0.05)  # 6 s of a 10 s page
    view.close()


# ------------------------------------------------------ the window on a real replay
def test_dashboard_replays_malow_raises_logs_and_acknowledges_alarm(qapp, malow, tmp_path):
    from gui.app import Session
    from gui.eventlog import EventLog

    db = tmp_path / "events.sqlite"
    session = Session(replay=malow, config=_config(), events=db, speed=8.0, timeout=10)
    try:
        w = session.window
        w.show()
        assert w.montage_box.currentData() == "double_banana"
        assert pump(qapp, lambda: w.traces.latest_s > 12 and w.traces.frames > 5, 30), "traces did not update from the replay"
        x, ink = w.traces.plotted()
        assert ink.sum() > 1000 and x[ink.any(0)].max() == pytest.approx(w.traces.latest_s, abs=0.5)
        raw0 = w.feed.read(0, 10)[1]
        assert raw0.shape == (21, 10) and np.abs(raw0).max() < 1e-3  # volts from the LSL stream (sent in uV)
        text = " ".join(label.text() for label in w.status_labels.values())
        assert "malow" in text and "100 Hz" in text and "21 ch" in text and "connected" in text

        # a synthetic probability crossing the threshold, from a worker thread like the decoder
        t_end = w.traces.latest_s
        def detector():
            for i in range(40):
                w.monitor.process(t_end - 10 + i * 0.25, 0.05 if i < 8 else 0.92, {"T7-P7": 2.0, "F7-T7": 1.0, "Fz-Cz": 0.1})
        worker = threading.Thread(target=detector)
        worker.start()
        worker.join(10)  # the GUI thread is busy (blocked here): the alarm is in SQLite all the same
        alarms = EventLog(db).events("alarm")
        assert len(alarms) == 1 and alarms[0].details["channels"] == ["T7-P7", "F7-T7", "Fz-Cz"]
        assert pump(qapp, lambda: w.banner.isVisible(), 10), "no alarm banner"
        assert alarms[0].details["onset_s"] == pytest.approx(t_end - 10 + 2.25 + 0.25, abs=0.3)
        assert "SEIZURE ALARM" in w.banner.label.text() and "T7-P7" in w.banner.label.text()
        assert pump(qapp, lambda: any(k == "alarm" for _, _, k in w.traces.annotations), 5)
        assert len(w.trend.t) == 40 and max(w.trend.s) > 0.5
        shot = session.run_for(0.5, tmp_path / "shot.png")
        ok, spread = _not_blank(shot)
        assert ok, f"screenshot looks blank (pixel std {spread:.1f})"
    finally:
        session.close()  # closed (or crashed) before anyone acknowledged the alarm

    session = Session(replay=malow, config=_config(), events=db, speed=8.0, timeout=10)
    try:
        w = session.window
        w.show()
        qapp.processEvents()
        assert w.banner.isVisible() and "SEIZURE ALARM" in w.banner.label.text()  # still showing after restart
        assert [a.id for a in w.banner.alarms] == [alarms[0].id]
        assert any(k == "alarm" for _, _, k in w.traces.annotations)
        w.acknowledge(alarms[0].id, "seen by nurse")
        assert not w.banner.isVisible()
        assert pump(qapp, lambda: w.events_table.rowCount() >= 7, 5)  # the previous session's events + this one's
    finally:
        session.close()
    assert not [t for t in threading.enumerate() if t.name.startswith(("feed-", "replay-", "bci-decoder"))]

    log = EventLog(db)  # reopened after the session: the whole history, the ack with its note
    kinds = [e.kind for e in log.events()]
    assert kinds[:2] == ["session_start", "stream_connected"] and kinds[-1] == "session_end"
    assert kinds.count("session_start") == 2 and kinds.index("alarm") < kinds.index("ack")
    assert log.unacknowledged_alarms() == []
    assert log.events("ack")[0].message == "seen by nurse"
    log.close()


@pytest.fixture(scope="module")
def seizure_model_dir(tmp_path_factory, data_dir):
    """The Bonn-trained band-power seizure detector (``bci train configs/train_seizure_bandpower_lr.yaml``)."""
    from pathlib import Path

    from bci.training import train

    cfg = Path(__file__).resolve().parents[1] / "configs" / "train_seizure_bandpower_lr.yaml"
    out = tmp_path_factory.mktemp("seizure") / "bp_lr"
    cwd = os.getcwd()
    os.chdir(Path(__file__).resolve().parents[1])  # the config names ../shared/data relative to the project
    try:
        train(cfg, out, progress=False)
    finally:
        os.chdir(cwd)
    return out


def test_live_detector_on_malow_and_a_failing_detector_never_freezes_traces(qapp, data_dir, seizure_model_dir, tmp_path):
    from gui.app import Session
    from gui.eventlog import EventLog

    db = tmp_path / "events.sqlite"
    cfg = _config()
    session = Session(replay=data_dir / "seizure" / "malow", model_dir=seizure_model_dir, config=cfg, events=db, speed=20.0)
    try:
        w, dec = session.window, session.decoder
        w.show()
        # decisions flow from the decoder thread into the trend, with latency and per-channel contributions
        assert pump(qapp, lambda: len(w.trend.t) >= 5 and w.contrib.weights, 30), "no decisions from the live detector"
        assert np.all(np.diff(w.trend.t) > 0) and all(0 <= p <= 1 for p in w.trend.p)
        assert sorted(w.contrib.weights) == sorted(dec.model.channels)  # the detector's per-channel probabilities
        assert pump(qapp, lambda: "p50/p99" in w.status_labels["latency"].text(), 5)
        assert "BP+LR" in w.status_labels["model"].text()
        # it publishes under its own LSL names, never as a `bci stream` decoder's "bci-out"
        import pylsl

        names = {i.name() for i in pylsl.resolve_streams(1.0) if i.source_id().endswith(dec.model.name)}
        assert names == {"bci-seizure", "bci-seizure-markers"}, names
        # a slow detector: the traces keep moving
        model = dec.model
        real = model.predict_proba

        def slow(X):
            time.sleep(1.0)
            return real(X)

        model.predict_proba = slow
        frames, t = w.traces.frames, w.traces.latest_s
        assert pump(qapp, lambda: w.traces.frames > frames + 10 and w.traces.latest_s > t + 10, 10)

        # a crashing detector: reported and logged once, the traces keep moving
        def broken(X):
            raise RuntimeError("model exploded")

        model.predict_proba = broken
        assert pump(qapp, lambda: "detector error" in w.status_labels["latency"].text(), 15)
        frames = w.traces.frames
        assert pump(qapp, lambda: w.traces.frames > frames + 10, 10)
    finally:
        session.close()
    assert not [t for t in threading.enumerate() if t.name.startswith(("feed-", "replay-", "bci-decoder"))]
    log = EventLog(db)
    kinds = [e.kind for e in log.events()]
    assert kinds.count("model_loaded") == 1 and kinds.count("model_error") == 1
    assert "model exploded" in log.events("model_error")[0].message
    log.close()


def test_signal_lost_is_shown_logged_and_recovers(qapp, malow, tmp_path):
    from bci.alarm import AlarmRule
    from gui.alarms import AlarmMonitor
    from gui.eventlog import EventLog
    from gui.feed import LslFeed
    from gui.window import DashboardWindow
    from realtime.replay import Replay

    log = EventLog(tmp_path / "e.sqlite")
    name = f"gui-loss-{os.getpid()}"
    first = Replay(malow, name, speed=4.0, markers=False, source_id=f"{name}-src").start()
    window = None
    holder = {}
    feed = LslFeed(name, lost_after_s=0.5, timeout=10, markers=False,
                   on_event=lambda *a: holder["w"].on_stream_event(*a) if "w" in holder else log.log(a[0], a[2], stream_time_s=a[1]))
    try:
        feed.start()
        window = holder["w"] = DashboardWindow(feed, log, AlarmMonitor(AlarmRule(), log), _config())
        window.show()
        assert pump(qapp, lambda: window.traces.latest_s > 1.0, 15)
        first.stop()  # the amplifier goes away
        assert pump(qapp, lambda: window.traces.lost_label.isVisible(), 10), "no 'signal lost' overlay"
        assert "SIGNAL LOST" in window.status_labels["state"].text()
        seen = window.traces.latest_s
        second = Replay(malow, name, speed=4.0, markers=False, source_id=f"{name}-src").start()
        try:
            assert pump(qapp, lambda: not window.traces.lost_label.isVisible() and window.traces.latest_s > seen + 1, 20), \
                "did not recover"  # fmt: skip
        finally:
            second.stop()
        kinds = [e.kind for e in log.events()]
        assert "stream_lost" in kinds and "stream_regained" in kinds
        assert kinds.index("stream_lost") < kinds.index("stream_regained")
    finally:
        if window is not None:
            window.close()  # closeEvent stops the feed's thread
        feed.stop()
        first.stop()
        log.close()
    assert not [t for t in threading.enumerate() if t.name.startswith(("feed-", "replay-")) and t.is_alive()]


def test_cli_screenshot_and_no_identifiers_in_log(qapp, tmp_path, data_dir):
    import mne

    from bci.cli import main
    from gui.eventlog import EventLog

    # a FIF whose header carries a patient's name and id: none of it may reach the log
    rng = np.random.default_rng(0)
    info = mne.create_info(["Fp1", "F7", "T7", "P7", "O1", "Fp2", "F8", "T8", "P8", "O2"], 128.0, "eeg")
    raw = mne.io.RawArray(rng.standard_normal((10, 128 * 20)) * 20e-6, info, verbose="error")
    raw.info["subject_info"] = {"first_name": "Janeth", "last_name": "Doeberg", "his_id": "MRN-8675309"}
    raw.set_annotations(mne.Annotations([3.0], [0.0], ["spike"]))
    fif = tmp_path / "session_raw.fif"
    raw.save(fif, verbose="error")

    png, db, csv = tmp_path / "shot.png", tmp_path / "e.sqlite", tmp_path / "e.csv"
    assert main(["dashboard", "--replay", str(fif), "--seconds", "2", "--screenshot", str(png), "--events", str(db), "--speed", "4"]) == 0
    ok, spread = _not_blank(png)
    assert ok, f"blank screenshot (pixel std {spread:.1f})"
    log = EventLog(db)
    log.export_csv(csv)
    log.close()
    dump = "\n".join(sqlite3.connect(db).iterdump()) + csv.read_text()
    for secret in ("Janeth", "Doeberg", "8675309"):
        assert secret not in dump

    # bad input: one line, exit code 2
    assert main(["dashboard", "--replay", str(fif), "--screenshot", str(png)]) == 2
    assert main(["dashboard", "--replay", str(tmp_path / "missing.edf"), "--seconds", "1", "--events", str(db)]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("dashboard:\n  page_s: 15\n")
    assert main(["dashboard", "--replay", str(fif), "--seconds", "1", "--config", str(bad)]) == 2


def test_dashboard_config_is_validated(tmp_path):
    from gui.app import load_dashboard_config

    cfg = load_dashboard_config()
    assert cfg["page_s"] in (10, 20, 30) and cfg["alarm"] is None  # None: the model's operating point
    for text, key in (("dashboard:\n  montage: banana\n", "dashboard.montage"),
                      ("dashboard:\n  alarm: {threshold: 2}\n", "dashboard.alarm.threshold"),
                      ("dashboard:\n  colour: red\n", "dashboard.colour"),
                      ("dashboard:\n  highpass: 40\n  lowpass: 30\n", "dashboard.highpass")):  # fmt: skip
        path = tmp_path / "d.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_dashboard_config(path)


def test_pretrained_weights_terms_stay_in_the_status_bar(qapp, data_dir, seizure_model_dir, tmp_path):
    """A model fine-tuned from published weights (bci train records their licence and terms)
    shows their terms of use beside its name, and the event log records them."""
    import json
    import shutil

    from gui.app import Session
    from gui.eventlog import EventLog

    model_dir = tmp_path / "model"
    shutil.copytree(seizure_model_dir, model_dir)
    meta = json.loads((model_dir / "model.json").read_text())
    meta["metadata"]["pretrained"] = {"source": "braindecode/mvpformer-s-pretrained", "license": "apache-2.0",
                                      "use": "research use only, not for diagnostic use"}  # fmt: skip
    (model_dir / "model.json").write_text(json.dumps(meta))
    db = tmp_path / "events.sqlite"
    session = Session(replay=data_dir / "seizure" / "malow", model_dir=model_dir, config=_config(), events=db, speed=20.0)
    try:
        w = session.window
        w.show()
        assert pump(qapp, lambda: "research use only" in w.status_labels["model"].text(), 10)
        assert "mvpformer-s-pretrained" in w.status_labels["model"].toolTip()
    finally:
        session.close()
    log = EventLog(db)
    assert "licence: apache-2.0" in log.events("model_loaded")[0].message
    log.close()
