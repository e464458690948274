"""Deep-learning pipelines: braindecode models trained through ``EEGClassifier``.

:class:`DeepClassifier` is a scikit-learn classifier (usable in MOABB evaluations,
grid searches and ``bci train``) around braindecode's skorch ``EEGClassifier``.
It adds what raw arrays from MOABB need before they reach a network:

- **dtype**: inputs are converted to float32 (MOABB and MNE give float64);
- **amplitude scale**: MOABB/MNE signals are in volts (about 1e-5), far from the
  unit scale deep networks are initialised for. ``scale="auto"`` learns one
  global factor at ``fit``, ``1 / std`` of the training signals, and applies it
  to every later input. A single factor (not per-trial or per-channel
  z-scoring) keeps the relative power between trials and channels, which is
  what motor-imagery decoding relies on, and works whatever the unit (volts,
  microvolts, or already standardised data). A number (e.g. ``1e6`` for volts
  -> microvolts) fixes the factor instead;
- **signal parameters**: ``n_chans``, ``n_times`` and ``n_outputs`` come from the
  training data at ``fit`` (as ``EEGClassifier`` infers them), ``sfreq`` from
  :class:`mne.Epochs` or the ``sfreq`` parameter;
- **seeding**: ``seed`` fixes weight initialisation, batch order, dropout and the
  validation split, so two fits on the same data and threads give the same model.
  Unset (``None``), ``bci evaluate``/``bci train`` fill in the config's seed; a
  standalone fit draws one from NumPy's global generator (scikit-learn's
  ``random_state=None``) and keeps it as ``seed_``.

- **pretrained weights** (MVPFormer): ``init`` names a published checkpoint (a hub id
  such as ``braindecode/mvpformer-s-pretrained`` or a checkpoint folder, loaded by
  :func:`models.hub.load_pretrained`); ``fit`` builds the network with the
  checkpoint's architecture, loads its weights, re-initialises the head when the
  task's class count differs, and trains as ``finetune`` says: ``"full"`` (every
  weight), ``"freeze"`` (the encoder fixed, only the head ``final_layer`` trained),
  ``"linear_probe"`` (``freeze`` with dropout off: a linear classifier on the fixed
  features) or ``"lora"`` (the encoder fixed, low-rank adapters on its attention and
  MLP projections trained with the head, :func:`models.pretrain.prepare_finetune`;
  merged into the weights after training, so the fitted network is a plain MVPFormer).
  The checkpoint's licence and terms of use are kept as ``provenance_`` (and in the
  saved model's metadata). The checkpoint's ``amplitude`` input comes with it;
  ``amplitude: bands`` on a checkpoint without one (a hub checkpoint) adds the
  projection, freshly initialised and trained with ``finetune: full``.

Training recipe (DBConformer paper): Adam, learning rate 1e-3, batch size 32,
cross-entropy, a fixed number of epochs (``validation=None``, the paper's
protocol). ``validation=0.2`` holds out a stratified 20% of the training trials
and stops early when the validation loss has not improved for ``patience``
epochs, restoring the best weights.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import sys
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.validation import check_is_fitted

from bci.environment import cache_dir
from bci.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: Largest difference from torch's outputs on a probe accepted from an ONNX Runtime session.
ONNX_TOLERANCE = 1e-4

__all__ = ["DEEP_MODELS", "DeepClassifier", "SegmentStream", "make_deep_pipeline"]

#: Names accepted by :func:`make_deep_pipeline` (our DBConformer + braindecode peers).
DEEP_MODELS = ("DBConformer", "MVPFormer", "EEGNet", "ShallowFBCSPNet", "EEGConformer", "ATCNet", "IFNet", "CTNet")
#: Models that take any channel count with the same weights (checked by the model itself).
ANY_CHANNEL_COUNT = ("MVPFormer",)
#: Models ``init`` can start from a published checkpoint (:mod:`models.hub`).
PRETRAINED_MODELS = ("MVPFormer",)
#: What ``fit`` trains of a pretrained network (``DeepClassifier(finetune=...)``).
FINETUNE = ("full", "freeze", "linear_probe", "lora")
#: :func:`models.pretrain.prepare_finetune`'s mode for each ``finetune``.
_PREPARE = {"full": "full", "freeze": "head", "linear_probe": "head", "lora": "lora"}
#: Constructor arguments a checkpoint fixes (its architecture); ``module_params`` may not differ.
_CHECKPOINT_ARCH = ("segment_len", "d_model", "n_layers", "n_heads", "n_head_kv", "d_inner", "local_window",
                    "max_segments", "max_channels", "codebook_indexing")
#: The seizure/classification head of MVPFormer (re-initialised for another class count).
_HEAD = "final_layer."
#: MVPFormer's amplitude projection (``amplitude="bands"``): fresh when added to a checkpoint without one.
_AMPLITUDE = "patch_embed.amp_proj."


def _model_class(name: str) -> type[torch.nn.Module]:
    """The module class called ``name`` (one of :data:`DEEP_MODELS`)."""
    if name not in DEEP_MODELS:
        raise ConfigError(f"unknown deep model {name!r}; expected one of {', '.join(DEEP_MODELS)}")
    if name == "DBConformer":
        from models.dbconformer import DBConformer

        return DBConformer
    if name == "MVPFormer":
        from models.mvpformer import MVPFormer

        return MVPFormer
    import braindecode.models

    return getattr(braindecode.models, name)


def _as_signals(X) -> tuple[np.ndarray, float | None]:
    """Signals ``(n_trials, n_chans, n_times)`` as float64 and the sampling rate if known."""
    import mne

    sfreq = None
    if isinstance(X, mne.BaseEpochs):
        sfreq = float(X.info["sfreq"])
        X = X.get_data()
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 3:
        raise DataError(f"expected signals of shape (n_trials, n_channels, n_times); got shape {X.shape}")
    if X.shape[0] == 0 or not np.isfinite(X).all():
        raise DataError(
            f"expected a non-empty array of finite values; got shape {X.shape} with NaN/inf or no trials"
        )
    return X, sfreq


class DeepClassifier(ClassifierMixin, BaseEstimator):
    """A braindecode model trained with ``EEGClassifier``, as a scikit-learn classifier.

    Input contract: ``X`` is an array ``(n_trials, n_channels, n_times)`` (any float
    dtype, any amplitude unit) or :class:`mne.Epochs`; ``y`` holds one label per
    trial (any hashable labels). ``predict_proba`` returns class probabilities in
    the order of ``classes_``.

    Parameters
    ----------
    model : str
        One of :data:`DEEP_MODELS`.
    module_params : dict or None
        Extra constructor arguments of the model (e.g. ``{"temporal_depth": 6}``).
    sfreq : float or None
        Sampling rate of the signals in Hz; needed unless ``X`` is ``mne.Epochs``.
    scale : "auto" or float
        Amplitude factor: ``"auto"`` learns ``1 / std`` of the training signals at
        fit; a number is used as given (``1.0`` keeps the data as is).
    max_epochs : int
        Training epochs (the maximum when early stopping is on).
    lr : float
        Adam learning rate.
    batch_size : int
        Mini-batch size (the last, smaller batch of an epoch is kept).
    weight_decay : float
        Adam weight decay.
    validation : float or None
        Fraction of training trials held out (stratified) for early stopping on
        the validation loss; ``None`` trains for ``max_epochs`` on all trials.
    patience : int
        Early-stopping patience in epochs (used only with ``validation``).
    seed : int or None
        Random seed for initialisation, batch order, dropout and the split;
        ``None`` draws one at ``fit``.
    device : str
        ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available).
    verbose : int
        skorch verbosity (1 prints one line per epoch).
    init : str or None
        A published checkpoint to start from (hub id or folder; MVPFormer only), read
        at ``fit``; ``None`` trains from a random initialisation.
    finetune : {"full", "freeze", "linear_probe", "lora"}
        With ``init``: train every weight, only the head, only the head on
        dropout-free features, or LoRA adapters (rank 8) and the head.

    Attributes
    ----------
    classes_ : ndarray
        The class labels.
    scale_ : float
        The amplitude factor applied to inputs.
    seed_ : int
        The seed the fit used (``seed``, or the one drawn).
    module_kwargs_ : dict
        Constructor arguments of the fitted module (signal parameters included).
    net_ : braindecode.EEGClassifier
        The fitted skorch net; ``net_.module_`` is the torch module and
        ``net_.history`` the per-epoch losses and durations.
    provenance_ : dict
        Only with ``init``: the checkpoint's source, revision, licence and terms of use
        (:func:`models.hub.load_pretrained`'s ``info``) and whether its head was kept.
    """

    def __init__(
        self,
        model: str = "DBConformer",
        module_params: dict | None = None,
        sfreq: float | None = None,
        scale: str | float = "auto",
        max_epochs: int = 100,
        lr: float = 1e-3,
        batch_size: int = 32,
        weight_decay: float = 0.0,
        validation: float | None = None,
        patience: int = 20,
        seed: int | None = None,
        device: str = "cpu",
        verbose: int = 0,
        init: str | None = None,
        finetune: str = "full",
    ):
        self.model = model
        self.module_params = module_params
        self.sfreq = sfreq
        self.scale = scale
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.validation = validation
        self.patience = patience
        self.seed = seed
        self.device = device
        self.verbose = verbose
        self.init = init
        self.finetune = finetune

    def _device(self) -> str:
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def _build_net(self, module_kwargs: dict):
        from braindecode import EEGClassifier
        from skorch.callbacks import EarlyStopping
        from skorch.dataset import ValidSplit

        callbacks = []
        train_split = None
        if self.validation is not None:
            if not 0.0 < float(self.validation) < 1.0:
                raise ConfigError(f"validation must be a fraction in (0, 1) or None; got {self.validation!r}")
            train_split = ValidSplit(float(self.validation), stratified=True, random_state=self.seed_)
            callbacks.append(("early_stopping", EarlyStopping(patience=self.patience, load_best=True)))
        return EEGClassifier(
            _model_class(self.model),
            **{f"module__{k}": v for k, v in module_kwargs.items()},
            criterion=torch.nn.CrossEntropyLoss,
            optimizer=torch.optim.Adam,
            optimizer__lr=self.lr,
            optimizer__weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            max_epochs=self.max_epochs,
            train_split=train_split,
            callbacks=callbacks,
            iterator_train__drop_last=False,
            device=self._device(),
            verbose=self.verbose,
        )

    def _prepare(self, X) -> np.ndarray:
        X, _ = _as_signals(X)
        expected = (self.module_kwargs_["n_chans"], self.module_kwargs_["n_times"])
        if self.model in ANY_CHANNEL_COUNT:  # e.g. trained on 1 channel, applied to 21
            expected = (X.shape[1], expected[1])
        if X.shape[1:] != expected:
            raise DataError(
                f"{self.model} was fitted on trials of shape (n_channels, n_times) = {expected}; "
                f"got {X.shape[1:]}"
            )
        return (X * self.scale_).astype(np.float32)

    def fit(self, X, y):
        """Train a fresh model on trials ``X`` with labels ``y``."""
        X, sfreq = _as_signals(X)
        y = np.asarray(y)
        if y.shape != (X.shape[0],):
            raise DataError(f"expected one label per trial ({X.shape[0]}); got labels of shape {y.shape}")
        encoder = LabelEncoder().fit(y)
        if len(encoder.classes_) < 2:
            raise DataError(f"expected at least 2 classes; got {encoder.classes_.tolist()}")
        sfreq = sfreq if sfreq is not None else self.sfreq
        if sfreq is None:
            raise ConfigError(f"{self.model}: the sampling rate is unknown; pass sfreq= or fit on mne.Epochs")
        if self.scale == "auto":
            std = X.std()
            if std == 0:
                raise DataError("cannot scale signals automatically: every training value is the same")
            scale = 1.0 / float(std)
        elif isinstance(self.scale, (int, float)) and self.scale > 0:
            scale = float(self.scale)
        else:
            raise ConfigError(f"scale must be 'auto' or a positive number; got {self.scale!r}")

        self.classes_ = encoder.classes_
        self.scale_ = scale
        self.module_kwargs_ = {
            **(self.module_params or {}),
            "n_chans": X.shape[1],
            "n_times": X.shape[2],
            "n_outputs": len(encoder.classes_),
            "sfreq": float(sfreq),
        }
        if self.finetune not in FINETUNE or (self.init is None and self.finetune != "full"):
            raise ConfigError(f"finetune must be one of {', '.join(FINETUNE)} ('full' unless init names a checkpoint); "
                              f"got {self.finetune!r} with init {self.init!r}")  # fmt: skip
        self.__dict__.pop("provenance_", None)  # a refit without init keeps no stale provenance
        pretrained = self._pretrained(float(sfreq)) if self.init is not None else None
        if pretrained is not None:
            self.module_kwargs_.update({k: getattr(pretrained, k) for k in _CHECKPOINT_ARCH})
            # the checkpoint's amplitude input, unless module_params add one to a checkpoint without
            self.module_kwargs_.setdefault("amplitude", pretrained.amplitude)
            if self.finetune == "linear_probe":
                self.module_kwargs_["drop_prob"] = 0.0
        elif self.model == "MVPFormer" and "segment_len" not in self.module_kwargs_:
            from models.mvpformer import segment_samples

            # 1 s segments at the data rate unless given (the reference: 5 s at 512 Hz)
            self.module_kwargs_["segment_len"] = segment_samples(sfreq, 1.0)
        self.seed_ = int(self.seed) if self.seed is not None else int(np.random.randint(2**31 - 1))
        torch.manual_seed(self.seed_)
        self.net_ = self._build_net(self.module_kwargs_)
        Xs, ys = (X * scale).astype(np.float32), encoder.transform(y).astype(np.int64)
        if pretrained is None:
            self.net_.fit(Xs, ys)
            return self
        from models.pretrain import prepare_finetune

        self.net_.initialize()
        self.provenance_["head"] = self._load_encoder(pretrained)
        self.provenance_["finetune"] = self.finetune
        prepare_finetune(self.net_.module_, _PREPARE[self.finetune])
        self.net_.initialize_optimizer()  # over the adapters too (lora)
        self.net_.signal_args_set_ = True  # every signal parameter is given; a reset would drop the weights
        self.net_.partial_fit(Xs, ys)  # trains the initialised module (fit would initialise it afresh)
        if self.finetune == "lora":
            _merge_lora(self.net_.module_)
        return self

    def _pretrained(self, sfreq: float):
        """The checkpoint ``init`` names, as our MVPFormer; sets ``provenance_``."""
        from models.hub import load_pretrained

        self.check_pretrained(None, sfreq, str(self.init))  # the model first: nothing to load for EEGNet
        pretrained, info = load_pretrained(str(self.init))
        self.check_pretrained(pretrained, sfreq, str(self.init))
        self.provenance_ = dict(info)
        return pretrained

    def check_pretrained(self, pretrained, sfreq: float, source: str) -> None:
        """Raise a one-line :class:`ConfigError` when ``pretrained`` (our MVPFormer, or None to
        check only the model name) cannot start this classifier on data at ``sfreq`` Hz: another
        model, an architecture its ``module_params`` contradict, an amplitude input that
        ``finetune`` would leave random, or another sampling rate."""
        if self.model not in PRETRAINED_MODELS:
            raise ConfigError(f"init: pretrained checkpoints are supported for {', '.join(PRETRAINED_MODELS)}; "
                              f"the model is {self.model}")  # fmt: skip
        if pretrained is None:
            return
        clash = {k: (v, getattr(pretrained, k)) for k, v in (self.module_params or {}).items()
                 if k in _CHECKPOINT_ARCH and v != getattr(pretrained, k)}  # fmt: skip
        amplitude = (self.module_params or {}).get("amplitude", pretrained.amplitude)
        if pretrained.amplitude != "none" and amplitude != pretrained.amplitude:  # "none" would drop trained weights
            clash["amplitude"] = (amplitude, pretrained.amplitude)
        if clash:
            said = ", ".join(f"{k}={mine!r} (checkpoint {theirs!r})" for k, (mine, theirs) in sorted(clash.items()))
            raise ConfigError(f"init {source}: module parameters contradict the checkpoint's architecture: {said}")
        if amplitude != pretrained.amplitude and self.finetune != "full":
            raise ConfigError(f"init {source}: amplitude={amplitude!r} adds a projection the checkpoint lacks; "
                              f"train it with finetune: full (finetune {self.finetune!r} would keep it random)")  # fmt: skip
        rate = pretrained._sfreq
        if rate is not None and abs(float(rate) - sfreq) > 1e-6 * sfreq:
            raise ConfigError(f"init {source}: the checkpoint was trained at {float(rate):g} Hz, the data are at "
                              f"{sfreq:g} Hz; resample to {float(rate):g} Hz (preprocessing: resample)")  # fmt: skip

    def _load_encoder(self, pretrained) -> str:
        """Copy the checkpoint's weights into the fresh module.

        Returns how the head was treated: ``"kept"`` (the checkpoint's head has the task's
        number of classes) or ``"re-initialised"``.
        """
        module = self.net_.module_
        state = dict(pretrained.state_dict())
        head = _HEAD + "weight"
        kept = state[head].shape == module.state_dict()[head].shape
        if not kept:
            del state[head]  # the fresh, seeded head of the task's classes stays
        # an amplitude input added to a checkpoint without one (e.g. a hub checkpoint) starts fresh
        fresh = {head} | {k for k in module.state_dict() if k.startswith(_AMPLITUDE) and k not in state}
        missing, unexpected = module.load_state_dict(state, strict=False)
        if unexpected or set(missing) - fresh:
            raise ConfigError(f"init {self.init}: the checkpoint does not fit {self.model} "
                              f"(missing {sorted(missing)}, unexpected {sorted(unexpected)})")  # fmt: skip
        return "kept" if kept else "re-initialised"

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``(n_trials, n_classes)`` in the order of ``classes_``.

        The module is called directly (eval mode, no autograd, batches of ``batch_size``
        as skorch's ``net_.predict_proba`` makes them, its ``predict_nonlinearity``
        applied): the same probabilities without skorch's per-call ``DataLoader`` and
        train/eval toggling of every submodule, which cost as much as a batch-1 forward of
        a small network in the live loop (:func:`_skorch_proba` is the reference path)."""
        check_is_fitted(self, "net_")
        return _direct_proba(self.net_, self._prepare(X))

    def predict(self, X) -> np.ndarray:
        """The most probable class label of every trial."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    @property
    def module_(self) -> torch.nn.Module:
        """The fitted torch module."""
        check_is_fitted(self, "net_")
        return self.net_.module_

    def onnx_proba(self) -> "OnnxProba | None":
        """The network's ONNX Runtime path for one trial at a time (:class:`OnnxProba`), exported
        on first use and kept until a refit replaces the network; None when it has none."""
        check_is_fitted(self, "net_")
        cached = self.__dict__.get("_onnx")
        if cached is None or cached[0] is not self.net_:
            self.__dict__["_onnx"] = cached = (self.net_, OnnxProba.compile(self))
        return cached[1]

    def segment_stream(self, n_channels: int, n_times: int, compile: bool = False) -> SegmentStream | None:
        """The network's cached streaming path for windows of ``n_times`` samples on
        ``n_channels`` channels, or None when the network has none (only MVPFormer has:
        :meth:`models.mvpformer.MVPFormer.step`). Its ONNX Runtime step
        (:class:`OnnxSegmentStep`) is exported when ``compile`` is True and then kept, for
        this channel count and window, until a refit replaces the network; later streams of
        that shape use it."""
        from models.mvpformer import MVPFormer  # deep.py serves braindecode's models without ours

        module = self.module_
        if not isinstance(module, MVPFormer):
            return None
        context = n_times // int(module.segment_len)
        batch, rows = (n_channels, 1) if module.channel_mode == "independent" else (1, n_channels)
        cached = self.__dict__.get("_onnx_steps")
        if cached is None or cached[0] is not self.net_:
            self.__dict__["_onnx_steps"] = cached = (self.net_, {})
        key = (batch, rows, context)
        if compile and key not in cached[1] and context > 1 and n_times % int(module.segment_len) == 0:
            cached[1][key] = OnnxSegmentStep.compile(module, batch, rows, context)
        return SegmentStream(module, self.scale_, n_channels, n_times, compiled=cached[1].get(key))

    def to_checkpoint(self) -> dict:
        """Everything needed to rebuild the fitted classifier, as plain values and tensors.

        The result can be written with ``torch.save`` and read back with
        ``torch.load(path, weights_only=True)`` (as long as ``module_params`` hold
        only numbers, strings, lists and tuples); see :meth:`from_checkpoint`.
        """
        check_is_fitted(self, "net_")
        return {
            "params": self.get_params(),
            "classes": self.classes_.tolist(),
            "scale": self.scale_,
            "seed": self.seed_,
            "module_kwargs": dict(self.module_kwargs_),
            "state_dict": {k: v.detach().cpu() for k, v in self.net_.module_.state_dict().items()},
            **({"provenance": dict(self.provenance_)} if hasattr(self, "provenance_") else {}),
        }

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> DeepClassifier:
        """Rebuild a fitted classifier from :meth:`to_checkpoint`'s output."""
        try:
            clf = cls(**checkpoint["params"])
            clf.classes_ = np.asarray(checkpoint["classes"])
            clf.scale_ = float(checkpoint["scale"])
            clf.seed_ = checkpoint.get("seed", checkpoint["params"].get("seed"))
            clf.module_kwargs_ = dict(checkpoint["module_kwargs"])
            clf.net_ = clf._build_net(clf.module_kwargs_).initialize()
            clf.net_.module_.load_state_dict(checkpoint["state_dict"])
            if "provenance" in checkpoint:
                clf.provenance_ = dict(checkpoint["provenance"])
        except (KeyError, TypeError, RuntimeError, AttributeError, IndexError, ValueError) as err:
            raise DataError(f"not a valid DeepClassifier checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''})") from None
        return clf


def _direct_proba(net, X: np.ndarray) -> np.ndarray:
    """``net.predict_proba(X)`` (a fitted skorch net, ``X`` float32) without skorch's data loader."""
    if getattr(net, "cropped", False):  # braindecode's cropped decoding averages per trial: skorch's path
        return net.predict_proba(X)
    module = net.module_
    if module.training:  # as skorch's evaluation step (once here, not on every call)
        module.train(False)
    nonlin = net._get_predict_nonlinearity()
    step = max(1, int(net.batch_size)) if net.batch_size not in (None, -1) else len(X)
    x_all = torch.from_numpy(np.ascontiguousarray(X))
    out = []
    with torch.no_grad():
        for i in range(0, len(X), step):
            yp = module(x_all[i : i + step].to(net.device))
            yp = yp[0] if isinstance(yp, tuple) else yp
            out.append(nonlin(yp).cpu().numpy())
    return out[0] if len(out) == 1 else np.concatenate(out, 0)


class _WithNonlinearity(torch.nn.Module):
    """The network followed by the net's ``predict_nonlinearity`` (softmax): one exported graph."""

    def __init__(self, module: torch.nn.Module, nonlin):
        super().__init__()
        self.module, self.nonlin = module, nonlin

    def forward(self, x):
        y = self.module(x)
        return self.nonlin(y[0] if isinstance(y, tuple) else y)


def onnx_session(module: torch.nn.Module, probe: tuple, input_names: list, output_names: list, what: str):
    """An ONNX Runtime session running ``module`` (exported with ``torch.onnx.export``, the
    torch.export-based exporter, for the probe's shapes) on as many threads as torch uses, or
    None, logged, when the export fails or the session's outputs on ``probe`` differ from
    torch's by more than :data:`ONNX_TOLERANCE`.

    The exported graph is kept in ``cache_dir("onnx")`` (:func:`bci.environment.cache_dir`)
    under a digest of what it depends on (:func:`_graph_key`), so a later start with the same
    network loads it in well under a second instead of exporting again (5-8 s); a cached graph
    is checked on the probe like a fresh one, and exported again when it fails."""
    with torch.no_grad():
        expected = module(*probe)
    expected = [t.numpy() for t in (expected if isinstance(expected, tuple) else (expected,))]
    path = cache_dir("onnx") / f"{_graph_key(module, probe, input_names)}.onnx"
    if path.is_file():
        session = _checked_session(path.read_bytes(), probe, input_names, expected)
        if session is not None:
            return session
        log.info("%s: the cached ONNX graph %s does not give the network's outputs; exporting again", what, path.name)
    buf = io.BytesIO()
    # the exporter logs every registry entry it skips (torchvision's), its optimizer every fold it skips
    quiet = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning, UserWarning))  # torch.export's internals
            torch.onnx.export(module, probe, buf, input_names=input_names, output_names=output_names, dynamo=True,
                              verbose=False, report=False)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - any export failure keeps the torch path
        log.warning("%s: ONNX export failed (%s: %s); the torch path decides", what, type(exc).__name__, str(exc).splitlines()[0][:120])
        return None
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)
    session = _checked_session(buf.getvalue(), probe, input_names, expected)
    if session is None:
        log.warning("%s: ONNX Runtime's output differs from torch's on a probe; the torch path decides", what)
        return None
    try:  # written whole or not at all: a concurrent start never reads half a file
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)
    except OSError as exc:
        log.info("%s: the exported graph is not cached (%s)", what, exc)
    return session


def _checked_session(graph: bytes, probe: tuple, input_names: list, expected: list):
    """An ONNX Runtime session of ``graph`` whose outputs on ``probe`` equal ``expected`` (to
    :data:`ONNX_TOLERANCE`), or None (a graph ONNX Runtime refuses counts as differing)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        got = session.run(None, {name: t.numpy() for name, t in zip(input_names, probe)})
    except Exception:  # noqa: BLE001 - ONNX Runtime's errors on a corrupt or foreign graph
        return None
    if len(got) != len(expected) or any(g.shape != e.shape or not np.allclose(g, e, atol=ONNX_TOLERANCE, rtol=0)
                                        for g, e in zip(got, expected)):  # fmt: skip
        return None
    return session


def _graph_key(module: torch.nn.Module, probe: tuple, input_names: list) -> str:
    """A digest of what an exported graph of ``module`` depends on: its weights and buffers, the
    source files of its submodules' classes, the inputs' names, shapes and dtypes, and the
    versions of torch and the exporter."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{t.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    for source in sorted({getattr(sys.modules.get(type(m).__module__), "__file__", None) or type(m).__module__
                          for m in module.modules()}):  # fmt: skip
        digest.update(Path(source).read_bytes() if Path(source).is_file() else source.encode())
    digest.update(repr([(n, tuple(t.shape), str(t.dtype)) for n, t in zip(input_names, probe)]).encode())
    digest.update(f"torch {torch.__version__} onnxscript {metadata.version('onnxscript')}".encode())
    return digest.hexdigest()[:24]


class OnnxProba:
    """A fitted :class:`DeepClassifier`'s probabilities for one trial at a time through ONNX
    Runtime: the live loop's model call (:func:`pipelines.fastpath.compile_proba`).

    The network and its ``predict_nonlinearity`` are exported once with
    ``torch.onnx.export`` (the torch.export-based exporter) for input ``(1, n_chans, n_times)``
    and run in an ``InferenceSession`` on as many threads as torch uses. A single eager
    forward of a small network spends most of its time in per-operator dispatch; ONNX
    Runtime's fused graph does not (4-7x faster for DBConformer at batch 1,
    benchmarks/RESULTS.md). Batches of several trials keep the torch path (``predict_proba``).
    Use :meth:`compile`: it checks the session's output against torch's on a probe and gives
    None (torch is kept) when the export fails or differs.
    """

    def __init__(self, clf: "DeepClassifier", session):
        self.clf, self.net, self.session = clf, clf.net_, session
        self.input_name = session.get_inputs()[0].name

    @classmethod
    def compile(cls, clf: "DeepClassifier") -> "OnnxProba | None":
        from models.mvpformer import MVPFormer  # deep.py serves braindecode's models without ours

        check_is_fitted(clf, "net_")
        net = clf.net_
        if getattr(net, "cropped", False) or isinstance(net.module_, MVPFormer) or clf.model in ANY_CHANNEL_COUNT:
            return None  # cropped decoding averages crops; MVPFormer streams through SegmentStream
        shape = (1, clf.module_kwargs_["n_chans"], clf.module_kwargs_["n_times"])
        probe = torch.from_numpy(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
        module = net.module_
        if module.training:
            module.train(False)
        wrapper = _WithNonlinearity(module, net._get_predict_nonlinearity()).eval()
        session = onnx_session(wrapper, (probe,), ["x"], ["proba"], clf.model)
        return None if session is None else cls(clf, session)

    def valid(self) -> bool:
        """Whether the classifier still holds the network this was exported from (not refitted)."""
        return self.clf.__dict__.get("net_") is self.net

    def __call__(self, X) -> np.ndarray:
        """Class probabilities ``(n, n_classes)`` in ``classes_`` order."""
        X = self.clf._prepare(X)
        if len(X) != 1:
            return _direct_proba(self.net, X)
        return self.session.run(None, {self.input_name: X})[0]


def _skorch_proba(clf: DeepClassifier, X) -> np.ndarray:
    """The reference path: skorch's ``predict_proba`` on the same prepared input (tests)."""
    check_is_fitted(clf, "net_")
    return clf.net_.predict_proba(clf._prepare(X))


@torch.no_grad()
def _merge_lora(module) -> None:
    """Fold every LoRA adapter into its linear layer (``W + alpha/rank * B A``), in place."""
    from models.pretrain import LoRALinear

    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                child.base.weight += (child.alpha / child.rank) * (child.lora_B @ child.lora_A)
                setattr(parent, name, child.base)


class OnnxSegmentStep:
    """MVPFormer's full-cache streaming step (:class:`models.mvpformer.FullContextStep`) in
    ONNX Runtime: one ``session.run`` per segment instead of a few hundred eager operator
    calls, whose dispatch is most of a small network's step (benchmarks/RESULTS.md).

    Compiled for one batch, channel count and context; ``__call__(segment, past_k, past_v)``
    takes and gives float32 arrays as :class:`~models.mvpformer.FullContextStep` does.
    """

    def __init__(self, session):
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]

    @classmethod
    def compile(cls, module, batch: int, n_channels: int, context: int) -> "OnnxSegmentStep | None":
        """The step of ``module`` (an :class:`~models.mvpformer.MVPFormer`) exported for
        ``batch`` streams of ``n_channels`` channels over ``context`` segments, or None (logged)."""
        from models.mvpformer import FullContextStep

        p = next(module.parameters())
        attn = module.blocks[0].attn
        rng = np.random.default_rng(0)
        past = (len(module.blocks), batch, attn.n_head_kv, (context - 1) * n_channels, attn.head_dim)
        probe = (rng.standard_normal((batch, n_channels, module.segment_len)), rng.standard_normal(past),
                 rng.standard_normal(past))  # fmt: skip
        probe = tuple(torch.from_numpy(a.astype(np.float32)).to(p.device) for a in probe)
        session = onnx_session(FullContextStep(module.eval()), probe, ["segment", "past_k", "past_v"],
                               ["logits", "new_k", "new_v"], "MVPFormer streaming step")  # fmt: skip
        return None if session is None else cls(session)

    def __call__(self, segment: np.ndarray, past_k: np.ndarray, past_v: np.ndarray):
        return self.session.run(None, dict(zip(self.input_names, (segment, past_k, past_v))))


class SegmentStream:
    """MVPFormer's key/value-cached path behind a fitted :class:`DeepClassifier`.

    Push the windows' segments one at a time (``(n_channels, segment_len)``, volts, in
    stream order); :meth:`proba` is then the class probabilities (order of the classifier's
    ``classes_``) of the window made of the last ``n_times / segment_len`` segments, as
    ``predict_proba`` gives them up to the cache's approximation (see
    :meth:`models.mvpformer.MVPFormer.step`). In ``channel_mode="independent"`` every channel
    is a stream of its own, combined by the network's ``channel_combine``.

    With ``compiled`` (an :class:`OnnxSegmentStep` for this batch, channel count and context),
    every push once the cache is full runs in ONNX Runtime on the cached keys and values
    (float32 arrays rolled by one segment each push); the first ``context - 1`` pushes after
    :meth:`reset` fill the cache through :meth:`models.mvpformer.MVPFormer.step`.
    """

    def __init__(self, module, scale: float, n_channels: int, n_times: int, compiled: OnnxSegmentStep | None = None):
        from models.mvpformer import combine_channel_probabilities

        self._combine = combine_channel_probabilities
        self.module, self.scale = module.eval(), float(scale)
        self.segment_len = int(module.segment_len)
        if n_times % self.segment_len:
            raise ConfigError(f"MVPFormer streaming: a window of {n_times} samples is not a whole number of "
                              f"{self.segment_len}-sample segments")  # fmt: skip
        self.context = n_times // self.segment_len
        self.n_channels = int(n_channels)
        self.independent = module.channel_mode == "independent"
        self.compiled = compiled if self.context > 1 else None
        self.reset()

    def reset(self) -> None:
        """Forget every pushed segment."""
        self._state = self.module.init_stream(1 if self.independent else self.n_channels, context=self.context)
        self._logits = None
        self._past = None  # the compiled step's (past_k, past_v), once the cache is full

    @torch.no_grad()
    def push(self, segment: np.ndarray) -> None:
        """Append one segment ``(n_channels, segment_len)`` to the stream."""
        x = (np.asarray(segment) * self.scale).astype(np.float32)
        # joint: one (1, C, seg) input; independent: every channel alone, a batch (C, 1, seg)
        x = x[:, None] if self.independent else x[None]
        if self._past is None and self.compiled is not None and self._state.n_cached == self.context - 1:
            from models.mvpformer import FullContextStep

            self._past = tuple(np.ascontiguousarray(t.numpy()) for t in FullContextStep.past(self._state))
        if self._past is None:
            self._logits = self.module.head(self.module.step(self._state, torch.from_numpy(x)))
            return
        logits, new_k, new_v = self.compiled(x, *self._past)
        for past, new in zip(self._past, (new_k, new_v)):  # drop the oldest segment, append the new one
            c = new.shape[3]
            past[:, :, :, :-c] = past[:, :, :, c:].copy()
            past[:, :, :, -c:] = new
        self._logits = torch.from_numpy(logits)

    @torch.no_grad()
    def proba(self) -> np.ndarray:
        """Class probabilities of the window ending with the last pushed segment."""
        if self._logits is None:
            raise DataError("SegmentStream.proba() before any segment was pushed")
        logits = self._logits.double()
        if self.independent:
            return self._combine(logits.softmax(-1)[None], self.module.channel_combine)[0].numpy()
        return logits[0].softmax(-1).numpy()


def make_deep_pipeline(name: str, **params) -> DeepClassifier:
    """A :class:`DeepClassifier` for model ``name`` (one of :data:`DEEP_MODELS`).

    Keyword arguments that are :class:`DeepClassifier` parameters (``max_epochs``,
    ``lr``, ``batch_size``, ``seed``, ``sfreq``, ``scale``, ``validation``, ...) set
    the training; any other keyword is passed to the model's constructor (e.g.
    ``temporal_depth=6`` for DBConformer, ``F1=16`` for EEGNet).
    """
    _model_class(name)  # validate the name now, not at fit
    own = set(DeepClassifier._get_param_names()) - {"model", "module_params"}
    module_params = dict(params.pop("module_params", None) or {})
    module_params.update({k: params.pop(k) for k in list(params) if k not in own})
    return DeepClassifier(model=name, module_params=module_params or None, **params)
