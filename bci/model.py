"""Saved models: what ``bci train`` writes and ``bci stream`` / ``bci predict`` load.

A :class:`TrainedModel` is a fitted pipeline plus everything needed to feed it the
same inputs it was trained on: the input channel set (a live source is mapped onto
it), the preprocessing (run causally, offline and live alike), the sampling rate and
window length at the model input, the Euclidean-alignment matrix estimated on the
calibration data, and metadata (seed, data, versions, scores).

On disk, ``MODEL_DIR`` holds only formats that load without executing code:

- ``model.json``: metadata, channels and channel contract, preprocessing, window, classes;
- ``weights.pt``: deep-network checkpoints (``torch.save`` of plain values and
  tensors, read back with ``torch.load(weights_only=True)``);
- ``estimator.skops``: the scikit-learn part of the pipeline, read back with
  :func:`skops.io.load` after checking that every type skops itself does not trust is
  one of :data:`TRUSTED_TYPES` (exact names, no functions);
- ``alignment.npy``: the alignment matrix (``np.load(allow_pickle=False)``).

Anything else is refused with one line naming what was found: an unlisted type, a
checkpoint that is not tensors and plain values, metadata of the wrong shape.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import skops.io as sio
import torch
from sklearn.pipeline import Pipeline

from pipelines.alignment import OnlineAdaptation
from pipelines.deep import ANY_CHANNEL_COUNT, DeepClassifier
from pipelines.fastpath import compile_proba
from pipelines.seizure import PerChannel
from pipelines.validation import flat_steps

from .alarm import AlarmRule
from .channels import ChannelContract, ChannelSet
from .config import Config, validate_preprocessing
from .errors import ConfigError, DataError, ModelError
from .io import Recording, usable_signals
from .predictor import StreamPredictor
from .preprocess import Preprocessor, reference_matrix

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_FILE = "model.json"
WEIGHTS_FILE = "weights.pt"
ESTIMATOR_FILE = "estimator.skops"
ALIGNMENT_FILE = "alignment.npy"
#: Types a saved estimator may hold beyond those skops trusts by default: the classes
#: that saving every shipped pipeline (configs/pipelines/*.yml, as ``bci train`` fits and
#: saves it) produces, plus :func:`skops.io.get_untrusted_types`. Exact names only, never
#: a package prefix and never a function.
TRUSTED_TYPES = frozenset({
    "moabb.pipelines.features.AugmentedDataset",
    "pipelines.alignment.EuclideanAlignment",
    "pipelines.alignment.RiemannianRecentering",
    "pipelines.augmented.AugmentedCovariances",
    "pipelines.filterbank.FilterBank",
    "pipelines.seizure.BandPower",
    "pipelines.seizure.PerChannel",
    "pipelines.selection.AugmentedGridSearch",
    "pyriemann.classification.FgMDM",
    "pyriemann.classification.MDM",
    "pyriemann.estimation.Covariances",
    "pyriemann.preprocessing.Whitening",
    "pyriemann.spatialfilters.CSP",
    "pyriemann.tangentspace.FGDA",
    "pyriemann.tangentspace.TangentSpace",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.model_selection._split.StratifiedKFold",
})  # fmt: skip
_PLACEHOLDER = "passthrough"
#: How many of the most contributing channels ``predict_recording`` reports per window.
TOP_CHANNELS = 3


def _deep_class():
    return DeepClassifier


def _final_estimator(estimator):
    """The last step of a pipeline (or the estimator itself)."""
    steps = getattr(estimator, "steps", None)
    return steps[-1][1] if steps else estimator


def inferred_contract(estimator) -> ChannelContract:
    """The channel contract a fitted pipeline allows: ``any`` for per-channel detectors
    (:class:`pipelines.seizure.PerChannel`) and networks that take any channel count
    (``pipelines.deep.ANY_CHANNEL_COUNT``: MVPFormer, joint or channel-independent) as the
    whole pipeline; ``fixed`` for everything else."""

    final = _final_estimator(estimator)
    alone = len(getattr(estimator, "steps", [None])) == 1
    deep_any = isinstance(final, _deep_class()) and final.model in ANY_CHANNEL_COUNT
    return ChannelContract("any" if alone and (isinstance(final, PerChannel) or deep_any) else "fixed")


@dataclass
class TrainedModel:
    """A fitted pipeline with its input contract (see the module docstring).

    ``predict_proba`` takes windows ``(n, n_channels, n_times)`` already preprocessed
    (volts, at :attr:`sfreq`, channels :attr:`channels`) and applies the stored
    alignment itself. ``channels_contract`` says whether those channels are fixed
    (``input_channels``, mapped and interpolated onto) or any channels of a recording
    (``input_channels`` is then the montage it was trained for; :meth:`bind` gives the
    model for a given source).
    """

    name: str
    estimator: object
    classes: list
    input_channels: ChannelSet
    sfreq: float
    window_s: float
    hop_s: float
    preprocessing: dict
    task: str = "classification"
    alignment: np.ndarray | None = None
    metadata: dict = field(default_factory=dict)
    channels_contract: ChannelContract = field(default_factory=ChannelContract)

    # --- the input contract -------------------------------------------------------
    @property
    def n_times(self) -> int:
        """Window length in samples at the model input."""
        return int(round(self.window_s * self.sfreq))

    @property
    def channels(self) -> list[str]:
        """Names of the model's input rows (after the preprocessing's re-reference)."""
        return reference_matrix(self.input_channels, self.preprocessing.get("reference"))[1]

    def alarm_rule(self, override: dict | None = None) -> AlarmRule:
        """The alarm rule to run on this model's probabilities: ``override`` (a config's ``alarm``
        section) when given, else the rule saved with the model (a seizure model's operating point:
        ``bci train``'s ``train.alarm`` / ``train.operating_point``), else the rule's defaults."""
        return AlarmRule.from_config(override if override is not None else self.metadata.get("alarm"))

    def bind(self, channels: ChannelSet) -> "TrainedModel":
        """This model reading a source with ``channels``: itself when its channels are
        fixed or already those, else a copy whose ``input_channels`` are the source's
        channels its contract accepts (in the source's order)."""
        picked = self.channels_contract.select(channels)
        if self.channels_contract.kind == "fixed" or picked == self.input_channels:
            return self
        return replace(self, input_channels=picked)

    def preprocessor(self) -> Preprocessor:
        """A fresh :class:`Preprocessor` with the training settings (the alignment is the model's:
        :meth:`predict_proba` applies it)."""
        return Preprocessor.from_config(self.preprocessing)

    def _check(self, windows) -> np.ndarray:
        X = np.asarray(windows, dtype=np.float64)
        if X.ndim == 2:
            X = X[None]
        expected = (len(self.channels) if self.channels_contract.kind == "fixed" else X.shape[1], self.n_times)
        if X.ndim != 3 or X.shape[1:] != expected or X.shape[1] == 0:
            raise DataError(f"{self.name} expects windows of shape (n, {expected[0]}, {expected[1]}); found {X.shape}")
        if not np.isfinite(X).all():
            raise DataError(f"{self.name}: windows hold NaN/inf samples")
        if self.alignment is not None:
            X = np.einsum("ij,njt->nit", self.alignment, X)
        return X

    # --- inference ----------------------------------------------------------------
    def predict_proba(self, windows) -> np.ndarray:
        """Class probabilities ``(n, n_classes)``, columns in the order of :attr:`classes`."""
        X = self._check(windows)
        fast = self._fast_proba()
        proba = fast(X) if fast is not None else self.estimator.predict_proba(X)
        return self.order_proba(np.asarray(proba, dtype=np.float64))

    def prepare(self) -> None:
        """Compile the live fast paths now (a deep network's ONNX export takes seconds): the live
        loop calls this before it subscribes to the stream. An MVPFormer's streaming step is
        compiled for the model's own channel count (:meth:`segment_stream`)."""
        for step in flat_steps(self.estimator):
            if isinstance(step, DeepClassifier):
                step.onnx_proba()
        self._fast_proba()
        self.segment_stream(len(self.input_channels), compile=True)

    def _fast_proba(self):
        """The estimator's closed-form path (:func:`pipelines.fastpath.compile_proba`: tangent space +
        linear classifier), compiled on first use and again after a refit; None when it has none."""
        fast = self.__dict__.get("_fast")
        if fast is not None and fast[0] is self.estimator and (fast[1] is None or fast[1].valid()):
            return fast[1]
        self.__dict__["_fast"] = (self.estimator, compile_proba(self.estimator))
        return self.__dict__["_fast"][1]

    def order_proba(self, proba: np.ndarray) -> np.ndarray:
        """Probabilities in the estimator's ``classes_`` order -> the order of :attr:`classes`."""
        fitted = [str(c) for c in getattr(self.estimator, "classes_", self.classes)]
        if fitted == list(self.classes):
            return proba
        return proba[..., [fitted.index(c) for c in self.classes]]

    def segment_stream(self, n_channels: int, compile: bool = False):
        """The network's cached streaming path on ``n_channels`` input rows
        (:class:`pipelines.deep.SegmentStream`), or None: only an MVPFormer that is the whole
        pipeline has one. ``compile`` exports its ONNX Runtime step (kept for later streams of
        this channel count); without it a step compiled earlier is used, else the eager one."""
        steps = [s for _, s in getattr(self.estimator, "steps", [])[:-1] if s != _PLACEHOLDER]
        final = _final_estimator(self.estimator)
        if steps or not hasattr(final, "segment_stream"):
            return None
        return final.segment_stream(n_channels, self.n_times, compile=compile)

    def online_adaptation(self, update: bool = True, **options) -> OnlineAdaptation | None:
        """The model's alignment following a stream, trial by trial
        (:class:`pipelines.alignment.OnlineAdaptation`: its Euclidean-alignment or re-centring
        step, or the saved signal alignment), or None when it has no alignment. ``update``
        False keeps the training reference."""
        if not OnlineAdaptation.supports(self.estimator, self.alignment):
            return None
        return OnlineAdaptation(self.estimator, self.alignment, update=update, **options)

    def stream(self, sfreq: float, channels: ChannelSet, **options) -> StreamPredictor:
        """The streaming predictor of this model on a source at ``sfreq`` with ``channels``
        (:class:`bci.predictor.StreamPredictor`; ``options``: its keyword parameters):
        ``push(chunk) -> probabilities | None``."""
        return StreamPredictor(self, sfreq, channels, **options)

    def channel_weights(self, windows) -> np.ndarray | None:
        """Per-channel contribution to the decision ``(n, n_channels)``, or None.

        DBConformer: its channel attention (sums to 1). MVPFormer: each channel's share
        of the last class's logit (joint mode) or each channel's own probability of the
        last class (``channel_mode="independent"``). Per-channel detectors (with a
        ``channel_proba`` method, e.g. ``pipelines.seizure.PerChannel``): each channel's
        own probability of the last class. Models without either give None.
        """

        final = _final_estimator(self.estimator)
        module = final.module_ if getattr(final, "net_", None) is not None else None
        has_attention = module is not None and hasattr(module, "channel_weights")
        if not has_attention and not hasattr(final, "channel_proba"):
            return None
        X = self._check(windows)
        for _, step in getattr(self.estimator, "steps", [])[:-1]:
            if step != _PLACEHOLDER:
                X = step.transform(X)
        if not has_attention:
            return np.asarray(final.channel_proba(X), dtype=np.float64)
        module.eval()
        with torch.no_grad():
            w = module.channel_weights(torch.as_tensor(final._prepare(X))).cpu().numpy()
        return w[..., -1] if w.ndim == 3 else w

    def prepare_recording(self, recording):
        """Map a recording onto the channels this model reads and preprocess it causally.

        Fixed channels: mapped onto :attr:`input_channels` (missing ones interpolated
        where positions allow, else a :class:`DataError` naming them). Any channels: the
        recording's channels of the contract's types. The channels read must hold signal
        (:func:`bci.io.usable_signals`: flat ones are dropped with a logged warning, then
        interpolated or left out) at :attr:`sfreq` unless the preprocessing resamples.
        Returns the processed recording and the :class:`~bci.channels.ChannelMapping`
        (its ``target`` is the channels read).
        """
        recording = self._usable(recording)
        mapping = self._mapping(recording.channels)
        mapped = Recording(
            data=mapping.apply(recording.data), sfreq=recording.sfreq, channels=mapping.target,
            annotations=recording.annotations, provenance=recording.provenance,
        )  # fmt: skip
        return self.preprocessor().apply(mapped, causal=True), mapping

    def predict_recording(self, recording, hop_s: float | None = None, chunk_s: float = 30.0,
                          streaming: bool = True, adapt: bool | None = None) -> list[dict]:  # fmt: skip
        """Per-window probabilities over a whole recording, as the live loop gives them.

        The recording (checked and mapped as :meth:`prepare_recording` says) is pushed
        through :meth:`stream` in ``chunk_s`` chunks, deciding every window
        (``catch_up``): the windows, preprocessing, model path and online adaptation
        (``adapt``, as :class:`~bci.predictor.StreamPredictor`'s) of ``bci stream``.
        Returns records ``{"start_s", "end_s", <class>: probability, ...}``; windows end
        at the time of their last sample. Models with per-channel contributions
        (:meth:`channel_weights`) add ``"top_channels"``: the :data:`TOP_CHANNELS` most
        contributing channels of the window, ``[[name, weight], ...]``, largest first.
        """
        recording = self._usable(recording)
        mapping = self._mapping(recording.channels)
        chunk = max(1, int(round(chunk_s * recording.sfreq)))
        predictor = self.stream(recording.sfreq, recording.channels, mapping=mapping, hop_s=hop_s, catch_up=True,
                                streaming=streaming, flat_uv=0.0, buffer_s=2 * chunk_s + self.window_s,
                                adapt=adapt)  # fmt: skip
        model, weights, records = predictor.model, True, []
        for start in range(0, recording.n_times, chunk):
            predictor.push(recording.data[:, start : start + chunk])
            done = [w for w in predictor.windows if w.proba is not None]
            w = model.channel_weights(np.stack([predictor.window(d.end) for d in done])) if weights and done else None
            weights = weights and (w is not None or not done)  # the first windows tell whether it has any
            for i, d in enumerate(done):
                end_s = d.end / self.sfreq
                record = {"start_s": round(end_s - self.window_s, 6), "end_s": round(end_s, 6),
                          **{c: float(p) for c, p in zip(self.classes, d.proba)}}  # fmt: skip
                if w is not None:
                    record["top_channels"] = top_channels(model.channels, w[i])
                records.append(record)
        return records

    def _usable(self, recording):
        """The recording with only channels holding signal (:func:`bci.io.usable_signals`) at a rate
        this model reads."""
        rate = None if self.preprocessing.get("resample") else self.sfreq
        return usable_signals(recording, self.bind(recording.channels).input_channels.names, sfreq=rate)

    def _mapping(self, channels: ChannelSet):
        """How a source with ``channels`` feeds this model (interpolation logged), or a DataError."""
        target = self.bind(channels).input_channels
        try:
            mapping = channels.plan_mapping(target)
        except DataError as exc:
            raise DataError(f"{self.name} is a fixed-channel model (channels_contract: fixed): {exc}") from None
        if mapping.interpolated:
            log.warning("%s: %s", self.name, mapping.report())
        return mapping

    # --- persistence --------------------------------------------------------------
    def save(self, model_dir: str | Path) -> Path:
        """Write the model to ``model_dir`` (created if needed); returns the folder."""

        out = Path(model_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise DataError(f"cannot write the model to {out}: {exc.strerror or exc}") from None
        sklearn_part, checkpoints = _split_deep(self.estimator)
        for stale in (WEIGHTS_FILE, ESTIMATOR_FILE, ALIGNMENT_FILE):
            (out / stale).unlink(missing_ok=True)
        if checkpoints:
            torch.save(checkpoints, out / WEIGHTS_FILE)
        if sklearn_part is not None:
            sio.dump(sklearn_part, out / ESTIMATOR_FILE)
        if self.alignment is not None:
            np.save(out / ALIGNMENT_FILE, self.alignment, allow_pickle=False)
        meta = {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "task": self.task,
            "classes": [str(c) for c in self.classes],
            "input_channels": {"names": list(self.input_channels.names), "types": list(self.input_channels.types)},
            "channels_contract": self.channels_contract.to_json(),
            "sfreq": float(self.sfreq),
            "window_s": float(self.window_s),
            "hop_s": float(self.hop_s),
            "preprocessing": self.preprocessing,
            "deep_steps": sorted(checkpoints),
            "metadata": {"saved": _dt.datetime.now().isoformat(timespec="seconds"), **self.metadata},
        }
        (out / META_FILE).write_text(json.dumps(meta, indent=2, default=_json_default))
        return out

    @classmethod
    def load(cls, model_dir: str | Path) -> "TrainedModel":
        """Read a model written by :meth:`save` (``bci train``), without executing stored code."""
        folder = Path(model_dir)
        meta = _read_meta(folder)
        checkpoints = _load_weights(folder / WEIGHTS_FILE, meta["deep_steps"]) if meta["deep_steps"] else {}
        sklearn_part = _load_skops(folder / ESTIMATOR_FILE) if (folder / ESTIMATOR_FILE).is_file() else None
        estimator = _join_deep(sklearn_part, checkpoints)
        ch = meta["input_channels"]
        channels = ChannelSet(ch["names"], ch["types"])
        alignment = None
        if (folder / ALIGNMENT_FILE).is_file():
            n_rows = len(reference_matrix(channels, meta["preprocessing"].get("reference"))[1])
            alignment = _load_alignment(folder / ALIGNMENT_FILE, n_rows)
        return cls(
            name=meta["name"], estimator=estimator, classes=_check_classes(estimator, meta["classes"]),
            input_channels=channels, sfreq=float(meta["sfreq"]),
            window_s=float(meta["window_s"]), hop_s=float(meta["hop_s"]), preprocessing=meta["preprocessing"],
            task=meta["task"], alignment=alignment, metadata=meta["metadata"], channels_contract=meta["channels_contract"],
        )  # fmt: skip


def top_channels(names, weights, k: int = TOP_CHANNELS) -> list[list]:
    """The ``k`` channels with the largest weights, ``[[name, weight], ...]``, largest first."""
    order = np.argsort(-np.asarray(weights, dtype=np.float64), kind="stable")[:k]
    return [[str(names[i]), round(float(weights[i]), 6)] for i in order]


#: model.json: key -> (accepted types, what is expected), checked by :func:`_read_meta`.
_META_FIELDS = {
    "name": (str, "a string"),
    "task": (str, "a string"),
    "classes": (list, "a list of class names"),
    "input_channels": (dict, "a mapping with 'names' and 'types'"),
    "channels_contract": (dict, "a mapping with 'kind' (fixed, any-of-type, any) and 'types'"),
    "sfreq": ((int, float), "a sampling rate in Hz (> 0)"),
    "window_s": ((int, float), "a window length in seconds (> 0)"),
    "hop_s": ((int, float), "a hop in seconds (> 0)"),
    "preprocessing": (dict, "a mapping of preprocessing settings"),
    "deep_steps": (list, "a list of step names"),
    "metadata": (dict, "a mapping"),
}


def _read_meta(folder: Path) -> dict:
    """``model.json`` parsed and checked key by key (one line names the first bad key)."""

    path = folder / META_FILE
    if not path.is_file():
        raise ModelError(f"{folder}: not a model folder (no {META_FILE}; create one with 'bci train CONFIG --out {folder}')")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ModelError(f"{path}: corrupt model metadata ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(meta, dict):
        raise ModelError(f"{path}: expected a JSON object, found {type(meta).__name__}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{path}: model format {meta.get('format_version')!r} is not supported (expected {FORMAT_VERSION})")
    meta = {"task": "classification", "deep_steps": [], "metadata": {}, "channels_contract": {"kind": "fixed"}, **meta}
    for key, (kinds, what) in _META_FIELDS.items():
        value = meta.get(key)
        bad = isinstance(value, bool) or not isinstance(value, kinds)
        if bad or (kinds == (int, float) and not (np.isfinite(value) and value > 0)):
            raise ModelError(f"{path}: {key}: expected {what}, found {_short(value)}")
    ch = meta["input_channels"]
    names, types = ch.get("names"), ch.get("types")
    if not (_strings(names) and _strings(types) and names and len(names) == len(types)):
        raise ModelError(f"{path}: input_channels: expected 'names' and 'types', two equal-length lists of strings, found {_short(ch)}")
    for key in ("classes", "deep_steps"):
        if not _strings(meta[key]):
            raise ModelError(f"{path}: {key}: expected a list of strings, found {_short(meta[key])}")
    try:
        meta["channels_contract"] = ChannelContract.from_json(meta["channels_contract"])
    except DataError as exc:
        raise ModelError(f"{path}: {exc}") from None
    meta["preprocessing"] = validate_preprocessing(Config({}, path), meta["preprocessing"])
    alarm = meta["metadata"].get("alarm")  # a seizure model's saved alarm rule (its operating point)
    if alarm is not None:
        if not isinstance(alarm, dict):
            raise ModelError(f"{path}: metadata.alarm: expected a mapping of alarm settings, found {_short(alarm)}")
        try:
            AlarmRule.from_config(alarm, key="metadata.alarm")
        except ConfigError as exc:
            raise ModelError(f"{path}: {exc}") from None
    return meta


def _strings(values) -> bool:
    return isinstance(values, list) and all(isinstance(v, str) for v in values)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _load_weights(path: Path, deep_steps: list[str]) -> dict:
    """The deep steps' checkpoints (``torch.load(weights_only=True)``), checked against ``deep_steps``."""

    if not path.is_file():
        raise ModelError(f"{path.parent}: {WEIGHTS_FILE} is missing (model.json lists deep steps {deep_steps})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            checkpoints = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError/RuntimeError/EOFError on corrupt or foreign files
        raise ModelError(f"{path}: refusing to load the weights ({_weights_refusal(exc)}); only tensors and plain values are read") from None
    if not isinstance(checkpoints, dict) or sorted(map(str, checkpoints)) != sorted(deep_steps):
        found = sorted(map(str, checkpoints)) if isinstance(checkpoints, dict) else type(checkpoints).__name__
        raise ModelError(f"{path}: expected checkpoints of the deep steps {sorted(deep_steps)}, found {_short(found)}")
    return checkpoints


def _weights_refusal(exc: Exception) -> str:
    """What torch refused, in our words: torch's own text advises an unsafe retry."""
    text = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return f"it holds a Python object of type {found.group(1)}"
    if "Unsupported operand" in text:
        return "not a tensor checkpoint"
    return type(exc).__name__


def _load_alignment(path: Path, n_rows: int) -> np.ndarray:
    try:
        alignment = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ModelError(f"{path}: cannot read the alignment matrix ({str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__})") from None
    if alignment.shape != (n_rows, n_rows) or alignment.dtype.kind != "f" or not np.isfinite(alignment).all():
        raise ModelError(f"{path}: expected a finite ({n_rows}, {n_rows}) float matrix, found {alignment.dtype} {alignment.shape}")
    return alignment


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _split_deep(estimator) -> tuple[object | None, dict]:
    """Separate deep-network steps (saved as weights) from the scikit-learn part."""

    deep = _deep_class()
    final = _final_estimator(estimator)
    if isinstance(final, deep) and len(getattr(estimator, "steps", [None])) == 1:  # a bare network
        return None, {"": final.to_checkpoint()}
    if not isinstance(estimator, Pipeline):
        return estimator, {}
    checkpoints = {name: step.to_checkpoint() for name, step in estimator.steps if isinstance(step, deep)}
    if not checkpoints:
        return estimator, {}
    shell = Pipeline([(name, _PLACEHOLDER if name in checkpoints else step) for name, step in estimator.steps])
    return shell, checkpoints


def _join_deep(sklearn_part, checkpoints: dict):
    """The estimator: the skops part with its deep placeholders filled from the checkpoints."""
    deep = _deep_class()
    if "" in checkpoints:  # a bare network
        joined = _from_checkpoint(deep, "", checkpoints[""])
    elif checkpoints:
        placeholders = sorted(name for name, step in getattr(sklearn_part, "steps", []) if step == _PLACEHOLDER)
        if placeholders != sorted(checkpoints):
            raise ModelError(f"{ESTIMATOR_FILE}: expected placeholder steps {sorted(checkpoints)} for the weights, found {placeholders}")
        sklearn_part.steps = [
            (name, _from_checkpoint(deep, name, checkpoints[name]) if name in checkpoints else step)
            for name, step in sklearn_part.steps
        ]
        joined = sklearn_part
    elif sklearn_part is None:
        raise ModelError("the model folder holds neither an estimator nor weights")
    else:
        joined = sklearn_part
    if not hasattr(joined, "predict_proba"):
        raise ModelError(f"expected a classifier with predict_proba, found {type(joined).__name__}")
    return joined


def _check_classes(estimator, classes: list[str]) -> list[str]:
    fitted = sorted(str(c) for c in getattr(estimator, "classes_", classes))
    if fitted != sorted(classes):
        raise ModelError(f"{META_FILE}: classes: the estimator was fitted on {fitted}, found {sorted(classes)}")
    return classes


def _from_checkpoint(deep, name: str, checkpoint):
    try:
        return deep.from_checkpoint(checkpoint)
    except DataError as exc:
        raise ModelError(f"{WEIGHTS_FILE}: step {name or '(network)'!r}: {exc}") from None


def _load_skops(path: Path):
    """The estimator in ``path``; any type outside skops' defaults and :data:`TRUSTED_TYPES` is refused."""

    try:
        types = sio.get_untrusted_types(file=path)
    except Exception as exc:  # zip/JSON/schema errors on a corrupt or hand-made file
        raise ModelError(f"{path}: cannot read the estimator ({type(exc).__name__})") from None
    refused = sorted(set(types) - TRUSTED_TYPES)
    if refused:
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        raise ModelError(f"{path}: refusing to load type {refused[0]}{more}: not one of the model types this application saves")
    try:
        return sio.load(path, trusted=types)
    except Exception as exc:  # a schema that names trusted types but does not fit them
        raise ModelError(f"{path}: cannot rebuild the estimator ({type(exc).__name__})") from None
