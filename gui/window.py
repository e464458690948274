"""The dashboard's main window: traces, seizure panel, alarm banner, event list, status bar.

Threads: acquisition (:class:`gui.feed.LslFeed`) and decoding (the detector, with the
:class:`gui.alarms.AlarmMonitor` that logs alarms) run off the GUI thread. The window
only reads what they produced, on one frame timer (``refresh_hz``): new raw samples
for the traces, new decisions and alarms from the monitor, stream events, and new rows
of the SQLite event log (the event list shows exactly what is stored). A detector that
is slow or has crashed therefore never freezes the traces; its state shows in the
status bar.
"""

from __future__ import annotations

import datetime as _dt
import logging
import queue
import time
from pathlib import Path

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from .alarms import Alarm, AlarmMonitor, format_clock
from .display import MONTAGE_LABELS, available_montages, channel_groups, data_channels
from .eventlog import EventLog
from .seizure_panel import ContributionView, SpectralArray, TrendPlot
from .traces import PAGES, SENSITIVITIES, TraceView

log = logging.getLogger(__name__)

HIGHPASS = (None, 0.1, 0.3, 0.5, 1.0, 1.6, 5.0)
LOWPASS = (None, 15.0, 30.0, 35.0, 40.0, 70.0, 100.0)
NOTCH = (None, 50.0, 60.0)
EVENT_LABELS = {
    "session_start": "Session start", "session_end": "Session end", "stream_connected": "Stream connected",
    "stream_lost": "Signal lost", "stream_regained": "Signal regained", "model_loaded": "Model loaded",
    "model_error": "Detector error", "alarm": "SEIZURE ALARM", "ack": "Acknowledged", "note": "Note",
    "annotation": "Annotation",
}  # fmt: skip


def _hz(v) -> str:
    return "Off" if v is None else f"{v:g} Hz"


class AlarmBanner(QtWidgets.QFrame):
    """Red banner listing unacknowledged alarms; stays until each is acknowledged."""

    acknowledgeRequested = QtCore.Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("alarmBanner")
        self.setStyleSheet(
            "#alarmBanner{background:#c40000; border-bottom:3px solid #700000}"
            "QLabel{color:white; font-size:17px; font-weight:bold}"
            "QPushButton{background:white; color:#c40000; font-weight:bold; font-size:14px; padding:6px 14px; border-radius:4px}"
        )
        self.label = QtWidgets.QLabel()
        self.label.setTextFormat(QtCore.Qt.RichText)
        self.button = QtWidgets.QPushButton("Acknowledge…")
        self.button.clicked.connect(self._clicked)
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(14, 8, 14, 8)
        icon = QtWidgets.QLabel("\u26a0")
        icon.setStyleSheet("font-size:26px")
        lay.addWidget(icon)
        lay.addWidget(self.label, 1)
        lay.addWidget(self.button)
        self.alarms: list[Alarm] = []
        self.hide()

    def set_alarms(self, alarms: list[Alarm]) -> None:
        self.alarms = list(alarms)
        if not self.alarms:
            self.hide()
            return
        a = self.alarms[0]
        where = ", ".join(a.channels) if a.channels else "n/a (model gives no channel weights)"
        more = f" &nbsp;(+{len(self.alarms) - 1} more unacknowledged)" if len(self.alarms) > 1 else ""
        local = ""
        if a.wall_time:
            try:
                local = _dt.datetime.fromisoformat(a.wall_time).astimezone().strftime("%H:%M:%S")
            except ValueError:
                local = a.wall_time
        self.label.setText(
            f"SEIZURE ALARM &nbsp; onset {format_clock(a.onset_s)} (stream time), raised {local} &nbsp;·&nbsp; "
            f"p = {a.probability:.2f} &nbsp;·&nbsp; channels: {where}{more}"
        )
        self.show()

    def _clicked(self) -> None:
        if self.alarms:
            self.acknowledgeRequested.emit(self.alarms[0].id)


class DashboardWindow(QtWidgets.QMainWindow):
    """Main window over a running feed, an event log and (optionally) a detector.

    Parameters
    ----------
    feed : gui.feed.LslFeed
        A started feed (name, sfreq, channels, read, status, markers).
    event_log : EventLog
    monitor : AlarmMonitor
        Receives the detector's decisions (from the decoder thread).
    config : dict
        The ``dashboard`` section of ``configs/dashboard.yaml``.
    decoder : object, optional
        The running detector: ``latency_ms() -> (p50, p99)``, ``error``, ``model``.
    """

    def __init__(self, feed, event_log: EventLog, monitor: AlarmMonitor, config: dict, decoder=None, parent=None):
        super().__init__(parent)
        self.feed = feed
        self.event_log = event_log
        self.monitor = monitor
        self.cfg = dict(config)
        self.decoder = decoder
        self.sfreq = float(feed.sfreq)
        self.stream_channels = feed.channels
        self.channels = data_channels(feed.channels)
        self._rows_in = [feed.channels.index(n) for n in self.channels.names]
        self._read_index = feed.first_index
        self._events_q: queue.Queue = queue.Queue()
        self._last_event_id = 0
        self._alarm_marks: list[tuple[float, str, str]] = []
        self._note_marks: list[tuple[float, str, str]] = []
        self._n_markers = 0
        self._slow_tick = 0.0
        self._closed = False
        self.setWindowTitle(f"bci dashboard — {feed.name}")
        self._build()
        self._load_history()
        self.timer = QtCore.QTimer(self)
        self.timer.setTimerType(QtCore.Qt.PreciseTimer)
        self.timer.timeout.connect(self.tick)
        self.timer.start(max(0, int(round(1000.0 / float(self.cfg.get("refresh_hz", 30))))))

    # ------------------------------------------------------------------ building
    def _build(self) -> None:
        cfg = self.cfg
        montages = available_montages(self.channels)
        montage = cfg.get("montage", "referential")
        if montage not in montages:
            montage = "referential"
        nyq = self.sfreq / 2
        lowpass = cfg.get("lowpass")
        if lowpass is not None and lowpass >= nyq:
            lowpass = max((v for v in LOWPASS if v is not None and v < nyq), default=None)
        settings = {**cfg, "montage": montage, "lowpass": lowpass}
        self.traces = TraceView(self.sfreq, self.channels, cfg.get("buffer_s", 300.0), settings)
        self.traces.liveChanged.connect(self._on_live_changed)

        self.trend = TrendPlot(self.monitor.rule.threshold, cfg.get("trend_span_s", 600))
        dsa_cfg = cfg.get("dsa", {})
        groups = channel_groups(self.traces.processor.names, montage)
        self.dsa = SpectralArray(self.sfreq, groups, dsa_cfg.get("fmax", 30.0), dsa_cfg.get("step_s", 2.0))
        if dsa_cfg.get("group") in groups:
            self.dsa.group_box.setCurrentText(dsa_cfg["group"])
        self.dsa.group_box.currentTextChanged.connect(self._on_dsa_group)
        self.dsa.plot.setXLink(self.trend.plot)
        model_channels = getattr(getattr(self.decoder, "model", None), "input_channels", None) or self.channels
        self.contrib = ContributionView(model_channels, top=int(cfg.get("contribution_top", 10)))
        if self.decoder is None:
            self.contrib.set_weights(None, "no detector running (start with --model)")

        self.banner = AlarmBanner()
        self.banner.acknowledgeRequested.connect(self.request_acknowledge)

        self.events_table = QtWidgets.QTableWidget(0, 4)
        self.events_table.setHorizontalHeaderLabels(["Time", "Stream", "Event", "Details"])
        self.events_table.verticalHeader().setVisible(False)
        self.events_table.setEditTriggers(QtWidgets.QAbstractItemView.NoEditTriggers)
        self.events_table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectRows)
        self.events_table.horizontalHeader().setStretchLastSection(True)
        self.events_table.setColumnWidth(0, 70)
        self.events_table.setColumnWidth(1, 70)
        self.events_table.setColumnWidth(2, 120)
        self.events_table.setWordWrap(False)
        self.events_table.doubleClicked.connect(self._on_event_double_click)

        right = QtWidgets.QSplitter(QtCore.Qt.Vertical)
        for w in (self.trend, self.dsa, self.contrib, self._titled("Event log", self.events_table)):
            right.addWidget(w)
        right.setSizes([220, 220, 200, 220])
        split = QtWidgets.QSplitter(QtCore.Qt.Horizontal)
        split.addWidget(self.traces)
        split.addWidget(right)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        split.setSizes([1150, 450])

        central = QtWidgets.QWidget()
        lay = QtWidgets.QVBoxLayout(central)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.banner)
        lay.addWidget(split, 1)
        self.setCentralWidget(central)
        self._build_toolbar(montages, montage, lowpass)
        self._build_statusbar()
        w, h = cfg.get("window_size", [1600, 950])
        self.resize(int(w), int(h))

    def _titled(self, title: str, widget: QtWidgets.QWidget) -> QtWidgets.QWidget:
        box = QtWidgets.QWidget()
        lay = QtWidgets.QVBoxLayout(box)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.setSpacing(1)
        label = QtWidgets.QLabel(f"<b>{title}</b>")
        lay.addWidget(label)
        lay.addWidget(widget)
        return box

    def _combo(self, items, current, fmt, slot, tip: str) -> QtWidgets.QComboBox:
        box = QtWidgets.QComboBox()
        box.setToolTip(tip)
        for v in items:
            box.addItem(fmt(v), v)
        i = box.findData(current)
        box.setCurrentIndex(max(i, 0))
        box.currentIndexChanged.connect(lambda _i, b=box: slot(b.currentData()))
        return box

    def _build_toolbar(self, montages, montage, lowpass) -> None:
        tb = QtWidgets.QToolBar("Display")
        tb.setMovable(False)
        tb.setIconSize(QtCore.QSize(16, 16))
        self.addToolBar(tb)
        tr = self.traces
        self.montage_box = self._combo(montages, montage, lambda m: MONTAGE_LABELS[m], lambda m: self.set_display(montage=m), "Montage")
        self.sens_box = self._combo(SENSITIVITIES, int(tr.sensitivity) if tr.sensitivity in SENSITIVITIES else 7,
                                    lambda v: f"{v} µV/mm", tr.set_sensitivity, "Sensitivity")  # fmt: skip
        self.page_box = self._combo(PAGES, int(tr.page_s), lambda v: f"{v} s/page", tr.set_page, "Page width")
        nyq = self.sfreq / 2
        self.hp_box = self._combo(HIGHPASS, self.cfg.get("highpass"), lambda v: f"HP {_hz(v)}", lambda v: self.set_display(highpass=v), "High-pass (display)")
        self.lp_box = self._combo([v for v in LOWPASS if v is None or v < nyq], lowpass, lambda v: f"LP {_hz(v)}",
                                  lambda v: self.set_display(lowpass=v), "Low-pass (display)")  # fmt: skip
        self.notch_box = self._combo([v for v in NOTCH if v is None or v < nyq], self.cfg.get("notch"), lambda v: f"Notch {_hz(v)}",
                                     lambda v: self.set_display(notch=v), "Line-noise notch (display)")  # fmt: skip
        self.group_box = QtWidgets.QComboBox()
        self.group_box.setToolTip("Channel group")
        self.group_box.currentTextChanged.connect(lambda g: g and self.traces.set_group(g))
        self._fill_groups()
        self.per_screen = QtWidgets.QSpinBox()
        self.per_screen.setRange(4, 256)
        self.per_screen.setValue(tr.channels_per_screen)
        self.per_screen.setSuffix(" ch/screen")
        self.per_screen.valueChanged.connect(tr.set_channels_per_screen)
        self.live_button = QtWidgets.QPushButton("Pause")
        self.live_button.setCheckable(True)
        self.live_button.setToolTip("Pause to review the buffer (Page Up/Down, arrows); End returns to live")
        self.live_button.toggled.connect(lambda paused: tr.set_live(not paused))
        note = QtWidgets.QPushButton("Note…")
        note.clicked.connect(self.request_note)
        export = QtWidgets.QPushButton("Export log…")
        export.clicked.connect(self.request_export)
        for label, w in (("Montage", self.montage_box), (None, self.sens_box), (None, self.page_box), ("Filters", self.hp_box),
                         (None, self.lp_box), (None, self.notch_box), ("Channels", self.group_box), (None, self.per_screen)):  # fmt: skip
            if label:
                tb.addSeparator()
                tb.addWidget(QtWidgets.QLabel(f" {label} "))
            tb.addWidget(w)
        tb.addSeparator()
        for w in (self.live_button, note, export):
            tb.addWidget(w)

    def _fill_groups(self) -> None:
        groups = channel_groups(self.traces.processor.names, self.traces.processor.settings.montage)
        self.group_box.blockSignals(True)
        self.group_box.clear()
        self.group_box.addItems(list(groups))
        self.group_box.setCurrentText(self.traces.group if self.traces.group in groups else "All")
        self.group_box.blockSignals(False)
        self.dsa.set_groups(groups)

    def _build_statusbar(self) -> None:
        sb = self.statusBar()
        sb.setStyleSheet("QStatusBar{background:#e9ecef} QLabel{padding:0 8px}")
        self.status_labels = {}
        for key in ("stream", "rate", "channels", "state", "latency", "dropped", "model", "alarms"):
            label = QtWidgets.QLabel()
            sb.addPermanentWidget(label) if key != "stream" else sb.addWidget(label)
            self.status_labels[key] = label
        self._update_status()

    # ------------------------------------------------------------------ actions
    def set_display(self, **settings) -> None:
        """Change montage / display filters; the review buffer is re-processed."""
        try:
            self.traces.change(self._feed_reader(), **settings)
        except Exception as exc:  # a bad combination (e.g. HP above LP) must not close the window
            QtWidgets.QToolTip.showText(QtGui.QCursor.pos(), str(exc))
            log.warning("display settings refused: %s", exc)
            return
        if "montage" in settings:
            self._fill_groups()
            self.dsa.next_index = None
        self.traces.mark_dirty()

    def _feed_reader(self):
        win = self

        class _Reader:
            @property
            def n_samples(self):
                return win.traces.end_index

            def read(self, start, stop):
                s, raw = win.feed.read(start, stop)
                return s, raw[win._rows_in]

        return _Reader()

    def _on_live_changed(self, live: bool) -> None:
        self.live_button.blockSignals(True)
        self.live_button.setChecked(not live)
        self.live_button.setText("Pause" if live else "Live ▶")
        self.live_button.blockSignals(False)

    def _on_dsa_group(self, _name: str) -> None:
        self.dsa.n_cols = 0
        self.dsa.next_index = None

    def _on_event_double_click(self, index) -> None:
        item = self.events_table.item(index.row(), 0)
        t = item.data(QtCore.Qt.UserRole) if item is not None else None
        if t is not None:
            self.traces.show_page_ending(float(t) + self.traces.page_s / 2)

    def request_acknowledge(self, alarm_id: int) -> None:
        note, ok = QtWidgets.QInputDialog.getText(self, "Acknowledge seizure alarm", "Note (optional):")
        if ok:
            self.acknowledge(alarm_id, note)

    def acknowledge(self, alarm_id: int, note: str = "") -> None:
        """Log the acknowledgement (and note) of an alarm; the banner moves to the next one."""
        self.monitor.acknowledge(alarm_id, note, stream_time_s=self.traces.latest_s)
        self.banner.set_alarms(self.monitor.unacknowledged())
        self._poll_log()
        self._update_status()

    def request_note(self) -> None:
        text, ok = QtWidgets.QInputDialog.getText(self, "Add note", "Note at the current page:")
        if ok and text.strip():
            self.add_note(text)

    def add_note(self, text: str, t_s: float | None = None) -> int:
        t = self.traces.page_window()[1] if t_s is None else t_s
        return self.event_log.note(text, stream_time_s=t)

    def request_export(self) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export event log", "events.csv", "CSV (*.csv)")
        if path:
            self.event_log.export_csv(path)

    def on_stream_event(self, kind: str, t_s: float, message: str) -> None:
        """Called by the feed's thread: log at once, show on the next frame."""
        self.event_log.log(kind, message, stream_time_s=t_s)
        self._events_q.put(kind)

    # ------------------------------------------------------------------ frame
    def _load_history(self) -> None:
        self._poll_log(limit=300)
        self.banner.set_alarms(self.monitor.unacknowledged())

    def _poll_log(self, limit: int | None = None) -> None:
        events = self.event_log.events(after_id=self._last_event_id, limit=limit)
        if not events:
            return
        table = self.events_table
        for e in events:
            row = table.rowCount()
            table.insertRow(row)
            try:
                local = _dt.datetime.fromisoformat(e.wall_time).astimezone().strftime("%H:%M:%S")
            except ValueError:
                local = e.wall_time
            stream = "" if e.stream_time_s is None else format_clock(e.stream_time_s)
            label = EVENT_LABELS.get(e.kind, e.kind)
            detail = e.message if e.kind != "ack" else f"alarm #{e.alarm_id}" + (f": {e.message}" if e.message else "")
            cells = [local, stream, label, detail]
            for col, text in enumerate(cells):
                item = QtWidgets.QTableWidgetItem(text)
                if col == 0:
                    item.setData(QtCore.Qt.UserRole, e.stream_time_s)
                if e.kind == "alarm":
                    item.setForeground(QtGui.QBrush(QtGui.QColor("#c40000")))
                    f = item.font()
                    f.setBold(True)
                    item.setFont(f)
                elif e.kind in ("stream_lost", "model_error"):
                    item.setForeground(QtGui.QBrush(QtGui.QColor("#b35c00")))
                table.setItem(row, col, item)
            if e.kind == "note" and e.stream_time_s is not None:
                self._note_marks.append((e.stream_time_s, e.message[:40], "note"))
            if e.kind == "alarm":
                a = Alarm.from_event(e)
                self._alarm_marks.append((a.onset_s, f"Seizure onset (alarm #{a.id})", "alarm"))
                self.trend.add_episode(a.onset_s, a.raised_s)
            self._last_event_id = e.id
        while table.rowCount() > 500:
            table.removeRow(0)
        table.scrollToBottom()
        self._update_marks()

    def _update_marks(self) -> None:
        markers = [(t, text, "annotation") for t, text in self.feed.markers()]
        self._n_markers = len(markers)
        self.traces.set_annotations(markers + self._alarm_marks + self._note_marks)

    def tick(self) -> None:
        """One frame: read new data, take decisions/alarms, redraw what changed."""
        if self._closed:
            return
        now = time.monotonic()
        n = self.feed.n_samples
        if n > self._read_index:
            start, raw = self.feed.read(self._read_index, n)
            if start > self._read_index:  # fell behind the raw buffer: restart the display there
                self.traces.processor.reset(start)
            self._read_index = start + raw.shape[1]
            self.traces.push(raw[self._rows_in])
        decisions, alarms = self.monitor.take()
        if decisions:
            self.trend.add(decisions)
        if alarms:
            self.banner.set_alarms(self.monitor.unacknowledged())
        changed_state = False
        while not self._events_q.empty():
            self._events_q.get_nowait()
            changed_state = True
        if changed_state:
            lost = self.feed.state == "lost"
            self.traces.set_signal_lost(lost, "SIGNAL LOST — waiting for the stream" if lost else "")
        self.traces.refresh()
        if now - self._slow_tick >= 0.5 or alarms or changed_state:
            self._slow_tick = now
            self._poll_log()
            if len(self.feed.markers()) != self._n_markers:
                self._update_marks()
            t_now = self.traces.latest_s
            self.trend.refresh(t_now)
            if self.dsa.update_from(self.traces.processor) or decisions:
                pass
            x0, x1 = self.trend.plot.getPlotItem().getViewBox().viewRange()[0]
            self.dsa.refresh(x0, x1)
            if self.decoder is not None and self.monitor.last_weights:
                self.contrib.set_weights(self.monitor.last_weights)
            self._update_status()

    def _update_status(self) -> None:
        st = self.feed.status()
        L = self.status_labels
        L["stream"].setText(f"Stream: <b>{st['name']}</b>")
        rate = st["rate_hz"]
        L["rate"].setText(f"{st['sfreq']:g} Hz" + (f" (in: {rate:,.0f}/s)" if np.isfinite(rate) else ""))
        L["channels"].setText(f"{st['n_channels']} ch")
        state = st["state"]
        color = {"connected": "#137333", "lost": "#c40000"}.get(state, "#555")
        L["state"].setText(f"<b style='color:{color}'>{'SIGNAL LOST' if state == 'lost' else state}</b>")
        dec = self.decoder
        if dec is not None:
            p50, p99 = dec.latency_ms()
            text = "latency p50/p99: " + (f"{p50:.1f}/{p99:.1f} ms" if np.isfinite(p50) else "–")
            err = dec.check()
            if err:
                text = f"<b style='color:#c40000'>detector error</b> ({err})"[:120]
            L["latency"].setText(text)
            use = getattr(dec, "use", "")  # published weights: their terms of use, always in view
            L["model"].setText(f"model: {getattr(dec, 'model_name', '?')}" + (f" <b>({use.split(' (')[0]})</b>" if use else ""))
            L["model"].setToolTip(getattr(dec, "terms", ""))
        else:
            L["latency"].setText("latency: – (no detector)")
            L["model"].setText("model: none")
        L["dropped"].setText(f"dropped: {st['dropped']}")
        n_alarms = len(self.monitor.unacknowledged())
        L["alarms"].setText(f"<b style='color:#c40000'>{n_alarms} alarm(s)</b>" if n_alarms else "no alarms")

    # ------------------------------------------------------------------ closing
    def closeEvent(self, event) -> None:
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop the timer, the detector and the acquisition (each thread joined, bounded)."""
        if self._closed:
            return
        self._closed = True
        self.timer.stop()
        if self.decoder is not None:
            try:
                self.decoder.stop()
            except Exception:
                log.exception("stopping the detector failed")
        self.feed.stop()

    def grab_png(self, path: str | Path) -> Path:
        """Render the window into a PNG file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        image = self.grab()
        if not image.save(str(path), "PNG"):
            raise OSError(f"could not write {path}")
        return path
