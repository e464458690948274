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
``on_decision`` callback (:class:`DecisionQueue`, in process) or from the ``bci-out``
LSL outlet (:class:`ProbabilityInlet`, e.g. a decoder in another process: one channel
per class named by its label, plus ``source_time``). A frame timer reads the newest
vector; nothing is read on the decoder's thread.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bci.errors import StreamError
from realtime.inlet import ReconnectingInlet, resolve

from .calibration import (
    CUES,
    CalibrationConfig,
    CueRunner,
    MarkerOutlet,
    SigintQuits,
    build_schedule,
    load_calibration,
    paint_cue,
)

log = logging.getLogger(__name__)

COLORS = ("#2f7fe0", "#e0602f", "#3fb950", "#c070e0", "#e0c030", "#50c0c0")


# ---------------------------------------------------------------- sources
class DecisionQueue:
    """Decoder callback -> newest probabilities, handed over under a lock.

    Pass it as ``Decoder(..., on_decision=queue)``; :meth:`latest` returns
    ``(probabilities, label, count)`` or None before the first decision.
    """

    def __init__(self, classes):
        self.classes = [str(c) for c in classes]
        self._lock = threading.Lock()
        self._latest = None
        self.count = 0
        self.state = "waiting"

    def __call__(self, decision) -> None:
        p = np.asarray(decision.smoothed, dtype=float)
        with self._lock:
            self.count += 1
            self._latest = (p.copy(), str(decision.label), self.count)
            self.state = "running"

    def latest(self):
        with self._lock:
            return self._latest


class ProbabilityInlet(ReconnectingInlet):
    """The ``bci-out`` outlet of a decoder (another process) read without blocking.

    Channel labels give the classes (the ``source_time`` channel is left out). Opened
    with ``recover=False`` so that a closed outlet is reported at once instead of a pull
    waiting for it: :attr:`state` becomes ``lost`` and every later poll looks for the
    stream again without blocking (:class:`pylsl.ContinuousResolver`).
    """

    def __init__(self, name: str = "bci-out", *, timeout: float = 5.0):
        self.name = name
        self.timeout = float(timeout)
        self.count = 0
        self.state = "waiting"
        self._latest = None
        self._connect(resolve(name=name, timeout=timeout))

    def _connect(self, info) -> None:
        import pylsl

        inlet = pylsl.StreamInlet(info, max_buflen=10, recover=False)
        try:
            full = inlet.info(timeout=self.timeout)
            inlet.open_stream(timeout=self.timeout)
        except (pylsl.util.TimeoutError, pylsl.util.LostError):
            raise StreamError(f"probability stream {self.name!r} was found but did not answer within {self.timeout:g} s") from None
        labels = []
        ch = full.desc().child("channels").child("channel")
        while not ch.empty():
            labels.append(ch.child_value("label"))
            ch = ch.next_sibling("channel")
        if len(labels) != full.channel_count():
            raise StreamError(f"stream {self.name!r} does not name its {full.channel_count()} channels; expected one per class + source_time")
        columns = [i for i, lab in enumerate(labels) if lab != "source_time"]
        classes = [labels[i] for i in columns]
        if len(classes) < 2:
            raise StreamError(f"stream {self.name!r} carries {classes}: expected probabilities of at least 2 classes")
        if self.inlet is None and getattr(self, "classes", None) not in (None, classes):
            raise StreamError(f"stream {self.name!r} came back with classes {classes}, was {self.classes}")
        self.columns, self.classes, self.inlet, self.uid = columns, classes, inlet, full.uid()

    def latest(self):
        """``(probabilities, label, count)`` of the newest decision, or None before the first."""
        import pylsl

        if not self.reconnect():
            return self._latest
        try:
            samples, _ = self.inlet.pull_chunk(timeout=0.0)
        except pylsl.util.LostError:
            self.inlet, self.state = None, "lost"
            return self._latest
        if samples:
            self.count += len(samples)
            p = np.asarray(samples[-1], dtype=float)[self.columns]
            self._latest = (p, self.classes[int(np.argmax(p))], self.count)
            self.state = "running"
        return self._latest

    def _reconnected(self) -> None:
        self.state = "running"


# ------------------------------------------------------------------- view
def cursor_position(p: np.ndarray, left: int, right: int) -> float:
    """Cursor in [-1, 1]: ``p[right] - p[left]`` (0 when undecided)."""
    return float(np.clip(p[right] - p[left], -1.0, 1.0))


def layout(classes) -> tuple[int, int] | None:
    """Columns (left, right) of a two-class cursor, or None for bars."""
    if len(classes) != 2:
        return None
    dirs = [CUES.get(c) for c in classes]
    if dirs == ["right", "left"]:
        return 1, 0
    return 0, 1


def make_feedback_view():
    """The feedback widget class (built lazily so that importing needs no Qt)."""
    from PySide6 import QtCore, QtGui, QtWidgets

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
            """A paradigm screen (called by :class:`gui.calibration.CueRunner`)."""
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

    return FeedbackView


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

    ``source``: a :class:`DecisionQueue` (fed by a decoder's ``on_decision``), a
    :class:`ProbabilityInlet`, or the name of a ``bci-out`` stream. ``paradigm``: a
    calibration config (path or :class:`~gui.calibration.CalibrationConfig`) whose cue
    sequence runs above the cursor, its markers on LSL. ``status``: an optional callable
    returning a short text (e.g. the decoder's state) shown at the bottom.
    ``screenshot``: saved at the end.
    """
    from PySide6 import QtCore

    from .app import ensure_qapp

    created = isinstance(source, str)
    if created:
        source = ProbabilityInlet(source)
    classes = list(classes or source.classes)
    app = ensure_qapp()
    view = make_feedback_view()(classes)
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

