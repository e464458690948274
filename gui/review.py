"""Review of a recording in the dashboard (``bci dashboard --review FILE``): not live.

:class:`ReviewWindow` is the dashboard window over a :class:`gui.feed.RecordingFeed`:
the whole recording is in the trace view from the start. Marks on the traces: the
recording's own annotations, the event log's alarms and notes, and the reviewer's
intervals (shaded: seizures red, artefacts amber). A click on the traces places the
cursor (orange); marks are made at the cursor, or at the middle of the page when the
cursor is off the page.

Keys (also on the "Review" toolbar): N / P next / previous event, Page Down / Page Up
next / previous page, O / Shift+O seizure onset / offset, A / Shift+A artefact start /
end, Ctrl+E export ``events.tsv``. Each closed interval is logged at once to the SQLite
event log (kind ``annotation``, details ``onset_s, duration_s, type``); ``File > Export
events.tsv`` writes them as SzCORE + BIDS events (:mod:`gui.annotations`). Neither holds
anything from the recording's header.
"""

from __future__ import annotations

from pathlib import Path

import pyqtgraph as pg
from PySide6 import QtGui, QtWidgets

from bci.errors import BCIError

from .annotations import BOUNDS, Mark, ReviewAnnotations, next_event, previous_event
from .window import DashboardWindow

#: Shading of the reviewer's intervals (RGBA).
REGION_BRUSH = {"seizure": (208, 16, 16, 45), "artefact": (230, 150, 0, 45)}


class ReviewWindow(DashboardWindow):
    """The dashboard over a whole recording, for marking seizures and artefacts.

    Parameters are those of :class:`~gui.window.DashboardWindow` (no detector); the
    review buffer is made long enough for the whole recording.
    """

    def __init__(self, feed, event_log, monitor, config: dict, parent=None):
        duration = feed.n_samples / feed.sfreq
        self.annotations = ReviewAnnotations(duration)
        self._regions: list[pg.LinearRegionItem] = []
        config = {**config, "buffer_s": max(float(config.get("buffer_s", 300.0)), duration)}
        super().__init__(feed, event_log, monitor, config, parent=parent)
        self.setWindowTitle(f"bci dashboard — review of {feed.name}")
        self.cursor_s = 0.0
        self.cursor = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#f08000", width=2))
        self.cursor.setZValue(15)
        self.traces.plot.addItem(self.cursor)
        self.traces.plot.scene().sigMouseClicked.connect(self._on_click)
        display = self.findChild(QtWidgets.QToolBar)
        for action in display.actions():  # no live view to return to
            if display.widgetForAction(action) is self.live_button:
                action.setVisible(False)
        self._build_review_actions()
        self.tick()  # the whole recording into the trace view
        self.show_time(0.0)
        self.traces.setFocus()

    # ------------------------------------------------------------------ building
    def _build_review_actions(self) -> None:
        tb = QtWidgets.QToolBar("Review")
        tb.setMovable(False)
        self.addToolBarBreak()
        self.addToolBar(tb)
        tb.addWidget(QtWidgets.QLabel(" Review "))
        self.review_actions = {}
        specs = (
            ("previous_event", "◀ Event", "P", lambda: self.jump(-1)),
            ("next_event", "Event ▶", "N", lambda: self.jump(1)),
            ("previous_page", "◀ Page", "PgUp", lambda: self.page(-1)),
            ("next_page", "Page ▶", "PgDown", lambda: self.page(1)),
            (None, None, None, None),
            ("seizure_onset", "Seizure onset", "O", lambda: self.begin_mark("seizure")),
            ("seizure_offset", "Seizure offset", "Shift+O", lambda: self.end_mark("seizure")),
            ("artefact_start", "Artefact start", "A", lambda: self.begin_mark("artefact")),
            ("artefact_end", "Artefact end", "Shift+A", lambda: self.end_mark("artefact")),
            (None, None, None, None),
            ("export_events", "Export events.tsv…", "Ctrl+E", self.request_export_events),
        )  # fmt: skip
        for key, text, shortcut, slot in specs:
            if key is None:
                tb.addSeparator()
                continue
            action = QtGui.QAction(text, self)
            action.setShortcut(QtGui.QKeySequence(shortcut))
            action.setToolTip(f"{text} ({shortcut})")
            action.triggered.connect(lambda _checked=False, s=slot: s())
            tb.addAction(action)
            self.review_actions[key] = action
        menu = self.menuBar().addMenu("&File")
        menu.addAction(self.review_actions["export_events"])
        menu.addAction("Export event log (CSV)…", self.request_export)
        menu.addSeparator()
        menu.addAction("Close", self.close)

    # ------------------------------------------------------------------ navigation
    def show_time(self, t_s: float) -> None:
        """Put the cursor at ``t_s`` and show the page centred on it."""
        self.set_cursor(t_s)
        self.traces.show_page_ending(self.cursor_s + self.traces.page_s / 2)

    def set_cursor(self, t_s: float) -> None:
        self.cursor_s = min(max(float(t_s), 0.0), self.annotations.duration_s)
        self.cursor.setPos(self.cursor_s)

    def page(self, step: int) -> None:
        """Show the page ``step`` pages later (earlier when negative)."""
        self.traces.show_page_ending(self.traces.page_window()[1] + step * self.traces.page_s)

    def event_times(self) -> list[float]:
        """Times of every mark on the traces (recording annotations, log events, the review's)."""
        return [t for t, _, _ in self.traces.annotations]

    def jump(self, direction: int) -> float | None:
        """Go to the next (``direction`` > 0) or previous event from the cursor."""
        step = next_event if direction > 0 else previous_event
        t = step(self.event_times(), self.cursor_s)
        if t is None:
            self.statusBar().showMessage(f"no {'later' if direction > 0 else 'earlier'} event", 4000)
        else:
            self.show_time(t)
        return t

    def _on_click(self, event) -> None:
        pos = event.scenePos()
        if self.traces.vb.sceneBoundingRect().contains(pos):
            self.set_cursor(self.traces.vb.mapSceneToView(pos).x())

    # ------------------------------------------------------------------ marking
    def mark_time(self) -> float:
        """The cursor when it is on the page, else the middle of the page."""
        t0, t1 = self.traces.page_window()
        return self.cursor_s if t0 <= self.cursor_s <= t1 else (t0 + t1) / 2

    def begin_mark(self, kind: str, t_s: float | None = None) -> float | None:
        """Open a seizure / artefact interval at ``t_s`` (default :meth:`mark_time`)."""
        t = self.mark_time() if t_s is None else t_s
        try:
            t = self.annotations.begin(kind, t)
        except BCIError as exc:
            self.statusBar().showMessage(str(exc), 6000)
            return None
        self.set_cursor(t)
        self._update_marks()
        return t

    def end_mark(self, kind: str, t_s: float | None = None) -> Mark | None:
        """Close the open interval of ``kind`` and log it (kind ``annotation``)."""
        t = self.mark_time() if t_s is None else t_s
        try:
            mark = self.annotations.end(kind, t)
        except BCIError as exc:
            self.statusBar().showMessage(str(exc), 6000)
            return None
        first, last = BOUNDS[kind]
        self.event_log.log("annotation", f"{kind} {first} {mark.onset_s:.1f} s, {last} {mark.end_s:.1f} s",
                           stream_time_s=mark.onset_s, details=mark.details())  # fmt: skip
        self.set_cursor(t)
        self._poll_log()
        self._update_marks()
        return mark

    def _update_marks(self) -> None:
        super()._update_marks()
        self.traces.set_annotations(self.traces.annotations + self.annotations.labels())
        for region in self._regions:
            self.traces.plot.removeItem(region)
        self._regions = []
        for m in self.annotations.marks:
            region = pg.LinearRegionItem((m.onset_s, m.end_s), movable=False, brush=REGION_BRUSH[m.type], pen=pg.mkPen(None))
            region.setZValue(1)
            self.traces.plot.addItem(region)
            self._regions.append(region)

    # ------------------------------------------------------------------ export
    def export_events(self, path: str | Path) -> Path:
        """Write the reviewer's intervals as ``events.tsv`` (SzCORE + BIDS columns)."""
        out = self.annotations.write_tsv(path)
        self.statusBar().showMessage(f"wrote {len(self.annotations.marks)} annotation(s) to {out}", 6000)
        return out

    def request_export_events(self) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export annotations", "events.tsv", "BIDS events (*.tsv)")
        if path:
            try:
                self.export_events(path)
            except BCIError as exc:
                QtWidgets.QMessageBox.warning(self, "Export annotations", str(exc))
