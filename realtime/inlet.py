"""LSL inlet: find a stream, read its channels, check it against a model, pull samples.

What a user of mne-lsl or BCI2000 expects from an acquisition front end:

- :func:`resolve` finds a stream by ``name``, ``type`` and/or ``source_id`` within a
  bounded time; when nothing matches, the :class:`~bci.errors.StreamError` says what was
  searched and lists the streams that *are* visible.
- :func:`stream_channels` reads the channel labels, types and units from the stream's
  ``desc/channels/channel`` entries (the XDF/LSL meta-data convention); a stream without
  them gets numbered names ``ch1..chN`` (logged).
- :meth:`Inlet.plan` checks the stream's channel count, names and nominal rate against a
  model's ``input_channels`` with :meth:`bci.channels.ChannelSet.plan_mapping` and raises
  a clear :class:`StreamError` when the stream cannot feed the model.
- :meth:`Inlet.pull` polls without blocking (``pull_chunk(timeout=0.0, dest_obj=...)`` into
  a preallocated array), converts to volts, corrects timestamps with
  :meth:`pylsl.StreamInlet.time_correction` and appends to a :class:`~bci.buffer.RingBuffer`
  with the local arrival time of every chunk.
- Faults: a closed outlet raises :class:`StreamLost` (the inlet is opened with
  ``recover=False`` so that liblsl reports it at once); :meth:`Inlet.reconnect` looks
  for the stream again without blocking and reopens it. Gaps in the timestamps are
  counted; nothing is ever filled in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pylsl

from bci.channels import ChannelSet
from bci.errors import BCIError, StreamError

from bci.buffer import RingBuffer

log = logging.getLogger(__name__)

#: Unit spellings found in LSL meta-data -> factor to volts.
UNIT_SCALE = {
    "v": 1.0, "volt": 1.0, "volts": 1.0,
    "mv": 1e-3, "millivolt": 1e-3, "millivolts": 1e-3,
    "uv": 1e-6, "µv": 1e-6, "μv": 1e-6, "microvolt": 1e-6, "microvolts": 1e-6,
    "nv": 1e-9, "nanovolt": 1e-9, "nanovolts": 1e-9,
}  # fmt: skip

#: LSL channel type (case-insensitive) -> MNE channel type.
CHANNEL_TYPES = {
    "eeg": "eeg", "seeg": "seeg", "ecog": "ecog", "eog": "eog", "emg": "emg", "ecg": "ecg",
    "stim": "stim", "trigger": "stim", "markers": "stim", "misc": "misc", "aux": "misc",
}  # fmt: skip


class StreamLost(StreamError):
    """The stream's outlet went away (its application closed or crashed)."""


def _quote(value: str) -> str:
    if "'" in value:
        raise StreamError(f"stream names/types/ids with a single quote are not supported: {value!r}")
    return f"'{value}'"


def _predicate(name=None, stype=None, source_id=None) -> str:
    parts = [f"{key}={_quote(str(v))}" for key, v in (("name", name), ("type", stype), ("source_id", source_id)) if v]
    return " and ".join(parts)


def _describe(info: pylsl.StreamInfo) -> str:
    rate = info.nominal_srate()
    rate_text = f"{rate:g} Hz" if rate > 0 else "irregular"
    return f"{info.name()!r} (type {info.type() or '-'}, {info.channel_count()} ch @ {rate_text}, source_id {info.source_id() or '-'})"


def visible_streams(wait_s: float = 0.5) -> list[pylsl.StreamInfo]:
    """Every stream visible on the network within ``wait_s`` seconds."""
    return list(pylsl.resolve_streams(wait_time=wait_s))


def resolve(name: str | None = None, stype: str | None = None, source_id: str | None = None,
            *, timeout: float = 5.0) -> pylsl.StreamInfo:
    """The one stream matching ``name``/``stype``/``source_id``, found within ``timeout`` s.

    With no criterion at all, resolves streams of type ``EEG``. Several matches are an
    error (naming them) unless they share a ``source_id`` (the same device restarted).
    """
    if not (name or stype or source_id):
        stype = "EEG"
    pred = _predicate(name, stype, source_id)
    found = pylsl.resolve_bypred(pred, minimum=1, timeout=float(timeout))
    if not found:
        others = visible_streams(0.3)
        listed = "; ".join(_describe(s) for s in others) if others else "none"
        raise StreamError(f"no LSL stream with {pred.replace(' and ', ', ')} found within {timeout:g} s; visible streams: {listed}")
    # a short second look catches a duplicate that answered slightly later
    uids = {s.uid(): s for s in found}
    if len(uids) > 1 and len({s.source_id() for s in uids.values()}) > 1:
        listed = "; ".join(_describe(s) for s in uids.values())
        raise StreamError(f"{len(uids)} LSL streams match {pred}: {listed}; pass a name or source_id that picks one")
    return found[0]


@dataclass
class StreamChannels:
    """What a stream says about its channels."""

    channels: ChannelSet
    scale: np.ndarray  # per channel: factor from the stream's unit to volts
    units: list[str]
    labelled: bool  # False when names were numbered because the stream gave none


def stream_channels(info: pylsl.StreamInfo, *, assume_unit: str = "microvolts") -> StreamChannels:
    """Channel names, types and unit factors from ``desc/channels/channel`` of a full info.

    Streams without channel meta-data get ``ch1..chN``; electrophysiological channels
    (EEG, sEEG, ECoG, EOG, EMG, ECG) without a unit get ``assume_unit`` (most amplifiers
    publish microvolts), trigger and auxiliary channels without one are kept as they are
    (factor 1); both are logged.
    """
    n = info.channel_count()
    names, types, units = [], [], []
    default_type = CHANNEL_TYPES.get(info.type().strip().lower(), "eeg")
    ch = info.desc().child("channels").child("channel")
    while not ch.empty() and len(names) < n:
        names.append(ch.child_value("label").strip() or f"ch{len(names) + 1}")
        types.append(CHANNEL_TYPES.get(ch.child_value("type").strip().lower(), default_type))
        units.append(ch.child_value("unit").strip())
        ch = ch.next_sibling("channel")
    labelled = len(names) == n
    if not labelled:
        if names:
            log.warning("stream %r describes %d of its %d channels; using numbered names", info.name(), len(names), n)
        else:
            log.warning("stream %r has no channel labels in its meta-data; using ch1..ch%d", info.name(), n)
        names = [f"ch{i}" for i in range(1, n + 1)]
        types = [default_type] * n
        units = [""] * n
    scale = np.empty(n)
    missing_unit = 0
    for i, unit in enumerate(units):
        factor = UNIT_SCALE.get(unit.lower())
        if factor is None:
            voltage = types[i] not in ("stim", "misc")
            if unit:
                log.warning("stream %r channel %s: unknown unit %r, %s", info.name(), names[i], unit,
                            f"assuming {assume_unit}" if voltage else "kept as is (not a voltage channel)")
            elif voltage:
                missing_unit += 1
            factor = UNIT_SCALE[assume_unit.lower()] if voltage else 1.0
        scale[i] = factor
    if missing_unit:
        log.info("stream %r: %d channels without a unit, assuming %s", info.name(), missing_unit, assume_unit)
    try:
        channels = ChannelSet(names, types)
    except BCIError as exc:
        raise StreamError(f"stream {info.name()!r}: {exc}") from None
    return StreamChannels(channels, scale, units, labelled)


@dataclass
class InletStats:
    """Counters of one :class:`Inlet` (across reconnections)."""

    samples: int = 0
    chunks: int = 0
    gaps: int = 0
    missing_samples: int = 0  # estimated from timestamp gaps (never filled in)
    losses: int = 0
    reconnects: int = 0
    gap_log: list = field(default_factory=list)  # (lsl time, seconds) of the last gaps

    def note_gap(self, at: float, seconds: float, missing: int, keep: int = 100) -> None:
        self.gaps += 1
        self.missing_samples += missing
        self.gap_log.append((at, seconds))
        del self.gap_log[:-keep]


class ReconnectingInlet:
    """An LSL inlet that, once its stream is lost, looks for it again without blocking.

    The shared mechanism of every inlet here (signals, markers, ``bci-out``): each call
    to :meth:`reconnect` reads a :class:`pylsl.ContinuousResolver` for the stream's
    name/type/source id, skips the lost outlet itself (:attr:`uid`) and reopens the
    first match with the subclass's ``_connect(info)``, which sets :attr:`inlet` and
    :attr:`uid` or raises :class:`~bci.errors.StreamError`. Streams raising one of
    :attr:`retry_on` are skipped and looked for again on the next call.
    """

    name: str | None = None
    stype: str | None = None
    source_id: str | None = None
    inlet: pylsl.StreamInlet | None = None
    uid: str | None = None
    _resolver = None
    retry_on: tuple = (StreamError, pylsl.util.LostError)

    def _connect(self, info: pylsl.StreamInfo) -> None:
        raise NotImplementedError

    def _reconnected(self) -> None:
        """Called after a successful :meth:`reconnect` (counters, state)."""

    @property
    def connected(self) -> bool:
        return self.inlet is not None

    def reconnect(self) -> bool:
        """Look for the stream again without blocking; reopen it when it is back.

        Returns True once connected (at once when the stream was never lost).
        """
        if self.inlet is not None:
            return True
        if self._resolver is None:
            self._resolver = pylsl.ContinuousResolver(pred=_predicate(self.name, self.stype, self.source_id) or "type='EEG'")
        for info in self._resolver.results():
            if info.uid() == self.uid:
                continue
            try:
                self._connect(info)
            except self.retry_on as exc:
                log.debug("stream %s not reopened: %s", _describe(info), exc)
                continue
            self._resolver = None
            self._reconnected()
            return True
        return False

    def close(self) -> None:
        """Unsubscribe and release the liblsl inlet (and any pending resolver)."""
        if self.inlet is not None:
            try:
                self.inlet.close_stream()
            except Exception:  # noqa: BLE001 - the stream is already gone
                pass
        self.inlet = None  # liblsl destroys it when released
        self._resolver = None


class Inlet(ReconnectingInlet):
    """A resolved LSL stream pulled into a ring buffer of volts.

    Parameters
    ----------
    name, stype, source_id : str or None
        What to resolve (see :func:`resolve`).
    timeout : float
        Seconds to wait for the stream (and for its meta-data) at :meth:`open`.
    buffer_s : float
        Seconds of raw signal kept in :attr:`buffer`.
    max_chunk : int
        Samples per ``pull_chunk`` call (the preallocated destination's size).
    max_buflen : int
        liblsl's receive buffer in seconds (beyond it liblsl drops the oldest samples).
    assume_unit : str
        Unit of channels whose meta-data has none.
    gap_factor, min_gap_s : float
        A jump between consecutive timestamps larger than ``max(gap_factor * dt,
        min_gap_s)`` (``dt`` the observed sample interval) counts as a gap.
    """

    def __init__(self, name=None, stype=None, source_id=None, *, timeout: float = 5.0, buffer_s: float = 30.0,
                 max_chunk: int = 1024, max_buflen: int = 30, assume_unit: str = "microvolts",
                 gap_factor: float = 5.0, min_gap_s: float = 0.05):
        self.name, self.stype, self.source_id = name, stype, source_id
        self.timeout = float(timeout)
        self.buffer_s = float(buffer_s)
        self.max_chunk = int(max_chunk)
        self.max_buflen = int(max_buflen)
        self.assume_unit = assume_unit
        self.gap_factor = float(gap_factor)
        self.min_gap_s = float(min_gap_s)
        self.stats = InletStats()
        self.info: pylsl.StreamInfo | None = None
        self.buffer: RingBuffer | None = None

    # ----------------------------------------------------------------- opening
    def open(self) -> "Inlet":
        """Resolve the stream, read its meta-data, open it and allocate the buffers."""
        info = resolve(self.name, self.stype, self.source_id, timeout=self.timeout)
        self._connect(info, first=True)
        return self

    def _connect(self, info: pylsl.StreamInfo, first: bool = False) -> None:
        if info.channel_format() == pylsl.cf_string:
            raise StreamError(f"stream {_describe(info)} carries strings (a marker stream), not signals")
        if info.nominal_srate() <= 0:
            raise StreamError(f"stream {_describe(info)} has an irregular rate; a signal stream needs a nominal sampling rate")
        inlet = pylsl.StreamInlet(info, max_buflen=self.max_buflen, recover=False)
        try:
            full = inlet.info(timeout=self.timeout)
            # the first clock offset takes a few hundred ms: get it before subscribing, so
            # that samples do not pile up meanwhile
            offset = inlet.time_correction(timeout=self.timeout)
            inlet.open_stream(timeout=self.timeout)
        except pylsl.util.TimeoutError:
            raise StreamError(f"stream {_describe(info)} was found but did not answer within {self.timeout:g} s") from None
        except pylsl.util.LostError:
            raise StreamLost(f"stream {_describe(info)} was lost while opening it") from None
        described = stream_channels(full, assume_unit=self.assume_unit)
        if not first:
            if described.channels.names != self.channels.names or full.nominal_srate() != self.sfreq:
                inlet.close_stream()
                raise StreamError(
                    f"stream {info.name()!r} came back with different channels or rate "
                    f"({full.channel_count()} ch @ {full.nominal_srate():g} Hz, was {len(self.channels)} ch @ {self.sfreq:g} Hz)"
                )
        self.inlet, self.info, self.offset = inlet, full, float(offset)
        self.uid = full.uid()
        self.described = described
        self.channels = described.channels
        self.sfreq = float(full.nominal_srate())
        n = full.channel_count()
        self._dest = np.zeros((self.max_chunk, n), dtype=inlet.np_dtype)
        self._volts = np.empty((n, self.max_chunk))
        self._scale = described.scale[:, None]
        if first or self.buffer is None:
            self.buffer = RingBuffer(n, max(int(self.buffer_s * self.sfreq), self.max_chunk))
        self._last_ts = None
        self._dt = 1.0 / self.sfreq
        self.last_gap = 0.0
        self.last_arrival = pylsl.local_clock()
        self.samples_since_connect = 0
        self._last_tc = pylsl.local_clock()
        log.info("opened %s", _describe(full))

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    def describe(self) -> str:
        return _describe(self.info) if self.info is not None else "(not open)"

    # ---------------------------------------------------------------- checking
    def plan(self, target: ChannelSet, *, model_sfreq: float | None = None, resamples: bool = True):
        """How this stream maps onto ``target`` channels (a :class:`~bci.channels.ChannelMapping`).

        Raises :class:`StreamError` when the channels cannot be mapped (missing and not
        interpolable, or an unlabelled stream with another channel count) or when the
        rate differs from ``model_sfreq`` and the model's preprocessing does not resample.
        """
        what = f"stream {self.info.name()!r} ({len(self.channels)} ch @ {self.sfreq:g} Hz)"
        if model_sfreq is not None and not resamples and abs(self.sfreq - model_sfreq) > 1e-6:
            raise StreamError(f"{what}: the model expects {model_sfreq:g} Hz and its preprocessing does not resample")
        if not self.described.labelled:
            if len(self.channels) != len(target):
                raise StreamError(
                    f"{what} has no channel labels and {len(self.channels)} channels; the model expects "
                    f"{len(target)} ({', '.join(target.names[:8])}{' ...' if len(target) > 8 else ''})"
                )
            log.warning("%s: unlabelled channels taken in the model's order (%s ...)", what, ", ".join(target.names[:4]))
            return ChannelSet(target.names, target.types, target.positions).plan_mapping(target)
        try:
            mapping = self.channels.plan_mapping(target)
        except BCIError as exc:
            raise StreamError(f"{what} cannot feed the model: {exc}") from None
        log.info("%s: %s", what, mapping.report())
        return mapping

    # ----------------------------------------------------------------- pulling
    def pull_once(self) -> tuple[int, int]:
        """One non-blocking ``pull_chunk`` (at most ``max_chunk`` samples); the new global range.

        :attr:`last_gap` is then the timestamp jump (s) just before this chunk when it was
        a gap, else 0. Raises :class:`StreamLost` when the outlet has gone away.
        """
        if self.inlet is None:
            raise StreamError("pull on an inlet that is not open")
        buf = self.buffer
        start = buf.n_written
        self.last_gap = 0.0
        try:
            _, ts = self.inlet.pull_chunk(timeout=0.0, max_samples=self.max_chunk, dest_obj=self._dest)
        except pylsl.util.LostError:
            self._lost()
            raise StreamLost(f"stream {self.info.name()!r} lost (its outlet closed)") from None
        n = len(ts)
        if n == 0:
            return start, start
        arrival = pylsl.local_clock()
        if arrival - self._last_tc > 5.0:  # liblsl refreshes its estimate every 5 s
            try:
                self.offset = float(self.inlet.time_correction(timeout=0.0))
            except (pylsl.util.TimeoutError, pylsl.util.LostError):
                pass
            self._last_tc = arrival
        ts = np.asarray(ts) + self.offset
        self._check_gap(ts)
        volts = self._volts[:, :n]
        np.multiply(self._dest[:n].T, self._scale, out=volts)
        buf.write(volts, ts, arrival)
        self.stats.samples += n
        self.stats.chunks += 1
        self.samples_since_connect += n
        self.last_arrival = arrival
        return start, buf.n_written

    def pull(self) -> tuple[int, int]:
        """Pull everything available now, without blocking; returns the new global sample range."""
        start = self.buffer.n_written
        while True:
            a, b = self.pull_once()
            if b - a < self.max_chunk:
                return start, b

    def _check_gap(self, ts: np.ndarray) -> None:
        n = len(ts)
        if self._last_ts is not None:
            jump = ts[0] - self._last_ts
            limit = max(self.gap_factor * self._dt, self.min_gap_s)
            if jump > limit:
                missing = max(0, int(round(jump / self._dt)) - 1)
                self.stats.note_gap(float(ts[0]), float(jump), missing)
                self.last_gap = float(jump)
                log.warning("stream %r: gap of %.3f s (about %d samples missing)", self.info.name(), jump, missing)
            elif ts[-1] > self._last_ts:
                # observed sample interval (follows replay speed-ups and clock drift)
                dt = (ts[-1] - self._last_ts) / n
                self._dt += 0.05 * (dt - self._dt)
        self._last_ts = float(ts[-1])

    # -------------------------------------------------------- loss and return
    def _lost(self) -> None:
        self.stats.losses += 1
        try:
            self.inlet.close_stream()
        except Exception:  # noqa: BLE001 - the stream is already gone
            pass
        self.inlet = None

    #: a returning stream that no longer fits (channels, rate) is an error, not a retry
    retry_on = (StreamLost,)

    def _reconnected(self) -> None:
        self.stats.reconnects += 1

    def mark_stall(self) -> None:
        """Forget the last timestamp so that the next samples are not compared across a stall."""
        self._last_ts = None

    def __enter__(self):
        return self.open() if self.inlet is None else self

    def __exit__(self, *exc):
        self.close()
