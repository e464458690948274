"""The seizure alarm rule: one definition, used offline and live.

A detector emits a probability at each decision (the end of a window). The rule averages
it over the last ``smoothing_s`` seconds of stream time (the decisions in
``(t - smoothing_s, t]``, at least the current one); when that smoothed value stays at or
above ``threshold`` for ``duration_s`` seconds, one alarm is raised for the episode, with
its onset (the first decision of the run above threshold), the peak smoothed probability
and the channels that contributed most during the run (when the model gives channel
weights). The episode ends at the last decision above threshold, once the smoothed value
falls below it; the next alarm needs a new run. No run starts before ``warmup_s`` (the
causal filters' start-up).

:class:`AlarmRule` is incremental (``update(t, p) -> events``): ``bci stream`` markers and
the dashboard run it decision by decision, and :func:`detect_alarms` (``bci evaluate``'s
seizure metrics, ``bci predict --events``) is a loop over it, so the latencies and false
alarms an evaluation reports are the ones a live run raises.
"""

from __future__ import annotations

import collections
import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from .config import from_section
from .errors import ConfigError, DataError


@dataclass
class AlarmRule:
    """Settings of the rule (one config section, ``alarm:``) and its running state.

    Parameters
    ----------
    threshold : float
        Level (0-1, exclusive) the smoothed probability must reach.
    duration_s : float
        How long (stream seconds) it must stay at or above the threshold before the alarm.
    smoothing_s : float
        Length of the trailing moving average; 0 uses each decision alone.
    warmup_s : float
        No run above threshold starts before this stream time.
    top_channels : int
        How many channels an alarm names.
    """

    threshold: float = 0.5
    duration_s: float = 10.0
    smoothing_s: float = 5.0
    warmup_s: float = 0.0
    top_channels: int = 3
    smoothed: float = field(default=math.nan, init=False, repr=False, compare=False)

    def __post_init__(self):
        if not 0.0 < float(self.threshold) < 1.0:
            raise ConfigError(f"alarm.threshold: expected a probability between 0 and 1 (exclusive), found {self.threshold!r}")
        for name in ("duration_s", "smoothing_s", "warmup_s"):
            if float(getattr(self, name)) < 0:
                raise ConfigError(f"alarm.{name}: expected seconds >= 0, found {getattr(self, name)!r}")
        if int(self.top_channels) < 0:
            raise ConfigError(f"alarm.top_channels: expected a count >= 0, found {self.top_channels!r}")
        self.reset()

    # --- configuration ----------------------------------------------------------------
    @classmethod
    def settings(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.init)

    @classmethod
    def from_config(cls, section: dict | None, key: str = "alarm") -> AlarmRule:
        """The rule a config section describes (unknown keys and non-numbers are errors)."""
        try:
            return from_section(cls, section, key)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("alarm.", f"{key}.", 1)) from None

    def to_config(self) -> dict:
        """The settings as a config section (what :meth:`from_config` reads back)."""
        return {k: v for k, v in asdict(self).items() if k in self.settings()}

    # --- running --------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every decision (a new recording or stream)."""
        self._recent: collections.deque = collections.deque()
        self._last_t = -math.inf
        self._run: dict | None = None  # the current run above threshold
        self.smoothed = math.nan

    def update(self, t: float, p: float, channel_weights: dict | None = None) -> list[dict]:
        """Take the decision at stream time ``t`` with probability ``p``; returns the events it causes.

        Events are dicts with ``event`` = ``"alarm"`` (raised now: ``onset_s``, ``raised_s``,
        ``probability``, ``channels``) or ``"end"`` (the raised episode is over: the same keys and
        ``end_s``). A non-finite ``p`` is skipped.
        """
        t, p = float(t), float(p)
        if not math.isfinite(p):
            return []
        if t <= self._last_t:
            raise DataError(f"alarm rule: decision times must increase, found {t:g} s after {self._last_t:g} s")
        self._last_t = t
        self._recent.append((t, p))
        while len(self._recent) > 1 and self._recent[0][0] <= t - self.smoothing_s:
            self._recent.popleft()
        # exactly rounded over the (few) decisions in the window: no drift over hours of stream,
        # and the same value whichever decisions came before
        self.smoothed = math.fsum(q for _, q in self._recent) / len(self._recent)
        if self.smoothed < self.threshold or t < self.warmup_s:
            return self._close()
        run = self._run
        if run is None:
            run = self._run = {"onset_s": t, "raised_s": None, "end_s": t, "probability": 0.0, "weights": {}}
        run["end_s"] = t
        run["probability"] = max(run["probability"], self.smoothed)
        for name, w in (channel_weights or {}).items():
            run["weights"][name] = run["weights"].get(name, 0.0) + float(w)
        if run["raised_s"] is None and t - run["onset_s"] >= self.duration_s - 1e-9:
            run["raised_s"] = t
            return [self._event("alarm", run)]
        return []

    def finish(self) -> list[dict]:
        """End of the recording: the ``"end"`` event of an alarm still running, if any."""
        return self._close()

    def _close(self) -> list[dict]:
        run, self._run = self._run, None
        return [self._event("end", run)] if run is not None and run["raised_s"] is not None else []

    def _event(self, kind: str, run: dict) -> dict:
        ranked = sorted(run["weights"], key=run["weights"].get, reverse=True)[: int(self.top_channels)]
        event = {"event": kind, "onset_s": run["onset_s"], "raised_s": run["raised_s"],
                 "probability": round(float(run["probability"]), 4), "channels": ranked}  # fmt: skip
        if kind == "end":
            event["end_s"] = run["end_s"]
        return event


def smoothed_trace(rule: AlarmRule, times, proba) -> list[float]:
    """The smoothed probability the rule compares with its threshold, at every decision."""
    live = AlarmRule(**rule.to_config())
    out = []
    for t, p in zip(times, proba):
        live.update(t, p)
        out.append(live.smoothed)
    return out


def detect_alarms(rule: AlarmRule, times, proba, channel_weights=None) -> list[dict]:
    """The alarms a recording's decisions raise, as a live run would raise them.

    Replays ``(times[i], proba[i])`` (and ``channel_weights[i]``, dicts, when given) through a
    fresh copy of ``rule``; returns each alarm's ``"end"`` event (``onset_s``, ``raised_s``,
    ``end_s``, ``probability``, ``channels``), in order.
    """
    if len(times) != len(proba):
        raise DataError(f"expected one probability per decision time, found {len(proba)} for {len(times)}")
    live = AlarmRule(**rule.to_config())
    weights = channel_weights if channel_weights is not None else [None] * len(times)
    events = [e for t, p, w in zip(times, proba, weights) for e in live.update(t, p, w)] + live.finish()
    return [e for e in events if e["event"] == "end"]


#: False alarms per 24 h an operating point allows unless a config says otherwise (one an hour).
TARGET_FP_PER_24H = 24.0
#: Thresholds :func:`operating_point` tries, lowest first.
THRESHOLDS = tuple(np.round(np.arange(0.05, 0.96, 0.05), 2).tolist())


def operating_point(rule: AlarmRule, traces, target_fp_per_24h: float, thresholds=THRESHOLDS) -> tuple[AlarmRule, dict]:
    """The lowest threshold whose false alarms on background stay within a target.

    ``traces``: ``(times, proba, has_seizure, duration_s)`` per training recording or
    segment (decision times in seconds from its start). False alarms are the alarms the rule
    (``rule``'s other settings, no warm-up: the traces are already settled) raises on the
    traces without seizure, per 24 h of them; sensitivity is the share of traces with a
    seizure that raise at least one alarm. Returns the rule at the chosen threshold and a
    report (``threshold``, ``fp_per_24h``, ``false_alarms``, ``hours``, ``sensitivity``,
    ``resolution_fp_per_24h``: one false alarm in these hours, ``reached``). When no
    threshold reaches the target, the one with the fewest false alarms (highest on ties).
    """
    if not target_fp_per_24h > 0:
        raise ConfigError(f"operating_point.target_fp_per_24h: expected false alarms per 24 h > 0, found {target_fp_per_24h!r}")
    background = [(t, p) for t, p, seizure, _ in traces if not seizure]
    seizures = [(t, p) for t, p, seizure, _ in traces if seizure]
    hours = sum(d for _, _, seizure, d in traces if not seizure) / 3600.0
    if not background or hours <= 0:
        raise DataError("choosing an operating point needs training recordings without seizures (background)")
    rows = []
    for threshold in thresholds:
        candidate = AlarmRule(**{**rule.to_config(), "threshold": float(threshold), "warmup_s": 0.0})
        false_alarms = sum(len(detect_alarms(candidate, t, p)) for t, p in background)
        detected = sum(1 for t, p in seizures if detect_alarms(candidate, t, p))
        rows.append({"threshold": float(threshold), "false_alarms": false_alarms, "fp_per_24h": false_alarms / hours * 24.0,
                     "sensitivity": detected / len(seizures) if seizures else float("nan")})  # fmt: skip
    within = [r for r in rows if r["fp_per_24h"] <= target_fp_per_24h]
    best = within[0] if within else min(reversed(rows), key=lambda r: r["false_alarms"])
    chosen = AlarmRule(**{**rule.to_config(), "threshold": best["threshold"]})
    report = {**best, "target_fp_per_24h": float(target_fp_per_24h), "hours": hours,
              "resolution_fp_per_24h": 24.0 / hours, "n_background": len(background), "n_seizure": len(seizures),
              "reached": bool(within)}  # fmt: skip
    return chosen, report
