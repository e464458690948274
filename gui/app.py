"""``bci dashboard``: configuration, start-up, headless runs and screenshots.

::

    bci dashboard [--source NAME | --replay FILE | --review FILE] [--model MODEL_DIR]
                  [--screenshot PNG --seconds S] [--speed X] [--config YAML] [--events DB]

Start-up order: the event log opens first (``session_start``), then the stream (a live
LSL source, or an in-process replay of a file), then the detector; each step that fails
raises a one-line :class:`~bci.errors.BCIError`. ``--seconds S`` runs the window for S
seconds and closes it; with ``--screenshot PNG`` it runs offscreen
(``QT_QPA_PLATFORM=offscreen`` unless a platform was chosen) and saves the window.
Closing stops the frame timer, the detector thread and the acquisition thread (each
joined with a bound) and logs ``session_end``. ``--review FILE`` opens a whole recording
for review instead (no LSL, no detector; :mod:`gui.review`): marks go to the event log
and export as ``events.tsv``.
"""

from __future__ import annotations

import copy
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from bci.alarm import AlarmRule
from bci.config import Config, check_keys, load_config
from bci.errors import BCIError, ConfigError, ModelError

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "dashboard.yaml"
DEFAULTS = {
    "refresh_hz": 30, "buffer_s": 300.0, "page_s": 10, "sensitivity_uv_mm": 7, "negative_up": True,
    "pixels_per_mm": None, "montage": "double_banana", "highpass": 0.5, "lowpass": 70.0, "notch": 50.0,
    "channels_per_screen": 32, "lost_after_s": 2.0, "replay_speed": 1.0, "trend_span_s": 600,
    "contribution_top": 10,
    "alarm": None,  # None: the model's operating point (bci train), else bci.alarm.AlarmRule's defaults
    "dsa": {"group": "All", "fmax": 30.0, "step_s": 2.0},
    "event_log": "~/.local/share/bci-app/events.sqlite", "window_size": [1600, 950],
    "outlet_name": "bci-seizure", "marker_name": "bci-seizure-markers",
}  # fmt: skip
_NUMBER = (int, float)
_CHECKS = {
    "refresh_hz": (lambda v: isinstance(v, _NUMBER) and 1 <= v <= 240, "a frame rate in Hz (1-240)"),
    "buffer_s": (lambda v: isinstance(v, _NUMBER) and 10 <= v <= 86400, "seconds of review buffer (10-86400)"),
    "page_s": (lambda v: v in (10, 20, 30), "10, 20 or 30"),
    "sensitivity_uv_mm": (lambda v: isinstance(v, _NUMBER) and v > 0, "microvolts per mm (> 0)"),
    "negative_up": (lambda v: isinstance(v, bool), "true or false"),
    "pixels_per_mm": (lambda v: v is None or (isinstance(v, _NUMBER) and v > 0), "null or pixels per mm (> 0)"),
    "montage": (lambda v: v in ("referential", "average", "double_banana"), "referential, average or double_banana"),
    "highpass": (lambda v: v is None or (isinstance(v, _NUMBER) and v > 0), "null or a frequency in Hz"),
    "lowpass": (lambda v: v is None or (isinstance(v, _NUMBER) and v > 0), "null or a frequency in Hz"),
    "notch": (lambda v: v in (None, 50, 60), "null, 50 or 60"),
    "channels_per_screen": (lambda v: isinstance(v, int) and 1 <= v <= 512, "a channel count (1-512)"),
    "lost_after_s": (lambda v: isinstance(v, _NUMBER) and v > 0, "seconds (> 0)"),
    "replay_speed": (lambda v: isinstance(v, _NUMBER) and v > 0, "a speed factor (> 0)"),
    "trend_span_s": (lambda v: v in (600, 3600), "600 or 3600"),
    "contribution_top": (lambda v: isinstance(v, int) and v > 0, "a channel count (> 0)"),
    "event_log": (lambda v: isinstance(v, str) and v, "a file path"),
    "window_size": (lambda v: isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) and x > 100 for x in v), "[width, height] in pixels"),
    "outlet_name": (lambda v: isinstance(v, str) and v, "an LSL stream name"),
    "marker_name": (lambda v: isinstance(v, str) and v, "an LSL stream name"),
}  # fmt: skip
_SUB = {
    "dsa": {
        "group": (lambda v: isinstance(v, str), "a channel group name"),
        "fmax": (lambda v: isinstance(v, _NUMBER) and v > 1, "a frequency in Hz (> 1)"),
        "step_s": (lambda v: isinstance(v, _NUMBER) and v > 0, "seconds (> 0)"),
    },
}


def load_dashboard_config(path: str | Path | None = None) -> dict:
    """The ``dashboard`` section of a config file, checked and completed with defaults."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    if path == DEFAULT_CONFIG and not path.exists():
        return copy.deepcopy(DEFAULTS)
    cfg = load_config(path)
    section = cfg.get("dashboard") or {}
    if not isinstance(section, dict):
        raise cfg.error("dashboard", f"expected a mapping of dashboard settings, found {section!r}")
    return validate_dashboard(section, cfg)


def validate_dashboard(section: dict, cfg: Config | None = None) -> dict:
    """Check a ``dashboard`` mapping (errors name the key and what is allowed)."""

    def error(key, message):
        return cfg.error(key, message) if cfg is not None else ConfigError(f"{key}: {message}")

    where = f"{cfg.path}: dashboard" if cfg is not None else "dashboard"
    check_keys(section, [*_CHECKS, *_SUB, "alarm"], where)
    out = copy.deepcopy(DEFAULTS)
    for key, value in section.items():
        if key == "alarm":  # the one alarm rule's section (bci.alarm)
            if value is None:
                continue
            if not isinstance(value, dict):
                raise error("dashboard.alarm", f"expected a mapping or null, found {value!r}")
            try:
                out["alarm"] = AlarmRule.from_config(value, key="dashboard.alarm").to_config()
            except ConfigError as exc:
                raise (ConfigError(f"{cfg.path}: {exc}") if cfg is not None else exc) from None
            continue
        if key in _SUB:
            for sub, v in check_keys(value, _SUB[key], f"{where}.{key}").items():
                ok, what = _SUB[key][sub]
                if not ok(v):
                    raise error(f"dashboard.{key}.{sub}", f"expected {what}, found {v!r}")
                out[key][sub] = v
            continue
        ok, what = _CHECKS[key]
        if not ok(value):
            raise error(f"dashboard.{key}", f"expected {what}, found {value!r}")
        out[key] = value
    hp, lp = out["highpass"], out["lowpass"]
    if hp is not None and lp is not None and hp >= lp:
        raise error("dashboard.highpass", f"expected a high-pass below the low-pass ({lp} Hz), found {hp}")
    return out


def ensure_qapp(offscreen: bool = False):
    """The QApplication (created once; offscreen when asked and no platform was chosen)."""
    if offscreen:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtWidgets

    app = QtWidgets.QApplication.instance()
    if app is None:
        app = QtWidgets.QApplication(sys.argv[:1])
        app.setApplicationName("bci dashboard")
    return app


class Session:
    """Everything one dashboard run owns: event log, feed, detector, window."""

    def __init__(self, *, source: str | None = None, replay=None, model_dir=None, config: dict | None = None,
                 events: str | Path | None = None, speed: float | None = None, timeout: float = 10.0,
                 review: str | Path | None = None):
        from .alarms import AlarmMonitor
        from .eventlog import EventLog
        from .feed import LslFeed

        if review is not None and (source is not None or replay is not None or model_dir is not None):
            raise ConfigError("--review FILE opens a recording on its own: drop --source, --replay and --model")
        self.cfg = cfg = copy.deepcopy(config) if config is not None else load_dashboard_config()
        self.event_log = EventLog(events or cfg["event_log"])
        self.feed = self.decoder = self.window = None
        self._lock = threading.Lock()
        self._pending: list = []
        try:
            what = f"replay of {Path(str(replay)).name}" if replay is not None and not hasattr(replay, "data") else (
                "replay" if replay is not None else f"source {source or '(first EEG stream)'}")  # fmt: skip
            if review is not None:  # no file name: it may name the patient
                what = "review of a recording"
            self.event_log.log("session_start", f"dashboard started ({what})")
            # the model first (slow imports), so that the detector joins the stream right after the traces
            model = _load_model(model_dir) if model_dir is not None else None
            # the config's alarm rule when it sets one, else the model's operating point, else the defaults
            rule = model.alarm_rule(cfg["alarm"]) if model is not None else AlarmRule.from_config(cfg["alarm"])
            self.monitor = AlarmMonitor(rule, self.event_log)
            if review is not None:
                self.window = _review_window(review, self.event_log, self.monitor, cfg)
                self.feed = self.window.feed
                return
            self.feed = LslFeed(source, replay=replay, speed=speed or cfg["replay_speed"], buffer_s=cfg["buffer_s"],
                                lost_after_s=cfg["lost_after_s"], timeout=timeout, on_event=self._on_stream_event)  # fmt: skip
            self.feed.start()
            if model is not None:
                from realtime.decoder import DecoderConfig

                from .decoding import DetectorThread

                # its own LSL names, so that a `bci stream` beside it keeps "bci-out" unambiguous
                config = DecoderConfig.load(lost_after_s=self.feed.lost_after_s, outlet_name=cfg["outlet_name"],
                                            marker_name=cfg["marker_name"], alarm=rule.to_config())  # fmt: skip
                self.decoder = DetectorThread(model, self.feed, self.monitor, self.event_log, config).start()
            from .window import DashboardWindow

            ensure_qapp()
            window = DashboardWindow(self.feed, self.event_log, self.monitor, cfg, decoder=self.decoder)
            with self._lock:
                self.window = window
                for kind in self._pending:
                    window._events_q.put(kind)
                self._pending = []
        except BaseException:
            self.close()
            raise

    def _on_stream_event(self, kind: str, t_s: float, message: str) -> None:
        with self._lock:
            if self.window is not None:
                self.window.on_stream_event(kind, t_s, message)
            else:
                self.event_log.log(kind, message, stream_time_s=t_s)
                self._pending.append(kind)

    def run_for(self, seconds: float, screenshot: str | Path | None = None) -> Path | None:
        """Show the window, run the event loop for ``seconds``, optionally save a screenshot."""
        from PySide6 import QtCore

        app = ensure_qapp()
        self.window.show()
        loop = QtCore.QEventLoop()
        QtCore.QTimer.singleShot(int(seconds * 1000), loop.quit)
        loop.exec()
        out = None
        if screenshot is not None:
            self.window.tick()
            app.processEvents()
            out = self.window.grab_png(screenshot)
        return out

    def close(self) -> None:
        """Stop everything (bounded joins) and close the event log; idempotent."""
        if self.window is not None:
            self.window.shutdown()
            self.window.close()
            self.window.deleteLater()
            self.window = None
        else:
            if self.decoder is not None:
                self.decoder.stop()
            if self.feed is not None:
                self.feed.stop()
        if self.event_log is not None and self.event_log._conn is not None:
            self.event_log.log("session_end", "dashboard closed")
            self.event_log.close()


def _review_window(path, event_log, monitor, cfg):
    """The review window over the whole recording at ``path``."""
    from bci.io import load_recording

    from .feed import RecordingFeed
    from .review import ReviewWindow

    path = Path(path)
    feed = RecordingFeed(load_recording(path), path.name if path.is_dir() else path.stem)
    ensure_qapp()
    return ReviewWindow(feed, event_log, monitor, cfg)


def _load_model(model_dir):
    """A saved model (``bci train`` output); any unreadable folder is a ModelError."""
    from bci.model import TrainedModel

    try:
        return TrainedModel.load(model_dir)
    except BCIError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt folder must be one line, not a traceback
        raise ModelError(f"{model_dir}: cannot load the model ({type(exc).__name__}: {exc})") from None


def run_dashboard(*, source: str | None = None, replay=None, review: str | Path | None = None, model_dir=None,
                  config: str | Path | None = None, events: str | Path | None = None, speed: float | None = None,
                  seconds: float | None = None, screenshot: str | Path | None = None) -> tuple[Path | None, float]:
    """``bci dashboard``: run a :class:`Session` until its window closes (or Ctrl-C), or for ``seconds``.

    With ``screenshot`` (which needs ``seconds``) or without a display, runs offscreen.
    Returns the screenshot written (or None) and the seconds the window ran.
    """
    if screenshot and not seconds:
        raise ConfigError("--screenshot PNG needs --seconds S (how long to run before saving)")
    if seconds is not None and seconds <= 0:
        raise ConfigError(f"--seconds must be positive, found {seconds}")
    cfg = load_dashboard_config(config)
    has_display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or sys.platform != "linux"
    headless = screenshot is not None or (seconds is not None and not has_display)
    if headless:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    elif not has_display and not os.environ.get("QT_QPA_PLATFORM"):
        raise ConfigError("no display to open the dashboard on (DISPLAY is not set); use --screenshot PNG --seconds S, or set QT_QPA_PLATFORM")
    session = Session(source=source, replay=replay, model_dir=model_dir, config=cfg, events=events, speed=speed,
                      review=review)  # fmt: skip
    try:
        t0 = time.monotonic()
        if seconds:
            out = session.run_for(seconds, screenshot)
        else:
            out = None
            app = ensure_qapp()
            signal.signal(signal.SIGINT, lambda *_: app.quit())  # Ctrl-C in the terminal closes cleanly
            session.window.show()
            app.exec()
        return out, time.monotonic() - t0
    finally:
        session.close()


__all__ = ["BCIError", "Session", "load_dashboard_config", "run_dashboard", "validate_dashboard"]
