"""Seizure alarms: smoothed probability above a threshold for a set duration.

:class:`AlarmDetector` is the pure rule (no Qt, no I/O): the probability of each
decision is averaged over the last ``smoothing_s`` seconds of stream time; when that
smoothed value stays at or above ``threshold`` for ``duration_s``, one alarm is raised
for the episode, with its onset (the first decision of the run above threshold) and
the channels that contributed most during the run (from the model's channel weights,
when it has them). The detector re-arms when the smoothed probability falls below the
threshold again.

:class:`AlarmMonitor` runs the rule on every decision **in the thread that produces
the decisions** (the decoder, never the GUI thread) and writes each alarm to the
:class:`~gui.eventlog.EventLog` before anything is drawn, so alarms raised while the
window is busy are logged, in order, and never lost. The GUI polls
:meth:`AlarmMonitor.take` for what to show.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field

import numpy as np

from .eventlog import EventLog


@dataclass
class Decision:
    """One detector output: stream time (s) of the window's end and its probability."""

    t_s: float
    probability: float
    channel_weights: dict | None = None  # channel name -> contribution (any scale)
    latency_ms: float | None = None


@dataclass
class Alarm:
    """An alarm as logged (``id`` is its event-log id) and shown until acknowledged."""

    id: int
    onset_s: float
    raised_s: float
    probability: float
    channels: list = field(default_factory=list)
    wall_time: str = ""
    acknowledged: bool = False
    note: str = ""

    @classmethod
    def from_event(cls, event) -> Alarm:
        d = event.details
        return cls(
            id=event.id,
            onset_s=float(d.get("onset_s", event.stream_time_s or 0.0)),
            raised_s=float(d.get("raised_s", event.stream_time_s or 0.0)),
            probability=float(d.get("probability", float("nan"))),
            channels=list(d.get("channels", [])),
            wall_time=event.wall_time,
        )


def format_clock(t_s: float) -> str:
    """Stream seconds as ``HH:MM:SS`` (elapsed since the stream started)."""
    t = max(0, int(round(float(t_s))))
    return f"{t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d}"


class AlarmDetector:
    """The alarm rule; feed it decisions in time order with :meth:`update`.

    Parameters
    ----------
    threshold : float
        Alarm threshold on the smoothed probability (0-1).
    duration_s : float
        How long (stream seconds) the smoothed probability must stay at or above the
        threshold before the alarm is raised.
    smoothing_s : float
        Length of the moving average (stream seconds); 0 uses each decision alone.
    top_channels : int
        How many channels an alarm names.
    """

    def __init__(self, threshold: float = 0.5, duration_s: float = 10.0, smoothing_s: float = 5.0, top_channels: int = 3):
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"alarm threshold must be between 0 and 1, found {threshold}")
        if duration_s < 0 or smoothing_s < 0:
            raise ValueError(f"alarm duration and smoothing must be >= 0 s, found {duration_s}, {smoothing_s}")
        self.threshold = float(threshold)
        self.duration_s = float(duration_s)
        self.smoothing_s = float(smoothing_s)
        self.top_channels = int(top_channels)
        self._recent: collections.deque = collections.deque()
        self._sum = 0.0
        self.smoothed = float("nan")
        self._run_start: float | None = None
        self._raised = False
        self._peak = 0.0
        self._weights: dict = {}

    def update(self, decision: Decision) -> dict | None:
        """Take one decision; returns the alarm fields when an alarm is raised now."""
        t, p = float(decision.t_s), float(decision.probability)
        if not np.isfinite(p):
            return None
        self._recent.append((t, p))
        self._sum += p
        while self._recent and self._recent[0][0] <= t - self.smoothing_s and len(self._recent) > 1:
            self._sum -= self._recent.popleft()[1]
        self.smoothed = self._sum / len(self._recent)
        if self.smoothed < self.threshold:
            self._run_start, self._raised, self._peak, self._weights = None, False, 0.0, {}
            return None
        if self._run_start is None:
            self._run_start = t
        self._peak = max(self._peak, self.smoothed)
        for name, w in (decision.channel_weights or {}).items():
            self._weights[name] = self._weights.get(name, 0.0) + float(w)
        if self._raised or t - self._run_start < self.duration_s:
            return None
        self._raised = True
        ranked = sorted(self._weights, key=self._weights.get, reverse=True)[: self.top_channels]
        return {
            "onset_s": self._run_start,
            "raised_s": t,
            "probability": round(self._peak, 4),
            "channels": ranked,
            "threshold": self.threshold,
            "duration_s": self.duration_s,
        }


class AlarmMonitor:
    """Applies :class:`AlarmDetector` to decisions and logs alarms immediately.

    Thread-safe: :meth:`process` is called by the decoder thread, :meth:`take` and
    :meth:`acknowledge` by the GUI thread.
    """

    def __init__(self, detector: AlarmDetector, log: EventLog, history_s: float = 3600.0):
        self.detector = detector
        self.log = log
        self.history_s = float(history_s)
        self._lock = threading.Lock()
        self._new_alarms: list[Alarm] = []
        self._new_decisions: list[tuple[float, float, float]] = []
        self.active: list[Alarm] = [Alarm.from_event(e) for e in log.unacknowledged_alarms()]
        self.last_weights: dict | None = None
        self.n_decisions = 0

    def process(self, decision: Decision) -> Alarm | None:
        """Run the rule on one decision (decoder thread); logs and returns a new alarm."""
        with self._lock:
            fields = self.detector.update(decision)
            self.n_decisions += 1
            self._new_decisions.append((decision.t_s, decision.probability, self.detector.smoothed))
            if decision.channel_weights:
                self.last_weights = dict(decision.channel_weights)
            if fields is None:
                return None
            where = ", ".join(fields["channels"]) or "channels not available"
            message = (
                f"seizure alarm: smoothed probability {fields['probability']:.2f} >= {fields['threshold']:.2f} "
                f"for {fields['duration_s']:g} s from {format_clock(fields['onset_s'])} ({where})"
            )
            alarm_id = self.log.log("alarm", message, stream_time_s=fields["raised_s"], details=fields)
            alarm = Alarm.from_event(self.log.get(alarm_id))
            self._new_alarms.append(alarm)
            self.active.append(alarm)
            return alarm

    def take(self) -> tuple[list[tuple[float, float, float]], list[Alarm]]:
        """New ``(t_s, probability, smoothed)`` decisions and new alarms since the last call."""
        with self._lock:
            decisions, alarms = self._new_decisions, self._new_alarms
            self._new_decisions, self._new_alarms = [], []
        return decisions, alarms

    def acknowledge(self, alarm_id: int, note: str = "", stream_time_s: float | None = None) -> None:
        """Log the acknowledgement and drop the alarm from the active list."""
        with self._lock:
            self.log.acknowledge(alarm_id, note, stream_time_s=stream_time_s)
            for alarm in self.active:
                if alarm.id == alarm_id:
                    alarm.acknowledged, alarm.note = True, note
            self.active = [a for a in self.active if not a.acknowledged]

    def unacknowledged(self) -> list[Alarm]:
        with self._lock:
            return list(self.active)
