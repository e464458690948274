"""The live decoding loop: LSL inlet -> the model's streaming predictor -> LSL outlets.

:class:`Decoder` ties a :class:`~realtime.inlet.Inlet` to a saved
:class:`~bci.model.TrainedModel` (from ``bci train``); it only pulls, pushes and publishes::

    pull chunk (non-blocking) -> volts, corrected timestamps, arrival time (raw ring buffer)
      -> model.stream(...).push(chunk): channel mapping, causal preprocessing, alignment,
         windowing and the model's own fast path (bci.predictor.StreamPredictor)
      -> smoothing -> "bci-out": one channel per class + the source timestamp of the
         window's last sample
      -> "bci-markers": decisions, alarms (bci.alarm.AlarmRule), withheld decisions,
         stream lost / restored

The predictor decides on the fixed grid of windows ``bci predict`` cuts offline; live it
decodes only the newest due window of each pull and counts the skipped ones
(``dropped_windows``), so latency stays bounded when the loop falls behind. An MVPFormer
runs its key/value-cached segment path (the hop is then a whole number of segments).
The latency of a decision is the time from the arrival of its window's last sample (local
clock right after the pull that returned it) to the return of the push on ``bci-out``.

Faults. A lost outlet -> state ``lost``, a marker, ``bci-out`` stays up, the stream is
looked for again at every poll (without blocking) and reopened when it returns; no
sample is filled in: processing restarts and decisions resume once a whole new window
has arrived (the gap is marked). The same happens when no sample arrives for
``lost_after_s`` or when the timestamps jump (samples dropped upstream). NaN/inf samples
are flagged with their channels and every decision whose window they touch (plus
``settle_s`` for the filters) is withheld with that reason; the filters are fed the last
finite value meanwhile so their state stays finite. Flat channels (peak-to-peak below
``flat_uv`` over the window) withhold the decision too.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pylsl

from bci.alarm import AlarmRule
from bci.config import from_section, load_config
from bci.errors import ConfigError, StreamError

from .inlet import Inlet, StreamLost
from .telemetry import LatencyStats

#: Keep the garbage collector off decisions: after warm-up everything alive (modules, the
#: model, buffers) is moved out of the collector's reach (``gc.freeze``), and collection is
#: disabled while samples are processed and decided, so a collection (triggered by an
#: allocation count) happens between decisions, never inside one. ``False`` leaves the GC alone.
GC_CONTROL = True

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "realtime.yaml"
SMOOTHING = ("ema", "mean", "none")


@dataclass
class DecoderConfig:
    """Settings of the live loop (the ``realtime`` section of ``configs/realtime.yaml``)."""

    hop_s: float | None = None  # None: the model's hop (one segment for MVPFormer streaming)
    smoothing: str = "ema"  # ema | mean | none
    alpha: float = 0.5  # EMA weight of the newest decision
    n_average: int = 4  # moving-average length (smoothing: mean)
    poll_s: float = 0.001  # sleep between polls when nothing arrived
    outlet_name: str = "bci-out"
    marker_name: str = "bci-markers"
    decision_threshold: float = 0.6  # marker when the top class changes and reaches this
    alarm_class: str | None = None  # default: "seizure" for seizure models
    alarm: dict | None = None  # the one alarm rule (bci.alarm.AlarmRule) on the class's raw probability; None: the model's
    lost_after_s: float = 2.0  # no samples for this long -> "stream lost"
    settle_s: float = 1.0  # decisions withheld this long after NaN/inf samples (filter transients)
    flat_uv: float = 0.1  # peak-to-peak below this (microvolts) over a window -> flat channel
    buffer_s: float = 30.0
    resolve_timeout_s: float = 5.0
    assume_unit: str = "microvolts"
    streaming: bool = True  # MVPFormer: the cached step path (False: full windows)
    threads: int = 1  # torch intra-op threads in the loop
    adapt: bool | None = None  # online re-centring of the model's alignment (None: on when the model has one)
    adapt_options: dict | None = None  # forgetting, prior, warmup, reject_z (pipelines.alignment.ONLINE_DEFAULTS), stride_s
    adapt_state: str | None = None  # .npz: the adapted reference, read at open if it exists, written at stop

    @classmethod
    def from_dict(cls, values: dict | None, where: str = "realtime") -> "DecoderConfig":
        cfg = from_section(cls, values, where)
        if cfg.smoothing not in SMOOTHING:
            raise ConfigError(f"{where}.smoothing: expected one of {', '.join(SMOOTHING)}, found {cfg.smoothing!r}")
        if not 0 < cfg.alpha <= 1:
            raise ConfigError(f"{where}.alpha: expected a weight in (0, 1], found {cfg.alpha!r}")
        if cfg.hop_s is not None and cfg.hop_s <= 0:
            raise ConfigError(f"{where}.hop_s: expected a positive number of seconds, found {cfg.hop_s!r}")
        for key in ("poll_s", "lost_after_s", "buffer_s", "resolve_timeout_s"):
            if not isinstance(getattr(cfg, key), (int, float)) or getattr(cfg, key) <= 0:
                raise ConfigError(f"{where}.{key}: expected a positive number, found {getattr(cfg, key)!r}")
        if int(cfg.n_average) < 1 or int(cfg.threads) < 1:
            raise ConfigError(f"{where}: n_average and threads must be >= 1")
        if cfg.adapt_options is not None and not isinstance(cfg.adapt_options, dict):
            raise ConfigError(f"{where}.adapt_options: expected a mapping of adaptation settings, found {cfg.adapt_options!r}")
        if cfg.alarm is not None and not isinstance(cfg.alarm, dict):
            raise ConfigError(f"{where}.alarm: expected a mapping of alarm settings, found {cfg.alarm!r}")
        if cfg.alarm is not None:
            cfg.alarm = AlarmRule.from_config(cfg.alarm, key=f"{where}.alarm").to_config()
        return cfg

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides) -> "DecoderConfig":
        """Read the ``realtime`` section of a YAML file (default ``configs/realtime.yaml``)."""
        path = Path(path) if path else DEFAULT_CONFIG
        values = {}
        if path.is_file():
            values = dict(load_config(path).get("realtime") or {})
        elif path != DEFAULT_CONFIG:
            raise ConfigError(f"{path}: no such config file")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(values, where=f"{path.name}: realtime")


def alarm_marker(class_name: str, event: dict) -> str:
    """The marker text of an alarm-rule event, e.g. ``alarm: seizure p=0.83 onset=351.0s raised=356.0s``
    or ``alarm end: seizure p=0.91 onset=351.0s end=499.0s`` (seconds of processed stream)."""
    if event["event"] == "alarm":
        return f"alarm: {class_name} p={event['probability']:.2f} onset={event['onset_s']:.1f}s raised={event['raised_s']:.1f}s"
    return f"alarm end: {class_name} p={event['probability']:.2f} onset={event['onset_s']:.1f}s end={event['end_s']:.1f}s"


class Smoother:
    """EMA or moving average of probability vectors (both keep them summing to 1)."""

    def __init__(self, method: str, n_classes: int, alpha: float = 0.5, n_average: int = 4):
        self.method, self.alpha = method, float(alpha)
        self._history = np.zeros((max(1, int(n_average)), n_classes))
        self.reset()

    def reset(self) -> None:
        self._state = None
        self._n = 0

    def __call__(self, p: np.ndarray) -> np.ndarray:
        if self.method == "none":
            return p
        if self.method == "ema":
            self._state = p.copy() if self._state is None else self._state + self.alpha * (p - self._state)
            return self._state
        self._history[self._n % len(self._history)] = p
        self._n += 1
        return self._history[: min(self._n, len(self._history))].mean(axis=0)


@dataclass
class Decision:
    """One published result (also handed to ``on_decision`` callbacks)."""

    index: int  # processed-sample index of the window's end (exclusive)
    source_time: float  # LSL timestamp of the window's last sample (our clock)
    proba: np.ndarray  # raw probabilities
    smoothed: np.ndarray  # what was published
    label: str
    latency_s: float
    published_at: float


class Telemetry:
    """Counters and latency statistics of one :class:`Decoder`."""

    def __init__(self):
        self.latency = LatencyStats()  # window's last sample arrival -> published
        self.end_to_end = LatencyStats()  # window's last sample source timestamp -> published
        self.model = LatencyStats()  # model call alone
        self.decisions = 0
        self.withheld = 0
        self.dropped_windows = 0
        self.restarts = 0
        self.started = time.monotonic()
        self._rate_t, self._rate_n, self.rate_hz = time.monotonic(), 0, 0.0

    def update_rate(self, samples: int) -> None:
        now = time.monotonic()
        if now - self._rate_t >= 1.0:
            self.rate_hz = (samples - self._rate_n) / (now - self._rate_t)
            self._rate_t, self._rate_n = now, samples


class Decoder:
    """Live decoding of an LSL stream with a saved model (see the module docstring).

    Parameters
    ----------
    model : TrainedModel or path to a model folder
    source : Inlet or str, optional
        An :class:`Inlet` (opened or not) or a stream name; None resolves type ``EEG``.
    config : DecoderConfig, dict or None
        Loop settings (defaults: ``configs/realtime.yaml``).
    on_decision : callable, optional
        Called with every :class:`Decision` (from the loop's thread).
    """

    def __init__(self, model, source=None, config: DecoderConfig | dict | None = None, *, on_decision=None):
        from bci.model import TrainedModel

        self.model = model if isinstance(model, TrainedModel) else TrainedModel.load(model)
        if config is None:
            config = DecoderConfig.load()
        elif isinstance(config, dict):
            config = DecoderConfig.from_dict(config)
        self.config = config
        if isinstance(source, Inlet):
            self.inlet = source
        else:
            self.inlet = Inlet(name=source, timeout=config.resolve_timeout_s, buffer_s=config.buffer_s,
                               assume_unit=config.assume_unit)
        self.callbacks = [on_decision] if on_decision else []
        self.telemetry = Telemetry()
        self.state = "idle"  # idle | filling | running | withheld | lost | stopped
        self.reason = ""  # why decisions are withheld / the stream is lost
        self.last: Decision | None = None
        self.recent: deque[Decision] = deque(maxlen=1000)
        self.events: deque[tuple[float, str]] = deque(maxlen=1000)  # (lsl time, marker text)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    # ----------------------------------------------------------------- set-up
    def open(self) -> "Decoder":
        """Resolve and check the stream, build the outlets; raises StreamError on a mismatch."""
        try:
            return self._open()
        except BaseException:
            self.inlet.close()  # a refused stream is not kept open
            raise

    def _open(self) -> "Decoder":
        m, cfg = self.model, self.config
        self._classes = [str(c) for c in m.classes]
        if "torch" in sys.modules:  # only deep models bring torch in (and ONNX Runtime takes its thread count)
            sys.modules["torch"].set_num_threads(int(cfg.threads))
        m.prepare()  # before subscribing: nothing queues up while a deep network is exported
        if self.inlet.inlet is None:
            self.inlet.open()
        m = self.model = m.bind(self.inlet.channels)
        self.mapping = self.inlet.plan(m.input_channels, model_sfreq=m.sfreq, resamples=bool(m.preprocessor().resample))
        self.predictor = m.stream(self.inlet.sfreq, self.mapping.source, mapping=self.mapping, hop_s=cfg.hop_s,
                                  streaming=cfg.streaming, settle_s=cfg.settle_s, flat_uv=cfg.flat_uv,
                                  buffer_s=cfg.buffer_s, adapt=cfg.adapt, adapt_options=cfg.adapt_options)  # fmt: skip
        if cfg.adapt_state and Path(cfg.adapt_state).is_file():  # a session resumed: the reference it had reached
            with np.load(cfg.adapt_state, allow_pickle=False) as state:
                self.predictor.load_adaptation_state(dict(state))
            log.info("adaptation resumed from %s", cfg.adapt_state)
        self.sfreq, self.hop_s = self.predictor.sfreq, self.predictor.hop_s
        if cfg.hop_s and abs(self.hop_s - cfg.hop_s) > 1e-9:
            log.info("%s: hop rounded to %.4g s (whole segments)", self.predictor.path, self.hop_s)
        alarm = cfg.alarm_class or ("seizure" if m.task == "seizure" and "seizure" in self._classes else None)
        if alarm is not None and alarm not in self._classes:
            raise ConfigError(f"alarm_class {alarm!r} is not one of the model's classes {self._classes}")
        self._alarm_col = self._classes.index(alarm) if alarm else None
        self.alarm_rule = m.alarm_rule(cfg.alarm)  # the config's, else the model's operating point
        self.smoother = Smoother(cfg.smoothing, len(self._classes), cfg.alpha, cfg.n_average)
        self._build_outlets()
        self._warm_up()
        self._begin_processing()
        self.state = "filling"
        self._marker(f"started: {m.name} on {self.inlet.info.name()}", pylsl.local_clock())
        return self

    def _build_outlets(self) -> None:
        m, cfg = self.model, self.config
        info = pylsl.StreamInfo(cfg.outlet_name, "Probabilities", len(self._classes) + 1, pylsl.IRREGULAR_RATE,
                                pylsl.cf_double64, f"{cfg.outlet_name}-{m.name}")
        chans = info.desc().append_child("channels")
        for c in self._classes:
            ch = chans.append_child("channel")
            ch.append_child_value("label", c)
            ch.append_child_value("type", "probability")
            ch.append_child_value("unit", "")
        ch = chans.append_child("channel")
        ch.append_child_value("label", "source_time")
        ch.append_child_value("type", "timestamp")
        ch.append_child_value("unit", "seconds")
        desc = info.desc().append_child("model")
        for key, value in (("name", m.name), ("task", m.task), ("window_s", f"{m.window_s:g}"), ("hop_s", f"{self.hop_s:g}"),
                           ("smoothing", cfg.smoothing), ("source", self.inlet.info.name())):
            desc.append_child_value(key, str(value))
        self.outlet = pylsl.StreamOutlet(info)
        minfo = pylsl.StreamInfo(cfg.marker_name, "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, f"{cfg.marker_name}-{m.name}")
        self.marker_outlet = pylsl.StreamOutlet(minfo)
        self._sample = np.zeros(len(self._classes) + 1)

    def _warm_up(self) -> None:
        """One model call on a noise window (first-call costs: lazy imports, allocator, the
        fast path's compile), then the live objects frozen out of the GC (:data:`GC_CONTROL`)."""
        pred, m = self.predictor, self.model
        if pred.segments is None:
            window = np.random.default_rng(0).standard_normal((1, len(m.channels), m.n_times)) * 1e-5
            try:
                m.predict_proba(window)
            except Exception as exc:  # noqa: BLE001 - a warm-up only: the real windows tell
                log.debug("warm-up call failed: %s", exc)
        if GC_CONTROL:
            gc.collect()
            gc.freeze()

    def _begin_processing(self, first: int | None = None) -> None:
        """(Re)start decoding from raw sample ``first`` (default: the next to arrive):
        nothing before it is reused."""
        self.predictor.reset()
        self._raw_base = self.inlet.buffer.n_written if first is None else first  # raw index of the predictor's sample 0
        self.smoother.reset()
        self.alarm_rule.reset()  # decision times restart with the processed stream
        self._top = None

    # ------------------------------------------------------------ the loop
    def poll(self) -> int:
        """One non-blocking iteration: pull, process, decide, publish. Returns new decisions."""
        if self.state in ("idle", "stopped"):
            raise StreamError("poll() before open()")
        if not self.inlet.connected:
            return self._try_reconnect()
        made = 0
        got = 0
        while True:
            try:
                start, stop = self.inlet.pull_once()
            except StreamLost as exc:
                self._enter_lost(str(exc))
                return made
            if stop == start:
                break
            got += stop - start
            if self.reason == "waiting for the first samples":
                self.reason = ""
            if self.state == "lost":  # samples again after a stall
                self._restore(f"samples again after {pylsl.local_clock() - self._lost_at:.2f} s without any", start)
            elif self.inlet.last_gap:
                self._gap(self.inlet.last_gap, start)
            made += self._process_no_gc(start, stop) if GC_CONTROL else self._process(start, stop)
            if stop - start < self.inlet.max_chunk:
                break
        self.telemetry.update_rate(self.inlet.stats.samples)
        if not got and self.state != "lost" and pylsl.local_clock() - self.inlet.last_arrival > self.config.lost_after_s:
            if not self.inlet.samples_since_connect:  # connected, nothing sent yet (source not started)
                self.reason = "waiting for the first samples"
                return made
            self.state, self.reason = "lost", f"no samples for {self.config.lost_after_s:g} s"
            self._lost_at = self.inlet.last_arrival
            self._marker(f"stream lost: {self.reason}", pylsl.local_clock())
            self.inlet.mark_stall()
        return made

    def _process_no_gc(self, start: int, stop: int) -> int:
        """:meth:`_process` with the collector off (it runs at the next allocation after)."""
        if not gc.isenabled():  # off already (another decoder's thread, or the caller's choice)
            return self._process(start, stop)
        gc.disable()
        try:
            return self._process(start, stop)
        finally:
            gc.enable()

    def _process(self, start: int, stop: int) -> int:
        """Push raw samples ``start..stop`` through the predictor; publish its decisions."""
        pred = self.predictor
        pred.push(self.inlet.buffer.window(stop, stop - start))
        if pred.windows:
            self.telemetry.model.add(pred.model_s)
        self.telemetry.dropped_windows = pred.dropped_windows
        made = 0
        for w in pred.windows:
            at, completed = pred.input_index(w.end - 1)
            source_time = self.inlet.buffer.timestamp(self._raw_base + at)
            if w.reason:
                self.telemetry.withheld += 1
                if self.state != "withheld" or self.reason != w.reason:
                    self._marker(f"withheld: {w.reason}", source_time)
                self.state, self.reason = "withheld", w.reason
                continue
            if self.state == "withheld":
                self._marker("decisions resumed", source_time)
            self.state, self.reason = "running", ""
            made += self._publish(w.end, w.proba, source_time, self.inlet.buffer.arrival(self._raw_base + completed))
        pred.flush_adaptation()  # the decision is out: now the adapted reference moves
        return made

    def _publish(self, end: int, proba: np.ndarray, source_time: float, arrival: float) -> int:
        smoothed = self.smoother(np.asarray(proba, dtype=np.float64))
        sample = self._sample
        sample[:-1] = smoothed
        sample[-1] = source_time
        self.outlet.push_sample(sample, pylsl.local_clock())
        published = pylsl.local_clock()
        tel = self.telemetry
        latency = published - arrival
        tel.latency.add(latency)
        tel.end_to_end.add(published - source_time)
        tel.decisions += 1
        top = int(np.argmax(smoothed))
        decision = Decision(end, float(source_time), np.asarray(proba), smoothed.copy(), self._classes[top], latency, published)
        self.last = decision
        self.recent.append(decision)
        if top != self._top and smoothed[top] >= self.config.decision_threshold:
            self._top = top
            self._marker(f"decision: {self._classes[top]} p={smoothed[top]:.2f}", source_time)
        if self._alarm_col is not None:
            # the rule sees what bci evaluate's rule sees: the raw probability at the window's end,
            # in seconds of processed stream (window ends, as offline)
            name = self._classes[self._alarm_col]
            for event in self.alarm_rule.update(end / self.sfreq, float(proba[self._alarm_col])):
                self._marker(alarm_marker(name, event), source_time)
        for cb in self.callbacks:
            cb(decision)
        return 1

    # --------------------------------------------------------- faults
    def _marker(self, text: str, stamp: float) -> None:
        self.events.append((stamp, text))
        log.info("marker: %s", text)
        if getattr(self, "marker_outlet", None) is not None:
            self.marker_outlet.push_sample([text], stamp)

    def _enter_lost(self, why: str) -> None:
        self.state, self.reason = "lost", why
        self._lost_at = pylsl.local_clock()
        self._marker(f"stream lost: {why}", self._lost_at)

    def _try_reconnect(self) -> int:
        try:
            back = self.inlet.reconnect()
        except StreamError as exc:  # came back incompatible: keep waiting, say why
            if self.reason != str(exc):
                self.reason = str(exc)
                self._marker(f"stream lost: {exc}", pylsl.local_clock())
            return 0
        if back:
            self._restore(f"stream back after {pylsl.local_clock() - self._lost_at:.2f} s")
        return 0

    def _restore(self, why: str, first: int | None = None) -> None:
        """Processing restarts at raw sample ``first`` (default: the next one to arrive)."""
        self.telemetry.restarts += 1
        self._begin_processing(first)
        self.state, self.reason = "filling", ""
        self._marker(f"stream restored: {why}; gap marked, no samples filled in", pylsl.local_clock())

    def _gap(self, seconds: float, first: int) -> None:
        """Timestamps jumped (samples lost upstream): restart processing at raw sample ``first``."""
        self.telemetry.restarts += 1
        self._marker(f"gap: {seconds:.3f} s of samples missing; processing restarted", pylsl.local_clock())
        self._begin_processing(first)
        self.state = "filling"

    # ------------------------------------------------------- running
    def run(self, duration: float | None = None) -> None:
        """Poll until :meth:`stop` (or ``duration`` seconds); sleeps ``poll_s`` when idle."""
        if self.state == "idle":
            self.open()
        deadline = None if duration is None else time.monotonic() + duration
        poll_s = self.config.poll_s
        while not self._stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            got = self.inlet.stats.samples
            self.poll()
            if self.inlet.stats.samples == got:
                self._stop.wait(poll_s if self.inlet.connected else max(poll_s, 0.05))

    def _run_thread(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # noqa: BLE001 - surfaced by stop()
            self.error = exc
            log.exception("decoder loop failed")

    def start(self) -> "Decoder":
        """Open (in the caller's thread, so mismatches raise here) and poll from a thread."""
        if self.state == "idle":
            self.open()
        self._thread = threading.Thread(target=self._run_thread, name="bci-decoder", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0, close: bool = True) -> None:
        """Stop the loop; with ``close`` also close the inlet and the outlets.

        ``close=False`` keeps ``bci-out`` and the markers up (a consumer can still drain
        them); a later ``stop()`` closes them.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.state not in ("idle", "stopped"):
            self._marker("stopped", pylsl.local_clock())
            if self.config.adapt_state and self.predictor.adapting:
                np.savez(self.config.adapt_state, **self.predictor.adaptation_state())
        self.state = "stopped"
        if close:
            self.inlet.close()
            self.outlet = self.marker_outlet = None
        if self.error is not None:
            error, self.error = self.error, None
            raise StreamError(f"the decoding loop failed: {error}") from error

    def __enter__(self) -> "Decoder":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------- reporting
    def summary(self) -> dict:
        """Counters and latency percentiles (milliseconds) as one flat dict."""
        tel, st = self.telemetry, self.inlet.stats
        out = {
            "state": self.state,
            "reason": self.reason,
            "rate_hz": tel.rate_hz,
            "samples": st.samples,
            "decisions": tel.decisions,
            "withheld": tel.withheld,
            "dropped_windows": tel.dropped_windows,
            "dropped_samples": st.missing_samples,
            "gaps": st.gaps,
            "losses": st.losses,
            "reconnects": st.reconnects,
            "restarts": tel.restarts,
            "hop_s": self.hop_s if hasattr(self, "hop_s") else None,
            "path": self.predictor.path if hasattr(self, "predictor") else None,
            "adaptation": self.adaptation_text() if hasattr(self, "predictor") else "",
        }
        out.update(tel.latency.summary("latency"))
        out.update(tel.end_to_end.summary("end_to_end"))
        out.update(tel.model.summary("model"))
        return out

    def adaptation_text(self) -> str:
        """``adapt on (N windows, M rejected, one per S s)`` (the windows that moved the reference and
        the outliers that did not, one tried per stride), ``adapt off (training reference)`` or
        ``no alignment``."""
        pred = self.predictor
        if pred.adaptation is None:
            return "no alignment"
        if not pred.adapting:
            return "adapt off (training reference)"
        ref = pred.adaptation.reference
        return f"adapt on ({ref.n_accepted} windows, {ref.n_rejected} rejected, one per {pred.adapt_stride / pred.sfreq:.3g} s)"

    def status_line(self) -> str:
        """The one-line live summary of ``bci stream``."""
        s = self.summary()
        lat = self.telemetry.latency
        p50, p99 = lat.recent_percentile(50) * 1e3, lat.recent_percentile(99) * 1e3
        text = (
            f"{s['state']:<8} {s['rate_hz']:7.1f} Hz  decisions {s['decisions']:>6}  "
            f"latency p50 {p50:5.1f} ms p99 {p99:5.1f} ms  dropped windows {s['dropped_windows']} samples {s['dropped_samples']}"
            f"  withheld {s['withheld']}  {s['adaptation']}"
        )
        if self.last is not None:
            text += f"  last: {self.last.label} {self.last.smoothed.max():.2f}"
        if s["reason"]:
            text += f"  ({s['reason']})"
        return text

    def as_dict(self) -> dict:
        return {"config": asdict(self.config), **self.summary()}
