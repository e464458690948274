"""What the trace view draws: montage + display filters, a review buffer, decimation.

No filters of its own: montages are :func:`bci.preprocess.reference_matrix` (referential,
average, the longitudinal bipolar :data:`~bci.preprocess.DOUBLE_BANANA`) and the display
filters (high-pass, low-pass, 50/60 Hz notch) are a :class:`bci.preprocess.Preprocessor`
run causally with :meth:`~bci.preprocess.Preprocessor.step`, chunk by chunk as data
arrive. Changing a setting restarts the preprocessor and re-runs it over the raw review
buffer, so what is on screen is always what the current settings give.

:func:`minmax_decimate` reduces each channel to one (min, max) pair per screen pixel
with bins aligned on absolute sample indices (no shimmer while the page scrolls); the
trace view rasterises those pairs (:mod:`gui.traces`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from bci.buffer import RingBuffer
from bci.channels import DATA_TYPES, ChannelSet
from bci.errors import ConfigError
from bci.preprocess import DOUBLE_BANANA, Preprocessor, reference_matrix

#: Montage names shown to the user -> ``Preprocessor.reference``.
MONTAGES = {"referential": None, "average": "average", "double_banana": "double_banana"}
MONTAGE_LABELS = {"referential": "Referential", "average": "Average reference", "double_banana": "Double banana (L-bipolar)"}
#: Double-banana chains (front to back, left above right), for channel groups.
BANANA_CHAINS = {
    "Left temporal": DOUBLE_BANANA[0:4],
    "Left parasagittal": DOUBLE_BANANA[4:8],
    "Central": DOUBLE_BANANA[8:10],
    "Right parasagittal": DOUBLE_BANANA[10:14],
    "Right temporal": DOUBLE_BANANA[14:18],
}
#: Minimum number of double-banana pairs present to offer the montage.
MIN_BANANA_PAIRS = 12


def available_montages(channels: ChannelSet) -> list[str]:
    """Montages that make sense for these channels (double banana needs 10-20 scalp EEG)."""
    out = ["referential", "average"]
    eeg = [n for n, t in zip(channels.names, channels.types) if t == "eeg"]
    pairs = sum(a in eeg and b in eeg for a, b in DOUBLE_BANANA)
    if pairs >= MIN_BANANA_PAIRS:
        out.append("double_banana")
    return out


def data_channels(channels: ChannelSet) -> ChannelSet:
    """The signal channels worth drawing (EEG/iEEG), in their recorded order."""
    keep = [i for i, t in enumerate(channels.types) if t in DATA_TYPES]
    if not keep:
        keep = list(range(len(channels)))
    return ChannelSet([channels.original_names[i] for i in keep], [channels.types[i] for i in keep], channels.positions)


def channel_groups(names: list[str], montage: str) -> dict[str, list[int]]:
    """Named groups of output rows: 'All', double-banana chains, or iEEG electrodes.

    iEEG contacts are grouped by their electrode (the name without its trailing contact
    number: ``LA1..LA8`` -> ``LA``); scalp montages by hemisphere.
    """
    groups: dict[str, list[int]] = {"All": list(range(len(names)))}
    if montage == "double_banana":
        for label, pairs in BANANA_CHAINS.items():
            rows = [names.index(f"{a}-{b}") for a, b in pairs if f"{a}-{b}" in names]
            if rows:
                groups[label] = rows
        return groups
    electrodes: dict[str, list[int]] = {}
    contacts: dict[str, set] = {}
    for i, name in enumerate(names):
        m = re.match(r"^(.*?\D)(\d+)$", name)
        key = m.group(1).rstrip("-_ ") if m else name
        electrodes.setdefault(key, []).append(i)
        if m:
            contacts.setdefault(key, set()).add(int(m.group(2)))
    # an electrode (depth shaft, strip, grid) numbers its contacts 1, 2, 3, ...
    shafts = [k for k, c in contacts.items() if {1, 2, 3} <= c]
    if len(shafts) > 1 and sum(len(electrodes[k]) for k in shafts) >= len(names) / 2:
        groups.update({(f"Electrode {k}" if k in shafts else k): electrodes[k] for k in electrodes})
        return groups
    left = [i for i, n in enumerate(names) if re.search(r"[13579]$", n)]
    right = [i for i, n in enumerate(names) if re.search(r"[2468]$|10$", n)]
    mid = [i for i, n in enumerate(names) if n.lower().endswith("z")]
    for label, rows in (("Left", left), ("Midline", mid), ("Right", right)):
        if rows and len(rows) < len(names):
            groups[label] = rows
    return groups


@dataclass
class DisplaySettings:
    """What the user chose: montage and display filters (Hz; None = off)."""

    montage: str = "referential"
    highpass: float | None = 0.5
    lowpass: float | None = 70.0
    notch: float | None = None

    def preprocessor(self, sfreq: float) -> Preprocessor:
        if self.montage not in MONTAGES:
            raise ConfigError(f"montage: expected one of {', '.join(MONTAGES)}, found {self.montage!r}")
        nyq = sfreq / 2.0
        hp = self.highpass if self.highpass else None
        lp = self.lowpass if self.lowpass and self.lowpass < nyq else None
        if hp is not None and lp is not None and hp >= lp:
            raise ConfigError(f"display filters: high-pass {hp} Hz must be below low-pass {lp} Hz")
        band = None if hp is None and lp is None else (hp, lp)
        notch = self.notch if self.notch and self.notch < nyq else None
        return Preprocessor(reference=MONTAGES[self.montage], notch=notch, bandpass=band)


class DisplayProcessor:
    """Raw chunks in, montaged and filtered display samples out (microvolts, float32).

    Parameters
    ----------
    sfreq : float
        Sampling rate of the stream (Hz).
    channels : ChannelSet
        The stream's data channels (what :meth:`push` receives, in order).
    capacity : int
        Samples kept for review (the display buffer length).
    settings : DisplaySettings
    """

    def __init__(self, sfreq: float, channels: ChannelSet, capacity: int, settings: DisplaySettings | None = None):
        self.sfreq = float(sfreq)
        self.channels = channels
        self.capacity = int(capacity)
        self.settings = settings or DisplaySettings()
        self._pre: Preprocessor | None = None
        self.names: list[str] = []
        self.ring: RingBuffer | None = None  # display samples (microvolts), by absolute index
        self._baseline: np.ndarray | None = None
        self.version = 0  # bumped whenever held samples are replaced (settings change, reset)
        self._configure()

    def _configure(self) -> None:
        pre = self.settings.preprocessor(self.sfreq)
        names = pre.start(self.sfreq, self.channels)
        self._pre = pre
        if self.ring is None or len(names) != self.ring.n_channels:
            self.ring = RingBuffer(len(names), self.capacity, dtype=np.float32, times=False)
        self.names = names
        self._baseline = None

    def matrix(self) -> np.ndarray:
        """The montage operator ``(n_out, n_in)`` in use."""
        return reference_matrix(self.channels, MONTAGES[self.settings.montage])[0]

    def update(self, raw: np.ndarray, raw_start: int, **changes) -> None:
        """Change settings and re-process the raw review buffer ``raw`` (starting at ``raw_start``)."""
        new = DisplaySettings(**{**self.settings.__dict__, **changes})
        new.preprocessor(self.sfreq)  # validate before touching anything
        self.settings = new
        self._configure()
        self.reset(raw_start)
        if raw.shape[1]:
            self.push(raw)

    def reset(self, start: int) -> None:
        """Forget the held samples; the next pushed sample has global index ``start``."""
        self.ring.clear(start)
        self.version += 1

    def push(self, chunk: np.ndarray) -> None:
        """Process one raw chunk ``(n_channels, n)`` in volts and append it."""
        chunk = np.asarray(chunk, dtype=np.float64)
        if chunk.shape[1] == 0:
            return
        if not np.isfinite(chunk).all():
            chunk = np.nan_to_num(chunk, nan=0.0, posinf=0.0, neginf=0.0)
        if self.settings.highpass:
            # Start the high-pass from the signal's level, not from zero: no step transient.
            if self._baseline is None:
                self._baseline = chunk[:, :1].copy()
            chunk = chunk - self._baseline
        self.ring.write((self._pre.step(chunk) * 1e6).astype(np.float32))

    @property
    def start(self) -> int:
        """Absolute index of the oldest display sample held."""
        return self.ring.first_index

    @property
    def end(self) -> int:
        """Absolute index one past the newest display sample."""
        return self.ring.n_written

    def read(self, start: int, stop: int, rows=None) -> np.ndarray:
        """Display samples ``[start, stop)`` (NaN where not held)."""
        return self.ring.read(start, stop, rows)


def minmax_decimate(data: np.ndarray, start: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Min/max pairs per bin of ``k`` samples, bins aligned on absolute indices.

    ``data`` holds samples ``[start, start + n)``. Returns ``(idx, out)``: ``out`` is
    ``(C, 2 * n_bins)`` with each bin's min then max, and ``idx`` the absolute sample
    index of each output column (both columns of a bin share the bin's first index).
    Edge bins cut by the window keep only the samples inside it.
    """
    C, n = data.shape
    if k <= 1 or n == 0:
        return start + np.arange(n, dtype=np.float64), data
    first = -(-start // k) * k  # first bin boundary at or after start
    head = min(n, first - start)
    body_n = ((n - head) // k) * k
    parts, idx = [], []
    if head:
        seg = data[:, :head]
        parts.append(np.stack([seg.min(1), seg.max(1)], axis=1))
        idx.append(np.array([start, start], dtype=np.float64))
    if body_n:
        body = data[:, head : head + body_n].reshape(C, body_n // k, k)
        pairs = np.stack([body.min(2), body.max(2)], axis=2).reshape(C, -1)
        parts.append(pairs)
        idx.append(np.repeat(first + k * np.arange(body_n // k, dtype=np.float64), 2))
    tail = n - head - body_n
    if tail:
        seg = data[:, head + body_n :]
        parts.append(np.stack([seg.min(1), seg.max(1)], axis=1))
        b = start + head + body_n
        idx.append(np.array([b, b], dtype=np.float64))
    return np.concatenate(idx), np.concatenate(parts, axis=1)


class Decimator:
    """:func:`minmax_decimate` of a :class:`DisplayProcessor`'s pages, with full bins cached.

    Bins are aligned on absolute sample indices, so a complete bin's (min, max) never
    changes while the settings stay the same: a scrolling page only decimates the few
    bins that arrived since the last frame (and its two partial edge bins).
    """

    def __init__(self):
        self.key = None
        self.lo = self.hi = 0  # cached complete bins [lo, hi)

    def page(self, processor: DisplayProcessor, rows: list[int], i0: int, i1: int, k: int):
        """``(idx, out)`` as :func:`minmax_decimate` of rows ``rows`` over ``[i0, i1)``."""
        if k <= 1:
            return minmax_decimate(processor.read(i0, i1, rows), i0, k)
        key = (k, processor.version, tuple(rows))
        # complete bins inside the page whose samples have all arrived (later ones are not cached)
        b0, b1 = -(-i0 // k), min(i1, processor.end) // k
        if b1 <= b0:
            return minmax_decimate(processor.read(i0, i1, rows), i0, k)
        n_bins = b1 - b0
        if key != self.key or b0 < self.lo or b0 > self.hi or n_bins > self.mins.shape[1]:
            cap = max(2 * n_bins, 64)
            self.mins = np.empty((len(rows), cap), np.float32)
            self.maxs = np.empty((len(rows), cap), np.float32)
            self.key, self.lo, self.hi = key, b0, b0
        if b1 > self.hi:
            start = max(self.hi, b0)
            seg = processor.read(start * k, b1 * k, rows).reshape(len(rows), b1 - start, k)
            cap = self.mins.shape[1]
            pos = np.arange(start, b1) % cap
            self.mins[:, pos] = seg.min(axis=2)
            self.maxs[:, pos] = seg.max(axis=2)
            self.hi = b1
            self.lo = max(self.lo, self.hi - cap)
        cap = self.mins.shape[1]
        pos = np.arange(b0, b1) % cap
        body = np.empty((len(rows), n_bins, 2), np.float32)
        body[:, :, 0] = self.mins[:, pos]
        body[:, :, 1] = self.maxs[:, pos]
        parts, idx = [], []
        if i0 < b0 * k:
            seg = processor.read(i0, b0 * k, rows)
            parts.append(np.stack([seg.min(1), seg.max(1)], axis=1))
            idx.append(np.array([i0, i0], dtype=np.float64))
        parts.append(body.reshape(len(rows), -1))
        idx.append(np.repeat(k * np.arange(b0, b1, dtype=np.float64), 2))
        if i1 > b1 * k:
            seg = processor.read(b1 * k, i1, rows)
            parts.append(np.stack([seg.min(1), seg.max(1)], axis=1))
            idx.append(np.array([b1 * k, b1 * k], dtype=np.float64))
        return np.concatenate(idx), np.concatenate(parts, axis=1)
