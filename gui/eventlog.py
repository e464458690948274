"""The dashboard's durable event log: SQLite in WAL mode, one commit per event.

Every event a clinician must be able to reconstruct after a crash is written here the
moment it happens: alarms (onset, channels, probability), acknowledgements and notes,
stream lost / regained, model loaded, session start and end, and a reviewer's marks
(``annotation``: seizure or artefact intervals, :mod:`gui.review`). The file is opened in
write-ahead-log mode with ``synchronous=FULL`` and every :meth:`EventLog.log` call is
its own committed transaction, so a crash loses nothing that was logged; reopening the
file shows the whole history (and the alarms still waiting for acknowledgement).

Privacy: the log holds what the dashboard says about the stream (name, rate, channel
count), never fields from a recording's header (patient name, id, birth date...).
``details`` keys that look like identifiers are refused (:data:`IDENTIFIER_KEYS`).

The log is thread-safe: the decoder thread logs alarms while the GUI thread logs
acknowledgements; one lock orders the writes and ids increase in commit order.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

from bci.errors import DataError

SCHEMA_VERSION = 1
#: Event kinds the dashboard writes.
KINDS = (
    "session_start", "session_end", "stream_connected", "stream_lost", "stream_regained",
    "model_loaded", "model_error", "alarm", "ack", "note", "annotation",
)  # fmt: skip
#: ``details`` keys that would carry patient identifiers: never stored.
IDENTIFIER_KEYS = {
    "subject_info", "patient", "patient_id", "patient_name", "his_id", "first_name", "last_name",
    "middle_name", "birthday", "birth_date", "dob", "sex", "hand", "meas_id", "experimenter",
}  # fmt: skip
CSV_COLUMNS = ("id", "wall_time", "stream_time_s", "kind", "alarm_id", "message", "details")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    wall_time TEXT NOT NULL,          -- ISO 8601, UTC
    stream_time_s REAL,               -- seconds since the stream started, when known
    kind TEXT NOT NULL,
    alarm_id INTEGER REFERENCES events(id),   -- for ack / note: the alarm they refer to
    message TEXT NOT NULL DEFAULT '',
    details TEXT NOT NULL DEFAULT '{}'        -- JSON
);
CREATE INDEX IF NOT EXISTS events_kind ON events(kind);
CREATE INDEX IF NOT EXISTS events_alarm ON events(alarm_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass
class Event:
    """One row of the log."""

    id: int
    wall_time: str
    stream_time_s: float | None
    kind: str
    alarm_id: int | None
    message: str
    details: dict = field(default_factory=dict)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _check_details(details: dict | None) -> str:
    details = dict(details or {})
    bad = sorted(k for k in details if str(k).lower() in IDENTIFIER_KEYS)
    if bad:
        raise ValueError(f"event details must not carry patient identifiers: {', '.join(bad)}")
    return json.dumps(details, sort_keys=True, default=float)


class EventLog:
    """An append-only, crash-safe event log in one SQLite file.

    Parameters
    ----------
    path : str | Path
        The database file (created with its folder when missing).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise DataError(f"{self.path}: event log schema version {row[0]}, expected {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path}: cannot open as an SQLite event log ({exc})") from None
        if str(mode).lower() != "wal":
            raise DataError(f"{self.path}: SQLite refused write-ahead-log mode (journal mode {mode!r})")
        self._conn = conn
        self._lock = threading.Lock()

    # --- writing ------------------------------------------------------------------
    def log(
        self,
        kind: str,
        message: str = "",
        *,
        stream_time_s: float | None = None,
        alarm_id: int | None = None,
        details: dict | None = None,
    ) -> int:
        """Append one event and commit it; returns its id."""
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}; expected one of {', '.join(KINDS)}")
        payload = _check_details(details)
        t = None if stream_time_s is None else float(stream_time_s)
        with self._lock:
            if self._conn is None:
                raise DataError(f"{self.path}: event log is closed")
            cur = self._conn.execute(
                "INSERT INTO events (wall_time, stream_time_s, kind, alarm_id, message, details) VALUES (?, ?, ?, ?, ?, ?)",
                (_now(), t, kind, alarm_id, str(message), payload),
            )
            return int(cur.lastrowid)

    def acknowledge(self, alarm_id: int, note: str = "", *, stream_time_s: float | None = None) -> int:
        """Record the acknowledgement of alarm ``alarm_id`` (with an optional note)."""
        alarm = self.get(alarm_id)
        if alarm is None or alarm.kind != "alarm":
            raise DataError(f"no alarm with id {alarm_id} in {self.path}")
        note = (note or "").strip()
        return self.log("ack", note, stream_time_s=stream_time_s, alarm_id=alarm_id)

    def note(self, text: str, *, stream_time_s: float | None = None, alarm_id: int | None = None) -> int:
        """A free-text clinical note (optionally attached to an alarm)."""
        return self.log("note", (text or "").strip(), stream_time_s=stream_time_s, alarm_id=alarm_id)

    # --- reading ------------------------------------------------------------------
    def _rows(self, sql: str, args=()) -> list[Event]:
        with self._lock:
            if self._conn is None:
                raise DataError(f"{self.path}: event log is closed")
            rows = self._conn.execute(sql, args).fetchall()
        return [Event(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6] or "{}")) for r in rows]

    def events(self, kind: str | None = None, *, after_id: int = 0, limit: int | None = None) -> list[Event]:
        """Events in commit order (optionally one kind, after an id, the last ``limit``)."""
        where, args = ["id > ?"], [int(after_id)]
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        sql = f"SELECT * FROM events WHERE {' AND '.join(where)}"
        if limit is None:
            return self._rows(sql + " ORDER BY id", args)
        return self._rows(f"SELECT * FROM ({sql} ORDER BY id DESC LIMIT ?) ORDER BY id", [*args, int(limit)])

    def get(self, event_id: int) -> Event | None:
        rows = self._rows("SELECT * FROM events WHERE id = ?", (int(event_id),))
        return rows[0] if rows else None

    def unacknowledged_alarms(self) -> list[Event]:
        """Alarms with no acknowledgement yet, oldest first."""
        return self._rows(
            "SELECT * FROM events e WHERE kind = 'alarm' AND NOT EXISTS "
            "(SELECT 1 FROM events a WHERE a.kind = 'ack' AND a.alarm_id = e.id) ORDER BY id"
        )

    def export_csv(self, path: str | Path) -> Path:
        """Write every event to a CSV file (columns :data:`CSV_COLUMNS`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(CSV_COLUMNS)
            for e in self.events():
                writer.writerow(
                    [e.id, e.wall_time, "" if e.stream_time_s is None else f"{e.stream_time_s:.3f}", e.kind,
                     "" if e.alarm_id is None else e.alarm_id, e.message, json.dumps(e.details, sort_keys=True)]
                )  # fmt: skip
        return path

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
