"""Saved models: what ``bci train`` writes and ``bci stream`` / ``bci predict`` load.

A :class:`TrainedModel` is a fitted pipeline plus everything needed to feed it the
same inputs it was trained on: the input channel set (a live source is mapped onto
it), the preprocessing (run causally, offline and live alike), the sampling rate and
window length at the model input, the Euclidean-alignment matrix estimated on the
calibration data, and metadata (seed, data, versions, scores).

On disk, ``MODEL_DIR`` holds only formats that load without executing code:

- ``model.json``: metadata, channels, preprocessing, window, classes;
- ``weights.pt``: deep-network checkpoints (``torch.save`` of plain values and
  tensors, read back with ``torch.load(weights_only=True)``);
- ``estimator.skops``: the scikit-learn part of the pipeline, read back with
  :func:`skops.io.load` after checking every stored type comes from a trusted
  package (scikit-learn, pyRiemann, SciPy/NumPy, MOABB, MNE, this project);
- ``alignment.npy``: the alignment matrix (``np.load(allow_pickle=False)``).
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .channels import ChannelSet
from .errors import DataError, ModelError
from .preprocess import Preprocessor, reference_matrix, sliding_windows

FORMAT_VERSION = 1
META_FILE = "model.json"
WEIGHTS_FILE = "weights.pt"
ESTIMATOR_FILE = "estimator.skops"
ALIGNMENT_FILE = "alignment.npy"
#: Packages whose types a saved estimator may contain.
TRUSTED_PREFIXES = ("sklearn.", "pyriemann.", "numpy.", "scipy.", "moabb.", "mne.", "pipelines.", "builtins.")
_PLACEHOLDER = "passthrough"


def _deep_class():
    from pipelines.deep import DeepClassifier

    return DeepClassifier


def _final_estimator(estimator):
    """The last step of a pipeline (or the estimator itself)."""
    steps = getattr(estimator, "steps", None)
    return steps[-1][1] if steps else estimator


@dataclass
class TrainedModel:
    """A fitted pipeline with its input contract (see the module docstring).

    ``predict_proba`` takes windows ``(n, n_channels, n_times)`` already preprocessed
    (volts, at :attr:`sfreq`, channels :attr:`channels`) and applies the stored
    alignment itself.
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

    # --- the input contract -------------------------------------------------------
    @property
    def n_times(self) -> int:
        """Window length in samples at the model input."""
        return int(round(self.window_s * self.sfreq))

    @property
    def channels(self) -> list[str]:
        """Names of the model's input rows (after the preprocessing's re-reference)."""
        return reference_matrix(self.input_channels, self.preprocessing.get("reference"))[1]

    def preprocessor(self) -> Preprocessor:
        """A fresh :class:`Preprocessor` with the training settings and alignment."""
        pre = Preprocessor.from_config(self.preprocessing)
        pre.alignment_ = None if self.alignment is None else self.alignment.copy()
        return pre

    def _check(self, windows) -> np.ndarray:
        X = np.asarray(windows, dtype=np.float64)
        if X.ndim == 2:
            X = X[None]
        expected = (len(self.channels), self.n_times)
        if X.ndim != 3 or X.shape[1:] != expected:
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
        proba = np.asarray(self.estimator.predict_proba(X), dtype=np.float64)
        fitted = [str(c) for c in getattr(self.estimator, "classes_", self.classes)]
        if fitted != list(self.classes):
            proba = proba[:, [fitted.index(c) for c in self.classes]]
        return proba

    def channel_weights(self, windows) -> np.ndarray | None:
        """Per-channel contribution to the decision ``(n, n_channels)``, or None.

        DBConformer: its channel attention (sums to 1). MVPFormer: each channel's share
        of the last class's logit (joint mode) or each channel's own probability of the
        last class (``channel_mode="independent"``). Per-channel detectors (with a
        ``channel_proba`` method, e.g. ``pipelines.seizure.PerChannel``): each channel's
        own probability of the last class. Models without either give None.
        """
        import torch

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
        """Map a recording onto :attr:`input_channels` and preprocess it causally."""
        from .io import Recording

        mapping = recording.channels.plan_mapping(self.input_channels)
        mapped = Recording(
            data=mapping.apply(recording.data), sfreq=recording.sfreq, channels=self.input_channels,
            annotations=recording.annotations, provenance=recording.provenance,
        )  # fmt: skip
        return self.preprocessor().apply(mapped, causal=True), mapping

    def predict_recording(self, recording, hop_s: float | None = None, batch_size: int = 256) -> list[dict]:
        """Per-window probabilities over a whole recording, as the live loop would see it.

        Returns records ``{"start_s", "end_s", <class>: probability, ...}``; windows end
        at the time of their last sample.
        """
        processed, _ = self.prepare_recording(recording)
        hop = float(hop_s or self.hop_s)
        windows, starts = sliding_windows(processed.data, processed.sfreq, self.window_s, hop)
        proba = np.concatenate([self.predict_proba(windows[i : i + batch_size]) for i in range(0, len(windows), batch_size)])
        return [
            {"start_s": round(float(s), 6), "end_s": round(float(s + self.window_s), 6), **{c: float(p) for c, p in zip(self.classes, row)}}
            for s, row in zip(starts, proba)
        ]

    # --- persistence --------------------------------------------------------------
    def save(self, model_dir: str | Path) -> Path:
        """Write the model to ``model_dir`` (created if needed); returns the folder."""
        import skops.io as sio
        import torch

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
        import torch

        folder = Path(model_dir)
        meta_path = folder / META_FILE
        if not meta_path.is_file():
            raise ModelError(f"{folder}: not a model folder (no {META_FILE}; create one with 'bci train CONFIG --out {folder}')")
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelError(f"{meta_path}: corrupt model metadata ({exc})") from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise ModelError(f"{meta_path}: model format {meta.get('format_version')!r} is not supported (expected {FORMAT_VERSION})")
        checkpoints = {}
        if meta.get("deep_steps"):
            try:
                checkpoints = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
            except FileNotFoundError:
                raise ModelError(f"{folder}: {WEIGHTS_FILE} is missing") from None
            except Exception as exc:  # torch raises UnpicklingError/RuntimeError on corrupt files
                raise ModelError(f"{folder / WEIGHTS_FILE}: cannot read the weights ({type(exc).__name__}: {exc})") from None
        sklearn_part = _load_skops(folder / ESTIMATOR_FILE) if (folder / ESTIMATOR_FILE).is_file() else None
        estimator = _join_deep(sklearn_part, checkpoints)
        alignment = None
        if (folder / ALIGNMENT_FILE).is_file():
            alignment = np.load(folder / ALIGNMENT_FILE, allow_pickle=False)
        ch = meta["input_channels"]
        return cls(
            name=meta["name"], estimator=estimator, classes=list(meta["classes"]),
            input_channels=ChannelSet(ch["names"], ch["types"]), sfreq=float(meta["sfreq"]),
            window_s=float(meta["window_s"]), hop_s=float(meta["hop_s"]), preprocessing=dict(meta["preprocessing"]),
            task=meta.get("task", "classification"), alignment=alignment, metadata=dict(meta.get("metadata", {})),
        )  # fmt: skip


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _split_deep(estimator) -> tuple[object | None, dict]:
    """Separate deep-network steps (saved as weights) from the scikit-learn part."""
    from sklearn.pipeline import Pipeline

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
    deep = _deep_class()
    if "" in checkpoints:
        return deep.from_checkpoint(checkpoints[""])
    if checkpoints:
        sklearn_part.steps = [
            (name, deep.from_checkpoint(checkpoints[name]) if name in checkpoints else step)
            for name, step in sklearn_part.steps
        ]
    if sklearn_part is None:
        raise ModelError("the model folder holds neither an estimator nor weights")
    return sklearn_part


def _load_skops(path: Path):
    import skops.io as sio

    try:
        types = sio.get_untrusted_types(file=path)
    except Exception as exc:  # zip/JSON errors on a corrupt file
        raise ModelError(f"{path}: cannot read the estimator ({type(exc).__name__}: {exc})") from None
    refused = [t for t in types if not t.startswith(TRUSTED_PREFIXES)]
    if refused:
        raise ModelError(f"{path}: refusing to load types from untrusted packages: {', '.join(refused)}")
    return sio.load(path, trusted=types)
