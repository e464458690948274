"""Live decoding over real LSL loopback streams: replay, inlet, decoder loop, faults, telemetry.

Every stream name is unique per test (no cross-talk between tests or parallel runs) and
every wait is bounded. Signals are real recordings from ../shared/data.
"""

from __future__ import annotations

import time
import uuid

import numpy as np
import pylsl
import pytest

from realtime import quiet_liblsl

quiet_liblsl()

from bci.errors import StreamError  # noqa: E402
from bci.buffer import RingBuffer  # noqa: E402
from realtime.decoder import Decoder, DecoderConfig  # noqa: E402
from realtime.inlet import Inlet, resolve  # noqa: E402
from realtime.replay import Replay  # noqa: E402
from realtime.telemetry import LatencyStats  # noqa: E402
from tests.conftest import eeg_outlet  # noqa: E402

EDF = "mne_data/MNE-eegbci-data/files/eegmmidb/1.0.0/S001/S001R04.edf"
EDF_OTHER_RUN = "mne_data/MNE-eegbci-data/files/eegmmidb/1.0.0/S001/S001R08.edf"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_until(condition, timeout: float, step=None, what: str = "condition") -> None:
    """Call ``step`` (e.g. decoder.poll) until ``condition()``; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        if step is not None:
            step()
        time.sleep(0.002)


def config(**overrides) -> DecoderConfig:
    base = dict(outlet_name=unique("out"), marker_name=unique("mk"), resolve_timeout_s=3.0)
    return DecoderConfig.load(**{**base, **overrides})


def drain(inlet: pylsl.StreamInlet, quiet: float = 0.3, timeout: float = 5.0):
    """Everything an inlet holds, polled with timeout=0.0 (a positive timeout can block on a
    closed outlet); stops after ``quiet`` s without data, ``timeout`` s at most."""
    values, stamps = [], []
    deadline, last = time.monotonic() + timeout, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - last < quiet:
        v, t = inlet.pull_chunk(timeout=0.0, max_samples=1024)
        if t:
            values += v
            stamps += t
            last = time.monotonic()
        else:
            time.sleep(0.005)
    return values, stamps


def open_inlet(name: str, timeout: float = 3.0) -> pylsl.StreamInlet:
    found = pylsl.resolve_byprop("name", name, timeout=timeout)
    assert found, f"stream {name!r} not found"
    inlet = pylsl.StreamInlet(found[0])
    inlet.open_stream(timeout=timeout)
    return inlet


# ------------------------------------------------------------------ units
def test_ring_buffer_wraps_without_growing():
    buf = RingBuffer(3, 10)
    data_id = id(buf.data)
    x = np.arange(3 * 25, dtype=float).reshape(3, 25)
    for i in range(0, 25, 4):  # chunks that straddle the end of the buffer
        buf.write(x[:, i : i + 4], np.arange(i, min(i + 4, 25)) * 0.1, arrival=float(i))
    assert buf.n_written == 25 and len(buf) == 10 and buf.first_index == 15
    np.testing.assert_array_equal(buf.latest(10), x[:, 15:])
    np.testing.assert_array_equal(buf.window(22, 5), x[:, 17:22])
    assert buf.timestamp(24) == pytest.approx(2.4) and buf.arrival(24) == 24.0
    big = np.ones((3, 37))  # a chunk longer than the buffer keeps its newest samples
    buf.write(big * 7, np.arange(37.0))
    assert buf.n_written == 62 and id(buf.data) == data_id
    np.testing.assert_array_equal(buf.latest(10), 7.0)
    with pytest.raises(Exception, match="not in the ring buffer"):
        buf.window(40, 5)


def test_ring_buffer_reads_any_range_with_nan_outside_and_restarts_at_an_index():
    """The dashboard's use: samples without times, absolute indices, rows, NaN where nothing is held."""
    buf = RingBuffer(4, 8, dtype=np.float32, times=False)
    x = np.arange(4 * 13, dtype=np.float32).reshape(4, 13)
    buf.write(x[:, :6])
    buf.write(x[:, 6:13])  # wraps: holds 5..13
    got = buf.read(3, 15, rows=[1, 3])
    assert got.shape == (2, 12) and got.dtype == np.float32
    assert np.isnan(got[:, :2]).all() and np.isnan(got[:, -2:]).all()
    np.testing.assert_array_equal(got[:, 2:10], x[[1, 3], 5:13])
    buf.clear(100)  # a reset display: the next sample is number 100, nothing older is held
    assert len(buf) == 0 and buf.first_index == 100 and np.isnan(buf.read(95, 100)).all()
    buf.write(x[:, :3])
    np.testing.assert_array_equal(buf.read(100, 103), x[:, :3])
    assert buf.n_written == 103


def test_latency_percentiles_match_numpy_within_bin_width():
    rng = np.random.default_rng(0)
    values = rng.lognormal(np.log(3e-3), 0.5, 20000)
    stats = LatencyStats()
    for v in values:
        stats.add(v)
    for q in (50, 95, 99):
        assert stats.percentile(q) == pytest.approx(np.percentile(values, q), rel=0.03)
    assert stats.max == values.max() and stats.count == values.size


# ----------------------------------------------------------------- replay
@pytest.mark.parametrize("relpath", [EDF, "seizure/malow", "seizure/bonn/A_Z/Z001.txt"])
def test_replay_of_real_file_arrives_complete_and_in_order(data_dir, relpath):
    from bci.io import load_recording

    rec = load_recording(data_dir / relpath)
    seconds = 5.0
    n = int(round(seconds * rec.sfreq))
    name = unique("replay")
    with Replay(rec, name=name, speed=20, duration_s=seconds, wait_for_consumer=5.0) as player:
        markers = open_inlet(f"{name}-markers") if player.with_markers else None  # subscribed before the signal
        inlet = Inlet(name, timeout=3.0).open()
        assert inlet.channels.names == rec.channels.names and inlet.sfreq == rec.sfreq
        assert list(inlet.described.units) == ["microvolts"] * len(rec.channels)
        wait_until(lambda: inlet.buffer.n_written >= n, 10.0, step=inlet.pull, what="every sample")
        pulled_at = pylsl.local_clock()
        assert player.wait(5.0) and player.n_pushed == n
        got_markers = drain(markers)[0] if markers is not None else []
    assert inlet.buffer.n_written == n and inlet.stats.gaps == 0
    np.testing.assert_allclose(inlet.buffer.window(n, n), rec.data[:, :n], rtol=1e-6, atol=1e-12)
    ts = inlet.buffer.timestamps_between(0, n)
    assert np.all(np.diff(ts) > 0), "timestamps must increase"
    assert ts[-1] <= pulled_at, "no sample may be stamped ahead of the clock"
    # pushed 20x faster than real time: 5 s of signal in about 0.25 s
    assert ts[-1] - ts[0] == pytest.approx(seconds / 20, abs=0.1)
    expected = [d for o, d in zip(rec.annotations.onset, rec.annotations.description) if o < seconds]
    assert [m[0] for m in got_markers] == expected


# --------------------------------------------------------------- decoding
def test_decisions_on_bci_out_sum_to_one_with_latency_telemetry(data_dir, trained_model_dir):
    from bci.io import load_recording
    from bci.model import TrainedModel

    model = TrainedModel.load(trained_model_dir)
    rec = load_recording(data_dir / EDF_OTHER_RUN)
    cfg = config(smoothing="none")
    name = unique("eeg")
    with Replay(rec, name=name, speed=4, duration_s=6.0, wait_for_consumer=5.0) as player:
        decoder = Decoder(model, name, cfg).open()
        results = open_inlet(cfg.outlet_name)
        labels = []
        ch = results.info(timeout=3.0).desc().child("channels").child("channel")
        while not ch.empty():
            labels.append(ch.child_value("label"))
            ch = ch.next_sibling()
        assert labels == list(model.classes) + ["source_time"]
        decoder.start()
        assert player.wait(10.0)
        wait_until(lambda: decoder.inlet.stats.samples >= player.n_pushed and decoder.telemetry.decisions >= 10, 5.0,
                   what="decisions")
        values, stamps = drain(results)
        decoder.stop()
    values = np.asarray(values)
    # 6 s at 160 Hz, 2 s windows every 62.5 ms: 65 decisions when the loop keeps up
    s = decoder.summary()
    assert s["decisions"] + s["dropped_windows"] == 65 and s["dropped_samples"] == 0
    assert len(values) == s["decisions"]
    np.testing.assert_allclose(values[:, :-1].sum(axis=1), 1.0, atol=1e-9)
    source_time = values[:, -1]
    assert np.all(np.diff(source_time) > 0) and np.all(source_time <= np.asarray(stamps))
    # the live path gives the offline model's output on the same window (same causal preprocessing);
    # the first decision is the first window unless the loop started late (those windows count as dropped)
    first = decoder.recent[0]
    offline = {round(r["end_s"] * model.sfreq): r for r in model.predict_recording(rec)}
    assert first.index - model.n_times in range(0, 10 * s["dropped_windows"] + 1, 10)  # a 10-sample hop
    np.testing.assert_allclose(first.proba, [offline[first.index][c] for c in model.classes], atol=1e-6)
    # telemetry: one latency per decision, ordered percentiles, a bounded loop on this machine
    assert decoder.telemetry.latency.count == s["decisions"]
    assert 0 < s["latency_p50_ms"] <= s["latency_p95_ms"] <= s["latency_p99_ms"] <= s["latency_max_ms"] * 1.02
    assert s["latency_p50_ms"] < 100 and s["model_p50_ms"] <= s["latency_p50_ms"] * 1.02
    assert "decisions" in decoder.status_line()


def test_markers_take_the_signal_streams_clock_offset_while_from_the_same_host():
    """MarkerInlet.share_clock: a marker from the signal's host is placed with the signal's clock
    offset (one clock), one from another host keeps its own estimate."""
    from types import SimpleNamespace

    from realtime.markers import MarkerInlet

    class Chunks:
        def pull_chunk(self, timeout):
            return [["T1"], [2.0]], [10.0, 11.0]

    markers = MarkerInlet("mk", timeout=1.0)
    markers.inlet, markers.string, markers._last_tc = Chunks(), False, pylsl.local_clock()
    markers.hostname, markers.offset = "amp-pc", 0.5
    assert markers.pull() == [(10.5, "T1"), (11.5, "2")]  # its own estimate
    signal = SimpleNamespace(offset=0.25, info=SimpleNamespace(hostname=lambda: "amp-pc"))
    markers.share_clock(signal)
    assert markers.pull() == [(10.25, "T1"), (11.25, "2")]
    markers.hostname = "stimulus-pc"  # came back from another machine: another clock
    assert markers.pull() == [(10.5, "T1"), (11.5, "2")]


def test_stream_loss_and_return(data_dir, trained_model_dir):
    from bci.io import load_recording
    from bci.model import TrainedModel

    model = TrainedModel.load(trained_model_dir)
    rec = load_recording(data_dir / EDF)
    name, sid = unique("eeg"), unique("amp")
    cfg = config(smoothing="ema")
    first = Replay(rec, name=name, source_id=sid, speed=4, loop=True, wait_for_consumer=5.0).start()
    decoder = Decoder(model, name, cfg).open()
    results = open_inlet(cfg.outlet_name)
    markers = open_inlet(cfg.marker_name)
    decoder.start()
    try:
        wait_until(lambda: decoder.telemetry.decisions >= 3, 10.0, what="first decisions")
        first.stop()  # the amplifier application closes: its outlet disappears
        wait_until(lambda: decoder.state == "lost", 5.0, what="stream lost")
        lost_at = pylsl.local_clock()
        before = decoder.telemetry.decisions
        time.sleep(0.3)
        assert decoder.telemetry.decisions == before  # nothing decoded, nothing fabricated
        assert decoder.outlet is not None and pylsl.resolve_byprop("name", cfg.outlet_name, timeout=2.0)
        second = Replay(rec, name=name, source_id=sid, speed=4, loop=True).start()
        try:
            wait_until(lambda: decoder.telemetry.decisions > before + 2, 15.0, what="decisions after the return")
            decoder.stop(close=False)
            texts = [m[0] for m in drain(markers)[0]]
            values = np.asarray(drain(results)[0])
        finally:
            second.stop()
    finally:
        decoder.stop()
        first.stop()
    s = decoder.summary()
    assert s["losses"] == 1 and s["reconnects"] == 1 and s["restarts"] >= 1
    assert any(t.startswith("stream lost") for t in texts)
    assert any(t.startswith("stream restored") and "no samples filled in" in t for t in texts)
    # the first window after the return starts after it: processing restarted, no window spans the gap
    after = [d for d in decoder.recent if d.published_at > lost_at]
    assert after and after[0].index == model.n_times and after[0].source_time > lost_at
    assert len(values) == s["decisions"] and np.all(np.isfinite(values))


def test_wrong_channel_count_refused_with_a_clear_error(trained_model_dir):
    from bci.model import TrainedModel

    model = TrainedModel.load(trained_model_dir)
    n_model = len(model.input_channels)
    name = unique("amp3")
    outlet = eeg_outlet(name, ["ch1", "ch2", "ch3"], 160.0, labelled=False)  # noqa: F841 - kept alive
    with pytest.raises(StreamError, match=rf"no channel labels and 3 channels; the model expects {n_model} \(FC3"):
        Decoder(model, name, config()).open()
    name = unique("amp-bonn")
    outlet2 = eeg_outlet(name, ["ch1"], 160.0)  # noqa: F841 - a single iEEG contact
    with pytest.raises(StreamError, match=r"\(1 ch @ 160 Hz\) cannot feed the model: .* missing"):
        Decoder(model, name, config()).open()
    missing = unique("nobody")
    t0 = time.monotonic()
    with pytest.raises(StreamError, match=rf"no LSL stream with name='{missing}' found within 0.5 s; visible streams: .*{name}"):
        resolve(missing, timeout=0.5)
    assert time.monotonic() - t0 < 20.0  # bounded (about 1 s when the machine is idle)


def _pump(decoder, outlet, chunks, expect_samples):
    """Push chunks one by one as an amplifier would, polling the decoder in between."""
    total = decoder.inlet.stats.samples
    for chunk in chunks:
        outlet.push_chunk(np.ascontiguousarray(chunk.T, dtype=np.float32))
        total += chunk.shape[1]
        wait_until(lambda: decoder.inlet.stats.samples >= total, 5.0, step=decoder.poll, what="samples")
    assert decoder.inlet.stats.samples == expect_samples


def test_nan_and_flat_channels_withhold_decisions_with_a_reason(data_dir, trained_model_dir):
    from bci.io import load_recording
    from bci.model import TrainedModel

    model = TrainedModel.load(trained_model_dir)
    rec = load_recording(data_dir / EDF)
    names = list(model.input_channels.names)
    x = rec.data[[rec.channels.index(n) for n in names]] * 1e6  # microvolts, the model's channels
    name = unique("amp")
    outlet = eeg_outlet(name, names, rec.sfreq)
    cfg = config(smoothing="none", settle_s=0.5)
    decoder = Decoder(model, name, cfg).open()
    markers = open_inlet(cfg.marker_name)
    results = open_inlet(cfg.outlet_name)
    wait_until(outlet.have_consumers, 3.0, what="a consumer")
    hop = decoder.predictor.hop
    step = 16  # 0.1 s chunks, as an amplifier sends them
    pos = 0

    def feed(seconds, corrupt=None):
        nonlocal pos
        stop = pos + int(seconds * rec.sfreq)
        chunks = []
        for i in range(pos, stop, step):
            c = x[:, i : min(i + step, stop)].copy()
            if corrupt is not None:
                corrupt(c)
            chunks.append(c)
        _pump(decoder, outlet, chunks, stop)
        pos = stop

    feed(3.0)
    good = decoder.telemetry.decisions
    assert good > 0 and decoder.state == "running"
    c3 = names.index("C3")

    def nan_c3(c):
        c[c3, : c.shape[1] // 2] = np.nan

    feed(0.2, nan_c3)  # two chunks with NaN on C3
    assert decoder.state == "withheld" and "NaN/inf" in decoder.reason and "C3" in decoder.reason
    withheld = decoder.telemetry.withheld
    assert withheld > 0 and decoder.telemetry.decisions == good
    feed(3.0)  # window length + settle time of clean signal: decisions resume
    assert decoder.state == "running" and decoder.telemetry.decisions > good
    assert decoder.telemetry.withheld >= withheld

    cz = names.index("Cz")

    def flat_cz(c):
        c[cz] = 12.5  # a disconnected electrode held at a constant value

    feed(2.5, flat_cz)
    assert decoder.state == "withheld" and decoder.reason.startswith("flat channels: Cz")
    decisions = decoder.telemetry.decisions
    s = decoder.summary()
    texts = [m[0] for m in drain(markers)[0]]
    values = np.asarray(drain(results)[0])
    decoder.stop()
    assert any(t.startswith("withheld: NaN/inf samples on C3") for t in texts)
    assert "decisions resumed" in texts and any(t.startswith("withheld: flat channels: Cz") for t in texts)
    assert len(values) == decisions and np.all(np.isfinite(values))  # never a NaN published
    assert s["dropped_samples"] == 0 and hop == int(round(model.hop_s * model.sfreq))


def test_backlog_decodes_latest_window_and_counts_dropped(data_dir, trained_model_dir):
    """A loop that falls behind (slow model, busy CPU) skips to the newest window: bounded latency."""
    from bci.io import load_recording
    from bci.model import TrainedModel

    model = TrainedModel.load(trained_model_dir)
    rec = load_recording(data_dir / EDF)
    names = list(model.input_channels.names)
    x = rec.data[[rec.channels.index(n) for n in names]] * 1e6
    name = unique("amp")
    outlet = eeg_outlet(name, names, rec.sfreq)
    decoder = Decoder(model, name, config(smoothing="none")).open()
    wait_until(outlet.have_consumers, 3.0, what="a consumer")
    n = int(5 * rec.sfreq)
    outlet.push_chunk(np.ascontiguousarray(x[:, :n].T, dtype=np.float32))  # 5 s arrive at once
    wait_until(lambda: decoder.inlet.inlet.samples_available() >= n, 5.0, what="the backlog in the inlet")
    decoder.poll()
    decoder.stop()
    s = decoder.summary()
    due = (n - model.n_times) // decoder.predictor.hop + 1
    assert s["decisions"] == 1 and s["dropped_windows"] == due - 1
    assert decoder.last.index == model.n_times + (due - 1) * decoder.predictor.hop  # the newest due window


@pytest.fixture(scope="module")
def mvpformer_model_dir(tmp_path_factory, data_dir):
    """A tiny MVPFormer seizure detector (DeepClassifier) on the Malow recording, saved as bci train would."""
    import torch

    from bci.io import load_recording
    from bci.model import TrainedModel
    from bci.preprocess import Preprocessor, sliding_windows
    from pipelines.deep import DeepClassifier

    torch.set_num_threads(1)
    rec = load_recording(data_dir / "seizure/malow")
    pre = Preprocessor(bandpass=[0.5, 40.0])
    processed = pre.apply(rec, causal=True)
    windows, starts = sliding_windows(processed.data, processed.sfreq, 2.0, 5.0)
    y = np.where(starts > 350, "seizure", "background")
    clf = DeepClassifier("MVPFormer", module_params={"size": "tiny", "segment_len": 50}, sfreq=100.0,
                         max_epochs=1, batch_size=32, seed=3)
    clf.fit(windows, y)
    model = TrainedModel(name="MVPFormer tiny", estimator=clf, classes=["background", "seizure"],
                         input_channels=rec.channels, sfreq=100.0, window_s=2.0, hop_s=0.5,
                         preprocessing=pre.to_config(), task="seizure")
    out = tmp_path_factory.mktemp("mvp") / "model"
    model.save(out)
    return out


def test_mvpformer_decodes_with_cached_streaming_steps(data_dir, mvpformer_model_dir):
    from bci.io import load_recording
    from bci.model import TrainedModel

    model = TrainedModel.load(mvpformer_model_dir)
    rec = load_recording(data_dir / "seizure/malow")
    name = unique("malow")
    with Replay(rec, name=name, speed=4, duration_s=8.0, wait_for_consumer=30.0) as player:
        decoder = Decoder(model, name, config(smoothing="none")).start()
        assert player.wait(15.0)
        wait_until(lambda: decoder.inlet.stats.samples >= player.n_pushed and decoder.telemetry.decisions
                   + decoder.telemetry.dropped_windows >= 13, 5.0, what="decisions")
        decoder.stop()
    s = decoder.summary()
    assert s["path"] == "mvpformer-streaming" and decoder.predictor.hop == 50  # one 0.5 s segment per step
    offline = model.predict_recording(rec, hop_s=0.5, streaming=False)  # the full model on every window
    by_end = {round(o["end_s"] * 100): o for o in offline}
    first = decoder.recent[0]
    assert first.index == model.n_times
    # the first window: exactly the full model on the same window
    np.testing.assert_allclose(first.proba, [by_end[first.index][c] for c in model.classes], atol=1e-5)
    # later windows reuse keys/values cached from before the window: close to the full recompute
    diffs = [abs(d.proba[1] - by_end[d.index]["seizure"]) for d in decoder.recent]
    assert max(diffs) < 0.05
    assert decoder.telemetry.latency.count == s["decisions"] > 0


# -------------------------------------------------------------------- CLI
def test_cli_stream_and_replay_errors(tmp_path, capsys):
    from bci.cli import main

    assert main(["replay", str(tmp_path / "missing.edf")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["stream", "--model", str(tmp_path)]) == 2
    assert "not a model folder" in capsys.readouterr().err
    assert main(["stream", "--model", str(tmp_path), "--paradigm", "x.yaml"]) == 2
    assert "add --feedback" in capsys.readouterr().err


def test_stream_channels_scale_voltages_only():
    """EEG without a unit is taken as microvolts; trigger/aux channels are not rescaled."""
    from realtime.inlet import stream_channels

    info = pylsl.StreamInfo(unique("units"), "EEG", 5, 250.0, pylsl.cf_float32, unique("src"))
    chans = info.desc().append_child("channels")
    for label, kind, unit in (("C3", "EEG", ""), ("C4", "EEG", "millivolts"), ("Cz", "EEG", "furlongs"),
                              ("TRIG", "TRIGGER", ""), ("AUX1", "AUX", "counts")):
        ch = chans.append_child("channel")
        ch.append_child_value("label", label)
        ch.append_child_value("type", kind)
        if unit:
            ch.append_child_value("unit", unit)
    found = stream_channels(info)
    assert list(found.channels.types) == ["eeg", "eeg", "eeg", "stim", "misc"]
    np.testing.assert_allclose(found.scale, [1e-6, 1e-3, 1e-6, 1.0, 1.0])
