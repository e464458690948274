"""A reviewer's marks on a recording: seizure and artefact intervals, no Qt.

:class:`ReviewAnnotations` is what the review window (:mod:`gui.review`) edits: an
interval is opened (seizure onset, artefact start) and closed (offset, end) at stream
times, or added whole; :meth:`ReviewAnnotations.write_tsv` exports the
closed intervals through :func:`bci.szcore.write_events_tsv` as an SzCORE ``events.tsv``
with BIDS's ``trial_type`` column (``sz`` seizure, ``artf`` artefact; confidence
``n/a``: a person marked them). The dateTime column is always SzCORE's unknown start,
never the header's measurement date, so an export carries no date that could identify
the patient. :func:`next_event` / :func:`previous_event` step through event times.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bci.errors import DataError
from bci.szcore import ARTEFACT, SEIZURE, write_events_tsv

#: Interval types a reviewer marks -> SzCORE eventType.
EVENT_TYPES = {"seizure": SEIZURE, "artefact": ARTEFACT}
#: Words for the start and the end of each type (labels on the traces).
BOUNDS = {"seizure": ("onset", "offset"), "artefact": ("start", "end")}


@dataclass(frozen=True)
class Mark:
    """One closed interval (stream seconds)."""

    onset_s: float
    duration_s: float
    type: str

    @property
    def end_s(self) -> float:
        return self.onset_s + self.duration_s

    def details(self) -> dict:
        """What the event log stores about this mark."""
        return {"onset_s": round(self.onset_s, 3), "duration_s": round(self.duration_s, 3), "type": self.type}


class ReviewAnnotations:
    """The marks of one review over a recording of ``duration_s`` seconds."""

    def __init__(self, duration_s: float):
        self.duration_s = float(duration_s)
        self.marks: list[Mark] = []
        self.pending: dict[str, float] = {}  # type -> the start of an interval not closed yet

    def _time(self, t_s: float) -> float:
        return min(max(float(t_s), 0.0), self.duration_s)

    def _type(self, kind: str) -> str:
        if kind not in EVENT_TYPES:
            raise DataError(f"unknown annotation type {kind!r}; expected one of {', '.join(EVENT_TYPES)}")
        return kind

    def begin(self, kind: str, t_s: float) -> float:
        """Open an interval of ``kind`` at ``t_s`` (replacing one left open); returns the time."""
        self.pending[self._type(kind)] = t = self._time(t_s)
        return t

    def end(self, kind: str, t_s: float) -> Mark:
        """Close the open interval of ``kind`` at ``t_s`` (either order) and keep it."""
        if self._type(kind) not in self.pending:
            first = BOUNDS[kind][0]
            raise DataError(f"no {kind} {first} marked yet: mark the {first} before the {BOUNDS[kind][1]}")
        return self.add(kind, self.pending.pop(kind), t_s)

    def add(self, kind: str, onset_s: float, end_s: float) -> Mark:
        """Keep a whole interval (its bounds in either order, clipped to the recording)."""
        a, b = sorted((self._time(onset_s), self._time(end_s)))
        mark = Mark(a, b - a, self._type(kind))
        self.marks.append(mark)
        self.marks.sort(key=lambda m: (m.onset_s, m.end_s))
        return mark

    def labels(self) -> list[tuple[float, str, str]]:
        """``(time s, text, kind)`` of every bound, closed or open (trace marks)."""
        out = []
        for m in self.marks:
            first, last = BOUNDS[m.type]
            out += [(m.onset_s, f"{m.type.capitalize()} {first}", m.type), (m.end_s, f"{m.type.capitalize()} {last}", m.type)]
        out += [(t, f"{kind.capitalize()} {BOUNDS[kind][0]} (open)", kind) for kind, t in self.pending.items()]
        return sorted(out)

    def times(self) -> list[float]:
        return [t for t, _, _ in self.labels()]

    def write_tsv(self, path: str | Path) -> Path:
        """Write the closed marks as an SzCORE + BIDS ``events.tsv`` (module docstring)."""
        return write_events_tsv(path, self._events(), self.duration_s, trial_type=True)

    def _events(self) -> list[tuple]:
        return [(m.onset_s, m.end_s, None, EVENT_TYPES[m.type]) for m in self.marks]


def next_event(times, t_s: float, tolerance_s: float = 0.05) -> float | None:
    """The first of ``times`` after ``t_s`` (by more than ``tolerance_s``), or None."""
    later = [t for t in times if t > t_s + tolerance_s]
    return min(later) if later else None


def previous_event(times, t_s: float, tolerance_s: float = 0.05) -> float | None:
    """The last of ``times`` before ``t_s`` (by more than ``tolerance_s``), or None."""
    earlier = [t for t in times if t < t_s - tolerance_s]
    return max(earlier) if earlier else None
