"""Online feedback (``bci stream --feedback``): a cursor or bars driven by the decoded probabilities.

What a BCI2000 / OpenViBE user knows as the feedback of a motor-imagery session:

- **two classes**: a horizontal track with a cursor at ``p(right) - p(left)`` (the class
  whose cue points left on the left; classes without a left/right cue in model order),
  the bar from the centre to the cursor in the colour of the winning class;
- **more classes**: one vertical bar per class;
- **a feedback paradigm** (optional): the same cue sequence as ``bci calibrate`` (a
  calibration config: fixation, arrow, rest; seeded, balanced) runs in the window above
  the cursor and publishes its markers on LSL, so that a parallel ``bci record`` keeps
  the online session with its cues (and can be trained on, like a calibration).

The view does no signal processing: probabilities come either from the decoder's
callback (:class:`realtime.probabilities.DecisionQueue`, in process) or from the
``bci-out`` LSL outlet (:class:`realtime.probabilities.ProbabilityInlet`, e.g. a decoder
in another process). A frame timer reads the newest vector; nothing is read on the
decoder's thread. Which class sits on which side is :func:`bci.paradigm.layout`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from bci.errors import StreamError
from bci.paradigm import CalibrationConfig, build_schedule, cursor_position, layout, load_calibration
from realtime.markers import MarkerOutlet
from realtime.probabilities import DecisionQueue, ProbabilityInlet

from .app import ensure_qapp
from .cues import CueRunner, SigintQuits, paint_cue

COLORS = ("#2f7fe0", "#e0602f", "#3fb950", "#c070e0", "#e0c030", "#50c0c0")


# ------------------------------------------------------------------- view
class FeedbackView(QtWidgets.QWidget):
    """Cursor (2 classes) or bars, the cue of a running paradigm, and a status line."""

    aborted = QtCore.Signal()

    def __init__(self, classes, parent=None, *, ease: float = 0.35):
        super().__init__(parent)
        self.classes = [str(c) for c in classes]
        self.pair = layout(self.classes)
        self.target = np.full(len(self.classes), 1.0 / len(self.classes))
        self.shown = self.target.copy()  # eased towards target every frame
        self.ease = float(ease)
        self.state, self.cue_state, self.cue_cls, self.progress = "waiting for decisions", "ready", None, ""
        self.paradigm = False
        self.setWindowTitle("bci feedback")
        self.setAutoFillBackground(True)
        pal = self.palette()
        pal.setColor(QtGui.QPalette.Window, QtGui.QColor("black"))
        self.setPalette(pal)
        self.resize(900, 700)

    # inputs
    def set_probabilities(self, p, state: str = "") -> None:
        p = np.asarray(p, dtype=float)
        if p.shape != self.target.shape:
            raise StreamError(f"feedback for {len(self.classes)} classes got {p.shape[0]} probabilities")
        self.target = p
        self.state = state

    def show_step(self, step, progress: str = "") -> None:
        """A paradigm screen (called by :class:`gui.cues.CueRunner`)."""
        self.paradigm = True
        self.cue_state, self.cue_cls, self.progress = step.state, step.cls, progress
        self.repaint()

    def tick(self) -> None:
        self.shown = self.shown + self.ease * (self.target - self.shown)
        self.update()

    @property
    def cursor(self) -> float:
        return cursor_position(self.shown, *self.pair) if self.pair else float("nan")

    # drawing
    def paintEvent(self, event):
        painter = QtGui.QPainter(self)
        painter.setRenderHint(QtGui.QPainter.Antialiasing)
        r = self.rect()
        top = QtCore.QRect(r.left(), r.top(), r.width(), int(r.height() * 0.55))
        bottom = QtCore.QRect(r.left(), top.bottom(), r.width(), r.height() - top.height())
        if self.paradigm:
            text = {"ready": "Get ready", "done": "Session finished"}.get(self.cue_state, "")
            paint_cue(painter, top, self.cue_state, self.cue_cls, text=text)
        if self.pair:
            self._paint_cursor(painter, bottom)
        else:
            self._paint_bars(painter, bottom)
        painter.setPen(QtGui.QColor("#909090"))
        status = "   ".join(t for t in (self.state, self.progress) if t)
        painter.drawText(r.adjusted(10, 10, -10, -10), QtCore.Qt.AlignLeft | QtCore.Qt.AlignBottom, status)
        painter.end()

    def _paint_cursor(self, painter, rect) -> None:
        left, right = self.pair
        margin = 0.1 * rect.width()
        x0, x1 = rect.left() + margin, rect.right() - margin
        cx, cy = (x0 + x1) / 2, rect.center().y()
        half = (x1 - x0) / 2
        painter.setPen(QtGui.QPen(QtGui.QColor("#606060"), 3))
        painter.drawLine(QtCore.QPointF(x0, cy), QtCore.QPointF(x1, cy))
        painter.drawLine(QtCore.QPointF(cx, cy - 20), QtCore.QPointF(cx, cy + 20))
        pos = self.cursor
        winner = right if pos >= 0 else left
        color = QtGui.QColor(COLORS[winner % len(COLORS)])
        x = cx + pos * half
        painter.setPen(QtCore.Qt.NoPen)
        painter.setBrush(color)
        painter.drawRect(QtCore.QRectF(min(cx, x), cy - 10, abs(x - cx), 20))
        painter.drawEllipse(QtCore.QPointF(x, cy), 22, 22)
        painter.setPen(QtGui.QColor("white"))
        for col, xx, align in ((left, x0, QtCore.Qt.AlignLeft), (right, x1 - 200, QtCore.Qt.AlignRight)):
            label = f"{self.classes[col]}  {self.shown[col]:.2f}"
            painter.drawText(QtCore.QRectF(xx, cy + 30, 200, 30), align, label)

    def _paint_bars(self, painter, rect) -> None:
        n = len(self.classes)
        w = rect.width() / (n + 1)
        base = rect.bottom() - 40
        height = rect.height() - 80
        for i, (cls, p) in enumerate(zip(self.classes, self.shown)):
            x = rect.left() + (i + 0.5) * w + w * 0.1
            painter.setPen(QtCore.Qt.NoPen)
            painter.setBrush(QtGui.QColor(COLORS[i % len(COLORS)]))
            h = float(np.clip(p, 0, 1)) * height
            painter.drawRect(QtCore.QRectF(x, base - h, w * 0.8, h))
            painter.setPen(QtGui.QColor("white"))
            painter.drawText(QtCore.QRectF(x - 20, base + 5, w * 0.8 + 40, 30), QtCore.Qt.AlignCenter, f"{cls} {p:.2f}")

    def keyPressEvent(self, event):
        if event.key() == QtCore.Qt.Key_Escape:
            self.close()
        else:
            super().keyPressEvent(event)

    def closeEvent(self, event):
        self.aborted.emit()
        super().closeEvent(event)



# ---------------------------------------------------------------- session
@dataclass
class FeedbackResult:
    decisions_seen: int
    frames: int
    trials_shown: int
    aborted: bool
    last: np.ndarray | None
    cursor: float


def run_feedback(source, classes=None, *, paradigm=None, seconds: float | None = None, refresh_hz: float = 30.0,
                 show: bool = True, screenshot: str | Path | None = None, status=None) -> FeedbackResult:
    """Open the feedback view and run it until closed, Ctrl-C, the paradigm's end or ``seconds``.

    ``source``: a :class:`~realtime.probabilities.DecisionQueue` (fed by a decoder's
    callback), a :class:`~realtime.probabilities.ProbabilityInlet`, or the name of a
    ``bci-out`` stream. ``paradigm``: a calibration config (path or
    :class:`~bci.paradigm.CalibrationConfig`) whose cue
    sequence runs above the cursor, its markers on LSL. ``status``: an optional callable
    returning a short text (e.g. the decoder's state) shown at the bottom.
    ``screenshot``: saved at the end.
    """
    created = isinstance(source, str)
    if created:
        source = ProbabilityInlet(source)
    classes = list(classes or source.classes)
    app = ensure_qapp()
    view = FeedbackView(classes)
    loop = QtCore.QEventLoop()
    runner = outlet = None
    if paradigm is not None:
        cal = paradigm if isinstance(paradigm, CalibrationConfig) else load_calibration(paradigm)
        missing = [c for c in cal.classes if c not in classes]
        if missing:
            raise StreamError(f"the paradigm cues {missing}, which the model does not decode (classes {classes})")
        outlet = MarkerOutlet(cal.marker_stream)
        runner = CueRunner(build_schedule(cal), view, outlet, on_done=loop.quit)
    frames = [0]

    def frame() -> None:
        got = source.latest()
        if got is not None:
            text = status() if status is not None else getattr(source, "state", "")
            view.set_probabilities(got[0], text)
        elif status is not None:
            view.state = status()
        view.tick()
        frames[0] += 1

    timer = QtCore.QTimer()
    timer.timeout.connect(frame)
    timer.start(max(1, int(1000 / refresh_hz)))
    view.aborted.connect(loop.quit)
    stopper = None
    if seconds is not None:
        stopper = QtCore.QTimer()
        stopper.setSingleShot(True)
        stopper.timeout.connect(loop.quit)
        stopper.start(int(seconds * 1000))
    own_source = isinstance(source, ProbabilityInlet) and created
    guard = SigintQuits(loop.quit)  # Ctrl-C in the terminal closes the view
    try:
        if show:
            view.show()
        if runner is not None:
            QtCore.QTimer.singleShot(0, runner.start)
        with guard:
            loop.exec()
    finally:
        for t in (timer, stopper):
            if t is not None:
                t.stop()
        if runner is not None and not runner.finished:
            runner.abort()
        if outlet is not None:
            outlet.close()
    if screenshot is not None:
        view.grab().save(str(screenshot))
    latest = source.latest()
    result = FeedbackResult(
        decisions_seen=latest[2] if latest else 0, frames=frames[0], trials_shown=runner.trials_done if runner else 0,
        aborted=bool(runner.aborted) if runner else guard.interrupted, last=latest[0] if latest else None, cursor=view.cursor,
    )  # fmt: skip
    view.aborted.disconnect(loop.quit)
    view.close()
    app.processEvents()
    if own_source:
        source.close()
    return result


def stream_feedback(decoder, *, paradigm=None, seconds: float | None = None) -> FeedbackResult:
    """``bci stream --feedback``: the view on a started :class:`realtime.decoder.Decoder`.

    Registers a :class:`DecisionQueue` on the decoder and runs :func:`run_feedback` in
    the calling (main) thread until the window closes or Ctrl-C; the caller stops the
    decoder afterwards.
    """
    queue = DecisionQueue(decoder.model.classes)
    decoder.callbacks.append(queue)

    def status() -> str:
        s = decoder.state if not getattr(decoder, "reason", "") else f"{decoder.state} ({decoder.reason})"
        return f"{s}; {queue.count} decisions"

    try:
        return run_feedback(queue, decoder.model.classes, paradigm=paradigm, seconds=seconds, status=status)
    finally:
        if queue in decoder.callbacks:
            decoder.callbacks.remove(queue)

