"""Marker streams over LSL: the cues a session publishes and the markers a recording takes.

- :class:`MarkerOutlet` - a string marker stream (type ``Markers``, irregular rate), each
  marker stamped with :func:`pylsl.local_clock` when pushed (``bci calibrate``'s cues, the
  feedback paradigm's);
- :class:`MarkerInlet` - a string (or numeric) marker stream pulled without blocking, its
  timestamps mapped to our clock, with loss and return (``bci record``).
"""

from __future__ import annotations

import logging
import uuid

import pylsl

from bci.errors import StreamError

from .inlet import ReconnectingInlet, StreamLost, resolve

log = logging.getLogger(__name__)


class MarkerOutlet:
    """A session's LSL marker stream (strings, irregular rate)."""

    def __init__(self, name: str, source_id: str | None = None):
        self.name = name
        self.source_id = source_id or f"{name}-{uuid.uuid4().hex[:8]}"
        info = pylsl.StreamInfo(name, "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, self.source_id)
        info.desc().append_child_value("paradigm", "bci calibrate")
        self.outlet = pylsl.StreamOutlet(info)
        self.sent: list[tuple[float, str]] = []

    def push(self, text: str) -> float:
        """Send ``text`` now; returns its timestamp (:func:`pylsl.local_clock`)."""
        stamp = pylsl.local_clock()
        self.outlet.push_sample([text], stamp)
        self.sent.append((stamp, text))
        return stamp

    def close(self) -> None:
        self.outlet = None


class MarkerInlet(ReconnectingInlet):
    """A string (or numeric) marker stream pulled without blocking, with loss and return."""

    def __init__(self, name: str, timeout: float, source_id: str | None = None):
        self.name = name
        self.source_id = source_id
        self.timeout = float(timeout)
        self._clock = None  # (inlet, its host): see share_clock

    def open(self) -> MarkerInlet:
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
        self.inlet, self.uid, self.hostname = inlet, info.uid(), info.hostname()
        self.string = info.channel_format() == pylsl.cf_string
        self._last_tc = pylsl.local_clock()

    def share_clock(self, inlet) -> None:
        """Use ``inlet``'s clock offset (:class:`realtime.inlet.Inlet`, a signal stream) while this
        stream comes from the same host: one host, one clock, so the markers' timing relative to
        that signal carries no noise from two separate offset estimates (at 25x replay speed
        0.2 ms of it was a whole sample)."""
        self._clock = (inlet, inlet.info.hostname())

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
        shared = self._clock is not None and self._clock[1] == self.hostname
        offset = self._clock[0].offset if shared else self.offset
        out = []
        for sample, t in zip(samples, ts):
            value = sample[0] if len(sample) == 1 else "/".join(str(v) for v in sample)
            if not self.string and isinstance(value, float) and float(value).is_integer():
                value = int(value)
            out.append((float(t) + offset, str(value)))
        return out
