"""The calibration session of ``bci calibrate CONFIG --source NAME --out FILE.fif``, in Qt.

The cue sequence of a calibration config (:mod:`bci.paradigm`: fixation, arrow, rest;
seeded, balanced) runs in a :class:`gui.cues.CueWindow` while
:class:`realtime.recorder.Recorder` records the signal stream and the session's own
marker stream (:class:`realtime.markers.MarkerOutlet`) into one FIF file, whose
annotations are then the class names at the cue onsets.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from PySide6 import QtCore

from bci.errors import StreamError
from bci.paradigm import CalibrationConfig, CalibrationResult, build_schedule, load_calibration
from realtime.markers import MarkerOutlet
from realtime.recorder import Recorder
from realtime.recording import check_output

from .app import ensure_qapp
from .cues import CueRunner, CueWindow, SigintQuits

log = logging.getLogger(__name__)


def run_calibration(config, source: str, out, *, timeout: float = 10.0, flush_s: float = 2.0, show: bool = True,
                    max_wall_s: float | None = None, screenshot: str | Path | None = None) -> CalibrationResult:
    """Run the cue sequence of ``config`` while recording ``source`` (+ its markers) to ``out``.

    ``config`` is a path or a :class:`~bci.paradigm.CalibrationConfig`. Everything that can
    be checked (config, output path, disk, the source stream) is checked before the first
    cue. Esc, closing the window or Ctrl-C stop early; the file is still written.
    ``max_wall_s`` bounds the session (tests); ``screenshot`` saves the window at the
    first cue.
    """
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
        window = CueWindow()
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
    return CalibrationResult.of_session(cal, schedule, out, shown=runner.trials_done, aborted=runner.aborted,
                                        recording=summary)
