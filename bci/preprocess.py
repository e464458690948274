"""Preprocessing: one :class:`Preprocessor`, two faces with the same parameters.

- :meth:`Preprocessor.apply` processes a whole :class:`~bci.io.Recording` offline. With
  ``causal=False`` filters run forward and backward (zero phase); with ``causal=True``
  they run forward only, exactly as the live path does.
- :meth:`Preprocessor.step` processes a live chunk ``(n_channels, n_samples)``, carrying
  filter and resampler state across chunks, so that concatenated outputs equal
  ``apply(..., causal=True)`` of the whole signal to float tolerance.

Order of operations: re-reference (average or bipolar pairs, e.g. the longitudinal
"double banana" or neighbouring iEEG contacts along each shaft, strip or grid), notch
(IIR, each line frequency and harmonics below Nyquist), band-pass (Butterworth,
second-order sections), resample (polyphase FIR, the same
Kaiser-window filter as :func:`scipy.signal.resample_poly`). Euclidean alignment acts on
windows and belongs to the model (:func:`pipelines.alignment.euclidean_alignment` at
training, the saved matrix applied by :class:`bci.model.TrainedModel`), not here.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
from scipy import signal

from .channels import ChannelSet, normalize_name
from .errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: Longitudinal bipolar montage ("double banana"), ordered front to back, left above right.
DOUBLE_BANANA = [
    ("Fp1", "F7"), ("F7", "T7"), ("T7", "P7"), ("P7", "O1"),
    ("Fp1", "F3"), ("F3", "C3"), ("C3", "P3"), ("P3", "O1"),
    ("Fz", "Cz"), ("Cz", "Pz"),
    ("Fp2", "F4"), ("F4", "C4"), ("C4", "P4"), ("P4", "O2"),
    ("Fp2", "F8"), ("F8", "T8"), ("T8", "P8"), ("P8", "O2"),
]  # fmt: skip
#: Channel types whose contacts ``reference: shaft_bipolar`` pairs along their numbering.
IEEG_TYPES = ("ecog", "seeg", "dbs")
_CONTACT = re.compile(r"^(\D.*?)0*(\d+)$")


def shaft_pairs(channels: ChannelSet) -> list[tuple[str, str]]:
    """Neighbouring contacts of every iEEG shaft, strip or grid: ``[(G1, G2), (G2, G3), ...]``.

    Contacts are the channels of :data:`IEEG_TYPES` named lead + number (``G12``,
    ``LA3``, ``ATT01``); each contact is paired with the next number on its lead when that
    one is present (grids follow their numbering, row ends included).
    """
    leads: dict[str, dict[int, str]] = {}
    for name, kind in zip(channels.names, channels.types):
        match = _CONTACT.match(name)
        if kind in IEEG_TYPES and match:
            leads.setdefault(match.group(1), {})[int(match.group(2))] = name
    return [(c[k], c[k + 1]) for c in leads.values() for k in sorted(c) if k + 1 in c]


def reference_matrix(channels: ChannelSet, reference) -> tuple[np.ndarray, list[str]]:
    """The linear re-referencing operator ``(n_out, n_in)`` and the output names.

    ``reference`` is ``None`` (keep), ``'average'``, ``'double_banana'``,
    ``'shaft_bipolar'`` (:func:`shaft_pairs`) or a list of ``[anode, cathode]`` pairs.
    Bipolar pairs whose electrodes are absent are skipped; none present is an error.
    """
    n = len(channels)
    if reference in (None, "none"):
        return np.eye(n), list(channels.names)
    if reference == "average":
        return np.eye(n) - np.full((n, n), 1.0 / n), list(channels.names)
    pairs = shaft_pairs(channels) if reference == "shaft_bipolar" else DOUBLE_BANANA if reference == "double_banana" else reference
    if not isinstance(pairs, (list, tuple)) or not all(len(p) == 2 for p in pairs):
        raise ConfigError(
            f"reference: expected null, 'average', 'double_banana', 'shaft_bipolar' or a list of [anode, cathode] pairs, found {reference!r}"
        )
    rows, names = [], []
    for a, b in pairs:
        a, b = normalize_name(a), normalize_name(b)
        if a in channels.names and b in channels.names:
            row = np.zeros(n)
            row[channels.index(a)], row[channels.index(b)] = 1.0, -1.0
            rows.append(row)
            names.append(f"{a}-{b}")
    if not rows:
        if reference == "shaft_bipolar":
            raise DataError("bipolar montage: expected neighbouring ecog/seeg/dbs contacts named lead + number (G1, G2, ...), found none")
        raise DataError(f"bipolar montage: none of its {len(pairs)} electrode pairs is in the recording")
    return np.vstack(rows), names


def _resampling_filter(up: int, down: int) -> np.ndarray:
    """The anti-aliasing FIR scipy's ``resample_poly`` uses by default (gain ``up``)."""
    max_rate = max(up, down)
    half_len = 10 * max_rate
    h = signal.firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0))
    return h * up


class _CausalResampler:
    """Streaming polyphase resampling: ``y[m] = sum_k h[k] x_up[m*down - k]``.

    Keeps a window of past input that starts at a multiple of ``down`` so that output
    indices of :func:`scipy.signal.upfirdn` on the window line up with global ones.
    """

    def __init__(self, up: int, down: int, n_channels: int):
        self.up, self.down = up, down
        self.h = _resampling_filter(up, down)
        self.history = np.zeros((n_channels, 0))
        self.start = 0  # global input index of history[:, 0]
        self.n_in = 0
        self.n_out = 0

    def process(self, x: np.ndarray) -> np.ndarray:
        self.history = np.concatenate([self.history, x], axis=1)
        self.n_in += x.shape[1]
        # outputs whose newest input sample has arrived: m*down <= (n_in - 1)*up
        last = ((self.n_in - 1) * self.up) // self.down
        if last < self.n_out:
            return np.zeros((x.shape[0], 0))
        full = signal.upfirdn(self.h, self.history, self.up, self.down, axis=1)
        offset = self.start * self.up // self.down
        out = full[:, self.n_out - offset : last + 1 - offset]
        self.n_out = last + 1
        # drop history no future output needs: keep inputs j with j*up >= n_out*down - len(h)
        need_from = max(0, (self.n_out * self.down - len(self.h)) // self.up)
        keep_from = (need_from // self.down) * self.down
        if keep_from > self.start:
            self.history = self.history[:, keep_from - self.start :]
            self.start = keep_from
        return out


@dataclass
class Preprocessor:
    """Re-reference, notch, band-pass and resample EEG, offline or live.

    Parameters
    ----------
    reference : None | 'average' | 'double_banana' | list of [anode, cathode]
    notch : None | float | list of float
        Line frequencies (Hz); harmonics below Nyquist are notched too.
    bandpass : None | (low, high)
        Band edges in Hz; ``low`` or ``high`` may be None for a high- or low-pass.
    resample : None | float
        Output sampling rate in Hz.
    filter_order : int
        Butterworth order of the band-pass (the notch is second order).
    notch_quality : float
        Quality factor of each notch (width = f0 / Q).
    """

    reference: object = None
    notch: object = None
    bandpass: object = None
    resample: float | None = None
    filter_order: int = 4
    notch_quality: float = 30.0
    _stream: dict | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_config(cls, cfg: dict | None) -> "Preprocessor":
        """Build from the ``preprocessing`` section of a config (see ``bci.config``)."""
        cfg = dict(cfg or {})
        cfg.pop("euclidean_alignment", None)
        return cls(**cfg)

    def to_config(self) -> dict:
        return {
            "reference": self.reference,
            "notch": self.notch,
            "bandpass": list(self.bandpass) if self.bandpass is not None else None,
            "resample": self.resample,
            "filter_order": self.filter_order,
            "notch_quality": self.notch_quality,
        }

    # --- design -------------------------------------------------------------------
    def output_sfreq(self, sfreq: float) -> float:
        return float(self.resample) if self.resample else float(sfreq)

    def _sos(self, sfreq: float) -> np.ndarray:
        """All IIR sections (notches then band-pass) for input rate ``sfreq``."""
        nyq = sfreq / 2.0
        sections = []
        notches = [] if self.notch is None else np.atleast_1d(self.notch).astype(float)
        for f0 in notches:
            for harmonic in np.arange(f0, nyq, f0):
                b, a = signal.iirnotch(harmonic, self.notch_quality, fs=sfreq)
                sections.append(signal.tf2sos(b, a))
        if self.bandpass is not None:
            low, high = self.bandpass
            if high is not None and high >= nyq:
                raise DataError(
                    f"band-pass upper edge {high} Hz must be below Nyquist ({nyq:g} Hz at {sfreq:g} Hz)"
                )
            if low is not None and high is not None:
                sections.append(signal.butter(self.filter_order, [low, high], "bandpass", fs=sfreq, output="sos"))
            elif low is not None:
                sections.append(signal.butter(self.filter_order, low, "highpass", fs=sfreq, output="sos"))
            elif high is not None:
                sections.append(signal.butter(self.filter_order, high, "lowpass", fs=sfreq, output="sos"))
        return np.vstack(sections) if sections else np.zeros((0, 6))

    def resample_ratio(self, sfreq: float) -> tuple[int, int]:
        """``(up, down)``: output sample ``m`` of input at ``sfreq`` lies at input sample ``m * down / up``
        (``(1, 1)`` without resampling)."""
        if not self.resample or float(self.resample) == float(sfreq):
            return 1, 1
        frac = Fraction(float(self.resample) / float(sfreq)).limit_denominator(1000)
        if abs(float(frac) * sfreq - float(self.resample)) > 1e-6 * self.resample:
            raise DataError(f"cannot resample {sfreq:g} Hz to {self.resample:g} Hz with a rational ratio")
        return frac.numerator, frac.denominator

    # --- offline ------------------------------------------------------------------
    def process_array(self, data: np.ndarray, sfreq: float, channels: ChannelSet, *, causal: bool = False):
        """Process ``(n_channels, n_times)`` volts; returns ``(data, sfreq, names)``."""
        data = np.asarray(data, dtype=np.float64)
        if not np.all(np.isfinite(data)):
            bad = [channels.names[i] for i in np.flatnonzero(~np.isfinite(data).all(axis=1))]
            raise DataError(f"cannot filter channels holding NaN/inf samples: {', '.join(bad)}")
        ref, names = reference_matrix(channels, self.reference)
        x = ref @ data
        sos = self._sos(sfreq)
        if len(sos):
            x = signal.sosfilt(sos, x, axis=1) if causal else signal.sosfiltfilt(sos, x, axis=1)
        out_sfreq = sfreq
        if self.resample and float(self.resample) != float(sfreq):
            up, down = self.resample_ratio(sfreq)
            if causal:
                n_out = ((x.shape[1] - 1) * up) // down + 1
                x = signal.upfirdn(_resampling_filter(up, down), x, up, down, axis=1)[:, :n_out]
            else:
                x = signal.resample_poly(x, up, down, axis=1)
            out_sfreq = float(self.resample)
        return x, out_sfreq, names

    def apply(self, recording, *, causal: bool = False):
        """Process a whole :class:`~bci.io.Recording`; returns a new one."""
        from .io import Recording

        x, sfreq, names = self.process_array(recording.data, recording.sfreq, recording.channels, causal=causal)
        types = [recording.channels.types[recording.channels.index(n)] if n in recording.channels else "eeg" for n in names]
        return Recording(
            data=x,
            sfreq=sfreq,
            channels=ChannelSet(names, types, recording.channels.positions),
            annotations=recording.annotations.copy(),
            provenance={**recording.provenance, "preprocessing": self.to_config(), "causal": causal},
        )

    # --- streaming ----------------------------------------------------------------
    def start(self, sfreq: float, channels: ChannelSet) -> list[str]:
        """Reset the streaming state for input at ``sfreq`` with ``channels``; returns output names."""
        ref, names = reference_matrix(channels, self.reference)
        sos = self._sos(sfreq)
        resampler = None
        if self.resample and float(self.resample) != float(sfreq):
            up, down = self.resample_ratio(sfreq)
            resampler = _CausalResampler(up, down, len(names))
        self._stream = {
            "sfreq": float(sfreq),
            "n_in": len(channels),
            "ref": ref,
            "sos": sos,
            "zi": np.zeros((len(sos), len(names), 2)),
            "resampler": resampler,
        }
        return names

    def step(self, chunk: np.ndarray) -> np.ndarray:
        """Process one live chunk ``(n_channels, n_samples)`` causally, keeping state."""
        if self._stream is None:
            raise DataError("Preprocessor.step() before start(sfreq, channels)")
        st = self._stream
        chunk = np.asarray(chunk, dtype=np.float64)
        if chunk.ndim != 2 or chunk.shape[0] != st["n_in"]:
            raise DataError(f"expected a chunk of shape ({st['n_in']}, n_samples), found {chunk.shape}")
        x = st["ref"] @ chunk
        if len(st["sos"]):
            x, st["zi"] = signal.sosfilt(st["sos"], x, axis=1, zi=st["zi"])
        if st["resampler"] is not None:
            x = st["resampler"].process(x)
        return x


@dataclass
class TrainingData:
    """Preprocessed, labelled windows ready for ``fit``."""

    X: np.ndarray  # (n, C, T) volts at sfreq, channels = the preprocessor's output
    y: np.ndarray  # class names
    groups: np.ndarray  # recording / session / run of every window
    sfreq: float
    input_channels: ChannelSet
    window_s: float
    classes: list
    sources: list = field(default_factory=list)


def sliding_windows(data: np.ndarray, sfreq: float, window_s: float, hop_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``(C, T)`` into ``(n, C, W)`` windows every ``hop_s``; returns windows and start times (s)."""
    width = int(round(window_s * sfreq))
    hop = int(round(hop_s * sfreq))
    if width <= 0 or hop <= 0:
        raise DataError(f"window ({window_s} s) and hop ({hop_s} s) must each span at least one sample")
    if data.shape[1] < width:
        raise DataError(f"recording of {data.shape[1] / sfreq:.2f} s is shorter than one {window_s} s window")
    view = np.lib.stride_tricks.sliding_window_view(data, width, axis=1)[:, ::hop]
    return np.ascontiguousarray(view.transpose(1, 0, 2)), np.arange(view.shape[1]) * hop / sfreq


def epochs_from_annotations(recording, event_map: dict[str, object], tmin: float, tmax: float):
    """Cut labelled epochs ``(n, C, T)`` at annotations; returns ``(X, y, onsets_s)``.

    ``event_map`` maps annotation descriptions to labels (e.g. ``{'T1': 'left_hand'}``).
    Epochs overrunning the recording or overlapping a ``BAD_*`` span (e.g. a ``BAD_gap``
    of a live recording) are dropped, with a log message.
    """
    ann = recording.annotations
    start = int(round(tmin * recording.sfreq))
    stop = int(round(tmax * recording.sfreq))
    bad = [(o, o + d) for o, d, desc in zip(ann.onset, ann.duration, ann.description) if desc.upper().startswith("BAD")]
    X, y, onsets = [], [], []
    n_bad = 0
    for onset, desc in zip(ann.onset, ann.description):
        if desc not in event_map:
            continue
        i = int(round(onset * recording.sfreq))
        if i + start < 0 or i + stop > recording.n_times:
            continue
        if any(b0 < onset + tmax and onset + tmin < b1 for b0, b1 in bad):
            n_bad += 1
            continue
        X.append(recording.data[:, i + start : i + stop])
        y.append(event_map[desc])
        onsets.append(onset)
    if n_bad:
        log.warning("dropped %d epochs overlapping BAD spans", n_bad)
    if not X:
        found = sorted(set(ann.description))
        raise DataError(f"no epochs: none of the events {sorted(event_map)} fit in the recording (annotations: {found})")
    return np.stack(X), np.asarray(y), np.asarray(onsets)
