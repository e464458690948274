"""Dashboard frame rate while streaming, vs a naive pyqtgraph layout, and a long paint run.

Scenarios (offscreen, ``QT_QPA_PLATFORM=offscreen``): a synthetic EEG-like signal
(1/f background plus a 10 Hz rhythm, about 30 uV) is replayed as a live LSL stream
(:class:`realtime.replay.Replay`) and read by the dashboard's acquisition thread
(:class:`gui.feed.LslFeed`), 10 s pages:

- 64 channels at 256 Hz (target >= 60 fps) and 128 channels at 512 Hz (>= 30 fps).

For each, in the same run and the same widget size, three views read the same feed on
a 1 ms timer (as fast as new data come, without spinning: the GUI thread's CPU time per
frame is then what a frame costs; frames are counted as paint events of the plot's
viewport that show new data, i.e. frames Qt really rendered). The replay pushes a chunk
every 10 ms, so no view can show more than about 100 new frames a second.

- ``dashboard``: the whole :class:`gui.window.DashboardWindow` (traces + seizure panel
  + event list + status bar), all channels on screen, display filters on;
- ``traces``: :class:`gui.traces.TraceView` alone (one image per page, min/max
  columns rasterised with NumPy, only the newly arrived ones each frame);
- ``naive``: one ``PlotItem`` per channel in a ``GraphicsLayoutWidget`` with every
  sample of the page set on each curve (no decimation), the layout pyqtgraph's
  examples start from: the floor each view is compared with in the same run
  (``x_naive_fps``: its frame rate over the naive one's; ``x_naive_cpu``: the naive
  layout's GUI CPU per frame over its own).

Each row also gives the 1-minute load average before and after its scenario (other
jobs on a shared machine slow the wall frame rate; GUI-thread CPU ms per frame is the
figure least affected by them).

``--paints N`` (default 3000) then renders N frames of the trace view in a child
process and checks it exits normally: PySide6 6.12.0 on Python 3.11 corrupts the
reference count of ``None`` on Qt calls returning nothing and pyqtgraph aborts after a
few thousand paints (DESIGN.md section 4). The row reports the PySide6 version, the
exit code and the drift of ``sys.getrefcount(None)`` per paint.

Run as ``python -m benchmarks.dashboard [--json PATH]`` (or ``bci bench dashboard``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np

from bci.alarm import AlarmRule

SCENARIOS = ((64, 256.0, 60.0), (128, 512.0, 30.0))
SIZE = (1150, 860)  # the trace area of the 1600 x 950 dashboard window


def synthetic_recording(n_channels: int, sfreq: float, seconds: float = 30.0, seed: int = 0):
    """A Recording with a 1/f background and a 10 Hz rhythm (volts, 10-20-free names)."""
    from bci.channels import ChannelSet
    from bci.io import Recording

    rng = np.random.default_rng(seed)
    n = int(seconds * sfreq)
    spec = np.fft.rfft(rng.standard_normal((n_channels, n)), axis=1)
    f = np.fft.rfftfreq(n, 1 / sfreq)
    spec /= np.sqrt(np.maximum(f, 0.5))
    x = np.fft.irfft(spec, n, axis=1)
    x += 0.8 * np.sin(2 * np.pi * 10 * np.arange(n) / sfreq + rng.uniform(0, 6.28, (n_channels, 1)))
    x *= 30e-6 / x.std(axis=1, keepdims=True)
    names = [f"G{i // 16 + 1}-{i % 16 + 1}" for i in range(n_channels)]
    return Recording(x, sfreq, ChannelSet(names, ["seeg"] * n_channels))


class _PaintCounter:
    """Counts paint events of ``widget`` that show new data (``version()`` changed since the last one)."""

    def __init__(self, widget, version=None):
        from PySide6 import QtCore

        class Filter(QtCore.QObject):
            count = 0
            last = None

            def eventFilter(self, obj, event):
                if event.type() == QtCore.QEvent.Paint:
                    v = version() if version is not None else None
                    if version is None or v != Filter.last:
                        Filter.count += 1
                        Filter.last = v
                return False

        self.filter = Filter()
        widget.installEventFilter(self.filter)
        self.cls = Filter

    @property
    def count(self) -> int:
        return self.cls.count


class NaiveView:
    """One PlotItem per channel, full-resolution curves (what a first attempt looks like)."""

    def __init__(self, feed, page_s: float = 10.0):
        import pyqtgraph as pg

        self.feed, self.page_s = feed, page_s
        self.widget = pg.GraphicsLayoutWidget()
        self.widget.setBackground("w")
        self.curves = []
        for i, name in enumerate(feed.channels.names):
            p = self.widget.addPlot(row=i, col=0)
            p.hideAxis("bottom")
            p.getAxis("left").setWidth(60)
            p.setLabel("left", name)
            p.setMouseEnabled(False, False)
            self.curves.append(p.plot(pen=pg.mkPen("k", width=1)))
        self.n = int(page_s * feed.sfreq)
        self.last = -1
        self.frames = 0

    def refresh(self) -> bool:
        end = self.feed.n_samples
        if end == self.last:
            return False
        self.last = end
        start, data = self.feed.read(end - self.n, end)
        t = np.arange(start, start + data.shape[1]) / self.feed.sfreq
        for curve, row in zip(self.curves, data):
            curve.setData(t, row * 1e6)
        self.frames += 1
        return True


def _run_view(kind: str, feed, seconds: float, warmup: float) -> dict:
    """Drive one view from a 1 ms timer; count rendered frames."""
    from PySide6 import QtCore, QtWidgets

    from gui.alarms import AlarmMonitor
    from gui.eventlog import EventLog

    app = QtWidgets.QApplication.instance()
    closers = []
    if kind == "naive":
        view = NaiveView(feed)
        widget, viewport, refresh = view.widget, view.widget.viewport(), view.refresh
        version = lambda: view.frames
        widget.resize(*SIZE)
    elif kind == "traces":
        from gui.display import data_channels
        from gui.traces import TraceView

        channels = data_channels(feed.channels)
        view = TraceView(feed.sfreq, channels, 60.0, {"channels_per_screen": len(channels), "montage": "referential",
                                                       "highpass": 0.5, "lowpass": 70.0, "notch": 50.0})  # fmt: skip
        widget, viewport = view, view.plot.viewport()
        version = lambda: view.frames
        widget.resize(*SIZE)
        state = {"i": feed.first_index}

        def refresh():
            n = feed.n_samples
            if n > state["i"]:
                start, raw = feed.read(state["i"], n)
                state["i"] = start + raw.shape[1]
                view.push(raw)
            return view.refresh()
    else:
        import tempfile

        from gui.app import load_dashboard_config
        from gui.window import DashboardWindow

        cfg = load_dashboard_config()
        cfg.update(channels_per_screen=len(feed.channels), montage="referential", buffer_s=60.0, refresh_hz=240)
        tmp = tempfile.TemporaryDirectory()
        log = EventLog(os.path.join(tmp.name, "bench.sqlite"))
        monitor = AlarmMonitor(AlarmRule(), log)
        view = DashboardWindow(feed, log, monitor, cfg)
        view.timer.stop()
        widget, viewport = view, view.traces.plot.viewport()
        version = lambda: view.traces.frames

        def refresh():
            view.tick()
            return True

        closers += [log.close, tmp.cleanup]
    counter = _PaintCounter(viewport, version)
    timer = QtCore.QTimer()
    timer.setInterval(1)
    timer.timeout.connect(refresh)
    widget.show()
    timer.start()
    loop = QtCore.QEventLoop()
    QtCore.QTimer.singleShot(int(warmup * 1000), loop.quit)
    loop.exec()
    paints0, t0 = counter.count, time.perf_counter()
    cpu0, gui0 = time.process_time(), time.thread_time()
    QtCore.QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()
    elapsed = time.perf_counter() - t0
    cpu, gui = time.process_time() - cpu0, time.thread_time() - gui0
    frames = counter.count - paints0
    timer.stop()
    if kind == "dashboard":
        view._closed = True  # the feed is shared with the next view: do not stop it
    widget.close()
    widget.deleteLater()
    app.processEvents()
    for close in closers:
        close()
    return {"fps": frames / elapsed, "frames": frames, "seconds": elapsed, "process_cpu_pct": 100 * cpu / elapsed,
            "gui_cpu_ms_per_frame": 1e3 * gui / max(frames, 1)}


VIEWS = ("dashboard", "traces", "naive")


def frame_rates(seconds: float, warmup: float, rounds: int = 2, scenarios=SCENARIOS) -> list[dict]:
    """Each view ``rounds`` times, interleaved (load on a shared machine drifts); medians reported."""
    from gui.app import ensure_qapp
    from gui.feed import LslFeed

    ensure_qapp(offscreen=True)
    rows = []
    for n_ch, sfreq, target in scenarios:
        load_before = os.getloadavg()[0]
        rec = synthetic_recording(n_ch, sfreq)
        feed = LslFeed(f"bench-{n_ch}x{sfreq:g}", replay=rec, replay_loop=True, buffer_s=60.0, markers=False)
        feed.start()
        deadline = time.monotonic() + 60.0
        while feed.n_samples < 11 * sfreq and time.monotonic() < deadline:  # full pages from the first frame
            time.sleep(0.1)
        runs: dict[str, list[dict]] = {k: [] for k in VIEWS}
        try:
            for _ in range(rounds):
                for kind in VIEWS:
                    runs[kind].append(_run_view(kind, feed, seconds, warmup))
            rate = feed.status()["rate_hz"]
        finally:
            feed.stop()
        load_after = os.getloadavg()[0]
        fps = {k: float(np.median([r["fps"] for r in runs[k]])) for k in VIEWS}
        cpu_ms = {k: float(np.median([r["gui_cpu_ms_per_frame"] for r in runs[k]])) for k in VIEWS}
        for kind in VIEWS:
            rows.append({
                "scenario": f"{n_ch} ch x 10 s @ {sfreq:g} Hz", "view": kind, "fps": round(fps[kind], 1),
                "fps_runs": " ".join(f"{r['fps']:.1f}" for r in runs[kind]),
                "gui_cpu_ms_per_frame": round(cpu_ms[kind], 1), "fps_one_free_core": round(1e3 / cpu_ms[kind], 1),
                "x_naive_fps": round(fps[kind] / fps["naive"], 1), "x_naive_cpu": round(cpu_ms["naive"] / cpu_ms[kind], 1),
                "target_fps": target if kind != "naive" else None,
                "met": (fps[kind] >= target) if kind != "naive" else None,
                "process_cpu_pct": round(float(np.median([r["process_cpu_pct"] for r in runs[kind]])), 0),
                "stream_rate_hz": round(rate, 0), "load_before": round(load_before, 2), "load_after": round(load_after, 2),
            })  # fmt: skip
    return rows


def _paint_child(paints: int) -> None:
    """Child process: render ``paints`` frames of the trace view; print the None refcount drift."""
    from PySide6 import QtCore

    from gui.app import ensure_qapp
    from gui.display import data_channels
    from gui.traces import TraceView

    app = ensure_qapp(offscreen=True)
    rec = synthetic_recording(32, 256.0, seconds=20.0)
    view = TraceView(rec.sfreq, data_channels(rec.channels), 30.0, {"channels_per_screen": 32, "montage": "average"})
    view.resize(1000, 700)
    view.show()
    counter = _PaintCounter(view.plot.viewport())
    step = 8
    i = 0
    ref0 = sys.getrefcount(None)
    t0 = time.perf_counter()
    while counter.count < paints:
        view.push(rec.data[:, i % (rec.n_times - step) : i % (rec.n_times - step) + step])
        i += step
        view.refresh()
        view.plot.viewport().repaint()
        app.processEvents(QtCore.QEventLoop.AllEvents)
    elapsed = time.perf_counter() - t0
    drift = (sys.getrefcount(None) - ref0) / counter.count
    print(f"PAINTS {counter.count} SECONDS {elapsed:.2f} NONE_DRIFT {drift:.4f}", flush=True)


def long_run(paints: int, timeout: float = 900.0) -> dict:
    import PySide6

    cmd = [sys.executable, "-m", "benchmarks.dashboard", "--_paint-child", str(paints)]
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out = "timeout", str(exc.stdout or "")
    elapsed = time.perf_counter() - t0
    done, drift = 0, None
    for line in out.splitlines():
        if line.startswith("PAINTS"):
            parts = line.split()
            done, drift = int(parts[1]), float(parts[5])
    return {
        "scenario": f"long run: {paints} paints, 32 ch", "view": "traces", "pyside6": PySide6.__version__,
        "python": sys.version.split()[0], "exit_code": rc, "paints": done, "seconds": round(elapsed, 1),
        "none_refcount_drift_per_paint": drift, "met": rc == 0 and done >= paints,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    from benchmarks.common import emit

    parser = argparse.ArgumentParser(prog="bci bench dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON records")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per view (default 8)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved runs per view; medians reported (default 2)")
    parser.add_argument("--paints", type=int, default=3000, help="paints of the long run (0: skip; default 3000)")
    parser.add_argument("--_paint-child", type=int, dest="paint_child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.paint_child:
        _paint_child(args.paint_child)
        return []
    try:
        from realtime import quiet_liblsl

        quiet_liblsl()
    except ImportError:
        pass
    rows = frame_rates(args.seconds, args.warmup, args.rounds)
    if args.paints:
        rows.append(long_run(args.paints))
    emit(rows, f"Dashboard frame rate, offscreen, 10 s pages, {SIZE[0]}x{SIZE[1]} px trace area", args.json)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
