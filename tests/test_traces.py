"""The trace view's renderer (gui/traces.py): min/max columns rasterised with NumPy.

Covers: the pixel rows a known signal lights (slow and fast sines, a flat channel, a
step, no data, off-image), the span fill against a brute-force loop, the page image kept
as a ring of columns (a scrolling page rasterises only the new bins and equals a full
rasterisation; gain, review jumps and re-processed samples redraw it), and the image as
Qt paints it (orientation, placement in time, negative up) over a one-second grid.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest

from bci.channels import ChannelSet
from gui.display import Decimator, DisplayProcessor, DisplaySettings
from gui.traces import PageRaster, column_spans, rasterise

pytestmark = pytest.mark.timeout(120)

H = 120


def _ink(lo, hi, base, scale, height=H):
    return rasterise(*column_spans(lo, hi, np.asarray(base, float), scale, height), height)


def _runs(ink):
    """Per column: (first, last) inked row, or None; asserts each column is one contiguous run."""
    out = []
    for col in ink.T:
        r = np.flatnonzero(col)
        if r.size == 0:
            out.append(None)
            continue
        assert np.all(np.diff(r) == 1), f"column not contiguous: {r}"
        out.append((r[0], r[-1]))
    return out


def test_slow_sine_lights_exactly_its_row_in_each_column():
    t = np.arange(401)
    v = 20.0 * np.sin(2 * np.pi * t / 400)  # at most 0.32 px per column: no joining needed
    ink = _ink(v[None], v[None], [60.0], 1.0)  # column 0 is context only
    assert ink.shape == (H, 400)
    want = np.floor(60.0 + v[1:]).astype(int)
    for j, run in enumerate(_runs(ink)):
        assert run == (want[j], want[j]), j
    assert ink.sum() == 400


def test_fast_sine_fills_each_bin_from_its_min_to_its_max():
    fs, k = 1000, 40
    x = 30.0 * np.sin(2 * np.pi * 50 * np.arange(41 * k) / fs)  # 2 periods per bin
    bins = x.reshape(41, k)
    lo, hi = bins.min(1), bins.max(1)
    ink = _ink(lo[None], hi[None], [60.0], -1.0)  # negative scale: larger values higher up
    for j, run in enumerate(_runs(ink)):
        assert run == (int(np.floor(60 - hi[j + 1])), int(np.floor(60 - lo[j + 1])))
    assert abs(run[1] - run[0] - 60) <= 1  # peak to peak 60 px


def test_flat_channel_is_one_row_and_nothing_else_is_inked():
    lo = np.zeros((1, 301))
    ink = _ink(lo, lo, [37.6], 5.0)
    assert np.flatnonzero(ink.any(1)).tolist() == [37] and ink[37].all()


def test_a_step_stays_connected_and_two_channels_are_unioned():
    v = np.r_[np.zeros(6), np.full(6, 30.0)]  # jumps 30 rows down between columns 4 and 5
    lo = np.stack([v, np.full(12, 2.0)])
    ink = _ink(lo, lo, [10.0, 80.0], 1.0)
    runs = _runs(ink[:60])
    assert runs[:5] == [(10, 10)] * 5
    assert runs[5] == (11, 40)  # reaches the row below the previous column's: 8-connected like a 1-px line
    assert runs[6:] == [(40, 40)] * 5
    assert _runs(ink[60:]) == [(22, 22)] * 11  # the second channel, rows 82


def test_no_data_and_off_image_columns_are_blank_and_spans_are_clipped():
    v = np.array([[0.0, 0.0, np.nan, np.nan, 0.0, 500.0, 500.0, -500.0]])
    ink = _ink(v, v, [50.0], 1.0)
    runs = _runs(ink)
    assert runs[0] == (50, 50)
    assert runs[1] is None and runs[2] is None  # no samples: nothing, and nothing joined across the gap
    assert runs[3] == (50, 50)  # after a gap the trace restarts, unjoined
    assert runs[4] == (51, H - 1)  # leaves the image at the bottom: clipped
    assert runs[5] is None  # entirely below the image
    assert runs[6] == (0, H - 1)  # back across the whole image


def test_rasterise_matches_a_brute_force_fill():
    rng = np.random.default_rng(0)
    top = rng.integers(0, H, (7, 50))
    bottom = top + rng.integers(-3, 25, (7, 50))  # some empty (top > bottom)
    bottom = np.minimum(bottom, H - 1)
    want = np.zeros((H, 50), bool)
    for c in range(7):
        for j in range(50):
            want[top[c, j] : bottom[c, j] + 1, j] = True
    np.testing.assert_array_equal(rasterise(top, bottom, H), want)


def _processor(n_ch=3, sfreq=100.0, filters=False):
    settings = DisplaySettings("referential", 0.5 if filters else None, 30.0 if filters else None, None)
    return DisplayProcessor(sfreq, ChannelSet([f"c{i}" for i in range(n_ch)]), 3000, settings)


def _full(proc, rows, c0, c1, k, base, scale, cap):
    fresh = PageRaster()
    fresh.update(proc, Decimator(), rows, c0, c1, k, base, scale, H, cap)
    assert fresh.drawn == [(c0, c1)]
    return fresh.page(c0, c1)


@pytest.mark.parametrize("k", [1, 7])
def test_scrolling_page_rasterises_only_new_bins_and_equals_a_full_rasterisation(k):
    rng = np.random.default_rng(1)
    x = np.cumsum(rng.standard_normal((3, 2400)), axis=1) * 1e-6  # random walks, volts
    proc, dec, raster = _processor(filters=True), Decimator(), PageRaster()
    rows, page = [0, 2], 700
    base, scale = np.array([30.0, 90.0]), -2.0
    cap = -(-page // k) + 2
    end = 0
    for step in [300, 13, 1, 40, 7, 29, 64, 5, 333, 11]:
        proc.push(x[:, end : end + step])
        end += step
        i0, i1 = max(0, end - page), max(end, page)
        c0, c1 = i0 // k, -(-i1 // k)
        before = raster.valid
        raster.update(proc, dec, rows, c0, c1, k, base, scale, H, cap)
        if before[1] > before[0] and before[1] > c0:  # it held part of this page: only new bins are drawn
            assert raster.drawn == [(before[1], c1)]
            assert before[1] >= (end - step) // k
        np.testing.assert_array_equal(raster.page(c0, c1), _full(proc, rows, c0, c1, k, base, scale, cap))
        assert raster.valid == (c0, min(c1, end // k))

    # a jump past the held columns redraws the page whole: 1600 samples at once, then review
    proc.push(x[:, end:])
    end = x.shape[1]
    for i0 in (end - page, 100, 50):
        c0, c1 = i0 // k, -(-(i0 + page) // k)
        before = raster.valid
        raster.update(proc, dec, rows, c0, c1, k, base, scale, H, cap)
        if i0 == 50:  # one step back in review: only the bins before the held ones
            assert raster.drawn == [(c0, before[0])]
        else:
            assert raster.drawn == [(c0, c1)]
        np.testing.assert_array_equal(raster.page(c0, c1), _full(proc, rows, c0, c1, k, base, scale, cap))
    # a new gain or re-processed samples redraw the page
    raster.update(proc, dec, rows, 100 // k, 800 // k, k, base, 2 * scale, H, cap)
    assert raster.drawn == [(100 // k, 800 // k)]
    proc.update(x[:, :end], 0, highpass=1.0)
    raster.update(proc, dec, rows, 100 // k, 800 // k, k, base, 2 * scale, H, cap)
    assert raster.drawn == [(100 // k, 800 // k)]


def test_trace_view_paints_the_image_upright_where_the_samples_are(qapp_traces):
    from PySide6 import QtCore, QtGui

    from gui.traces import TraceView

    sfreq = 100.0
    view = TraceView(sfreq, ChannelSet(["a", "b"]), 30.0, {"montage": "referential", "highpass": None, "lowpass": None,
                                                           "notch": None, "sensitivity_uv_mm": 10, "pixels_per_mm": 4.0,
                                                           "page_s": 10})  # fmt: skip
    view.resize(900, 500)
    view.show()
    qapp_traces.processEvents()
    data = np.zeros((2, 500))
    data[0] = 50e-6  # +50 uV: 5 mm BELOW channel a's baseline (negative up)
    view.push(data)  # 0-5 s of a 0-10 s page
    assert view.refresh()
    x, ink = view.plotted()
    assert x[0] == 0.0 and 9.9 < x[-1] < 10.0 and ink.shape[1] <= view.vb.width()  # about one column per pixel
    assert ink[:, x < 5.0].any(0).all() and not ink[:, x > 5.0].any()
    gx, gy = view.grid.getData()  # a grid line every second, the whole height, under the traces
    assert gx.tolist() == [float(s) for s in range(11) for _ in (0, 1)] and view.grid.zValue() < view.image.zValue()
    qapp_traces.processEvents()
    img = view.plot.grab().toImage().convertToFormat(QtGui.QImage.Format_RGB32)
    offsets = [t[0] for t in view.plot.getPlotItem().getAxis("left")._tickLevels[0]]

    def darkest(t, y_mm):
        p = view.plot.mapFromScene(view.vb.mapViewToScene(QtCore.QPointF(t, y_mm)))
        return min(img.pixelColor(p.x() + dx, p.y() + dy).lightness() for dx in (-1, 0, 1) for dy in (-1, 0, 1))

    assert darkest(2.5, offsets[0] - 5.0) < 80  # channel a's trace, below its label
    assert darkest(2.5, offsets[0] + 5.0) > 200  # not mirrored above it
    assert darkest(2.5, offsets[1]) < 80  # channel b on its baseline
    assert darkest(7.5, offsets[0] - 5.0) > 200 and darkest(7.5, offsets[1]) > 200  # no data yet after 5 s
    view.close()


@pytest.fixture(scope="module")
def qapp_traces():
    from gui.app import ensure_qapp

    return ensure_qapp(offscreen=True)


def test_each_new_frame_is_painted_once(qapp_traces):
    from PySide6 import QtCore

    from gui.traces import TraceView

    class Paints(QtCore.QObject):
        n = 0

        def eventFilter(self, obj, event):
            Paints.n += event.type() == QtCore.QEvent.Paint
            return False

    view = TraceView(256.0, ChannelSet([f"c{i}" for i in range(8)]), 30.0, {"page_s": 10})
    view.resize(900, 500)
    view.show()
    paints = Paints()
    view.plot.viewport().installEventFilter(paints)
    rng = np.random.default_rng(2)
    view.push(rng.standard_normal((8, 3000)) * 20e-6)
    for _ in range(5):
        qapp_traces.processEvents()
    for _ in range(20):  # the page scrolls: a new transform every frame, applied before the paint
        view.push(rng.standard_normal((8, 8)) * 20e-6)
        assert view.refresh()
        Paints.n = 0
        for _ in range(3):
            qapp_traces.processEvents()
        assert Paints.n == 1
    view.close()
