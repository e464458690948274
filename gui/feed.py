"""The dashboard's data source: a small adapter over ``realtime/``.

:class:`LslFeed` is all the window knows about acquisition. It opens a
:class:`realtime.inlet.Inlet` (optionally after starting a :class:`realtime.replay.Replay`
of a file in-process, for ``bci dashboard --replay FILE``) and pulls it from its own
thread into the inlet's ring buffer, so the GUI never waits for the network:

- the window reads new raw samples with :meth:`LslFeed.read` (by global sample index)
  on its own frame timer, decoupled from data arrival;
- stream time is ``sample index / sfreq`` (seconds since the stream started);
- a closed outlet (:class:`realtime.inlet.StreamLost`) or no data for ``lost_after_s``
  makes the state ``lost``; the thread keeps looking for the stream
  (:meth:`realtime.inlet.Inlet.reconnect`) and says ``regained`` when data flow again.
  Transitions are reported through ``on_event(kind, stream_time_s, message)`` from the
  acquisition thread (the window logs them at once);
- markers of ``<name>-markers`` (the replay's annotations) become annotations at the
  stream time of the sample whose timestamp they carry.

Only the stream's name, rate and channels are exposed: nothing from file headers.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import pylsl

from bci.errors import StreamError
from realtime.inlet import Inlet, StreamLost
from realtime.replay import Replay

log = logging.getLogger(__name__)


class LslFeed:
    """Acquisition thread over an LSL inlet (see the module docstring).

    Parameters
    ----------
    name : str, optional
        Stream name to resolve (``--source NAME``); the replay's name with ``replay``.
    replay : path or Recording, optional
        Start an in-process replay of this recording first (``--replay FILE``).
    speed : float
        Replay speed factor.
    buffer_s : float
        Seconds of raw signal kept for review.
    lost_after_s : float
        No samples for this long counts as a lost signal.
    timeout : float
        Seconds to wait for the stream at :meth:`start`.
    poll_s : float
        Interval of the acquisition thread.
    on_event : callable, optional
        ``on_event(kind, stream_time_s, message)`` for ``stream_connected``,
        ``stream_lost`` and ``stream_regained``; called from the acquisition thread.
    """

    def __init__(self, name: str | None = None, *, replay=None, speed: float = 1.0, buffer_s: float = 300.0,
                 lost_after_s: float = 2.0, timeout: float = 10.0, poll_s: float = 0.005, on_event=None,
                 markers: bool = True, replay_loop: bool = False):
        self.requested_name = name
        self.replay_source = replay
        self.speed = float(speed)
        self.buffer_s = float(buffer_s)
        self.lost_after_s = float(lost_after_s)
        self.timeout = float(timeout)
        self.poll_s = float(poll_s)
        self.on_event = on_event
        self.want_markers = markers
        self.replay_loop = replay_loop
        self.replay = None
        self.source_id = None  # set for replays (unique); None resolves a live source by name
        self.inlet = None
        self.state = "closed"
        self.name = name or ""
        self.sfreq = float("nan")
        self.channels = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._marker_inlet = None
        self._markers: list[tuple[float, str]] = []
        self._pending_marker_ts: list[tuple[float, str]] = []
        self._last_data = 0.0
        self._rate_hist: collections.deque = collections.deque(maxlen=400)
        self.error: BaseException | None = None

    # ------------------------------------------------------------------ life cycle
    def start(self) -> LslFeed:
        if self.replay_source is not None:
            name = self.requested_name
            path = getattr(self.replay_source, "provenance", {}).get("path")
            if name is None and path:  # a Recording: name the stream after its file
                name = Path(path).name if Path(path).is_dir() else Path(path).stem
            # a source id of our own: another replay of the same file elsewhere is not ours
            self.source_id = f"bci-dashboard-{os.getpid()}-{id(self):x}"
            self.replay = Replay(self.replay_source, name, speed=self.speed, loop=self.replay_loop, markers=self.want_markers,
                                 wait_for_consumer=self.timeout, source_id=self.source_id)  # fmt: skip
            self.replay.start(timeout=self.timeout)
            self.name = self.replay.name
        self.inlet = Inlet(self.name or None, source_id=self.source_id, timeout=self.timeout, buffer_s=self.buffer_s)
        try:
            self.inlet.open()
        except BaseException:
            self.stop()
            raise
        self.name = self.inlet.info.name()
        self.sfreq = self.inlet.sfreq
        self.channels = self.inlet.channels
        self._open_markers()
        self.state = "connected"
        self._last_data = time.monotonic()
        self._emit("stream_connected", f"stream {self.name!r}: {len(self.channels)} ch @ {self.sfreq:g} Hz")
        self._thread = threading.Thread(target=self._run, name=f"feed-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _open_markers(self) -> None:
        if not self.want_markers:
            return
        pred = f"name='{self.name}-markers' and type='Markers'"
        if self.source_id:
            pred += f" and source_id='{self.source_id}-markers'"
        found = pylsl.resolve_bypred(pred, minimum=1, timeout=0.5 if self.replay is None else 2.0)
        if found:
            self._marker_inlet = pylsl.StreamInlet(found[0], recover=True)
            self._marker_inlet.open_stream(timeout=self.timeout)
            self._marker_offset = self._marker_inlet.time_correction(timeout=self.timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the acquisition thread and the replay; idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("acquisition thread of %r did not stop within %g s", self.name, timeout)
            self._thread = None
        if self.inlet is not None:
            self.inlet.close()
        if self._marker_inlet is not None:
            try:
                self._marker_inlet.close_stream()
            except Exception:  # noqa: BLE001 - already gone
                pass
            self._marker_inlet = None
        if self.replay is not None:
            try:
                self.replay.stop(timeout)
            except StreamError as exc:
                log.warning("%s", exc)
        self.state = "closed"

    # ------------------------------------------------------------------ thread
    def _emit(self, kind: str, message: str) -> None:
        if self.on_event is not None:
            try:
                self.on_event(kind, self.n_samples / self.sfreq, message)
            except Exception:
                log.exception("event listener failed on %s", kind)

    def _run(self) -> None:
        inlet = self.inlet
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                if inlet.connected:
                    with self._lock:
                        start, stop = inlet.pull()
                    if stop > start:
                        self._rate_hist.append((now, stop - start))
                        self._last_data = now
                        if self.state == "lost":
                            self.state = "connected"
                            self._emit("stream_regained", f"signal regained after {inlet.stats.losses} loss(es)")
                    elif self.state == "connected" and now - self._last_data > self.lost_after_s:
                        self.state = "lost"
                        inlet.mark_stall()
                        self._emit("stream_lost", f"no samples for {self.lost_after_s:g} s")
                    with self._lock:
                        self._pull_markers()
                elif inlet.reconnect():
                    self._last_data = now
                    log.info("stream %r reconnected", self.name)
            except StreamLost as exc:
                if self.state != "lost":
                    self.state = "lost"
                    self._emit("stream_lost", str(exc))
            except Exception as exc:
                if self.error is None:
                    log.exception("acquisition failed")
                self.error = exc
            self._stop.wait(self.poll_s)

    def _pull_markers(self) -> None:
        if self._marker_inlet is None:
            return
        try:
            samples, stamps = self._marker_inlet.pull_chunk(timeout=0.0)
        except pylsl.util.LostError:
            self._marker_inlet = None
            return
        for s, ts in zip(samples, stamps):
            self._pending_marker_ts.append((ts + self._marker_offset, str(s[0])))
        if not self._pending_marker_ts:
            return
        buf = self.inlet.buffer
        if buf.n_written == 0:
            return
        newest = buf.timestamp(buf.n_written - 1)
        keep = []
        for ts, text in self._pending_marker_ts:
            if ts > newest + 1.0 / self.sfreq:
                keep.append((ts, text))  # its sample has not arrived yet
                continue
            self._markers.append((self._index_of(ts) / self.sfreq, text))
        self._pending_marker_ts = keep

    def _index_of(self, lsl_time: float) -> int:
        """Global index of the held sample whose timestamp is nearest at or after ``lsl_time``."""
        buf = self.inlet.buffer
        lo, hi = buf.first_index, buf.n_written
        recent = max(lo, hi - int(30 * self.sfreq))  # decisions and markers are recent: look there first
        for a in (recent, lo):
            stamps = buf.timestamps_between(a, hi)
            if len(stamps) and (stamps[0] <= lsl_time or a == lo):
                return a + int(np.clip(np.searchsorted(stamps, lsl_time), 0, hi - a - 1))
        return hi - 1

    def stream_time(self, lsl_time: float) -> float:
        """Stream time (s) of the sample stamped ``lsl_time`` (LSL clock, corrected)."""
        with self._lock:
            if self.inlet is None or self.inlet.buffer is None or self.inlet.buffer.n_written == 0:
                return float("nan")
            return (self._index_of(lsl_time) + 1) / self.sfreq

    # ------------------------------------------------------------------ reading
    @property
    def n_samples(self) -> int:
        """Samples received so far (global index of the next one)."""
        return 0 if self.inlet is None or self.inlet.buffer is None else self.inlet.buffer.n_written

    @property
    def first_index(self) -> int:
        return 0 if self.inlet is None or self.inlet.buffer is None else self.inlet.buffer.first_index

    @property
    def time_s(self) -> float:
        return self.n_samples / self.sfreq

    def read(self, start: int, stop: int) -> tuple[int, np.ndarray]:
        """Raw volts ``(n_channels, n)`` from ``max(start, first held)`` to ``stop``; returns ``(start, data)``."""
        with self._lock:
            buf = self.inlet.buffer
            start = max(int(start), buf.first_index)
            stop = min(int(stop), buf.n_written)
            if stop <= start:
                return start, np.zeros((len(self.channels), 0))
            return start, buf.window(stop, stop - start)

    def markers(self) -> list[tuple[float, str]]:
        """All markers received so far as ``(stream time s, text)``."""
        return list(self._markers)

    def status(self) -> dict:
        """Name, nominal and measured rate, channels, state, dropped samples."""
        now = time.monotonic()
        recent = [(t, n) for t, n in list(self._rate_hist) if now - t <= 2.0]
        rate = sum(n for _, n in recent[1:]) / (recent[-1][0] - recent[0][0]) if len(recent) > 2 and recent[-1][0] > recent[0][0] else float("nan")
        stats = self.inlet.stats if self.inlet is not None else None
        return {
            "name": self.name,
            "sfreq": self.sfreq,
            "rate_hz": rate,
            "n_channels": 0 if self.channels is None else len(self.channels),
            "state": self.state,
            "silent_s": now - self._last_data,
            "dropped": 0 if stats is None else stats.missing_samples,
            "losses": 0 if stats is None else stats.losses,
            "error": None if self.error is None else str(self.error),
        }


class RecordingFeed:
    """The feed interface of :class:`LslFeed` over a whole recording, for review
    (``bci dashboard --review FILE``): every sample is there from the start, no thread,
    no LSL. Markers are the recording's annotations (onset, description); only the
    file's name, rate and channels are exposed, nothing from its header.
    """

    def __init__(self, recording, name: str = "recording"):
        self.recording = recording
        self.name = name
        self.sfreq = recording.sfreq
        self.channels = recording.channels
        self.state = "review"
        self.first_index = 0
        self.n_samples = recording.n_times
        ann = recording.annotations
        self._markers = [(float(t), str(text)) for t, text in zip(ann.onset, ann.description)]

    def read(self, start: int, stop: int) -> tuple[int, np.ndarray]:
        """Raw volts ``(n_channels, n)`` from ``start`` to ``stop`` (clipped to the recording)."""
        start, stop = max(int(start), 0), min(int(stop), self.n_samples)
        return start, self.recording.data[:, start:max(start, stop)]

    def markers(self) -> list[tuple[float, str]]:
        return list(self._markers)

    def status(self) -> dict:
        return {"name": self.name, "sfreq": self.sfreq, "rate_hz": float("nan"), "n_channels": len(self.channels),
                "state": self.state, "silent_s": 0.0, "dropped": 0, "losses": 0, "error": None}  # fmt: skip

    def stop(self) -> None:
        """Nothing runs: kept for the window's shutdown."""
