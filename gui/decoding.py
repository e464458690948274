"""The dashboard's detector: :class:`realtime.decoder.Decoder` feeding the alarm monitor.

The decoder runs in its own thread with its own LSL inlet on the same stream as the
traces (LSL serves any number of consumers), so decoding never waits for the GUI and
the GUI never waits for the model. Every decision is handed, in the decoder's thread,
to :meth:`gui.alarms.AlarmMonitor.process`, which logs alarms before anything is drawn:

- the probability is the model's raw ``seizure`` column (the positive class; the last
  class when none is called ``seizure``); the dashboard smooths it itself
  (``dashboard.alarm.smoothing_s``) for the trend and the alarm rule;
- the stream time of a decision is that of the feed sample carrying the window's last
  timestamp, so trend, alarm onsets and traces share one time axis;
- models with per-channel contributions (``TrainedModel.channel_weights``: DBConformer,
  MVPFormer, per-channel detectors) give them on the decision's own window.

A failing detector (the model raising, the loop dying) is reported in the status bar
and logged once as ``model_error``; the traces keep running.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from bci.errors import StreamError
from models.hub import DEFAULT_USE, describe
from realtime.decoder import Decoder, DecoderConfig
from realtime.inlet import Inlet

from .alarms import AlarmMonitor

log = logging.getLogger(__name__)


class DetectorThread:
    """A running :class:`realtime.decoder.Decoder` wired to an :class:`AlarmMonitor`.

    Parameters
    ----------
    model : bci.model.TrainedModel
    feed : gui.feed.LslFeed
        The dashboard's feed (a started one: the stream to decode and the time axis).
    monitor : AlarmMonitor
    event_log : gui.eventlog.EventLog
    config : realtime.decoder.DecoderConfig or dict, optional
        Loop settings (default ``configs/realtime.yaml``, with the feed's ``lost_after_s``).
    """

    def __init__(self, model, feed, monitor: AlarmMonitor, event_log, config=None):
        self.model = model.bind(feed.channels)  # the stream's channels for an any-channel model
        self.model_name = model.name
        pretrained = model.metadata.get("pretrained")  # the licence and terms of published weights it started from
        self.terms = describe(pretrained) if pretrained else ""
        self.use = (pretrained.get("use") or DEFAULT_USE) if pretrained else ""
        self.feed = feed
        self.monitor = monitor
        self.event_log = event_log
        classes = [str(c) for c in model.classes]
        self.column = classes.index("seizure") if "seizure" in classes else len(classes) - 1
        self.positive = classes[self.column]

        if config is None:
            config = DecoderConfig.load(lost_after_s=feed.lost_after_s)
        elif isinstance(config, dict):
            config = DecoderConfig.from_dict(config)
        # its own inlet on the feed's stream (same name and source id): LSL serves both
        inlet = Inlet(feed.name, source_id=feed.source_id, timeout=config.resolve_timeout_s, buffer_s=config.buffer_s,
                      assume_unit=config.assume_unit)  # fmt: skip
        self.decoder = Decoder(self.model, source=inlet, config=config, on_decision=self._on_decision)
        self._weights = None  # decided at start: does the model give channel weights?
        self.error: str | None = None
        self._error_logged = False
        self._lock = threading.Lock()

    def start(self) -> DetectorThread:
        """Check the stream against the model, log ``model_loaded`` and start decoding."""
        m = self.model
        try:
            probe = np.zeros((1, len(m.channels), m.n_times))
            probe[0, :, ::2] = 1e-6  # a non-degenerate window
            self._weights = m.channel_weights(probe) is not None
        except Exception as exc:  # noqa: BLE001 - contributions are optional
            log.info("model %s: no channel weights (%s)", m.name, exc)
            self._weights = False
        self.decoder.start()
        self.event_log.log(
            "model_loaded",
            f"{m.name} ({m.task}): classes {', '.join(map(str, m.classes))}; {len(m.channels)} input channels at "
            f"{m.sfreq:g} Hz, {m.window_s:g} s windows every {self.decoder.hop_s:g} s; alarm class {self.positive!r}"
            + (f"; {self.terms}" if self.terms else ""),
            stream_time_s=self.feed.time_s,
            details={"model": m.name, "task": m.task, "classes": [str(c) for c in m.classes],
                     "n_channels": len(m.channels), "channel_weights": bool(self._weights)},
        )  # fmt: skip
        return self

    def _on_decision(self, d) -> None:
        """Decoder thread: one decision -> the alarm monitor (never raises into the loop)."""
        try:
            t_s = self.feed.stream_time(d.source_time)
            weights = None
            if self._weights:
                window = self.decoder.predictor.window(d.index)
                w = self.model.channel_weights(window[None])
                if w is not None:
                    weights = dict(zip(self.model.channels, np.asarray(w[0], float).tolist()))
            self.monitor.process(t_s, float(d.proba[self.column]), weights)
        except Exception as exc:
            with self._lock:
                if self.error is None:
                    log.exception("dashboard could not use a decision")
                self.error = f"{type(exc).__name__}: {exc}"

    def latency_ms(self) -> tuple[float, float]:
        """p50 and p99 (ms) of the recent decisions' latency (arrival of the last sample -> published)."""
        lat = self.decoder.telemetry.latency
        return lat.recent_percentile(50) * 1e3, lat.recent_percentile(99) * 1e3

    def check(self) -> str | None:
        """The detector's failure, if any (logged once as ``model_error``)."""
        err = self.error
        if err is None and self.decoder.error is not None:
            err = self.error = f"decoding loop stopped: {self.decoder.error}"
        if err is not None and not self._error_logged:
            self._error_logged = True
            self.event_log.log("model_error", err[:500], stream_time_s=self.feed.time_s)
        return err

    def summary(self) -> dict:
        return self.decoder.summary()

    def stop(self, timeout: float = 5.0) -> None:
        try:
            self.decoder.stop(timeout)
        except StreamError as exc:
            log.warning("%s", exc)
