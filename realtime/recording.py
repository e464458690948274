"""The file format of ``bci record``: crash-safe segments, their assembly into one FIF file, recovery.

No LSL here: :class:`realtime.recorder.Recorder` reads the streams and feeds a
:class:`SegmentWriter` volts, LSL timestamps (on our clock) and markers.

What is saved
-------------
- The signal of one stream, in volts, under its channel labels, types and units (an
  unlabelled stream is saved as ``ch1..chN``). The file's rate is the stream's nominal
  rate; nothing is resampled.
- Markers, as annotations: a marker is placed on the signal sample whose timestamp is
  nearest to its own, so a marker is aligned however late it arrived.
- Gaps, never filled in: a jump between consecutive sample timestamps larger than
  ``max(gap_factor / sfreq, min_gap_s)`` (the stream lost and back, samples dropped
  upstream) becomes a ``BAD_gap`` annotation two samples long across the junction, with
  the missing seconds in its ``extras``. A lost marker stream becomes
  ``BAD_markers_lost`` (from the loss until it comes back or the recording ends): the
  signal there is fine, but trials in it have no labels.

How it is written (crash safety)
--------------------------------
A FIF file holds its annotations *before* its data, and MNE can neither append to a
FIF file nor read one whose blocks are not closed, so one growing FIF file cannot be
crash-safe. (MNE's split writing only cuts a file written in one go at the end; it
is not incremental.) A recording is therefore written as **segments**: on every
:meth:`SegmentWriter.flush` the samples received since the last one go to
``OUT.parts/part-NNNNN_raw.fif``, a complete FIF file written under a temporary name
and renamed (atomic), with their timestamps in ``part-NNNNN_ts.npy``; markers and
stream events are appended to ``markers.tsv`` / ``events.tsv`` and fsync'ed at once.
A killed recorder thus loses at most what arrived since its last flush; every part is
itself a readable FIF file, and :func:`recover` (``bci record --recover OUT``) builds
``OUT`` from them. :func:`assemble` concatenates the parts lazily (MNE reads and writes
buffer by buffer, so memory stays flat and files over 2 GB are split by MNE), computes
the annotations from all markers and timestamps, writes ``OUT`` and removes the parts.

Bad output is refused before anything is recorded (:func:`check_output`): a name that is
not ``.fif``, a missing or unwritable folder, an existing output (never overwritten), an
interrupted recording's parts folder, or too little free disk space.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import mne
import numpy as np

from bci.channels import ChannelSet
from bci.errors import DataError

log = logging.getLogger(__name__)

FORMAT = "bci-record-parts/1"
GAP = "BAD_gap"
MARKERS_LOST = "BAD_markers_lost"
ASSEMBLING = "ASSEMBLING"


def parts_dir(out: str | Path) -> Path:
    """The folder holding the segments of a recording in progress (``OUT.parts``)."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def check_output(out: str | Path, *, need_bytes: int = 0) -> Path:
    """Validate where a recording goes, before anything is recorded; returns the path.

    Raises :class:`~bci.errors.DataError` with what was expected and found: the name must
    end in ``.fif``; its folder must exist and be writable (a probe file is created and
    removed); the file must not exist; no interrupted recording's parts may be there; and
    the disk must have ``need_bytes`` free (twice the signal: parts + final file).
    """
    out = Path(out)
    if not out.name.lower().endswith(".fif"):
        raise DataError(f"{out}: the recording is written as FIF; expected a file name ending in .fif")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.exists():
        raise DataError(f"{out}: folder {folder} does not exist")
    if not folder.is_dir():
        raise DataError(f"{out}: {folder} is not a folder")
    if out.exists():
        raise DataError(f"{out} already exists; recordings are never overwritten (remove it or choose another name)")
    parts = parts_dir(out)
    if parts.exists():
        raise DataError(
            f"{parts} holds an interrupted recording; finish it with 'bci record --recover {out}' (or remove the folder)"
        )
    probe = folder / f".{out.name}.probe-{os.getpid()}"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"\0" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise DataError(f"{out}: cannot write in {folder} ({exc.strerror or exc})") from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise DataError(
            f"{out}: not enough free disk space in {folder}: {free / 1e6:.0f} MB free, "
            f"the recording needs about {need_bytes / 1e6:.0f} MB"
        )
    return out


def estimate_bytes(n_channels: int, sfreq: float, seconds: float | None, *, default_s: float = 600.0) -> int:
    """Disk space a recording needs: float32 samples twice (parts + final file) + 5 MB.

    Without a duration, ``default_s`` (10 minutes) is assumed: a session that runs
    longer fails cleanly (the parts are kept) when the disk fills.
    """
    s = float(seconds) if seconds else float(default_s)
    return int(2 * n_channels * sfreq * s * 4) + 5_000_000


# --------------------------------------------------------------------- on disk
class SegmentWriter:
    """The on-disk side of a recording: segments, markers and events in ``OUT.parts``.

    Knows nothing about LSL; :class:`realtime.recorder.Recorder` feeds it volts and
    timestamps. ``epoch_utc`` is the wall-clock time (POSIX seconds) of timestamp 0 of
    the clock the timestamps are on: it gives the file its ``meas_date``. ``header``
    adds keys to ``header.json`` (the source stream's description).
    """

    def __init__(self, out: str | Path, channels: ChannelSet, sfreq: float, *, epoch_utc: float,
                 header: dict | None = None):
        self.out = Path(out)
        self.parts = parts_dir(self.out)
        self.channels = channels
        self.sfreq = float(sfreq)
        self.parts.mkdir()
        self.n_parts = 0
        self.n_samples = 0  # flushed to disk
        self.n_markers = 0
        self._pending: list[np.ndarray] = []
        self._pending_ts: list[np.ndarray] = []
        self._info = channels.to_info(self.sfreq)
        self.header = {
            "format": FORMAT,
            "file": self.out.name,
            "sfreq": self.sfreq,
            "channels": list(channels.names),
            "types": list(channels.types),
            "lsl_epoch_utc": float(epoch_utc),
            **(header or {}),
        }
        _write_atomic(self.parts / "header.json", json.dumps(self.header, indent=1).encode())
        self._markers = open(self.parts / "markers.tsv", "a", encoding="utf-8")
        self._events = open(self.parts / "events.tsv", "a", encoding="utf-8")

    @property
    def n_pending(self) -> int:
        return sum(x.shape[1] for x in self._pending)

    def append(self, data: np.ndarray, timestamps: np.ndarray) -> None:
        """Queue ``data`` ``(n_channels, n)`` volts with their ``n`` LSL timestamps."""
        if data.shape[1]:
            self._pending.append(np.array(data, dtype=np.float64, copy=True))
            self._pending_ts.append(np.array(timestamps, dtype=np.float64, copy=True))

    def flush(self) -> int:
        """Write the queued samples as the next segment; returns the samples written."""
        if not self._pending:
            return 0
        data = np.concatenate(self._pending, axis=1)
        ts = np.concatenate(self._pending_ts)
        stem = self.parts / f"part-{self.n_parts:05d}"
        # timestamps first: a part counts only once its FIF file exists
        _write_atomic(Path(f"{stem}_ts.npy"), _npy_bytes(ts))
        raw = mne.io.RawArray(data, self._info.copy(), first_samp=self.n_samples, verbose="error")
        tmp = Path(f"{stem}.tmp_raw.fif")
        raw.save(tmp, fmt="single", overwrite=True, verbose="error")
        _fsync_file(tmp)
        os.replace(tmp, Path(f"{stem}_raw.fif"))
        _fsync_dir(self.parts)
        self._pending.clear()
        self._pending_ts.clear()
        self.n_parts += 1
        self.n_samples += data.shape[1]
        return data.shape[1]

    def add_marker(self, timestamp: float, text: str) -> None:
        text = str(text).replace("\t", " ").replace("\n", " ").strip()
        self._markers.write(f"{float(timestamp)!r}\t{text}\n")  # repr: every digit; float: not "np.float64(...)"
        self._markers.flush()
        os.fsync(self._markers.fileno())
        self.n_markers += 1

    def add_event(self, timestamp: float, kind: str, sample: int, detail: str = "") -> None:
        """Stream events (``stream_lost``/``stream_back``, ``markers_lost``/``markers_back``)
        at our clock's ``timestamp``, when ``sample`` samples had been received."""
        self._events.write(f"{float(timestamp)!r}\t{kind}\t{int(sample)}\t{detail}\n")
        self._events.flush()
        os.fsync(self._events.fileno())

    def close(self) -> None:
        for fh in (self._markers, self._events):
            if not fh.closed:
                fh.close()


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _write_atomic(path: Path, payload: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


# ------------------------------------------------------------------ assembling
@dataclass
class RecordingSummary:
    """What a finished recording holds."""

    path: str
    n_channels: int
    sfreq: float
    n_samples: int
    seconds: float
    n_parts: int
    markers: dict = field(default_factory=dict)  # description -> count (placed on the signal)
    dropped_markers: int = 0  # before the first or after the last sample
    gaps: list = field(default_factory=list)  # (onset s in the file, missing s)
    markers_lost: list = field(default_factory=list)  # (onset s, duration s)
    labelled: bool = True
    recovered: bool = False

    def describe(self) -> str:
        text = (
            f"{self.path}: {self.n_channels} ch @ {self.sfreq:g} Hz, {self.seconds:.2f} s ({self.n_samples} samples"
            f" in {self.n_parts} segment{'s' if self.n_parts != 1 else ''})"
        )
        if self.markers:
            text += "; markers " + ", ".join(f"{k} x{v}" for k, v in sorted(self.markers.items()))
        else:
            text += "; no markers"
        if self.dropped_markers:
            text += f" ({self.dropped_markers} outside the signal, dropped)"
        if self.gaps:
            text += f"; {len(self.gaps)} gap(s) marked {GAP} ({sum(g[1] for g in self.gaps):.2f} s missing, not filled)"
        if self.markers_lost:
            text += f"; marker stream lost {len(self.markers_lost)} time(s) ({MARKERS_LOST})"
        if not self.labelled:
            text += "; the stream had no channel labels: channels saved as ch1..chN"
        return text


def _read_tsv(path: Path, n_fields: int) -> list[list[str]]:
    """Rows of a markers/events file; a torn last line (killed mid-write) is ignored."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        cells = line.split("\t")
        if len(cells) < n_fields:
            continue
        try:
            float(cells[0])
        except ValueError:
            continue
        rows.append(cells)
    return rows


def complete_parts(parts: Path) -> list[tuple[Path, Path]]:
    """``(fif, timestamps)`` of every segment written completely, in order."""
    out = []
    for fif in sorted(parts.glob("part-[0-9][0-9][0-9][0-9][0-9]_raw.fif")):
        ts = fif.with_name(fif.name.replace("_raw.fif", "_ts.npy"))
        if ts.exists():
            out.append((fif, ts))
    return out


def assemble(parts: str | Path, out: str | Path, *, gap_factor: float = 5.0, min_gap_s: float = 0.05,
             keep_parts: bool = False, recovered: bool = False) -> RecordingSummary:
    """Concatenate the segments in ``parts`` into ``out`` with markers and gaps as annotations."""
    parts, out = Path(parts), Path(out)
    header_path = parts / "header.json"
    if not header_path.exists():
        raise DataError(f"{parts}: not a recording's parts folder (no header.json)")
    header = json.loads(header_path.read_text())
    if header.get("format") != FORMAT:
        raise DataError(f"{parts}: unknown parts format {header.get('format')!r}, expected {FORMAT!r}")
    found = complete_parts(parts)
    if not found:
        raise DataError(f"{parts}: no complete segment was written (the recording stopped before its first flush)")
    if out.exists():
        raise DataError(f"{out} already exists; recordings are never overwritten")
    sfreq = float(header["sfreq"])
    raws, stamps = [], []
    for fif, ts_path in found:
        raw = mne.io.read_raw_fif(fif, preload=False, verbose="error")
        ts = np.load(ts_path, allow_pickle=False)
        if len(ts) != raw.n_times:
            raise DataError(f"{fif.name}: {raw.n_times} samples but {len(ts)} timestamps")
        raws.append(raw)
        stamps.append(ts)
    ts = np.concatenate(stamps)
    raw = mne.concatenate_raws(raws, verbose="error") if len(raws) > 1 else raws[0]
    n = raw.n_times
    onsets, durations, descriptions, extras = [], [], [], []

    # gaps: timestamp jumps (never filled)
    limit = max(gap_factor / sfreq, min_gap_s)
    jumps = np.diff(ts)
    gaps = []
    for i in np.flatnonzero(jumps > limit) + 1:  # i: first sample after the gap
        missing = float(jumps[i - 1] - 1.0 / sfreq)
        onsets.append((i - 1) / sfreq)
        durations.append(2.0 / sfreq)
        descriptions.append(GAP)
        extras.append({"missing_s": round(missing, 6)})
        gaps.append((round((i - 1) / sfreq, 6), round(missing, 6)))

    # markers: nearest sample by timestamp
    counts: dict[str, int] = {}
    dropped = 0
    half = 0.5 / sfreq + 1e-9
    order = np.argsort(ts, kind="stable")  # timestamps may not be monotonic by a hair
    sorted_ts = ts[order]
    for cells in _read_tsv(parts / "markers.tsv", 2):
        t, text = float(cells[0]), cells[1]
        if t < sorted_ts[0] - half or t > sorted_ts[-1] + half:
            dropped += 1
            log.warning("marker %r at %.3f lies outside the recorded signal; dropped", text, t)
            continue
        j = int(np.searchsorted(sorted_ts, t))
        if j == len(sorted_ts) or (j > 0 and t - sorted_ts[j - 1] <= sorted_ts[j] - t):
            j -= 1
        k = int(order[j])
        onsets.append(k / sfreq)
        durations.append(0.0)
        descriptions.append(text)
        extras.append({})
        counts[text] = counts.get(text, 0) + 1

    # marker stream losses: from the sample received last before the loss to the one
    # received when it came back (or the end); sample counts, not clocks, so that a
    # source whose timestamps lag ours still gets the right span
    lost_spans = []
    lost_at = None
    for cells in _read_tsv(parts / "events.tsv", 3):
        kind, sample = cells[1], int(cells[2])
        if kind == "markers_lost" and lost_at is None:
            lost_at = sample
        elif kind == "markers_back" and lost_at is not None:
            lost_spans.append((lost_at, sample))
            lost_at = None
    if lost_at is not None:
        lost_spans.append((lost_at, n))
    markers_lost = []
    for a, b in lost_spans:
        ia = int(np.clip(a, 0, n - 1))
        ib = int(np.clip(b, ia + 1, n))
        onsets.append(ia / sfreq)
        durations.append((ib - ia) / sfreq)
        descriptions.append(MARKERS_LOST)
        extras.append({})
        markers_lost.append((round(ia / sfreq, 6), round((ib - ia) / sfreq, 6)))

    order_ann = np.argsort(onsets, kind="stable") if onsets else []
    ann = mne.Annotations(
        [onsets[i] for i in order_ann], [durations[i] for i in order_ann], [descriptions[i] for i in order_ann],
        extras=[extras[i] for i in order_ann] or None,
    )
    # concatenate_raws marks every junction "BAD boundary"/"EDGE boundary": our segments
    # are contiguous by construction, real discontinuities are the BAD_gap annotations
    raw.set_annotations(None)
    raw.set_annotations(ann)
    epoch = header.get("lsl_epoch_utc")
    if epoch is not None:
        raw.set_meas_date(_dt.datetime.fromtimestamp(float(epoch) + float(ts[0]), _dt.timezone.utc))
    source = header.get("source", {})
    raw.info["description"] = (
        f"bci record: LSL stream {source.get('name', '?')!r} ({source.get('type', '?')}), "
        f"markers {header.get('markers') or 'none'}"
    )
    # Written in place (MNE's split files > 2 GB name each other, so no rename); a marker
    # in the parts folder says that an ``out`` found next to it is an unfinished assembly.
    flag = parts / ASSEMBLING
    flag.write_text(str(out))
    try:
        raw.save(out, fmt="single", overwrite=False, verbose="error")
    except OSError as exc:
        _remove_output(out)
        raise DataError(f"{out}: could not write the recording ({exc.strerror or exc}); the parts are kept in {parts}") from None
    except BaseException:
        _remove_output(out)
        raise
    for written in _output_files(out):
        _fsync_file(written)
    if not keep_parts:
        shutil.rmtree(parts, ignore_errors=True)
    return RecordingSummary(
        path=str(out), n_channels=len(raw.ch_names), sfreq=sfreq, n_samples=n, seconds=n / sfreq,
        n_parts=len(found), markers=counts, dropped_markers=dropped, gaps=gaps, markers_lost=markers_lost,
        labelled=bool(header.get("labelled", True)), recovered=recovered,
    )  # fmt: skip


def _output_files(out: Path) -> list[Path]:
    """``out`` and the split files MNE adds beyond 2 GB (``name-1.fif``, ...)."""
    return [p for p in [out, *sorted(out.parent.glob(f"{out.stem}-[0-9]*.fif"))] if p.exists()]


def _remove_output(out: Path) -> None:
    for path in _output_files(out):
        _unlink_quietly(path)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def recover(out: str | Path, **kwargs) -> RecordingSummary:
    """Build ``out`` from the parts an interrupted (killed, crashed) recording left."""
    out = Path(out)
    parts = parts_dir(out)
    if not parts.is_dir():
        raise DataError(f"{out}: nothing to recover ({parts} does not exist)")
    for tmp in parts.glob("*.tmp*"):
        _unlink_quietly(tmp)  # a segment that was being written when the recorder died
    if (parts / ASSEMBLING).exists() and out.exists():
        log.warning("%s: removing an unfinished assembly (the recorder died while writing it)", out)
        _remove_output(out)
    return assemble(parts, out, recovered=True, **kwargs)
