"""The cue screens of ``bci calibrate`` and the feedback paradigm, in Qt.

- :func:`paint_cue` - fixation cross, cue arrow (direction from :data:`bci.paradigm.CUES`)
  or a short text, centred in a rectangle;
- :class:`CueWindow` - the calibration window: black screen with the current cue;
- :class:`CueRunner` - plays a :class:`bci.paradigm.Schedule` on a view on Qt timers and
  publishes each step's marker;
- :class:`SigintQuits` - Ctrl-C in the terminal ends a Qt event loop.
"""

from __future__ import annotations

import signal
import threading
import time

from PySide6 import QtCore, QtGui, QtWidgets

from bci.paradigm import CUES, Schedule, Step
from realtime.markers import MarkerOutlet


def paint_cue(painter, rect, state: str, cls: str | None, *, text: str = "", color=None) -> None:
    """Fixation cross, cue arrow (direction from :data:`CUES`) or a text, centred in ``rect``."""
    fg = color or QtGui.QColor("white")
    cx, cy = rect.center().x(), rect.center().y()
    size = 0.18 * min(rect.width(), rect.height())
    if state in ("fixation", "cue"):
        pen = QtGui.QPen(fg)
        pen.setWidthF(max(2.0, size * 0.06))
        painter.setPen(pen)
        painter.drawLine(QtCore.QPointF(cx - size, cy), QtCore.QPointF(cx + size, cy))
        painter.drawLine(QtCore.QPointF(cx, cy - size), QtCore.QPointF(cx, cy + size))
    if state == "cue" and cls in CUES:
        painter.setPen(QtCore.Qt.NoPen)
        painter.setBrush(QtGui.QColor("#e03030"))
        painter.drawPolygon(arrow_polygon(CUES[cls], cx, cy, size))
    if text:
        painter.setPen(fg)
        font = painter.font()
        font.setPointSizeF(max(10.0, size * 0.25))
        painter.setFont(font)
        painter.drawText(rect, QtCore.Qt.AlignCenter, text)


def arrow_polygon(direction: str, cx: float, cy: float, size: float):
    """A filled arrow pointing ``left/right/up/down`` from the centre."""
    # pointing right, then rotated
    pts = [(0.1, -0.12), (0.7, -0.12), (0.7, -0.3), (1.1, 0.0), (0.7, 0.3), (0.7, 0.12), (0.1, 0.12)]
    rot = {"right": (1, 0, 0, 1), "left": (-1, 0, 0, -1), "down": (0, -1, 1, 0), "up": (0, 1, -1, 0)}[direction]
    a, b, c, d = rot
    return QtGui.QPolygonF([QtCore.QPointF(cx + size * (a * x + b * y), cy + size * (c * x + d * y)) for x, y in pts])


STATE_TEXT = {"ready": "Get ready", "done": "Calibration finished - thank you", "rest": ""}


class CueWindow(QtWidgets.QWidget):
    """Black screen with the fixation cross, the cue arrow, or a short text."""

    aborted = QtCore.Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("bci calibrate")
        self.setAutoFillBackground(True)
        pal = self.palette()
        pal.setColor(QtGui.QPalette.Window, QtGui.QColor("black"))
        self.setPalette(pal)
        self.state, self.cls, self.progress = "ready", None, ""
        self.resize(900, 700)

    def show_step(self, step: Step, progress: str = "") -> None:
        self.state, self.cls, self.progress = step.state, step.cls, progress
        self.repaint()  # synchronous: the frame is drawn before the marker is stamped

    def paintEvent(self, event):
        painter = QtGui.QPainter(self)
        painter.setRenderHint(QtGui.QPainter.Antialiasing)
        paint_cue(painter, self.rect(), self.state, self.cls, text=STATE_TEXT.get(self.state, ""))
        if self.progress:
            painter.setPen(QtGui.QColor("#808080"))
            painter.drawText(self.rect().adjusted(10, 10, -10, -10), QtCore.Qt.AlignRight | QtCore.Qt.AlignBottom, self.progress)
        painter.end()

    def keyPressEvent(self, event):
        if event.key() == QtCore.Qt.Key_Escape:
            self.aborted.emit()
        else:
            super().keyPressEvent(event)

    def closeEvent(self, event):
        self.aborted.emit()
        super().closeEvent(event)


class SigintQuits:
    """Ctrl-C ends a Qt event loop (``with SigintQuits(on_interrupt): loop.exec()``).

    Python runs its signal handlers only between Qt events, so a timer wakes the
    interpreter every 200 ms; the handler calls ``on_interrupt`` (which quits the loop).
    Outside the main thread it does nothing.
    """

    def __init__(self, on_interrupt):
        self.on_interrupt = on_interrupt
        self.interrupted = False
        self._previous = None
        self._waker = None

    def _handler(self, *_):
        self.interrupted = True
        self.on_interrupt()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
            self._waker = QtCore.QTimer()
            self._waker.timeout.connect(lambda: None)
            self._waker.start(200)
        return self

    def __exit__(self, *exc):
        if self._waker is not None:
            self._waker.stop()
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


class CueRunner:
    """Plays a :class:`Schedule` on a view (``view.show_step(step, progress)``) on Qt timers.

    Steps are timed against a monotonic clock from the start (no drift), and each
    step's marker is pushed on ``outlet`` (a :class:`realtime.markers.MarkerOutlet`,
    which stamps it) right after its frame was painted. ``on_done`` is called once,
    after the last step or :meth:`abort`.
    """

    def __init__(self, schedule: Schedule, view, outlet: MarkerOutlet | None, *, on_done=None):
        self.schedule, self.view, self.outlet = schedule, view, outlet
        self.on_done = on_done
        self.index = 0
        self.finished = False
        self.aborted = False
        self.shown: list[tuple[float, Step]] = []  # (time.monotonic(), step)
        self._timer = QtCore.QTimer()
        self._timer.setSingleShot(True)
        self._timer.setTimerType(QtCore.Qt.PreciseTimer)
        self._timer.timeout.connect(self._next)

    def start(self) -> None:
        self.t0 = time.monotonic()
        self._next()

    def _next(self) -> None:
        steps = self.schedule.steps
        if self.finished:
            return
        step = steps[self.index]
        n = len(self.schedule.order)
        progress = f"trial {step.trial + 1} / {n}" if step.trial >= 0 else ""
        self.view.show_step(step, progress)
        now = time.monotonic()
        if step.marker and self.outlet is not None:
            self.outlet.push(step.marker)
        self.shown.append((now, step))
        self.index += 1
        if self.index >= len(steps):
            self._finish()
            return
        wait = self.t0 + steps[self.index].t - time.monotonic()
        self._timer.start(max(0, int(round(wait * 1000))))

    def abort(self) -> None:
        if not self.finished:
            self.aborted = True
            self._finish()

    def _finish(self) -> None:
        self._timer.stop()
        self.finished = True
        if self.on_done is not None:
            self.on_done()

    @property
    def trials_done(self) -> int:
        return sum(1 for _, s in self.shown if s.state == "cue")
