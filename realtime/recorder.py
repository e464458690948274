"""Record a live LSL stream (+ a marker stream) to one MNE-readable FIF file (``bci record``).

The LSL side of a recording: :class:`Recorder` opens the signal stream (channel labels,
types and units read by :func:`realtime.inlet.stream_channels`; a stream without labels
is saved as ``ch1..chN`` and the recorder says so) and an optional marker stream
(:class:`realtime.markers.MarkerInlet`), and feeds what arrives to a
:class:`realtime.recording.SegmentWriter`, which owns the file format, its crash safety
and the assembly (gaps as ``BAD_gap``, a lost marker stream as ``BAD_markers_lost``).

Markers are aligned to the signal by timestamp: both clocks are mapped to ours with
:meth:`pylsl.StreamInlet.time_correction`, so a marker is placed however late it
arrives. Every ``flush_s`` seconds (default 2) the samples received go to disk as one
segment: a killed recorder loses at most the last ``flush_s`` seconds. At a normal end
(``seconds`` reached, Ctrl-C, :meth:`Recorder.stop`) the segments are assembled into
``OUT``. :func:`record` is ``bci record``: open, report, record until the end.

Bad input is refused before any stream is looked for: the output is checked by
:func:`realtime.recording.check_output` at construction, the disk space once the
stream's size is known.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pylsl

from bci.errors import DataError, StreamError

from .inlet import UNIT_SCALE, Inlet, StreamLost, resolve
from .markers import MarkerInlet
from .recording import (
    GAP,
    MARKERS_LOST,
    RecordingSummary,
    SegmentWriter,
    assemble,
    check_output,
    complete_parts,
    estimate_bytes,
)

log = logging.getLogger(__name__)

#: Channel types whose values are voltages (the inlet's unit scaling applies).
VOLTAGE_TYPES = {"eeg", "seeg", "ecog", "eog", "emg", "ecg"}
#: Seconds between the progress lines of :func:`record`.
STATUS_EVERY_S = 5.0


class Recorder:
    """Record LSL stream ``source`` (+ marker stream ``markers``) to ``out`` (FIF).

    Parameters
    ----------
    source : str
        Name of the signal stream.
    out : path
        Output file (``.fif``); checked at construction (see :func:`realtime.recording.check_output`).
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
        self.marker_inlet: MarkerInlet | None = None
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
                self.marker_inlet = MarkerInlet(name, self.timeout, self.markers_source_id).open()
            self.markers_name = name
            inlet = Inlet(name=self.source, source_id=info.source_id() or None, timeout=self.timeout,
                          buffer_s=max(30.0, 4 * self.flush_s))
            inlet.open()
            self.inlet = inlet
            if self.marker_inlet is not None:
                self.marker_inlet.share_clock(inlet)  # used while both come from one host
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
            # the wall-clock time of LSL time 0 (our clock), for the file's meas_date
            epoch = time.time() - pylsl.local_clock()
            self.writer = SegmentWriter(self.out, inlet.channels, inlet.sfreq, epoch_utc=epoch, header=header)
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

    # ------------------------------------------------------------ reporting
    def describe(self) -> str:
        """What is recorded and where, once open: ``recording <stream> + markers 'NAME' to OUT for S s``."""
        markers = f" + markers {self.markers_name!r}" if self.markers_name else " (no marker stream)"
        until = f" for {self.seconds:g} s" if self.seconds else "; Ctrl-C to stop"
        return f"recording {self.inlet.describe()}{markers} to {self.out}{until}"

    def progress(self) -> str:
        """Seconds of signal and markers so far, and any stream that is lost."""
        state = " (stream lost, waiting)" if self.stream_lost else ""
        state += " (marker stream lost)" if self.markers_lost else ""
        return f"  {self.n_samples / self.inlet.sfreq:8.1f} s, {self.writer.n_markers} markers{state}"


def record(source: str, out: str | Path, *, markers: str | None = "auto", seconds: float | None = None,
           flush_s: float = 2.0, timeout: float = 5.0, on_status: Callable[[str], None] | None = None) -> RecordingSummary:
    """Record ``source`` (+ ``markers``, see :class:`Recorder`) to ``out`` until ``seconds`` of signal or Ctrl-C.

    Runs in the calling thread; a KeyboardInterrupt (Ctrl-C, or SIGTERM after
    :func:`realtime.stop_signals_interrupt`) ends the recording and the file is still
    written. ``on_status(line)`` receives :meth:`Recorder.describe` once the streams are
    open (and a note when the stream has no channel labels), then :meth:`Recorder.progress`
    every :data:`STATUS_EVERY_S` seconds. Returns the finished file's summary.
    """
    say = on_status or (lambda line: None)
    recorder = Recorder(source, out, markers=markers, seconds=seconds, flush_s=flush_s, timeout=timeout).open()
    say(recorder.describe())
    if not recorder.inlet.described.labelled:
        n = len(recorder.inlet.channels)
        say(f"note: the stream has no channel labels; its {n} channels are saved as ch1..ch{n}")
    last = time.monotonic()

    def progress(rec: Recorder) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= STATUS_EVERY_S:
            last = now
            say(rec.progress())

    return recorder.run(on_progress=progress)
