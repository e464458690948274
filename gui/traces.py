"""The EEG trace view: one curve per page, min/max decimated to the pixel width.

Layout and conventions follow clinical review software: channels top to bottom in
montage order (front to back, left above right for the double banana), labels on the
left, time along the bottom as ``HH:MM:SS`` since the stream started with a grid line
every second, sensitivity in microvolts per millimetre of screen (negative up by
default, as EEG is read), a calibration bar (uV and 1 s) at the bottom right, event
marks drawn across the traces, and a red "SIGNAL LOST" overlay while no data arrive.

Drawing cost does not grow with the sampling rate: every frame, the visible channels of
the page are decimated to one (min, max) pair per horizontal pixel
(:func:`gui.display.minmax_decimate`) and handed to ONE ``pyqtgraph.PlotDataItem``
with NaN separators (:func:`gui.display.page_arrays`). Frames are driven by the
window's timer, never by data arrival.

Review: :meth:`TraceView.set_live(False)` freezes the page; the horizontal scroll bar
(or Page Up / Page Down, arrow keys) moves back through the review buffer while new data
keep arriving. Channels beyond ``channels_per_screen`` (100+ contact iEEG) are reached
with the vertical scroll bar or by choosing an electrode group.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from .alarms import format_clock
from .display import (
    Decimator,
    DisplayProcessor,
    DisplaySettings,
    channel_groups,
    page_arrays,
)

#: Sensitivities offered (uV/mm), as on clinical systems.
SENSITIVITIES = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 1000)
PAGES = (10, 20, 30)
NICE_UV = (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000)
COLORS = {"annotation": "#1f5fbf", "alarm": "#d01010", "note": "#107a30", "marker": "#1f5fbf",
          "seizure": "#d01010", "artefact": "#b06a00"}  # fmt: skip


class TimeAxis(pg.AxisItem):
    """Bottom axis labelled ``HH:MM:SS`` (stream time)."""

    def tickStrings(self, values, scale, spacing):
        out = []
        for v in values:
            if spacing < 1:
                out.append(f"{format_clock(math.floor(v))}.{int(round((v % 1) * 10)) % 10}")
            else:
                out.append(format_clock(v))
        return out

    def tickValues(self, minVal, maxVal, size):
        span = maxVal - minVal
        major = 1.0 if span <= 12 else 2.0 if span <= 24 else 5.0
        first = math.ceil(minVal / major) * major
        ticks = list(np.arange(first, maxVal + 1e-9, major))
        return [(major, ticks), (1.0, [])] if major > 1 else [(major, ticks)]


class TraceView(QtWidgets.QWidget):
    """Multichannel EEG traces over a :class:`~gui.display.DisplayProcessor`.

    Parameters
    ----------
    sfreq : float
    channels : ChannelSet
        The stream's data channels (as pushed to :meth:`push`).
    buffer_s : float
        Review buffer length (s).
    settings : dict
        ``page_s``, ``sensitivity_uv_mm``, ``montage``, ``highpass``, ``lowpass``,
        ``notch``, ``channels_per_screen``, ``negative_up``, ``pixels_per_mm``.
    """

    liveChanged = QtCore.Signal(bool)

    def __init__(self, sfreq: float, channels, buffer_s: float = 300.0, settings: dict | None = None, parent=None):
        super().__init__(parent)
        s = dict(settings or {})
        self.sfreq = float(sfreq)
        self.page_s = float(s.get("page_s", 10))
        self.sensitivity = float(s.get("sensitivity_uv_mm", 7))
        self.channels_per_screen = int(s.get("channels_per_screen", 32))
        self.negative_up = bool(s.get("negative_up", True))
        self._px_per_mm = s.get("pixels_per_mm")
        self.processor = DisplayProcessor(
            sfreq, channels, int(round(buffer_s * sfreq)),
            DisplaySettings(s.get("montage", "referential"), s.get("highpass"), s.get("lowpass"), s.get("notch")),
        )  # fmt: skip
        self.live = True
        self.review_end_s = 0.0
        self.group = "All"
        self.first_row = 0
        self.annotations: list[tuple[float, str, str]] = []  # (time s, text, kind)
        self.frames = 0
        self._dirty = True
        self._last_key = None
        self._decimator = Decimator()
        self._scale_key = None
        self._groups_key = None
        self._build()
        self._relayout()

    # ------------------------------------------------------------------ widgets
    def _build(self) -> None:
        self.plot = pg.PlotWidget(axisItems={"bottom": TimeAxis("bottom")}, background="w")
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(False, False)
        self.plot.hideButtons()
        item = self.plot.getPlotItem()
        item.showGrid(x=True, y=False, alpha=0.25)
        item.layout.setContentsMargins(0, 4, 6, 0)
        for side in ("left", "bottom"):
            ax = item.getAxis(side)
            ax.setTextPen("k")
            ax.setPen(pg.mkPen("#888"))
        item.getAxis("left").setWidth(74)
        item.getAxis("left").setStyle(tickLength=0)
        self.vb = item.getViewBox()
        self.vb.setDefaultPadding(0)
        # one curve for the whole page; decimated here, so pyqtgraph's own processing is off
        self.curve = pg.PlotCurveItem(connect="finite", pen=pg.mkPen("#101010", width=1), antialias=False, skipFiniteCheck=False)
        self.curve.setZValue(10)
        self.plot.addItem(self.curve)
        self.scalebar = pg.PlotDataItem(pen=pg.mkPen("#000", width=2), connect="finite")
        self.scalebar.setZValue(20)
        self.plot.addItem(self.scalebar)
        self.scale_text = pg.TextItem("", color="#000", anchor=(1, 1), fill=(255, 255, 255, 230))
        self.scale_text.setZValue(20)
        self.plot.addItem(self.scale_text)
        self._marks: list[pg.InfiniteLine] = []

        self.lost_label = QtWidgets.QLabel("SIGNAL LOST", self.plot)
        self.lost_label.setAlignment(QtCore.Qt.AlignCenter)
        self.lost_label.setStyleSheet(
            "QLabel{background: rgba(200,0,0,200); color: white; font-size: 28px; font-weight: bold; padding: 12px; border-radius: 6px}"
        )
        self.lost_label.hide()
        self.paused_label = QtWidgets.QLabel("REVIEW (paused)", self.plot)
        self.paused_label.setStyleSheet("QLabel{background:#f4c542; color:#000; font-weight:bold; padding:3px 8px}")
        self.paused_label.hide()

        self.hscroll = QtWidgets.QScrollBar(QtCore.Qt.Horizontal)
        self.hscroll.setToolTip("Scroll back through the review buffer (pauses the live view)")
        self.hscroll.valueChanged.connect(self._on_hscroll)
        self.vscroll = QtWidgets.QScrollBar(QtCore.Qt.Vertical)
        self.vscroll.setToolTip("Scroll through the channels")
        self.vscroll.valueChanged.connect(self._on_vscroll)
        grid = QtWidgets.QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(0)
        grid.addWidget(self.plot, 0, 0)
        grid.addWidget(self.vscroll, 0, 1)
        grid.addWidget(self.hscroll, 1, 0)
        self.setFocusPolicy(QtCore.Qt.StrongFocus)

    # ------------------------------------------------------------------ geometry
    @property
    def pixels_per_mm(self) -> float:
        if self._px_per_mm:
            return float(self._px_per_mm)
        screen = self.screen() or QtGui.QGuiApplication.primaryScreen()
        dpi = screen.physicalDotsPerInch() if screen is not None else 96.0
        return (dpi if dpi and dpi > 20 else 96.0) / 25.4

    def groups(self) -> dict[str, list[int]]:
        key = (tuple(self.processor.names), self.processor.settings.montage)
        if self._groups_key != key:
            self._groups = channel_groups(self.processor.names, self.processor.settings.montage)
            self._groups_key = key
        return self._groups

    def _rows(self) -> list[int]:
        groups = self.groups()
        rows = groups.get(self.group, groups["All"])
        return rows[self.first_row : self.first_row + self.channels_per_screen]

    def visible_names(self) -> list[str]:
        return [self.processor.names[i] for i in self._rows()]

    def _relayout(self) -> None:
        groups = self.groups()
        if self.group not in groups:
            self.group = "All"
        n = len(groups[self.group])
        self.vscroll.blockSignals(True)
        self.vscroll.setRange(0, max(0, n - self.channels_per_screen))
        self.vscroll.setPageStep(self.channels_per_screen)
        self.first_row = min(self.first_row, self.vscroll.maximum())
        self.vscroll.setValue(self.first_row)
        self.vscroll.blockSignals(False)
        self.vscroll.setVisible(n > self.channels_per_screen)
        self._dirty = True
        self._last_key = None

    def resizeEvent(self, event):
        super().resizeEvent(event)
        self._place_overlays()
        self._dirty = True

    def _place_overlays(self) -> None:
        self.lost_label.adjustSize()
        r = self.plot.rect()
        self.lost_label.move((r.width() - self.lost_label.width()) // 2, (r.height() - self.lost_label.height()) // 3)
        self.paused_label.adjustSize()
        self.paused_label.move(r.width() - self.paused_label.width() - 8, 6)

    # ------------------------------------------------------------------ data
    def push(self, chunk: np.ndarray) -> None:
        """New raw samples (volts) from the stream, in order."""
        if chunk.shape[1]:
            self.processor.push(chunk)
            self._dirty = True

    @property
    def end_index(self) -> int:
        return self.processor.ring.end

    @property
    def latest_s(self) -> float:
        return self.end_index / self.sfreq

    def change(self, feed=None, **settings) -> None:
        """Change montage / filters (re-processing the review buffer from ``feed``)."""
        if feed is not None:
            start, raw = feed.read(max(0, feed.n_samples - self.processor.capacity), feed.n_samples)
        else:
            start, raw = self.end_index, np.zeros((len(self.processor.channels), 0))
        self.processor.update(raw, start, **settings)
        self._relayout()

    def set_page(self, seconds: float) -> None:
        self.page_s = float(seconds)
        self._dirty = True

    def set_sensitivity(self, uv_per_mm: float) -> None:
        self.sensitivity = float(uv_per_mm)
        self._dirty = True

    def set_group(self, name: str) -> None:
        self.group = name
        self.first_row = 0
        self._relayout()

    def set_channels_per_screen(self, n: int) -> None:
        self.channels_per_screen = max(1, int(n))
        self._relayout()

    def set_live(self, live: bool) -> None:
        if live == self.live:
            return
        self.live = live
        if not live:
            self.review_end_s = self.latest_s
        self.paused_label.setVisible(not live)
        self._place_overlays()
        self._dirty = True
        self.liveChanged.emit(live)

    def show_page_ending(self, t_s: float) -> None:
        """Review mode: show the page that ends at stream time ``t_s``."""
        self.set_live(False)
        lo = self.processor.ring.start / self.sfreq + self.page_s
        self.review_end_s = float(np.clip(t_s, min(lo, self.latest_s), self.latest_s))
        self._dirty = True

    def set_signal_lost(self, lost: bool, text: str = "SIGNAL LOST") -> None:
        self.lost_label.setText(text)
        self._place_overlays()
        self.lost_label.setVisible(lost)

    def set_annotations(self, items: list[tuple[float, str, str]]) -> None:
        """Marks ``(stream time s, text, kind)``; kind in :data:`COLORS` (annotation, alarm, note, seizure...)."""
        self.annotations = sorted(items)
        self._dirty = True
        self._last_key = None

    # ------------------------------------------------------------------ input
    def keyPressEvent(self, event):
        key = event.key()
        end = self.latest_s if self.live else self.review_end_s
        steps = {QtCore.Qt.Key_PageUp: -self.page_s, QtCore.Qt.Key_PageDown: self.page_s,
                 QtCore.Qt.Key_Left: -1.0, QtCore.Qt.Key_Right: 1.0}  # fmt: skip
        if key in steps:
            self.show_page_ending(end + steps[key])
        elif key in (QtCore.Qt.Key_End, QtCore.Qt.Key_Space):
            self.set_live(True)
        else:
            super().keyPressEvent(event)

    def _on_hscroll(self, value: int) -> None:
        t = value / 10.0
        if self.live and t >= self.latest_s - 0.05:
            return
        self.show_page_ending(t)

    def _on_vscroll(self, value: int) -> None:
        self.first_row = int(value)
        self._dirty = True
        self._last_key = None

    # ------------------------------------------------------------------ drawing
    def page_window(self) -> tuple[float, float]:
        end = self.latest_s if self.live else self.review_end_s
        end = max(end, self.page_s)
        return end - self.page_s, end

    def refresh(self) -> bool:
        """Redraw the page if anything changed; returns True when new data were set."""
        if not self._dirty:
            return False
        self._dirty = False
        t0, t1 = self.page_window()
        rows = self._rows()
        vb_w = max(100, int(self.vb.width()))
        vb_h = max(50, int(self.vb.height()))
        height_mm = vb_h / self.pixels_per_mm
        n = max(1, len(rows))
        spacing = height_mm / n
        offsets = -(np.arange(n) + 0.5) * spacing
        i0, i1 = int(round(t0 * self.sfreq)), int(round(t1 * self.sfreq))
        k = max(1, int(math.ceil((i1 - i0) / vb_w)))
        if rows:
            idx, dec = self._decimator.page(self.processor, rows, i0, i1, k)
        else:
            idx, dec = np.zeros(0), np.zeros((0, 0), np.float32)
        gain = (-1.0 if self.negative_up else 1.0) / self.sensitivity
        x, y = page_arrays(dec, idx, self.sfreq, offsets, gain)
        self.curve.setData(x, y)
        key = (tuple(rows), vb_h, round(spacing, 6))
        if key != self._last_key:
            names = self.processor.names
            self.plot.getPlotItem().getAxis("left").setTicks([[(float(o), names[r]) for o, r in zip(offsets, rows)], []])
            self._last_key = key
        self.vb.setRange(xRange=(t0, t1), yRange=(-height_mm, 0), padding=0, update=False)
        self._draw_scalebar(t1, height_mm, spacing)
        self._draw_marks(t0, t1)
        self._sync_hscroll(t1)
        self.frames += 1
        return True

    def _draw_scalebar(self, t1: float, height_mm: float, spacing: float) -> None:
        target_mm = min(10.0, 0.8 * spacing * 2)
        uv = min(NICE_UV, key=lambda v: abs(v / self.sensitivity - target_mm))
        length = uv / self.sensitivity
        xr = t1 - 0.15 * self.page_s / 10
        yb = -height_mm + 2.0
        x = np.array([xr - 1.0, xr, xr])
        y = np.array([yb, yb, yb + length])
        self.scalebar.setData(x, y)
        if self._scale_key != uv:
            self.scale_text.setText(f"{uv:g} µV\n1 s")
            self._scale_key = uv
        self.scale_text.setPos(xr - 0.05, yb + length)

    def _draw_marks(self, t0: float, t1: float) -> None:
        shown = [(t, text, kind) for t, text, kind in self.annotations if t0 <= t <= t1]
        while len(self._marks) < len(shown):
            line = pg.InfiniteLine(angle=90, movable=False, label="",
                                   labelOpts={"position": 0.985, "fill": (255, 255, 255, 230), "anchors": [(0, 0), (0, 0)]})
            line.setZValue(5)
            self.plot.addItem(line)
            self._marks.append(line)
        for line, (t, text, kind) in zip(self._marks, shown):
            color = COLORS.get(kind, "#1f5fbf")
            line.setPen(pg.mkPen(color, width=2 if kind == "alarm" else 1, style=QtCore.Qt.DashLine if kind != "alarm" else QtCore.Qt.SolidLine))
            line.setPos(t)
            if line.label.toPlainText() != text:
                line.label.setText(text)
                line.label.setColor(color)
            line.show()
        for line in self._marks[len(shown) :]:
            line.hide()

    def _sync_hscroll(self, t1: float) -> None:
        lo = int(round((self.processor.ring.start / self.sfreq + self.page_s) * 10))
        hi = max(lo, int(round(self.latest_s * 10)))
        self.hscroll.blockSignals(True)
        self.hscroll.setRange(min(lo, hi), hi)
        self.hscroll.setPageStep(int(self.page_s * 10))
        self.hscroll.setSingleStep(10)
        self.hscroll.setValue(int(round(t1 * 10)))
        self.hscroll.blockSignals(False)

    def mark_dirty(self) -> None:
        self._dirty = True

    def plotted(self) -> tuple[np.ndarray, np.ndarray]:
        """The x (s) and y (mm) arrays currently drawn (for tests)."""
        return self.curve.getData()
