"""A decoder's probabilities for a consumer, in process or from another one (the feedback view's sources).

Both give ``latest() -> (probabilities, label, count)`` (None before the first decision),
read without blocking, and a short ``state``:

- :class:`DecisionQueue` - a :class:`realtime.decoder.Decoder` callback in this process;
- :class:`ProbabilityInlet` - the decoder's ``bci-out`` LSL outlet (one channel per class
  named by its label, plus ``source_time``), e.g. a decoder in another process.
"""

from __future__ import annotations

import threading

import numpy as np
import pylsl

from bci.errors import StreamError

from .inlet import ReconnectingInlet, resolve


class DecisionQueue:
    """Decoder callback -> newest probabilities, handed over under a lock.

    Pass it as ``Decoder(..., on_decision=queue)``; :meth:`latest` returns
    ``(probabilities, label, count)`` or None before the first decision.
    """

    def __init__(self, classes):
        self.classes = [str(c) for c in classes]
        self._lock = threading.Lock()
        self._latest = None
        self.count = 0
        self.state = "waiting"

    def __call__(self, decision) -> None:
        p = np.asarray(decision.smoothed, dtype=float)
        with self._lock:
            self.count += 1
            self._latest = (p.copy(), str(decision.label), self.count)
            self.state = "running"

    def latest(self):
        with self._lock:
            return self._latest


class ProbabilityInlet(ReconnectingInlet):
    """The ``bci-out`` outlet of a decoder (another process) read without blocking.

    Channel labels give the classes (the ``source_time`` channel is left out). Opened
    with ``recover=False`` so that a closed outlet is reported at once instead of a pull
    waiting for it: :attr:`state` becomes ``lost`` and every later poll looks for the
    stream again without blocking (:class:`pylsl.ContinuousResolver`).
    """

    def __init__(self, name: str = "bci-out", *, timeout: float = 5.0):
        self.name = name
        self.timeout = float(timeout)
        self.count = 0
        self.state = "waiting"
        self._latest = None
        self._connect(resolve(name=name, timeout=timeout))

    def _connect(self, info) -> None:
        inlet = pylsl.StreamInlet(info, max_buflen=10, recover=False)
        try:
            full = inlet.info(timeout=self.timeout)
            inlet.open_stream(timeout=self.timeout)
        except (pylsl.util.TimeoutError, pylsl.util.LostError):
            raise StreamError(f"probability stream {self.name!r} was found but did not answer within {self.timeout:g} s") from None
        labels = []
        ch = full.desc().child("channels").child("channel")
        while not ch.empty():
            labels.append(ch.child_value("label"))
            ch = ch.next_sibling("channel")
        if len(labels) != full.channel_count():
            raise StreamError(f"stream {self.name!r} does not name its {full.channel_count()} channels; expected one per class + source_time")
        columns = [i for i, lab in enumerate(labels) if lab != "source_time"]
        classes = [labels[i] for i in columns]
        if len(classes) < 2:
            raise StreamError(f"stream {self.name!r} carries {classes}: expected probabilities of at least 2 classes")
        if self.inlet is None and getattr(self, "classes", None) not in (None, classes):
            raise StreamError(f"stream {self.name!r} came back with classes {classes}, was {self.classes}")
        self.columns, self.classes, self.inlet, self.uid = columns, classes, inlet, full.uid()

    def latest(self):
        """``(probabilities, label, count)`` of the newest decision, or None before the first."""
        if not self.reconnect():
            return self._latest
        try:
            samples, _ = self.inlet.pull_chunk(timeout=0.0)
        except pylsl.util.LostError:
            self.inlet, self.state = None, "lost"
            return self._latest
        if samples:
            self.count += len(samples)
            p = np.asarray(samples[-1], dtype=float)[self.columns]
            self._latest = (p, self.classes[int(np.argmax(p))], self.count)
            self.state = "running"
        return self._latest

    def _reconnected(self) -> None:
        self.state = "running"
