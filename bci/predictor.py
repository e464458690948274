"""The one streaming predictor: :meth:`bci.model.TrainedModel.stream`.

A :class:`StreamPredictor` takes a source's samples chunk by chunk (volts, the source's
channels and rate) and gives the model's decisions, owning everything between:

    chunk -> NaN/inf flagged (the filters get the last finite value) -> channel mapping
      -> causal preprocessing (the model's Preprocessor.step: filters with state,
         re-reference, resample) -> processed ring buffer at the model rate
      -> every hop: the latest window -> alignment -> the model
         (predict_proba, or MVPFormer's key/value-cached segment path)

``bci stream`` (:class:`realtime.decoder.Decoder`), the dashboard's detector and
``bci predict`` (:meth:`~bci.model.TrainedModel.predict_recording`) all run this object,
so a recording played live and the same recording predicted offline give the same windows
and the same probabilities.

Decision grid. Windows end on a fixed grid of processed samples: the first when a whole
window has arrived (``n_times``), then every ``hop`` samples, exactly the windows
:func:`bci.preprocess.sliding_windows` cuts offline. ``catch_up=True`` (offline) decides
every due window; ``catch_up=False`` (live) decides only the newest due window of a push
and counts the skipped ones in :attr:`dropped_windows`, so a slow model never makes the
latency grow.

Online adaptation. A model with an alignment (a Euclidean-alignment or re-centring step, or
a saved signal alignment: :meth:`~bci.model.TrainedModel.online_adaptation`) decodes through
it with the reference following the stream: every decoded window is aligned with the reference
of the windows before it, and one window per stride of new signal (``adapt_options.stride_s``,
default the window's length: overlapping windows share their samples, so a sample moves the
reference once, whatever the hop) then moves it (an unlabelled running geodesic mean with
forgetting and outlier rejection, :class:`pipelines.alignment.OnlineReference`: its forgetting
is per move, so the reference remembers about ``stride / forgetting`` seconds); the move waits for
:meth:`flush_adaptation` (the live loop calls it after publishing) or the next decision, so it
stays off the decision's latency. ``adapt=None`` (the
default) adapts whenever the model has an alignment; ``adapt=False`` keeps the training
reference. :meth:`adaptation_state` / :meth:`load_adaptation_state` carry the reference
across streams (a session resumed), and withheld windows never move it.

Withheld windows. A window touched by NaN/inf samples (plus ``settle_s`` of filter
transient after them) or holding a flat source channel (peak-to-peak under ``flat_uv``
microvolts over the window's span) is not decoded: it appears in :attr:`windows` with
its reason and no probabilities.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .buffer import RingBuffer
from .channels import ChannelMapping, ChannelSet
from .errors import DataError, ModelError


@dataclass
class Window:
    """One window decided by a push: its end and probabilities, or why it was withheld."""

    end: int  # processed-sample index (exclusive) of the window's end
    proba: np.ndarray | None  # class probabilities (order of the model's classes); None: withheld
    reason: str = ""  # why it was withheld


class StreamPredictor:
    """A trained model decoding one stream (see the module docstring).

    Parameters
    ----------
    model : bci.model.TrainedModel
    sfreq : float
        The source's sampling rate.
    channels : ChannelSet
        The source's channels (rows of every pushed chunk).
    mapping : ChannelMapping, optional
        How the source feeds the model's input channels (default: planned from the
        channels; an unlabelled stream's caller plans it itself).
    hop_s : float, optional
        Seconds between decisions (default: the model's hop; one segment, or a whole
        number of them, on MVPFormer's cached path).
    catch_up : bool
        Decide every due window (offline) or only the newest of each push (live).
    streaming : bool
        MVPFormer: the cached segment path (False: the full window every decision).
    settle_s, flat_uv : float
        Withhold windows within ``settle_s`` after NaN/inf samples, and windows with a
        source channel flatter than ``flat_uv`` microvolts (0: no flat check).
    buffer_s : float
        Processed samples kept (at least two windows and a hop).
    adapt : bool or None
        Online adaptation of the model's alignment (None: when it has one).
    adapt_options : dict, optional
        :class:`pipelines.alignment.OnlineReference` settings (forgetting, prior, warmup,
        reject_z) and ``stride_s``: seconds of new signal between windows that move the
        reference (default: the window's length, so each sample moves it once; 0: every
        decoded window).
    """

    def __init__(self, model, sfreq: float, channels: ChannelSet, *, mapping: ChannelMapping | None = None,
                 hop_s: float | None = None, catch_up: bool = False, streaming: bool = True,
                 settle_s: float = 1.0, flat_uv: float = 0.1, buffer_s: float = 30.0, adapt: bool | None = None,
                 adapt_options: dict | None = None):  # fmt: skip
        self.sfreq_in = float(sfreq)
        self.source = channels
        pre = model.preprocessor()
        if not pre.resample and abs(self.sfreq_in - model.sfreq) > 1e-6:
            raise DataError(f"{model.name} expects {model.sfreq:g} Hz and its preprocessing does not resample; "
                            f"the source is at {self.sfreq_in:g} Hz")  # fmt: skip
        if mapping is None:
            model = model.bind(channels)
            mapping = channels.plan_mapping(model.input_channels)
        else:
            model = model.bind(mapping.target)
        self.model, self.mapping = model, mapping
        self.catch_up, self.settle_s, self.flat_uv = bool(catch_up), float(settle_s), float(flat_uv)
        self.sfreq = float(model.sfreq)
        self.n_times = model.n_times
        self.classes = [str(c) for c in model.classes]
        self._pre = pre
        self._up, self._down = pre.resample_ratio(self.sfreq_in)
        names = pre.start(self.sfreq_in, model.input_channels)
        if list(names) != list(model.channels):
            raise ModelError(f"{model.name}: preprocessing gives channels {names[:4]}..., the model expects {model.channels[:4]}...")
        options = dict(adapt_options or {})
        stride_s = options.pop("stride_s", None)
        if stride_s is not None and (isinstance(stride_s, bool) or not isinstance(stride_s, (int, float)) or stride_s < 0):
            raise DataError(f"adapt_options.stride_s: expected seconds >= 0 (0: every window), found {stride_s!r}")
        self.adapt_stride = self.n_times if stride_s is None else int(round(stride_s * self.sfreq))
        self.adaptation = model.online_adaptation(update=adapt is not False, **options)
        if adapt and self.adaptation is None:
            raise DataError(f"{model.name} has no alignment to adapt (no Euclidean alignment or re-centring)")
        self.segments = model.segment_stream(len(names)) if streaming and self.adaptation is None else None
        if self.segments is not None:
            seg = self.segments.segment_len
            hop = max(1, int(round((hop_s or seg / self.sfreq) * self.sfreq / seg))) * seg
        else:
            hop = int(round((hop_s or model.hop_s) * self.sfreq))
        if hop < 1:
            raise DataError(f"a hop of {hop_s or model.hop_s} s is shorter than one sample at {self.sfreq:g} Hz")
        self.hop = hop
        self.hop_s = hop / self.sfreq
        self.path = "mvpformer-streaming" if self.segments is not None else "predict_proba"
        self._used_rows = [channels.index(n) for n in mapping.picked]
        self.proc = RingBuffer(len(names), max(int(buffer_s * self.sfreq), 2 * self.n_times + hop), times=False)
        self._n_raw = int(round(model.window_s * self.sfreq_in))
        self._raw = None  # the source rows read, for the flat check
        if self.flat_uv > 0 and self._used_rows:
            self._raw = RingBuffer(len(self._used_rows), max(self._n_raw + 1, int(buffer_s * self.sfreq_in)), times=False)
        self._window = np.empty((1, len(names), self.n_times))
        self.dropped_windows = 0
        self.model_s = 0.0  # seconds in the model during the last push
        self.windows: list[Window] = []  # decided by the last push
        self.reset()

    # ------------------------------------------------------------------- state
    def reset(self) -> None:
        """Restart from the next pushed sample (after a gap or a lost stream): no sample
        before it is reused, and decisions resume once a whole new window has arrived. The
        adapted alignment reference is kept: a gap does not start a new session."""
        self._pre.start(self.sfreq_in, self.model.input_channels)
        self.proc.clear()
        if self._raw is not None:
            self._raw.clear()
        self.n_in = 0  # source samples pushed since the reset
        self._next = self.n_times  # processed end of the next due window
        self._bad: tuple[int, int] | None = None  # processed range touched by NaN/inf
        self._bad_channels: list[str] = []
        self._hold: np.ndarray | None = None  # last finite value per source channel
        self._segments_done = 0
        self._moved_end: int | None = None  # processed end of the last window that moved the adapted reference
        if self.segments is not None:
            self.segments.reset()

    @property
    def adapting(self) -> bool:
        """Whether decoded windows move the alignment's reference."""
        return self.adaptation is not None and self.adaptation.update

    def flush_adaptation(self) -> None:
        """Move the adapted reference with the last decoded window now (else the next decision
        does it first: the results are the same)."""
        if self.adaptation is not None:
            self.adaptation.flush()

    def adaptation_state(self) -> dict | None:
        """The adapted reference and its counters (arrays and numbers), or None."""
        return None if self.adaptation is None else self.adaptation.state_dict()

    def load_adaptation_state(self, state: dict) -> None:
        """Continue from :meth:`adaptation_state` of an earlier stream of the same model."""
        if self.adaptation is None:
            raise DataError(f"{self.model.name} has no alignment: nothing to resume")
        shape = self.adaptation.reference.reference.shape
        if np.shape(state.get("reference")) != shape:
            raise DataError(f"adaptation state: expected a {shape[0]}x{shape[1]} reference (this model's), "
                            f"found {np.shape(state.get('reference'))}")  # fmt: skip
        self.adaptation.load_state_dict(state)

    def input_index(self, i: int) -> tuple[int, int]:
        """Source samples (indices since the reset) behind processed sample ``i``: the one at
        or before it (its time) and the one that completed it (its arrival)."""
        m = i * self._down
        return m // self._up, min((m + self._up - 1) // self._up, self.n_in - 1)

    def window(self, end: int) -> np.ndarray:
        """The processed window ``(n_channels, n_times)`` ending at ``end`` (still held)."""
        return self.proc.window(end, self.n_times)

    # -------------------------------------------------------------------- push
    def push(self, chunk: np.ndarray) -> np.ndarray | None:
        """Feed source samples ``(n_source_channels, n)`` (volts); returns the probabilities
        ``(k, n_classes)`` of the windows decided and not withheld, or None. :attr:`windows`
        lists every window this push decided (withheld ones included)."""
        chunk = np.array(chunk, dtype=np.float64, ndmin=2)
        if chunk.shape[0] != len(self.source):
            raise DataError(f"expected chunks of {len(self.source)} channels (the source's), found {chunk.shape[0]}")
        self.windows, self.model_s = [], 0.0
        # offline a chunk may be longer than the buffer: every due window must still be held when decided
        piece = chunk.shape[1] if not self.catch_up else max(1, int((self.proc.capacity - self.n_times) * self.sfreq_in / self.sfreq) // 2)
        for start in range(0, chunk.shape[1], piece):
            self._push(chunk[:, start : start + piece])
        probas = [w.proba for w in self.windows if w.proba is not None]
        return np.vstack(probas) if probas else None

    def _push(self, chunk: np.ndarray) -> None:
        chunk = self._hold_finite(chunk)
        if self._raw is not None:
            self._raw.write(chunk[self._used_rows])
        self.n_in += chunk.shape[1]
        self.proc.write(self._pre.step(self.mapping.apply(chunk)))
        ends = self._due()
        if self.segments is not None:
            self._decide_segments(ends)
        else:
            self._decide_windows(ends)

    def _hold_finite(self, chunk: np.ndarray) -> np.ndarray:
        """NaN/inf samples -> the channel's last finite value, flagging the processed range."""
        finite = np.isfinite(chunk)
        if not finite.all():
            bad_rows = np.flatnonzero(~finite.all(axis=1))
            hold = self._hold if self._hold is not None else np.zeros(chunk.shape[0])
            cols = np.arange(chunk.shape[1])
            for r in bad_rows:
                last_ok = np.maximum.accumulate(np.where(finite[r], cols, -1))
                chunk[r] = np.where(last_ok >= 0, chunk[r][np.maximum(last_ok, 0)], hold[r])
            last_bad = self.n_in + int(np.flatnonzero(~finite.all(axis=0))[-1]) + 1  # source index past the last bad sample
            last_out = -(-last_bad * self._up // self._down)  # processed index past the last bad sample
            until = last_out + int(round(self.settle_s * self.sfreq))
            first = self.proc.n_written if self._bad is None else self._bad[0]
            self._bad = (first, until)
            self._bad_channels = sorted(set(self._bad_channels) | {self.source.names[r] for r in bad_rows})
        last = chunk[:, -1]
        self._hold = last.copy() if self._hold is None else np.where(np.isfinite(last), last, self._hold)
        return chunk

    def _due(self) -> list[int]:
        """Processed ends of the windows due now (live: only the newest)."""
        n = self.proc.n_written
        if self.segments is not None:
            n -= n % self.segments.segment_len
        if n < self._next:
            return []
        ends = list(range(self._next, n + 1, self.hop))
        self._next = ends[-1] + self.hop
        if not self.catch_up:
            self.dropped_windows += len(ends) - 1
            ends = ends[-1:]
        return ends

    def _withheld(self, end: int) -> str:
        start = end - self.n_times
        if self._bad is not None:
            if start < self._bad[1] and end > self._bad[0]:
                return f"NaN/inf samples on {', '.join(self._bad_channels[:8])}"
            if start >= self._bad[1]:
                self._bad, self._bad_channels = None, []
        if self._raw is not None:
            stop = min(self.input_index(end - 1)[1] + 1, self._raw.n_written)
            if stop - self._raw.first_index >= self._n_raw:
                seg = self._raw.window(stop, self._n_raw)
                flat = np.flatnonzero(seg.max(axis=1) - seg.min(axis=1) < self.flat_uv * 1e-6)
                if flat.size:
                    names = [self.mapping.picked[i] for i in flat]
                    return f"flat channels: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}"
        return ""

    def _moves(self, end: int) -> bool:
        """Whether the window ending at ``end`` moves the adapted reference: the first one, then
        one at least :attr:`adapt_stride` samples after the last that did."""
        if self._moved_end is not None and end - self._moved_end < self.adapt_stride:
            return False
        self._moved_end = end
        return True

    def _decide_windows(self, ends: list[int]) -> None:
        reasons = [self._withheld(e) for e in ends]
        kept = [e for e, r in zip(ends, reasons) if not r]
        proba = {}
        if kept:
            X = self._window if len(kept) == 1 else np.empty((len(kept), *self._window.shape[1:]))
            for i, e in enumerate(kept):
                self.proc.window(e, self.n_times, out=X[i])
            t0 = time.perf_counter()
            if self.adaptation is not None:  # in stream order: each window is decoded, then moves the reference
                out = self.model.order_proba(self.adaptation.predict_proba(X, moves=[self._moves(e) for e in kept]))
            else:
                out = self.model.predict_proba(X)
            proba = dict(zip(kept, out))
            self.model_s += time.perf_counter() - t0
        self.windows += [Window(e, proba.get(e), r) for e, r in zip(ends, reasons)]

    def _decide_segments(self, ends: list[int]) -> None:
        """MVPFormer: every new segment goes once through the cache; a decision is the
        window of the last ``n_times / segment_len`` segments."""
        seg, stream = self.segments.segment_len, self.segments
        n_segments = self.proc.n_written // seg
        first = self._segments_done
        if not self.catch_up and n_segments - first > stream.context:  # far behind: only the last context segments matter
            stream.reset()
            first = n_segments - stream.context
        due = set(ends)
        align = self.model.alignment
        t0 = time.perf_counter()
        for s in range(first, n_segments):
            x = self.proc.window((s + 1) * seg, seg)
            stream.push(align @ x if align is not None else x)
            end = (s + 1) * seg
            if end in due:
                reason = self._withheld(end)
                self.windows.append(Window(end, None if reason else self.model.order_proba(stream.proba()), reason))
        self.model_s += time.perf_counter() - t0
        self._segments_done = n_segments
