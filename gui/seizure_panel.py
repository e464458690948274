"""The seizure panel: probability trend, density spectral array, channel contribution.

- :class:`TrendPlot`: the detector's probability (raw and smoothed) over the last 10 min
  or 1 h with the alarm threshold as a red dashed line and alarm episodes shaded.
- :class:`SpectralArray`: a density spectral array (spectrogram trend, log power 0.5 Hz
  to ``fmax``) of one channel group, averaged over its channels, one column every
  ``step_s`` seconds; the time axis is linked to the trend's. Spectra are Welch
  estimates (:func:`scipy.signal.welch`) of the displayed (montaged) signals.
- :class:`ContributionView`: the per-channel contribution of the latest decisions
  (``TrainedModel.channel_weights``: DBConformer / MVPFormer channel attention) as a
  ranked bar list and, when electrode positions are known, a head map (bipolar
  channels sit midway between their two electrodes).
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets
from scipy import signal

from bci.channels import ChannelSet, normalize_name

from .alarms import format_clock


class ClockAxis(pg.AxisItem):
    """Axis labelled ``HH:MM:SS`` of stream time, with pyqtgraph's tick spacing."""

    def tickStrings(self, values, scale, spacing):
        return [format_clock(v) for v in values]

    def tickValues(self, minVal, maxVal, size):
        span = max(maxVal - minVal, 1e-9)
        for step in (10, 30, 60, 120, 300, 600, 900, 1800, 3600):
            if span / step <= 6:
                break
        first = np.ceil(minVal / step) * step
        return [(step, list(np.arange(first, maxVal + 1e-9, step)))]


def _styled_plot(title: str, left: str | None = None) -> pg.PlotWidget:
    w = pg.PlotWidget(axisItems={"bottom": ClockAxis("bottom")}, background="w")
    w.setMenuEnabled(False)
    w.setMouseEnabled(False, False)
    w.hideButtons()
    item = w.getPlotItem()
    item.setTitle(f"<span style='color:#222;font-size:10pt'>{title}</span>")
    for side in ("left", "bottom"):
        item.getAxis(side).setTextPen("#222")
        item.getAxis(side).setPen(pg.mkPen("#888"))
    if left:
        item.setLabel("left", left, color="#222")
    return w


def _plot_with_selector(widget: QtWidgets.QWidget, plot: pg.PlotWidget, label: str, box: QtWidgets.QWidget) -> None:
    """Lay out ``plot`` above a right-aligned ``label: box`` row."""
    lay = QtWidgets.QVBoxLayout(widget)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.setSpacing(0)
    lay.addWidget(plot)
    row = QtWidgets.QHBoxLayout()
    row.addStretch(1)
    row.addWidget(QtWidgets.QLabel(label))
    row.addWidget(box)
    lay.addLayout(row)


class TrendPlot(QtWidgets.QWidget):
    """Probability trend with threshold; span 10 min or 1 h."""

    SPANS = {"10 min": 600.0, "1 h": 3600.0}

    def __init__(self, threshold: float, span_s: float = 600.0, parent=None):
        super().__init__(parent)
        self.threshold = float(threshold)
        self.span_s = float(span_s)
        self.t: list[float] = []
        self.p: list[float] = []
        self.s: list[float] = []
        self.episodes: list[tuple[float, float]] = []
        self.plot = _styled_plot("Seizure probability", "p")
        self.plot.setYRange(0, 1.02, padding=0)
        self.raw_curve = self.plot.plot(pen=pg.mkPen("#9bb4d6", width=1))
        self.smooth_curve = self.plot.plot(pen=pg.mkPen("#0b3d91", width=2))
        self.threshold_line = pg.InfiniteLine(
            self.threshold, angle=0, pen=pg.mkPen("#d01010", width=1.5, style=QtCore.Qt.DashLine),
            label=f"threshold {self.threshold:.2f}", labelOpts={"position": 0.08, "color": "#d01010", "anchors": [(0, 1), (0, 1)]},
        )  # fmt: skip
        self.plot.addItem(self.threshold_line)
        self._regions: list[pg.LinearRegionItem] = []
        self.span_box = QtWidgets.QComboBox()
        self.span_box.addItems(list(self.SPANS))
        self.span_box.setCurrentText("1 h" if self.span_s >= 3600 else "10 min")
        self.span_box.currentTextChanged.connect(lambda text: self.set_span(self.SPANS[text]))
        _plot_with_selector(self, self.plot, "Trend", self.span_box)

    def set_span(self, seconds: float) -> None:
        self.span_s = float(seconds)

    def add(self, decisions) -> None:
        for t, p, s in decisions:
            self.t.append(float(t))
            self.p.append(float(p))
            self.s.append(float(s))
        # keep a little more than the longest span
        cut = 0
        while cut < len(self.t) and self.t[cut] < self.t[-1] - 3700:
            cut += 1
        if cut:
            del self.t[:cut], self.p[:cut], self.s[:cut]

    def add_episode(self, onset_s: float, raised_s: float) -> None:
        self.episodes.append((onset_s, raised_s))
        region = pg.LinearRegionItem((onset_s, raised_s), movable=False, brush=pg.mkBrush(208, 16, 16, 50), pen=pg.mkPen(None))
        self.plot.addItem(region)
        self._regions.append(region)

    def refresh(self, now_s: float) -> None:
        t = np.asarray(self.t)
        self.raw_curve.setData(t, np.asarray(self.p))
        self.smooth_curve.setData(t, np.asarray(self.s))
        # a fixed-width window ending now (the first span fills from the left)
        self.plot.setXRange(max(0.0, now_s - self.span_s), max(now_s, self.span_s), padding=0)


class SpectralArray(QtWidgets.QWidget):
    """Density spectral array of a channel group (columns every ``step_s`` s)."""

    def __init__(self, sfreq: float, groups: dict, fmax: float = 30.0, step_s: float = 2.0, parent=None):
        super().__init__(parent)
        self.sfreq = float(sfreq)
        self.fmax = min(float(fmax), self.sfreq / 2.0)
        self.step_s = float(step_s)
        self.nperseg = int(round(2.0 * self.sfreq))
        self.freqs = np.fft.rfftfreq(self.nperseg, 1.0 / self.sfreq)
        self.fsel = (self.freqs >= 0.5) & (self.freqs <= self.fmax)
        self.max_cols = int(3700 / self.step_s)
        self.cols = np.full((self.max_cols, int(self.fsel.sum())), np.nan, np.float32)
        self.col_t = np.full(self.max_cols, np.nan)
        self.n_cols = 0
        self.next_index = None
        self.plot = _styled_plot("Density spectral array", "Hz")
        self.image = pg.ImageItem(axisOrder="row-major")
        self.image.setColorMap(pg.colormap.get("inferno"))
        self.plot.addItem(self.image)
        self.plot.setYRange(0, self.fmax, padding=0)
        self.group_box = QtWidgets.QComboBox()
        self.set_groups(groups)
        _plot_with_selector(self, self.plot, "Channels", self.group_box)

    def set_groups(self, groups: dict, keep: str | None = None) -> None:
        self.groups = groups
        current = keep or self.group_box.currentText()
        self.group_box.blockSignals(True)
        self.group_box.clear()
        self.group_box.addItems(list(groups))
        if current in groups:
            self.group_box.setCurrentText(current)
        self.group_box.blockSignals(False)

    def rows(self) -> list[int]:
        return self.groups.get(self.group_box.currentText(), self.groups.get("All", []))

    def update_from(self, processor) -> bool:
        """Add every column whose data have arrived (reads the processor's ring)."""
        step = int(round(self.step_s * self.sfreq))
        end = processor.end
        if self.next_index is None:
            self.next_index = max(self.nperseg, processor.start + self.nperseg)
            self.next_index = int(np.ceil(self.next_index / step) * step)
        added = False
        rows = self.rows()
        while self.next_index <= end and rows:
            stop = self.next_index
            x = processor.read(stop - 2 * self.nperseg, stop, rows).astype(np.float64)
            x = x[:, np.isfinite(x).all(axis=0)]
            if x.shape[1] >= self.nperseg:
                _, pxx = signal.welch(x, fs=self.sfreq, nperseg=self.nperseg, axis=1)
                power = 10 * np.log10(np.mean(pxx[:, self.fsel], axis=0) + 1e-12)
                i = self.n_cols % self.max_cols
                self.cols[i] = power
                self.col_t[i] = stop / self.sfreq
                self.n_cols += 1
                added = True
            self.next_index += step
        return added

    def refresh(self, t0: float, t1: float) -> None:
        if self.n_cols == 0:
            return
        n = min(self.n_cols, self.max_cols)
        order = np.arange(self.n_cols - n, self.n_cols) % self.max_cols
        t = self.col_t[order]
        keep = t >= t0 - self.step_s
        if not keep.any():
            return
        img = self.cols[order][keep]
        finite = img[np.isfinite(img)]
        lo, hi = (np.percentile(finite, 2), np.percentile(finite, 99)) if finite.size else (0, 1)
        self.image.setImage(img.T, levels=(lo, max(hi, lo + 1e-3)), autoLevels=False)
        f = self.freqs[self.fsel]
        df = f[1] - f[0] if len(f) > 1 else 1.0
        tt = t[keep]
        self.image.setRect(QtCore.QRectF(tt[0] - self.step_s, f[0] - df / 2, tt[-1] - tt[0] + self.step_s, f[-1] - f[0] + df))
        self.plot.setXRange(t0, t1, padding=0)


def _position(name: str, channels: ChannelSet) -> np.ndarray | None:
    """2-D map position of a channel or bipolar pair (midpoint)."""
    parts = [normalize_name(p) for p in str(name).split("-")] if "-" in str(name) else [normalize_name(name)]
    pos = [channels.positions.get(p) for p in parts]
    if any(p is None for p in pos):
        return None
    return np.mean([p[:2] for p in pos], axis=0)


class ContributionView(QtWidgets.QWidget):
    """Ranked channel contributions (bars) and a head map when positions exist."""

    def __init__(self, channels: ChannelSet | None = None, top: int = 10, parent=None):
        super().__init__(parent)
        self.top = int(top)
        self.channels = channels or ChannelSet([])
        self.weights: dict = {}
        self.bars = pg.PlotWidget(background="w")
        self.bars.setMenuEnabled(False)
        self.bars.setMouseEnabled(False, False)
        self.bars.hideButtons()
        bi = self.bars.getPlotItem()
        bi.setTitle("<span style='color:#222;font-size:10pt'>Channel contribution</span>")
        for side in ("left", "bottom"):
            bi.getAxis(side).setTextPen("#222")
            bi.getAxis(side).setPen(pg.mkPen("#888"))
        bi.getAxis("left").setWidth(64)
        self.bar_item = pg.BarGraphItem(x0=[], y=[], height=0.7, width=[], brush="#0b3d91")
        self.bars.addItem(self.bar_item)
        self.bars.invertY(True)
        self.message = pg.TextItem("", color="#666", anchor=(0.5, 0.5))
        self.bars.addItem(self.message)
        self.head = pg.PlotWidget(background="w")
        self.head.setMenuEnabled(False)
        self.head.setMouseEnabled(False, False)
        self.head.hideButtons()
        self.head.setAspectLocked(True)
        self.head.setRange(xRange=(-1.22, 1.22), yRange=(-1.12, 1.25), padding=0)
        self.head.getPlotItem().getViewBox().setMouseEnabled(False, False)
        self.head.hideAxis("left")
        self.head.hideAxis("bottom")
        theta = np.linspace(0, 2 * np.pi, 100)
        self.head.plot(np.cos(theta), np.sin(theta), pen=pg.mkPen("#555", width=1.5))
        self.head.plot([-0.12, 0, 0.12], [0.99, 1.12, 0.99], pen=pg.mkPen("#555", width=1.5))
        self.scatter = pg.ScatterPlotItem(size=24, pen=pg.mkPen("#555"))
        self.head.addItem(self.scatter)
        # white (no contribution) to dark red (all of it), as on a clinical head map
        self._cmap = pg.ColorMap([0.0, 0.5, 1.0], [(255, 255, 255), (244, 140, 40), (170, 0, 0)])
        self._labels: list[pg.TextItem] = []
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.head, 2)
        lay.addWidget(self.bars, 3)
        self.set_weights(None)

    def set_weights(self, weights: dict | None, why: str = "channel contribution not available for this model") -> None:
        self.weights = dict(weights or {})
        if not self.weights:
            self.bar_item.setOpts(x0=[], y=[], width=[])
            self.message.setText(why)
            self.message.setPos(0.5, 0.5)
            self.bars.setXRange(0, 1)
            self.bars.setYRange(0, 1)
            self.scatter.setData([])
            self.head.setVisible(False)
            for side in ("left", "bottom"):
                self.bars.getPlotItem().hideAxis(side)
            return
        for side in ("left", "bottom"):
            self.bars.getPlotItem().showAxis(side)
        self.message.setText("")
        names = sorted(self.weights, key=self.weights.get, reverse=True)
        values = np.array([self.weights[n] for n in names], float)
        total = values.sum()
        share = values / total if total > 0 else values
        top = names[: self.top]
        self.bar_item.setOpts(x0=np.zeros(len(top)), y=np.arange(len(top)), width=share[: len(top)], height=0.7)
        self.bars.getPlotItem().getAxis("left").setTicks([[(i, n) for i, n in enumerate(top)], []])
        self.bars.setXRange(0, max(1e-6, share.max()) * 1.05, padding=0)
        self.bars.setYRange(-0.5, max(len(top), 3) - 0.5, padding=0)
        pts, vals = [], []
        for n, v in zip(names, share):
            p = _position(n, self.channels)
            if p is not None:
                pts.append(p)
                vals.append(v)
        if len(pts) >= 3:
            pts = np.asarray(pts)
            radius = np.max(np.linalg.norm(pts, axis=1)) * 1.08 or 1.0
            pts = pts / radius
            v = np.asarray(vals)
            norm = (v - v.min()) / (np.ptp(v) or 1.0)
            brushes = [pg.mkBrush(self._cmap.map(float(x), mode="qcolor")) for x in norm]
            self.scatter.setData(pos=pts, brush=brushes)
            labelled = [n for n in names if _position(n, self.channels) is not None]
            while len(self._labels) < len(labelled):
                item = pg.TextItem("", color="#111", anchor=(0.5, 0.5))
                font = item.textItem.font()
                font.setPointSizeF(6.5)
                item.setFont(font)
                self.head.addItem(item)
                self._labels.append(item)
            for item, name, p, x in zip(self._labels, labelled, pts, norm):
                item.setText(name)
                item.setColor("#fff" if x > 0.6 else "#111")  # readable on dark red
                item.setPos(float(p[0]), float(p[1]))
                item.show()
            for item in self._labels[len(labelled) :]:
                item.hide()
            self.head.setVisible(True)
        else:
            self.scatter.setData([])
            self.head.setVisible(False)

    def ranked(self) -> list[str]:
        return sorted(self.weights, key=self.weights.get, reverse=True)
