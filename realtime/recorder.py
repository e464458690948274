"""Record a live LSL stream (+ a marker stream) to one MNE-readable FIF file (``bci record``).

What is saved
-------------
- The signal of one LSL stream, in volts (the stream's ``desc/channels/channel`` labels,
  types and units, read by :func:`realtime.inlet.stream_channels`; a stream without
  labels is saved as ``ch1..chN`` and the recorder says so). The file's rate is the
  stream's nominal rate; nothing is resampled.
- Markers of an optional string (or numeric) marker stream, as annotations. A marker is
  placed on the signal sample whose LSL timestamp is nearest to its own, both clocks
  mapped to ours with :meth:`pylsl.StreamInlet.time_correction`; so a marker is aligned
  however late it arrives.
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
is not incremental.) The recorder therefore writes **segments**: every ``flush_s``
seconds (default 2) the samples received since the last flush go to
``OUT.parts/part-NNNNN_raw.fif``, a complete FIF file written under a temporary name
and renamed (atomic), with their timestamps in ``part-NNNNN_ts.npy``; markers and
stream events are appended to ``markers.tsv`` / ``events.tsv`` and fsync'ed at once.
A killed recorder thus loses at most the last ``flush_s`` seconds; every part is itself
a readable FIF file, and :func:`recover` (``bci record --recover OUT``) builds ``OUT``
from them. At a normal end (``--seconds`` reached, Ctrl-C, ``stop()``) the parts are
concatenated lazily (MNE reads and writes buffer by buffer, so memory stays flat and
files over 2 GB are split by MNE), the annotations are computed from all markers and
timestamps, ``OUT`` is written under a temporary name, renamed, and the parts removed.

Bad input is refused before anything is recorded: an output that is not ``.fif``, a
missing or unwritable folder, an existing output (never overwritten), an interrupted
recording's parts folder, or too little free disk space.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pylsl

from bci.channels import ChannelSet
from bci.errors import DataError, StreamError

from .inlet import UNIT_SCALE, Inlet, ReconnectingInlet, StreamLost, resolve

log = logging.getLogger(__name__)

FORMAT = "bci-record-parts/1"
#: Channel types whose values are voltages (the inlet's unit scaling applies).
VOLTAGE_TYPES = {"eeg", "seeg", "ecog", "eog", "emg", "ecg"}
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

    Knows nothing about LSL; :class:`Recorder` feeds it volts and timestamps.
    """

    def __init__(self, out: str | Path, channels: ChannelSet, sfreq: float, header: dict | None = None):
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
            # the wall-clock time of LSL time 0 (our clock), for the file's meas_date
            "lsl_epoch_utc": (_dt.datetime.now(_dt.timezone.utc).timestamp() - pylsl.local_clock()),
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
        import mne

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
        self._markers.write(f"{timestamp!r}\t{text}\n")
        self._markers.flush()
        os.fsync(self._markers.fileno())
        self.n_markers += 1

    def add_event(self, timestamp: float, kind: str, sample: int, detail: str = "") -> None:
        """Stream events (``stream_lost``/``stream_back``, ``markers_lost``/``markers_back``)
        at our clock's ``timestamp``, when ``sample`` samples had been received."""
        self._events.write(f"{timestamp!r}\t{kind}\t{int(sample)}\t{detail}\n")
        self._events.flush()
        os.fsync(self._events.fileno())

    def close(self) -> None:
        for fh in (self._markers, self._events):
            if not fh.closed:
                fh.close()


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

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
    import mne

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


# ------------------------------------------------------------------ recording
class _MarkerInlet(ReconnectingInlet):
    """A string (or numeric) marker stream pulled without blocking, with loss and return."""

    def __init__(self, name: str, timeout: float, source_id: str | None = None):
        self.name = name
        self.source_id = source_id
        self.timeout = float(timeout)

    def open(self) -> _MarkerInlet:
        info = resolve(name=self.name, source_id=self.source_id, timeout=self.timeout)
        if info.nominal_srate() != pylsl.IRREGULAR_RATE and info.channel_format() != pylsl.cf_string:
            log.warning("marker stream %r has a regular rate (%g Hz); every sample is taken as a marker",
                        self.name, info.nominal_srate())
        self._connect(info)
        return self

    def _connect(self, info) -> None:
        inlet = pylsl.StreamInlet(info, max_buflen=360, recover=False)
        try:
            inlet.open_stream(timeout=self.timeout)
            self.offset = float(inlet.time_correction(timeout=self.timeout))
        except pylsl.util.TimeoutError:
            raise StreamError(f"marker stream {self.name!r} was found but did not answer within {self.timeout:g} s") from None
        self.inlet, self.uid = inlet, info.uid()
        self.string = info.channel_format() == pylsl.cf_string
        self._last_tc = pylsl.local_clock()

    def pull(self) -> list[tuple[float, str]]:
        """Markers available now as ``(timestamp on our clock, text)``; raises :class:`StreamLost`."""
        if self.inlet is None:
            return []
        try:
            samples, ts = self.inlet.pull_chunk(timeout=0.0)
        except pylsl.util.LostError:
            self.inlet = None
            raise StreamLost(f"marker stream {self.name!r} lost") from None
        now = pylsl.local_clock()
        if now - self._last_tc > 5.0:
            try:
                self.offset = float(self.inlet.time_correction(timeout=0.0))
            except (pylsl.util.TimeoutError, pylsl.util.LostError):
                pass
            self._last_tc = now
        out = []
        for sample, t in zip(samples, ts):
            value = sample[0] if len(sample) == 1 else "/".join(str(v) for v in sample)
            if not self.string and isinstance(value, float) and float(value).is_integer():
                value = int(value)
            out.append((float(t) + self.offset, str(value)))
        return out


class Recorder:
    """Record LSL stream ``source`` (+ marker stream ``markers``) to ``out`` (FIF).

    Parameters
    ----------
    source : str
        Name of the signal stream.
    out : path
        Output file (``.fif``); checked at construction (see :func:`check_output`).
    markers : str, "auto" or None
        Name of the marker stream. ``"auto"`` records ``<source>-markers`` when such a
        stream is visible (``bci replay``'s convention); None records no markers.
    markers_source_id : str, optional
        Also match the marker stream's source id (when several share a name).
    seconds : float, optional
        Stop after this many seconds of signal (exactly ``round(seconds * sfreq)`` samples).
    flush_s : float
        Wall-clock seconds between segment writes: what a crash can lose at most.
    timeout : float
        Seconds to wait for each stream at :meth:`open`.
    poll_s : float
        Sleep between polls when nothing arrived.
    need_bytes : int, optional
        Free disk space required at the start (default :func:`estimate_bytes`).

    Use :meth:`run` (blocking, Ctrl-C safe) or :meth:`start` / :meth:`stop` (thread).
    """

    def __init__(self, source: str, out: str | Path, *, markers: str | None = None, markers_source_id: str | None = None,
                 seconds: float | None = None,
                 flush_s: float = 2.0, timeout: float = 5.0, poll_s: float = 0.01, need_bytes: int | None = None,
                 gap_factor: float = 5.0, min_gap_s: float = 0.05):
        if not source:
            raise StreamError("bci record needs the name of the signal stream (--source NAME)")
        if seconds is not None and (not np.isfinite(seconds) or seconds <= 0):
            raise DataError(f"--seconds: expected a positive duration, found {seconds}")
        if flush_s <= 0:
            raise DataError(f"flush interval must be positive, found {flush_s}")
        self.source, self.markers_name, self.markers_source_id = source, markers, markers_source_id
        self.seconds = seconds
        self.flush_s, self.timeout, self.poll_s = float(flush_s), float(timeout), float(poll_s)
        self.gap_factor, self.min_gap_s = float(gap_factor), float(min_gap_s)
        self.out = check_output(out)  # unwritable / existing: fail before touching any stream
        self.need_bytes = need_bytes
        self.inlet: Inlet | None = None
        self.marker_inlet: _MarkerInlet | None = None
        self.writer: SegmentWriter | None = None
        self.n_samples = 0
        self.summary: RecordingSummary | None = None
        self.ready = threading.Event()  # both streams open, writing
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stream_lost = False
        self.markers_lost = False

    # ------------------------------------------------------------ opening
    def open(self) -> Recorder:
        """Resolve and open the streams, check the disk, create the parts folder.

        The marker stream is opened first: a source that starts pushing when its first
        consumer connects (``bci replay``) then cannot send a marker before we listen.
        """
        info = resolve(name=self.source, timeout=self.timeout)  # fail fast, before the markers
        try:
            name = self.markers_name
            if name == "auto":
                name = f"{self.source}-markers"
                if not pylsl.resolve_byprop("name", name, minimum=1, timeout=min(1.0, self.timeout)):
                    log.info("no marker stream %r visible; recording the signal only", name)
                    name = None
            if name:
                self.marker_inlet = _MarkerInlet(name, self.timeout, self.markers_source_id).open()
            self.markers_name = name
            inlet = Inlet(name=self.source, source_id=info.source_id() or None, timeout=self.timeout,
                          buffer_s=max(30.0, 4 * self.flush_s))
            inlet.open()
            self.inlet = inlet
            described = inlet.described
            n = len(inlet.channels)
            need = self.need_bytes if self.need_bytes is not None else estimate_bytes(n, inlet.sfreq, self.seconds)
            check_output(self.out, need_bytes=need)
            self._correction = self._unit_correction(described)
            if not described.labelled:
                log.warning("stream %r has no channel labels; saving its %d channels as ch1..ch%d", self.source, n, n)
            info = inlet.info
            header = {
                "source": {"name": info.name(), "type": info.type(), "source_id": info.source_id(),
                           "channel_format": int(info.channel_format()), "units": described.units},
                "markers": name,
                "labelled": bool(described.labelled),
                "flush_s": self.flush_s,
            }  # fmt: skip
            self.writer = SegmentWriter(self.out, inlet.channels, inlet.sfreq, header)
        except BaseException:
            self.close_streams()
            raise
        self._target = None if self.seconds is None else int(round(self.seconds * inlet.sfreq))
        self._last_flush = time.monotonic()
        self.ready.set()
        return self

    @staticmethod
    def _unit_correction(described) -> np.ndarray | None:
        """Undo the inlet's volt scaling on channels that are not voltages (stim, misc).

        The inlet assumes microvolts for channels without a unit; a trigger channel's
        values must be kept as they are.
        """
        factor = np.ones(len(described.channels))
        for i, (kind, unit) in enumerate(zip(described.channels.types, described.units)):
            if kind not in VOLTAGE_TYPES:
                factor[i] = UNIT_SCALE.get(unit.lower(), 1.0) / described.scale[i]
        return None if np.allclose(factor, 1.0) else factor[:, None]

    # ------------------------------------------------------------ the loop
    @property
    def done(self) -> bool:
        return self._target is not None and self.n_samples >= self._target

    def poll(self) -> int:
        """One non-blocking iteration: pull signal and markers, flush when due. Returns samples."""
        got = self._pull_signal()
        self._pull_markers()
        if time.monotonic() - self._last_flush >= self.flush_s:
            self.flush()
        return got

    def _pull_signal(self) -> int:
        inlet, writer = self.inlet, self.writer
        if not inlet.connected:
            try:
                back = inlet.reconnect()
            except StreamError as exc:  # came back with other channels or rate: keep waiting
                if getattr(self, "_why", None) != str(exc):
                    self._why = str(exc)
                    log.warning("%s; not recording it", exc)
                return 0
            if back:
                self.stream_lost = False
                writer.add_event(pylsl.local_clock(), "stream_back", self.n_samples)
                log.warning("stream %r is back; the gap is marked %s", self.source, GAP)
            else:
                return 0
        try:
            start, stop = inlet.pull()
        except StreamLost:
            self.stream_lost = True
            writer.add_event(pylsl.local_clock(), "stream_lost", self.n_samples)
            log.warning("stream %r lost; recording continues when it comes back (gap marked, not filled)", self.source)
            return 0
        n = stop - start
        if n == 0:
            return 0
        held = len(inlet.buffer)
        if n > held:  # the loop stalled longer than the ring buffer: the oldest samples are gone
            log.warning("recorder fell behind: %d samples overwritten before they were saved (marked as a gap)", n - held)
            start = stop - held
            n = held
        if self._target is not None:
            n = min(n, self._target - self.n_samples)
            if n <= 0:
                return 0
            stop = start + n
        data = inlet.buffer.window(stop, n)
        if self._correction is not None:
            data *= self._correction
        writer.append(data, inlet.buffer.timestamps_between(start, stop))
        self.n_samples += n
        return n

    def _pull_markers(self) -> None:
        m = self.marker_inlet
        if m is None:
            return
        if m.inlet is None:
            if m.reconnect():
                self.markers_lost = False
                self.writer.add_event(pylsl.local_clock(), "markers_back", self.n_samples)
                log.warning("marker stream %r is back", m.name)
            return
        try:
            for t, text in m.pull():
                self.writer.add_marker(t, text)
        except StreamLost:
            self.markers_lost = True
            self.writer.add_event(pylsl.local_clock(), "markers_lost", self.n_samples)
            log.warning("marker stream %r lost; the signal is still recorded (span marked %s)", m.name, MARKERS_LOST)

    def flush(self) -> None:
        try:
            self.writer.flush()
        except OSError as exc:
            raise DataError(
                f"{self.out}: writing a segment failed ({exc.strerror or exc}); what was saved so far is in "
                f"{self.writer.parts} ('bci record --recover {self.out}')"
            ) from None
        self._last_flush = time.monotonic()

    def run(self, *, max_wall_s: float | None = None, on_progress=None) -> RecordingSummary:
        """Record until ``seconds`` of signal, :meth:`stop`, Ctrl-C or ``max_wall_s``; then finalize."""
        if self.writer is None:
            self.open()
        t0 = time.monotonic()
        interrupted = False
        try:
            while not self._stop.is_set() and not self.done:
                if max_wall_s is not None and time.monotonic() - t0 >= max_wall_s:
                    break
                got = self.poll()
                if on_progress is not None:
                    on_progress(self)
                if not got:
                    self._stop.wait(self.poll_s if self.inlet.connected else max(self.poll_s, 0.05))
        except KeyboardInterrupt:
            interrupted = True
        finally:
            self.summary = self._finish()
        if interrupted:
            log.info("recording stopped by Ctrl-C")
        return self.summary

    def _finish(self) -> RecordingSummary:
        """Last pull (markers that arrived meanwhile), flush and assemble the file."""
        try:
            if self.inlet is not None and self.inlet.connected and not self.done:
                self._pull_signal()
            self._pull_markers()
        except Exception as exc:  # noqa: BLE001 - the file must still be written
            log.warning("last pull failed: %s", exc)
        self.close_streams()
        if self.writer is None:
            raise StreamError("the recorder was never opened")
        try:
            self.writer.flush()
        except OSError as exc:
            log.error("last segment could not be written: %s", exc)
        self.writer.close()
        if not complete_parts(self.writer.parts):
            shutil.rmtree(self.writer.parts, ignore_errors=True)
            raise StreamError(f"no samples arrived from stream {self.source!r}; nothing was recorded")
        return assemble(self.writer.parts, self.out, gap_factor=self.gap_factor, min_gap_s=self.min_gap_s)

    def close_streams(self) -> None:
        if self.inlet is not None:
            self.inlet.close()
        if self.marker_inlet is not None:
            self.marker_inlet.close()

    # ------------------------------------------------------------ threads
    def _run_thread(self, max_wall_s) -> None:
        try:
            self.run(max_wall_s=max_wall_s)
        except BaseException as exc:  # noqa: BLE001 - surfaced by stop()/join()
            self.error = exc
            log.error("recorder failed: %s", exc)
        finally:
            self.ready.set()

    def start(self, *, max_wall_s: float | None = None) -> Recorder:
        """Open the streams here (so that errors raise here), then record from a thread."""
        self.open()
        self._thread = threading.Thread(target=self._run_thread, args=(max_wall_s,), name="bci-recorder", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 60.0) -> RecordingSummary:
        """Stop recording, wait (bounded) for the file; returns its summary."""
        self._stop.set()
        return self.join(timeout)

    def join(self, timeout: float = 60.0) -> RecordingSummary:
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise StreamError(f"the recorder did not finish writing {self.out} within {timeout:g} s")
        if self.error is not None:
            if isinstance(self.error, StreamError | DataError):
                raise self.error
            raise StreamError(f"recording failed: {self.error}") from self.error
        return self.summary


def main(args) -> int:
    """``bci record --source NAME --out FILE.fif [--markers NAME] [--seconds S] [--flush S]``
    and ``bci record --recover FILE.fif``."""
    from . import quiet_liblsl, stop_signals_interrupt

    quiet_liblsl()
    if args.recover:
        summary = recover(args.out)
        print(f"recovered {summary.describe()}", flush=True)
        return 0
    if not args.source:
        raise StreamError("bci record needs --source NAME (the signal stream to record), or --recover")
    recorder = Recorder(args.source, args.out, markers=args.markers or "auto", seconds=args.seconds,
                        flush_s=args.flush, timeout=args.timeout)
    stop_signals_interrupt()  # SIGTERM and Ctrl-C close the file alike
    recorder.open()
    inlet = recorder.inlet
    print(
        f"recording {inlet.describe()}"
        + (f" + markers {recorder.markers_name!r}" if recorder.markers_name else " (no marker stream)")
        + f" to {recorder.out}" + (f" for {args.seconds:g} s" if args.seconds else "; Ctrl-C to stop"),
        flush=True,
    )
    if not inlet.described.labelled:
        n = len(inlet.channels)
        print(f"note: the stream has no channel labels; its {n} channels are saved as ch1..ch{n}", flush=True)
    last = [time.monotonic()]

    def progress(rec: Recorder) -> None:
        now = time.monotonic()
        if now - last[0] >= 5.0:
            last[0] = now
            state = " (stream lost, waiting)" if rec.stream_lost else ""
            state += " (marker stream lost)" if rec.markers_lost else ""
            print(f"  {rec.n_samples / rec.inlet.sfreq:8.1f} s, {rec.writer.n_markers} markers{state}", flush=True)

    summary = recorder.run(on_progress=progress)
    print(f"wrote {summary.describe()}", flush=True)
    return 0
