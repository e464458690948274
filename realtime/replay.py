"""Play a recording as a live LSL stream (``bci replay FILE``).

Any file :func:`bci.io.load_recording` reads (EDF/BDF/GDF, FIF, EEGLAB, BrainVision,
Bonn ``.txt``, a Malow folder) becomes a signal outlet that looks like an amplifier:

- meta-data in the LSL/XDF convention: ``desc/channels/channel`` with ``label``, ``type``
  and ``unit`` (``microvolts``; samples are float32 microvolts, as most amplifiers send),
  ``desc/acquisition`` naming the replay; nominal rate = the file's rate;
- samples are pushed in small chunks when they are due (``speed`` times real time), and
  each chunk is stamped at the moment it is pushed: its last sample gets
  :func:`pylsl.local_clock` at the push, earlier ones lie ``1 / (sfreq * speed)`` apart
  before it, so no timestamp is ever ahead of the clock;
- the recording's annotations go out on a second, irregular-rate string outlet
  (``<name>-markers``, type ``Markers``) right after the chunk holding their onset, with
  that sample's timestamp;
- ``loop=True`` starts again at the end (timestamps keep increasing).

:class:`Replay` runs in a background thread (``with Replay(path) as r: ...``) for tests and
the dashboard; ``bci replay`` (:func:`bci.cli.cmd_replay`) is the command line.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pylsl

from bci.errors import DataError, StreamError
from bci.io import Recording, load_recording

log = logging.getLogger(__name__)

#: MNE channel type -> the LSL/XDF channel type spelling.
LSL_TYPES = {"eeg": "EEG", "seeg": "SEEG", "ecog": "ECOG", "eog": "EOG", "emg": "EMG", "ecg": "ECG", "stim": "STIM", "misc": "MISC"}


def _stream_name(recording: Recording, path) -> str:
    if path is not None:
        p = Path(path)
        return p.name if p.is_dir() else p.stem
    return "bci-replay"


def make_stream_info(recording: Recording, name: str, source_id: str, stype: str = "EEG") -> pylsl.StreamInfo:
    """Signal stream description: rate, float32 channels with label/type/unit meta-data."""
    info = pylsl.StreamInfo(name, stype, len(recording.channels), recording.sfreq, pylsl.cf_float32, source_id)
    channels = info.desc().append_child("channels")
    for label, kind in zip(recording.channels.names, recording.channels.types):
        ch = channels.append_child("channel")
        ch.append_child_value("label", label)
        ch.append_child_value("type", LSL_TYPES.get(kind, kind.upper()))
        ch.append_child_value("unit", "microvolts")
    acq = info.desc().append_child("acquisition")
    acq.append_child_value("manufacturer", "bci replay")
    acq.append_child_value("format", str(recording.provenance.get("format", "?")))
    return info


class Replay:
    """A recording pushed to LSL in real time (or ``speed`` times faster) from a thread.

    Parameters
    ----------
    source : path or :class:`~bci.io.Recording`
    name : str, optional
        Stream name (default: the file name without extension).
    speed : float
        Playback speed factor (1 = real time).
    loop : bool
        Start again at the end.
    chunk_s : float
        Wall-clock interval between pushes (samples due are pushed together).
    duration_s : float, optional
        Stop after this many seconds of signal (with ``loop``, a long replay of a short file).
    source_id : str, optional
        LSL source id (default ``bci-replay-<name>``).
    markers : bool
        Also publish the annotations on ``<name>-markers``.
    wait_for_consumer : float, optional
        Seconds to wait for a first inlet on the signal stream before pushing (so that it
        gets every sample); the replay starts anyway when they run out. A marker inlet
        that must get every marker subscribes before the signal inlet.

    Attributes
    ----------
    n_pushed : int
        Samples pushed so far. ``finished`` (an Event) is set at the end of the signal.
    """

    def __init__(self, source, name: str | None = None, *, speed: float = 1.0, loop: bool = False,
                 chunk_s: float = 0.01, duration_s: float | None = None, source_id: str | None = None,
                 markers: bool = True, stype: str = "EEG", wait_for_consumer: float | None = None):
        self.recording = source if isinstance(source, Recording) else load_recording(source)
        if not np.isfinite(speed) or speed <= 0:
            raise DataError(f"replay speed must be a positive factor, found {speed}")
        if chunk_s <= 0:
            raise DataError(f"chunk_s must be positive, found {chunk_s}")
        self.name = name or _stream_name(self.recording, None if isinstance(source, Recording) else source)
        self.speed = float(speed)
        self.loop = bool(loop)
        self.chunk_s = float(chunk_s)
        self.source_id = source_id or f"bci-replay-{self.name}"
        self.stype = stype
        self.wait_for_consumer = wait_for_consumer
        rec = self.recording
        total = rec.n_times if duration_s is None else int(round(duration_s * rec.sfreq))
        if not loop:
            total = min(total, rec.n_times)
        self.total = total if (duration_s is not None or not loop) else None  # None: forever
        # float32 microvolts, (n_times, n_channels), C-contiguous: pushed without conversion
        self._samples = np.ascontiguousarray((rec.data * 1e6).T, dtype=np.float32)
        ann = rec.annotations
        onsets = np.round(np.asarray(ann.onset, float) * rec.sfreq).astype(int)
        keep = (onsets >= 0) & (onsets < rec.n_times)
        order = np.argsort(onsets[keep], kind="stable")
        self._marker_idx = onsets[keep][order]
        self._marker_text = [str(d) for d in np.asarray(ann.description)[keep][order]]
        self.n_annotations = len(self._marker_idx)  # annotations inside the recording (sent as markers)
        self.with_markers = markers and self.n_annotations > 0
        self.n_pushed = 0
        self.n_markers = 0
        self.finished = threading.Event()
        self.started = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.outlet = self.marker_outlet = None

    # --------------------------------------------------------------- outlets
    def _open_outlets(self) -> None:
        info = make_stream_info(self.recording, self.name, self.source_id, self.stype)
        desc = info.desc().append_child("replay")
        desc.append_child_value("speed", f"{self.speed:g}")
        self.outlet = pylsl.StreamOutlet(info, chunk_size=0, max_buffered=60)
        if self.with_markers:
            minfo = pylsl.StreamInfo(f"{self.name}-markers", "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string,
                                     f"{self.source_id}-markers")
            self.marker_outlet = pylsl.StreamOutlet(minfo)

    def _close_outlets(self) -> None:
        self.outlet = self.marker_outlet = None  # liblsl closes them when released

    # ------------------------------------------------------------------ play
    def run(self) -> None:
        """Push the whole recording (blocking) until the end or :meth:`stop`."""
        rec = self.recording
        n_file = rec.n_times
        rate = rec.sfreq * self.speed
        dt = 1.0 / rate
        self._open_outlets()
        self.started.set()
        if self.wait_for_consumer:
            deadline = pylsl.local_clock() + self.wait_for_consumer
            while not self._stop.is_set() and pylsl.local_clock() < deadline:
                if self.outlet.have_consumers():
                    break
                self._stop.wait(0.005)
        t0 = pylsl.local_clock()
        pushed = 0  # samples of the stream (across loops)
        last_push = t0
        next_marker = 0
        try:
            while not self._stop.is_set():
                now = pylsl.local_clock()
                due = int((now - t0) * rate) + 1
                if self.total is not None:
                    due = min(due, self.total)
                if due > pushed:
                    # one chunk never crosses the end of the file (a loop restarts it)
                    pos = pushed % n_file
                    stop = min(pos + (due - pushed), n_file)
                    chunk = self._samples[pos:stop]
                    k = len(chunk)
                    stamp = pylsl.local_clock()
                    # explicit stamps: liblsl would space them by the nominal rate, not the replay's
                    self.outlet.push_chunk(chunk, (stamp - dt * np.arange(k - 1, -1, -1)).tolist())
                    last_push = stamp
                    pushed += k
                    self.n_pushed = pushed
                    if self.marker_outlet is not None:
                        while next_marker < len(self._marker_idx) and self._marker_idx[next_marker] < stop:
                            i = self._marker_idx[next_marker]
                            if i >= pos:
                                self.marker_outlet.push_sample([self._marker_text[next_marker]], stamp - (stop - 1 - i) * dt)
                                self.n_markers += 1
                            next_marker += 1
                        if stop == n_file:
                            next_marker = 0
                    if due > pushed:
                        continue  # more is due right now (end of file reached mid-chunk)
                if self.total is not None and pushed >= self.total:
                    break
                # next push: when the next sample is due, but not before chunk_s after the last push
                wait = max(t0 + pushed / rate, last_push + self.chunk_s) - pylsl.local_clock()
                if wait > 0:
                    self._stop.wait(wait)
        finally:
            self.finished.set()

    def _run_thread(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # noqa: BLE001 - reported by join()/stop()
            self.error = exc
            self.started.set()
            self.finished.set()

    def start(self, timeout: float = 5.0) -> "Replay":
        """Start pushing from a background thread; returns once the outlets exist."""
        if self._thread is not None:
            raise StreamError("this replay was already started")
        self._thread = threading.Thread(target=self._run_thread, name=f"replay-{self.name}", daemon=True)
        self._thread.start()
        if not self.started.wait(timeout):
            raise StreamError(f"replay of {self.name!r} did not start within {timeout:g} s")
        if self.error is not None:
            raise StreamError(f"replay of {self.name!r} failed: {self.error}") from self.error
        return self

    def wait(self, timeout: float) -> bool:
        """Wait (bounded) for the end of the signal; True if it ended."""
        return self.finished.wait(timeout)

    def stop(self, timeout: float = 5.0, close: bool = True) -> None:
        """Stop pushing; with ``close`` also destroy the outlets (the stream disappears)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if close:
            self._close_outlets()
        if self.error is not None:
            raise StreamError(f"replay of {self.name!r} failed: {self.error}") from self.error

    def __enter__(self) -> "Replay":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
