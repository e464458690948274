"""The cue paradigm of ``bci calibrate`` and of the feedback view: configuration, trial order, schedule.

A Graz-style motor-imagery session, as in BCI2000's StimulusPresentation or OpenViBE's
motor-imagery scenario. Every trial::

    fixation cross (fixation s) -> cross + arrow of the class (cue s: imagine the movement) -> blank (rest s)

with the rest drawn uniformly in ``[rest_min, rest_max]`` so that trials do not become
predictable. The class order is randomized with the config's seed and balanced (every
class exactly ``trials_per_class`` times, at most ``max_repeats`` in a row).

Pure logic (no Qt, no LSL): :func:`build_schedule` gives every screen of a session with
its start time; :class:`gui.cues.CueRunner` shows them and publishes each step's marker
(the class name at the cue onset, ``rest`` at its end) on an LSL string stream
(:class:`realtime.markers.MarkerOutlet`). ``bci calibrate`` records the session with
:class:`realtime.recorder.Recorder`, so the file's annotations are the class names at the
cue onsets: ``bci train`` reads it directly (``train.recordings``, ``train.events:
[left_hand, right_hand]``, ``tmin``/``tmax`` within the cue; see
``configs/train_calibration.yaml``).

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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import check_keys, load_config
from .errors import ConfigError

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
        check_keys(section, CALIBRATION_KEYS, f"{cfg.path}: calibration")
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

    def describe(self) -> str:
        """``40 trials (left_hand x20, right_hand x20), about 4.8-6.1 min``."""
        lo, hi = self.duration_range()
        length = f"{lo:.0f}-{hi:.0f} s" if hi < 120 else f"{lo / 60:.1f}-{hi / 60:.1f} min"
        per_class = ", ".join(f"{c} x{self.trials_per_class}" for c in self.classes)
        return f"{self.n_trials} trials ({per_class}), about {length}"

    def duration_range(self) -> tuple[float, float]:
        """Shortest and longest session length in seconds."""
        trial = self.fixation + self.cue
        return (self.start_delay + self.n_trials * (trial + self.rest[0]), self.start_delay + self.n_trials * (trial + self.rest[1]))


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def load_calibration(path) -> CalibrationConfig:
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


@dataclass
class CalibrationResult:
    """What a calibration session showed and what its recording holds."""

    path: str
    trials_shown: int
    trials_planned: int
    aborted: bool
    recording: object  # realtime.recording.RecordingSummary
    order: list

    @classmethod
    def of_session(cls, cal: CalibrationConfig, schedule: Schedule, out: str | Path, *, shown: int, aborted: bool,
                   recording) -> CalibrationResult:
        """The result of a session that showed ``shown`` cues and was recorded as ``recording``
        (a :class:`realtime.recording.RecordingSummary`); warns when cues are missing from the file."""
        recorded = sum(recording.markers.get(c, 0) for c in cal.classes)
        if recorded < shown:
            log.warning("%d of %d cues shown are on the recording (stream lost or markers dropped)", recorded, shown)
        return cls(str(out), shown, cal.n_trials, aborted, recording, schedule.order)


# ------------------------------------------------------------- feedback cursor
def cursor_position(p: np.ndarray, left: int, right: int) -> float:
    """Cursor in [-1, 1]: ``p[right] - p[left]`` (0 when undecided)."""
    return float(np.clip(p[right] - p[left], -1.0, 1.0))


def layout(classes) -> tuple[int, int] | None:
    """Columns (left, right) of a two-class cursor (the class cued left on the left), or None for bars."""
    if len(classes) != 2:
        return None
    dirs = [CUES.get(c) for c in classes]
    if dirs == ["right", "left"]:
        return 1, 0
    return 0, 1
