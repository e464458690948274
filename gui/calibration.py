"""Cue-based calibration (``bci calibrate CONFIG --source NAME --out FILE.fif``).

A Graz-style motor-imagery session, as in BCI2000's StimulusPresentation or OpenViBE's
motor-imagery scenario. Every trial::

    fixation cross (fixation s) -> cross + arrow of the class (cue s: imagine the movement) -> blank (rest s)

with the rest drawn uniformly in ``[rest_min, rest_max]`` so that trials do not become
predictable. The class order is randomized with the config's seed and balanced (every
class exactly ``trials_per_class`` times, at most ``max_repeats`` in a row).

Markers go out on an LSL string stream (``calibration.marker_stream``, type ``Markers``):
the class name at the cue onset and ``rest`` at its end, each stamped with
:func:`pylsl.local_clock` right after the frame was painted. The session is recorded
with :class:`realtime.recorder.Recorder` (signal stream + this marker stream into one
FIF file), so the file's annotations are the class names at the cue onsets: ``bci
train`` reads it directly (``train.recordings``, ``train.events: [left_hand,
right_hand]``, ``tmin``/``tmax`` within the cue; see ``configs/train_calibration.yaml``).

Config (``configs/calibration_lr.yaml``)::

    seed: 42
    calibration:
      classes: [left_hand, right_hand]   # any of left_hand, right_hand, feet, tongue
      trials_per_class: 20
      fixation: 2.0                      # seconds
      cue: 4.0
      rest: [1.5, 2.5]                   # a number or [min, max]
      start_delay: 3.0                   # "get ready" before the first trial
      max_repeats: 3                     # the same class at most this many times in a row
      marker_stream: bci-calibration
      fullscreen: false
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bci.errors import ConfigError, StreamError

log = logging.getLogger(__name__)

#: Class -> the direction of its cue arrow (BCI Competition IV 2a's four classes).
CUES = {"left_hand": "left", "right_hand": "right", "feet": "down", "tongue": "up"}
CALIBRATION_KEYS = {
    "classes", "trials_per_class", "fixation", "cue", "rest", "start_delay", "max_repeats", "marker_stream",
    "fullscreen",
}  # fmt: skip
#: Shortest duration a screen can show (one frame at 60 Hz).
MIN_DURATION_S = 1.0 / 60.0
#: Longest session accepted in one file (longer ones: several files, i.e. sessions).
MAX_SESSION_S = 3 * 3600.0
REST_MARKER = "rest"


@dataclass
class CalibrationConfig:
    """The validated ``calibration`` section (see the module docstring)."""

    classes: list
    trials_per_class: int = 20
    fixation: float = 2.0
    cue: float = 4.0
    rest: tuple = (1.5, 2.5)
    start_delay: float = 3.0
    max_repeats: int = 3
    marker_stream: str = "bci-calibration"
    fullscreen: bool = False
    seed: int = 42
    source: str = ""  # the config file

    @classmethod
    def from_config(cls, cfg) -> CalibrationConfig:
        """Validate ``cfg['calibration']`` (a :class:`bci.config.Config`); errors name file and key."""
        section = cfg.get("calibration")
        if not isinstance(section, dict):
            raise cfg.error("calibration", "missing; expected a mapping with at least 'classes'")
        unknown = set(section) - CALIBRATION_KEYS
        if unknown:
            raise cfg.error(f"calibration.{sorted(unknown)[0]}", f"unknown key; allowed: {', '.join(sorted(CALIBRATION_KEYS))}")
        classes = section.get("classes")
        if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
            raise cfg.error("calibration.classes", f"expected a list of class names, found {classes!r}")
        bad = [c for c in classes if c not in CUES]
        if bad:
            raise cfg.error("calibration.classes", f"unknown class {bad[0]!r}: a cue exists for {', '.join(CUES)}")
        if len(set(classes)) != len(classes):
            raise cfg.error("calibration.classes", f"classes listed twice: {classes}")
        if len(classes) < 2:
            raise cfg.error("calibration.classes", f"expected at least 2 classes to tell apart, found {classes}")
        n = section.get("trials_per_class", cls.trials_per_class)
        if not _is_int(n) or n < 1:
            raise cfg.error("calibration.trials_per_class", f"expected a positive whole number, found {n!r}")
        values = {}
        for key, minimum in (("fixation", 0.0), ("cue", MIN_DURATION_S), ("start_delay", 0.0)):
            v = section.get(key, getattr(cls, key))
            if not _is_number(v) or v < minimum:
                need = "0 or more" if minimum == 0 else f"at least one screen frame ({minimum * 1e3:.1f} ms)"
                raise cfg.error(f"calibration.{key}", f"expected a duration in seconds, {need}, found {v!r}")
            if 0 < v < MIN_DURATION_S:
                raise cfg.error(f"calibration.{key}", f"{v} s is shorter than one screen frame ({MIN_DURATION_S * 1e3:.1f} ms)")
            values[key] = float(v)
        rest = section.get("rest", list(cls.rest))
        if _is_number(rest):
            rest = [rest, rest]
        if not (isinstance(rest, list) and len(rest) == 2 and all(_is_number(r) for r in rest)):
            raise cfg.error("calibration.rest", f"expected seconds or [min, max] seconds, found {rest!r}")
        if rest[0] < 0 or rest[1] < rest[0]:
            raise cfg.error("calibration.rest", f"expected 0 <= min <= max, found {rest!r}")
        if 0 < rest[0] < MIN_DURATION_S:
            raise cfg.error("calibration.rest", f"{rest[0]} s is shorter than one screen frame ({MIN_DURATION_S * 1e3:.1f} ms)")
        repeats = section.get("max_repeats", cls.max_repeats)
        if not _is_int(repeats) or repeats < 1:
            raise cfg.error("calibration.max_repeats", f"expected a positive whole number, found {repeats!r}")
        name = section.get("marker_stream", cls.marker_stream)
        if not isinstance(name, str) or not name.strip() or "'" in name:
            raise cfg.error("calibration.marker_stream", f"expected an LSL stream name (no quotes), found {name!r}")
        full = section.get("fullscreen", False)
        if not isinstance(full, bool):
            raise cfg.error("calibration.fullscreen", f"expected true or false, found {full!r}")
        out = cls(classes=list(classes), trials_per_class=int(n), rest=(float(rest[0]), float(rest[1])),
                  max_repeats=int(repeats), marker_stream=name.strip(), fullscreen=full, seed=int(cfg.get("seed", 42)),
                  source=str(getattr(cfg, "path", "")), **values)  # fmt: skip
        longest = out.duration_range()[1]
        if longest > MAX_SESSION_S:
            raise cfg.error(
                "calibration",
                f"the session would last up to {longest / 3600:.1f} h; keep one file under {MAX_SESSION_S / 3600:g} h "
                "(record several sessions: several files train together)",
            )
        return out

    @property
    def n_trials(self) -> int:
        return self.trials_per_class * len(self.classes)

    def duration_range(self) -> tuple[float, float]:
        """Shortest and longest session length in seconds."""
        trial = self.fixation + self.cue
        return (self.start_delay + self.n_trials * (trial + self.rest[0]), self.start_delay + self.n_trials * (trial + self.rest[1]))


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def load_calibration(path) -> CalibrationConfig:
    from bci.config import load_config

    return CalibrationConfig.from_config(load_config(path))


def trial_order(classes: list, per_class: int, seed: int, max_repeats: int = 3, *, attempts: int = 1000) -> list:
    """A random order of ``per_class`` trials of every class, at most ``max_repeats`` alike in a row.

    Drawn position by position with probabilities proportional to the trials each class
    has left (so every balanced order is reachable); a dead end restarts the draw.
    """
    rng = np.random.default_rng(seed)
    k = len(classes)
    for _ in range(attempts):
        left = np.full(k, per_class)
        order: list[int] = []
        while left.sum():
            allowed = left.copy()
            if len(order) >= max_repeats and len(set(order[-max_repeats:])) == 1:
                allowed[order[-1]] = 0
            if not allowed.sum():
                break
            order.append(int(rng.choice(k, p=allowed / allowed.sum())))
            left[order[-1]] -= 1
        else:
            return [classes[i] for i in order]
    raise ConfigError(f"cannot order {per_class} trials of {k} classes with at most {max_repeats} alike in a row")


@dataclass
class Step:
    """One screen of the session: from ``t`` (s after the start) show ``state``."""

    t: float
    state: str  # ready | fixation | cue | rest | done
    cls: str | None = None
    marker: str | None = None
    trial: int = -1


@dataclass
class Schedule:
    steps: list = field(default_factory=list)
    order: list = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.steps[-1].t if self.steps else 0.0


def build_schedule(cal: CalibrationConfig) -> Schedule:
    """Every screen of the session with its start time (rests drawn with the seed)."""
    order = trial_order(cal.classes, cal.trials_per_class, cal.seed, cal.max_repeats)
    rng = np.random.default_rng([cal.seed, 1])
    steps = [Step(0.0, "ready")]
    t = cal.start_delay
    for i, cls in enumerate(order):
        if cal.fixation > 0:
            steps.append(Step(t, "fixation", cls, None, i))
            t += cal.fixation
        steps.append(Step(t, "cue", cls, cls, i))
        t += cal.cue
        steps.append(Step(t, "rest", None, REST_MARKER, i))
        t += float(rng.uniform(*cal.rest)) if cal.rest[1] > cal.rest[0] else cal.rest[0]
    steps.append(Step(t, "done"))
    return Schedule(steps, order)


# --------------------------------------------------------------------- Qt side
def _qt():
    from PySide6 import QtCore, QtGui, QtWidgets

    return QtCore, QtGui, QtWidgets


def paint_cue(painter, rect, state: str, cls: str | None, *, text: str = "", color=None) -> None:
    """Fixation cross, cue arrow (direction from :data:`CUES`) or a text, centred in ``rect``."""
    QtCore, QtGui, _ = _qt()
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
    QtCore, QtGui, _ = _qt()
    # pointing right, then rotated
    pts = [(0.1, -0.12), (0.7, -0.12), (0.7, -0.3), (1.1, 0.0), (0.7, 0.3), (0.7, 0.12), (0.1, 0.12)]
    rot = {"right": (1, 0, 0, 1), "left": (-1, 0, 0, -1), "down": (0, -1, 1, 0), "up": (0, 1, -1, 0)}[direction]
    a, b, c, d = rot
    return QtGui.QPolygonF([QtCore.QPointF(cx + size * (a * x + b * y), cy + size * (c * x + d * y)) for x, y in pts])


STATE_TEXT = {"ready": "Get ready", "done": "Calibration finished - thank you", "rest": ""}


def make_cue_window():
    """The calibration window class (built lazily so that importing needs no Qt)."""
    QtCore, QtGui, QtWidgets = _qt()

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

    return CueWindow


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
        import signal
        import threading

        QtCore, _, _ = _qt()
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
            self._waker = QtCore.QTimer()
            self._waker.timeout.connect(lambda: None)
            self._waker.start(200)
        return self

    def __exit__(self, *exc):
        import signal

        if self._waker is not None:
            self._waker.stop()
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


class MarkerOutlet:
    """The session's LSL marker stream (strings, irregular rate)."""

    def __init__(self, name: str, source_id: str | None = None):
        import pylsl

        self.name = name
        self.source_id = source_id or f"{name}-{uuid.uuid4().hex[:8]}"
        info = pylsl.StreamInfo(name, "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, self.source_id)
        info.desc().append_child_value("paradigm", "bci calibrate")
        self.outlet = pylsl.StreamOutlet(info)
        self.sent: list[tuple[float, str]] = []

    def push(self, text: str) -> float:
        import pylsl

        stamp = pylsl.local_clock()
        self.outlet.push_sample([text], stamp)
        self.sent.append((stamp, text))
        return stamp

    def close(self) -> None:
        self.outlet = None


class CueRunner:
    """Plays a :class:`Schedule` on a view (``view.show_step(step, progress)``) on Qt timers.

    Steps are timed against :func:`pylsl.local_clock` from the start (no drift), and
    each step's marker is pushed right after its frame was painted. ``on_done`` is
    called once, after the last step or :meth:`abort`.
    """

    def __init__(self, schedule: Schedule, view, outlet: MarkerOutlet | None, *, on_done=None):
        QtCore, _, _ = _qt()
        self.schedule, self.view, self.outlet = schedule, view, outlet
        self.on_done = on_done
        self.index = 0
        self.finished = False
        self.aborted = False
        self.shown: list[tuple[float, Step]] = []  # (local clock, step)
        self._timer = QtCore.QTimer()
        self._timer.setSingleShot(True)
        self._timer.setTimerType(QtCore.Qt.PreciseTimer)
        self._timer.timeout.connect(self._next)

    def start(self) -> None:
        import pylsl

        self.t0 = pylsl.local_clock()
        self._next()

    def _next(self) -> None:
        import pylsl

        steps = self.schedule.steps
        if self.finished:
            return
        step = steps[self.index]
        n = len(self.schedule.order)
        progress = f"trial {step.trial + 1} / {n}" if step.trial >= 0 else ""
        self.view.show_step(step, progress)
        now = pylsl.local_clock()
        if step.marker and self.outlet is not None:
            now = self.outlet.push(step.marker)
        self.shown.append((now, step))
        self.index += 1
        if self.index >= len(steps):
            self._finish()
            return
        wait = self.t0 + steps[self.index].t - pylsl.local_clock()
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


@dataclass
class CalibrationResult:
    path: str
    trials_shown: int
    trials_planned: int
    aborted: bool
    recording: object  # realtime.recorder.RecordingSummary
    order: list


def run_calibration(config, source: str, out, *, timeout: float = 10.0, flush_s: float = 2.0, show: bool = True,
                    max_wall_s: float | None = None, screenshot: str | Path | None = None) -> CalibrationResult:
    """Run the cue sequence of ``config`` while recording ``source`` (+ its markers) to ``out``.

    ``config`` is a path or a :class:`CalibrationConfig`. Everything that can be checked
    (config, output path, disk, the source stream) is checked before the first cue.
    ``max_wall_s`` bounds the session (tests); ``screenshot`` saves the window at the
    first cue.
    """
    from gui.app import ensure_qapp
    from realtime.recorder import Recorder, check_output

    cal = config if isinstance(config, CalibrationConfig) else load_calibration(config)
    check_output(out)
    schedule = build_schedule(cal)
    outlet = MarkerOutlet(cal.marker_stream)
    recorder = Recorder(source, out, markers=cal.marker_stream, markers_source_id=outlet.source_id,
                        flush_s=flush_s, timeout=timeout)
    try:
        recorder.start()
        deadline = time.monotonic() + timeout
        while recorder.n_samples == 0:  # the first cue must be on the recorded signal
            if recorder.error is not None or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        if recorder.n_samples == 0:
            recorder.stop()
            raise StreamError(f"stream {source!r} sends no samples (waited {timeout:g} s); calibration not started")
        app = ensure_qapp()
        QtCore, _, _ = _qt()
        window = make_cue_window()()
        loop = QtCore.QEventLoop()
        runner = CueRunner(schedule, window, outlet, on_done=loop.quit)
        window.aborted.connect(runner.abort)
        watchdog = None
        if max_wall_s is not None:
            watchdog = QtCore.QTimer()
            watchdog.setSingleShot(True)
            watchdog.timeout.connect(runner.abort)
            watchdog.start(int(max_wall_s * 1000))
        if screenshot is not None:
            shot = Path(screenshot)

            def grab(step, progress, _show=window.show_step):
                _show(step, progress)
                if step.state == "cue" and not shot.exists():
                    window.grab().save(str(shot))

            window.show_step = grab
        if show:
            window.showFullScreen() if cal.fullscreen else window.show()
        log.info("calibration: %d trials (%s), %.0f-%.0f s", cal.n_trials, ", ".join(cal.classes), *cal.duration_range())
        QtCore.QTimer.singleShot(0, runner.start)
        with SigintQuits(runner.abort):  # Ctrl-C in the terminal: stop early, keep the file
            if not runner.finished:
                loop.exec()
        if watchdog is not None:
            watchdog.stop()
        time.sleep(min(0.5, cal.rest[0]) if not runner.aborted else 0.0)  # the signal after the last marker
        window.aborted.disconnect(runner.abort)
        window.close()
        app.processEvents()
        summary = recorder.stop()
    except BaseException:
        if recorder._thread is not None and recorder._thread.is_alive():
            try:
                recorder.stop()
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
        raise
    finally:
        outlet.close()
    shown = runner.trials_done
    recorded = sum(summary.markers.get(c, 0) for c in cal.classes)
    if recorded < shown:
        log.warning("%d of %d cues shown are on the recording (stream lost or markers dropped)", recorded, shown)
    return CalibrationResult(str(out), shown, cal.n_trials, runner.aborted, summary, schedule.order)


def main(args) -> int:
    """``bci calibrate CONFIG --source NAME --out FILE.fif``."""
    from realtime import quiet_liblsl

    quiet_liblsl()
    cal = load_calibration(args.config)
    lo, hi = cal.duration_range()
    length = f"{lo:.0f}-{hi:.0f} s" if hi < 120 else f"{lo / 60:.1f}-{hi / 60:.1f} min"
    print(
        f"calibration: {cal.n_trials} trials ({', '.join(f'{c} x{cal.trials_per_class}' for c in cal.classes)}), "
        f"about {length}; recording {args.source!r} + markers {cal.marker_stream!r} to {args.out}; "
        "Esc stops early",
        flush=True,
    )
    result = run_calibration(cal, args.source, args.out, timeout=args.timeout)
    state = "stopped early" if result.aborted else "finished"
    print(f"{state} after {result.trials_shown} of {result.trials_planned} trials", flush=True)
    print(f"wrote {result.recording.describe()}", flush=True)
    print(f"train on it: list it in train.recordings with train.events {cal.classes} (see configs/train_calibration.yaml)", flush=True)
    return 0
