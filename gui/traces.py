"""The EEG trace view: one image per page, min/max decimated to the pixel width.

Layout and conventions follow clinical review software: channels top to bottom in
montage order (front to back, left above right for the double banana), labels on the
left, time along the bottom as ``HH:MM:SS`` since the stream started with a grid line
every second, sensitivity in microvolts per millimetre of screen (negative up by
default, as EEG is read), a calibration bar (uV and 1 s) at the bottom right, event
marks drawn across the traces, and a red "SIGNAL LOST" overlay while no data arrive.

Drawing cost does not grow with the sampling rate nor, while the page scrolls, with the
page length: the visible channels are decimated to one (min, max) pair per bin of ``k``
samples, about one bin per horizontal pixel, bins aligned on absolute sample indices
(:class:`gui.display.Decimator`), and each bin becomes one column of ONE image
(:class:`PageRaster`): NumPy fills, for every channel, the pixel rows from the bin's
min to its max, joined to the previous column (:func:`column_spans`,
:func:`rasterise`). A bin's column never changes once all its samples have arrived, so
the image is a ring of columns and a live frame rasterises only the bins that arrived
since the last one; Qt then copies one image instead of stroking a path of two vertices
per pixel column per channel (:class:`TraceImage`). Frames are driven by the window's
timer, never by data arrival.

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
from .display import Decimator, DisplayProcessor, DisplaySettings, channel_groups

#: Sensitivities offered (uV/mm), as on clinical systems.
SENSITIVITIES = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 1000)
PAGES = (10, 20, 30)
NICE_UV = (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000)
#: Trace ink in the page image (premultiplied ARGB32); the rest of the image is transparent.
INK = np.uint32(0xFF101010)
COLORS = {"annotation": "#1f5fbf", "alarm": "#d01010", "note": "#107a30", "marker": "#1f5fbf",
          "seizure": "#d01010", "artefact": "#b06a00"}  # fmt: skip


def bin_extremes(decimator: Decimator, processor: DisplayProcessor, rows: list[int], b0: int, b1: int, k: int):
    """``(lo, hi)``, each ``(len(rows), b1 - b0)`` float32: min and max of bins ``[b*k, (b+1)*k)``.

    The display samples of ``processor`` (rows ``rows``), decimated by ``decimator``. A bin
    at the live edge holds the samples arrived so far; a bin with no sample held is NaN.
    """
    lo = np.full((len(rows), b1 - b0), np.nan, np.float32)
    hi = lo.copy()
    i0, i1 = b0 * k, min(b1 * k, processor.end)
    if i1 > i0:
        _, out = decimator.page(processor, rows, i0, i1, k)
        if k > 1:
            m = out.shape[1] // 2
            lo[:, :m], hi[:, :m] = out[:, 0::2], out[:, 1::2]
        else:
            lo[:, : out.shape[1]] = hi[:, : out.shape[1]] = out
    return lo, hi


def column_spans(lo: np.ndarray, hi: np.ndarray, base: np.ndarray, scale: float, height: int):
    """Pixel rows each channel's trace covers in each column of an image ``height`` rows tall.

    ``lo``, ``hi``: ``(C, n + 1)`` min and max per column; column 0 is the one before the
    first drawn (context: the trace is joined to it, it is not drawn). Channel ``c``'s
    value ``v`` falls on row ``floor(base[c] + scale * v)`` (row 0 at the top). A column
    covers its min-to-max rows, extended to reach the previous column's nearest row (the
    trace stays connected, as a one-pixel line would be). Returns ``(top, bottom)``, each
    ``(C, n)`` integer, inclusive and clipped to the image; ``top > bottom`` where nothing
    is drawn (no sample, or the trace is entirely off the image).
    """
    a = np.floor(base[:, None] + scale * lo.astype(np.float64))
    b = np.floor(base[:, None] + scale * hi.astype(np.float64))
    t, u = np.fmin(a, b), np.fmax(a, b)
    top = np.maximum(np.fmin(t[:, 1:], u[:, :-1] + 1), 0)
    bottom = np.minimum(np.fmax(u[:, 1:], t[:, :-1] - 1), height - 1)
    ok = top <= bottom  # False for NaN
    return np.where(ok, top, 0).astype(np.intp), np.where(ok, bottom, -1).astype(np.intp)


def rasterise(top: np.ndarray, bottom: np.ndarray, height: int) -> np.ndarray:
    """``(height, n)`` bool: pixel ``(r, j)`` is inked when some channel's span in column ``j`` covers row ``r``.

    ``top``, ``bottom``: ``(C, n)`` inclusive rows within ``[0, height)`` as from
    :func:`column_spans` (``top > bottom``: nothing). Each span adds +1 at its top row and
    -1 below its bottom row in its column's block of ``height + 1`` counters; every block
    sums to zero, so ONE running sum over all blocks (contiguous, the fast path) counts
    the spans covering each pixel.
    """
    n = top.shape[1]
    ok = top <= bottom
    block = np.broadcast_to(np.arange(n) * (height + 1), top.shape)[ok]
    size = (height + 1) * n
    depth = np.bincount(block + top[ok], minlength=size)
    depth -= np.bincount(block + bottom[ok] + 1, minlength=size)
    np.cumsum(depth, out=depth)
    return (depth.reshape(n, height + 1)[:, :height] > 0).T


class PageRaster:
    """The page's traces as a ring of image columns: bin ``b`` is column ``b % capacity``.

    :meth:`update` rasterises only the columns it does not already hold with final data
    (every sample of the bin and of the bin before it arrived, same settings): while a
    live page scrolls, the bins that arrived since the last frame and the partial bin at
    the live edge. Anything else (gain, rows, image height, bin size, re-processed
    samples) redraws the whole page. ``image`` is premultiplied ARGB32 (:data:`INK` on
    transparent); ``drawn`` lists the bin ranges the last update rasterised.
    """

    def __init__(self):
        self.image = np.zeros((1, 1), np.uint32)
        self.key = None
        self.valid = (0, 0)  # bins whose columns hold final data
        self.drawn: list[tuple[int, int]] = []

    def update(self, processor: DisplayProcessor, decimator: Decimator, rows: list[int], c0: int, c1: int, k: int,
               base: np.ndarray, scale: float, height: int, capacity: int) -> None:  # fmt: skip
        """Hold the columns of bins ``[c0, c1)`` (``c1 - c0 <= capacity``); ``base``, ``scale`` as :func:`column_spans`."""
        key = (k, processor.version, tuple(rows), height, capacity, scale, base.tobytes())
        if key != self.key:
            self.key, self.valid = key, (c0, c0)
            self.image = np.zeros((height, capacity), np.uint32)
        v0, v1 = max(self.valid[0], c0), min(self.valid[1], c1)
        todo = [(c0, c1)] if v1 <= v0 else [(c0, v0), (v1, c1)]
        self.drawn = [(a, b) for a, b in todo if b > a]
        for a, b in self.drawn:
            lo, hi = bin_extremes(decimator, processor, rows, a - 1, b, k)
            ink = rasterise(*column_spans(lo, hi, base, scale, height), height)
            pos = a % capacity
            split = min(b - a, capacity - pos)  # the ring wraps after this many columns
            self.image[:, pos : pos + split] = ink[:, :split] * INK
            self.image[:, : b - a - split] = ink[:, split:] * INK
        self.valid = (c0, max(c0, min(c1, processor.end // k)))

    def page(self, c0: int, c1: int) -> np.ndarray:
        """The ink of bins ``[c0, c1)`` in page order, ``(height, c1 - c0)`` bool."""
        return self.image[:, np.arange(c0, c1) % self.image.shape[1]] != 0


class TraceImage(pg.GraphicsObject):
    """Draws a :class:`PageRaster`'s columns ``[c0, c1)`` over the page in view coordinates.

    Column ``b`` spans ``[b, b + 1) * seconds_per_column`` seconds and the image's rows run
    from y = 0 (top) down to ``-height_mm``. Painted in device pixels without smoothing,
    in at most two copies (the ring wraps), their seam on a whole pixel.
    """

    def __init__(self, raster: PageRaster):
        super().__init__()
        self.raster = raster
        self.columns = (0, 0)
        self.seconds_per_column = 1.0
        self._rect = QtCore.QRectF()
        self._qimage = None

    def show_columns(self, c0: int, c1: int, seconds_per_column: float, height_mm: float) -> None:
        self.prepareGeometryChange()
        self.columns, self.seconds_per_column = (c0, c1), seconds_per_column
        self._rect = QtCore.QRectF(c0 * seconds_per_column, -height_mm, (c1 - c0) * seconds_per_column, height_mm)
        if self._qimage is None or self._qimage.data is not self.raster.image:
            self._qimage = pg.functions.ndarray_to_qimage(self.raster.image, QtGui.QImage.Format_ARGB32_Premultiplied)
        self.update()

    def boundingRect(self) -> QtCore.QRectF:
        return self._rect

    def paint(self, painter, *args) -> None:
        c0, c1 = self.columns
        if c1 <= c0 or self._qimage is None:
            return
        height, cap = self.raster.image.shape
        to_device = painter.transform()
        spc = self.seconds_per_column
        box = to_device.mapRect(self._rect)
        first = c0 % cap
        split = c0 + min(c1 - c0, cap - first)
        edges = [round(to_device.map(QtCore.QPointF(b * spc, 0.0)).x()) for b in (c0, split, c1)]
        painter.save()
        painter.resetTransform()
        painter.setRenderHint(QtGui.QPainter.SmoothPixmapTransform, False)
        top, bottom = round(box.top()), round(box.bottom())
        for (x0, x1), (pos, n) in zip(zip(edges, edges[1:]), ((first, split - c0), (0, c1 - split))):
            if n:
                painter.drawImage(QtCore.QRectF(x0, top, x1 - x0, bottom - top), self._qimage, QtCore.QRectF(pos, 0, n, height))
        painter.restore()


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
        item.layout.setContentsMargins(0, 4, 6, 0)
        for side in ("left", "bottom"):
            ax = item.getAxis(side)
            ax.setTextPen("k")
            ax.setPen(pg.mkPen("#888"))
        item.getAxis("left").setWidth(74)
        item.getAxis("left").setStyle(tickLength=0)
        item.getAxis("left").setCacheMode(QtWidgets.QGraphicsItem.DeviceCoordinateCache)
        self.vb = item.getViewBox()
        self.vb.setDefaultPadding(0)
        # a line every second under the traces (opaque: the axis' own alpha grid costs ms per frame)
        self.grid = pg.PlotCurveItem(connect="pairs", pen=pg.mkPen("#e2e2e2", width=1), antialias=False)
        self.grid.setZValue(1)
        self.plot.addItem(self.grid)
        self._grid_key = None
        # one image for the whole page, above the event marks
        self.raster = PageRaster()
        self.image = TraceImage(self.raster)
        self.image.setZValue(10)
        self.plot.addItem(self.image)
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
        return self.processor.end

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
        lo = self.processor.start / self.sfreq + self.page_s
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
        c0, c1 = i0 // k, -(-i1 // k)  # the bins the page touches, one image column each
        px_per_mm = vb_h / height_mm
        gain = (-1.0 if self.negative_up else 1.0) / self.sensitivity  # mm per uV, y up
        self.raster.update(self.processor, self._decimator, rows, c0, c1, k, -offsets * px_per_mm, -gain * px_per_mm,
                           vb_h, -(-(i1 - i0) // k) + 2)  # fmt: skip
        self.image.show_columns(c0, c1, k / self.sfreq, height_mm)
        key = (tuple(rows), vb_h, round(spacing, 6))
        if key != self._last_key:
            names = self.processor.names
            self.plot.getPlotItem().getAxis("left").setTicks([[(float(o), names[r]) for o, r in zip(offsets, rows)], []])
            self._last_key = key
        self.vb.setRange(xRange=(t0, t1), yRange=(-height_mm, 0), padding=0)
        self.vb.updateMatrix()  # now: left to the paint, the new transform would schedule a second paint of every frame
        self._draw_grid(t0, t1, height_mm)
        self._draw_scalebar(t1, height_mm, spacing)
        self._draw_marks(t0, t1)
        self._sync_hscroll(t1)
        self.frames += 1
        return True

    def _draw_grid(self, t0: float, t1: float, height_mm: float) -> None:
        key = (math.ceil(t0), math.floor(t1), height_mm)
        if key != self._grid_key:
            seconds = np.arange(key[0], key[1] + 1, dtype=np.float64)
            self.grid.setData(np.repeat(seconds, 2), np.tile([-height_mm, 0.0], len(seconds)))
            self._grid_key = key

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
        lo = int(round((self.processor.start / self.sfreq + self.page_s) * 10))
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
        """The page as drawn (for tests): each image column's start time (s), and the ink.

        The ink is ``(height, n_columns)`` bool, row 0 at the top of the traces and the
        last row at their bottom (``-height_mm`` in view coordinates).
        """
        c0, c1 = self.image.columns
        return np.arange(c0, c1) * self.image.seconds_per_column, self.raster.page(c0, c1)
