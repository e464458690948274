"""Seizure alarms in the dashboard: the one rule (:class:`bci.alarm.AlarmRule`), logged.

:class:`AlarmMonitor` runs the rule on every decision **in the thread that produces
the decisions** (the decoder, never the GUI thread) and writes each alarm to the
:class:`~gui.eventlog.EventLog` before anything is drawn, so alarms raised while the
window is busy are logged, in order, and never lost. The GUI polls
:meth:`AlarmMonitor.take` for what to show.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from bci.alarm import AlarmRule

from .eventlog import EventLog


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


class AlarmMonitor:
    """Applies the alarm rule to decisions and logs alarms immediately.

    Thread-safe: :meth:`process` is called by the decoder thread, :meth:`take` and
    :meth:`acknowledge` by the GUI thread.
    """

    def __init__(self, rule: AlarmRule, log: EventLog, history_s: float = 3600.0):
        self.rule = rule
        self.log = log
        self.history_s = float(history_s)
        self._lock = threading.Lock()
        self._new_alarms: list[Alarm] = []
        self._new_decisions: list[tuple[float, float, float]] = []
        self.active: list[Alarm] = [Alarm.from_event(e) for e in log.unacknowledged_alarms()]
        self.last_weights: dict | None = None
        self.n_decisions = 0

    def process(self, t_s: float, probability: float, channel_weights: dict | None = None) -> Alarm | None:
        """Run the rule on one decision (decoder thread): the stream time (s) of its window's end,
        its probability and, if the model gives them, each channel's contribution (any scale).
        Logs and returns a new alarm."""
        with self._lock:
            raised = [e for e in self.rule.update(t_s, probability, channel_weights) if e["event"] == "alarm"]
            self.n_decisions += 1
            self._new_decisions.append((t_s, probability, self.rule.smoothed))
            if channel_weights:
                self.last_weights = dict(channel_weights)
            if not raised:
                return None
            fields = {**raised[0], "threshold": self.rule.threshold, "duration_s": self.rule.duration_s}
            del fields["event"]
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
