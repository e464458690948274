"""A preallocated ring buffer of multichannel samples, optionally with their timestamps.

:class:`RingBuffer` keeps the newest ``capacity`` samples of ``(n_channels,)`` values,
with (``times=True``) two times each: its LSL *timestamp* (source clock mapped to ours)
and its *arrival* (our :func:`pylsl.local_clock` when the chunk holding it was pulled).
The one buffer of the project: the LSL inlet's raw samples, the streaming predictor's
processed samples, the dashboard's display samples. Memory is
allocated once; writing a chunk copies into it (split at most in two) and never grows
anything, so a live loop runs for hours with flat memory. Samples are addressed by a
global index (0 for the first sample ever written), which lets a reader ask for "the
window ending at sample ``i``" after later chunks arrived.
"""

from __future__ import annotations

import threading

import numpy as np

from bci.errors import DataError


class RingBuffer:
    """The newest ``capacity`` samples of ``n_channels`` channels.

    Parameters
    ----------
    n_channels : int
    capacity : int
        Samples kept; older ones are overwritten.
    dtype : numpy dtype
        Sample type (float64 by default: volts after unit conversion).
    times : bool
        Keep a timestamp and an arrival time per sample.

    Attributes
    ----------
    n_written : int
        Samples written since creation (or :meth:`clear`); the global index of the
        next sample.
    """

    def __init__(self, n_channels: int, capacity: int, dtype=np.float64, times: bool = True):
        if n_channels < 1 or capacity < 1:
            raise DataError(f"a ring buffer needs >= 1 channel and >= 1 sample, got {n_channels} x {capacity}")
        self.n_channels = int(n_channels)
        self.capacity = int(capacity)
        self.data = np.zeros((self.n_channels, self.capacity), dtype=dtype)
        self.timestamps = np.zeros(self.capacity) if times else None
        self.arrivals = np.zeros(self.capacity) if times else None
        self.n_written = 0
        self._origin = 0  # index of the first sample written since the last clear
        self._lock = threading.Lock()  # write and read may run in different threads (the dashboard)

    def clear(self, start: int = 0) -> None:
        """Forget every sample (the memory is kept); the next one written gets index ``start``."""
        with self._lock:
            self.n_written = self._origin = int(start)

    def __len__(self) -> int:
        """Number of samples currently held."""
        return min(self.n_written - self._origin, self.capacity)

    @property
    def first_index(self) -> int:
        """Global index of the oldest sample still held."""
        return self.n_written - len(self)

    def write(self, samples: np.ndarray, timestamps=None, arrival: float | np.ndarray = 0.0) -> None:
        """Append ``samples`` ``(n_channels, n)`` with ``n`` timestamps (and arrival times;
        both ignored by a buffer without ``times``).

        A chunk longer than the capacity keeps only its newest ``capacity`` samples
        (they are still counted in :attr:`n_written`).
        """
        n = samples.shape[1]
        if samples.shape[0] != self.n_channels:
            raise DataError(f"ring buffer holds {self.n_channels} channels, got a chunk of {samples.shape[0]}")
        if n == 0:
            return
        with self._lock:
            skip = max(0, n - self.capacity)
            stop = self.n_written + n
            start = self.n_written + skip
            self._put(self.data, samples[:, skip:], start, stop)
            if self.timestamps is not None:
                self._put(self.timestamps, np.asarray(timestamps)[skip:], start, stop)
                if np.ndim(arrival) == 0:
                    self._fill(self.arrivals, float(arrival), start, stop)
                else:
                    self._put(self.arrivals, np.asarray(arrival)[skip:], start, stop)
            self.n_written = stop

    def _put(self, dest: np.ndarray, src: np.ndarray, start: int, stop: int) -> None:
        i, j = start % self.capacity, stop % self.capacity or self.capacity
        if i < j:
            dest[..., i:j] = src
        else:  # wraps around the end
            first = self.capacity - i
            dest[..., i:] = src[..., :first]
            dest[..., :j] = src[..., first:]

    def _fill(self, dest: np.ndarray, value: float, start: int, stop: int) -> None:
        i, j = start % self.capacity, stop % self.capacity or self.capacity
        if i < j:
            dest[i:j] = value
        else:
            dest[i:] = value
            dest[:j] = value

    def _check_range(self, start: int, stop: int) -> None:
        if not (self.first_index <= start <= stop <= self.n_written):
            raise DataError(
                f"samples {start}..{stop} are not in the ring buffer (it holds "
                f"{self.first_index}..{self.n_written}, capacity {self.capacity})"
            )

    def _take(self, src: np.ndarray, start: int, stop: int, out: np.ndarray | None) -> np.ndarray:
        n = stop - start
        if out is None:
            out = np.empty(src.shape[:-1] + (n,), dtype=src.dtype)
        i = start % self.capacity
        first = min(n, self.capacity - i)
        out[..., :first] = src[..., i : i + first]
        if first < n:
            out[..., first:] = src[..., : n - first]
        return out

    def window(self, stop: int, n: int, out: np.ndarray | None = None) -> np.ndarray:
        """Samples ``stop - n .. stop`` as ``(n_channels, n)``, copied into ``out`` if given."""
        self._check_range(stop - n, stop)
        return self._take(self.data, stop - n, stop, out)

    def read(self, start: int, stop: int, rows=None) -> np.ndarray:
        """Samples ``start .. stop`` of ``rows`` (default all) as a new array; indices not held
        (before the oldest, after the newest) come back as NaN. Safe beside a writing thread."""
        start, stop = int(start), int(stop)
        rows = slice(None) if rows is None else rows
        out = np.full((self.data[rows, :1].shape[0], max(0, stop - start)), np.nan, dtype=self.data.dtype)
        with self._lock:
            lo, hi = max(start, self.first_index), min(stop, self.n_written)
            if hi > lo:  # rows picked after the columns: never a copy of the whole buffer
                i, n = lo % self.capacity, hi - lo
                first = min(n, self.capacity - i)
                out[:, lo - start : lo - start + first] = self.data[rows, i : i + first]
                out[:, lo - start + first : hi - start] = self.data[rows, : n - first]
        return out

    def latest(self, n: int, out: np.ndarray | None = None) -> np.ndarray:
        """The newest ``n`` samples ``(n_channels, n)``."""
        return self.window(self.n_written, n, out)

    def timestamp(self, index: int) -> float:
        """LSL timestamp of the sample at global ``index``."""
        self._check_range(index, index + 1)
        return float(self.timestamps[index % self.capacity])

    def arrival(self, index: int) -> float:
        """Local arrival time (pull time) of the sample at global ``index``."""
        self._check_range(index, index + 1)
        return float(self.arrivals[index % self.capacity])

    def timestamps_between(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        self._check_range(start, stop)
        return self._take(self.timestamps, start, stop, out)

    def times_at(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """LSL timestamps and arrival times of the samples at global ``indices`` (all held)."""
        indices = np.asarray(indices)
        if indices.size:
            self._check_range(int(indices.min()), int(indices.max()) + 1)
        pos = indices % self.capacity
        return self.timestamps[pos], self.arrivals[pos]
