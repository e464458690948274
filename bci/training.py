"""``bci train``: fit one pipeline on recordings and save it as a :class:`~bci.model.TrainedModel`.

The training data pass through the same :class:`~bci.preprocess.Preprocessor` the live
loop uses, in its causal form, so a model sees the same signals offline and online.

Config (YAML; the ``train`` section, the shared ``preprocessing`` section)::

    seed: 42
    data: {mne_data: ../shared/data/mne_data}
    datasets:                      # MOABB datasets (raw runs), and/or train.recordings
      - {name: PhysionetMI, subjects: [1], params: {imagined: true}}
    preprocessing: {bandpass: [8, 30], resample: null, euclidean_alignment: false}
    train:
      pipeline: acm_ts_svm_auto    # a pipeline file name or path (configs/pipelines)
      task: classification         # or seizure (labelled windows, see bci.seizure)
      channels: [C3, Cz, C4]       # input channels; default: the EEG channels of the data
      events: [left_hand, right_hand]   # annotation -> class (a list: class = annotation)
      tmin: 0.0                    # window relative to each event onset (s)
      tmax: 3.0                    # default: the MOABB dataset's trial interval
      hop: 0.0625                  # seconds between live decisions
      recordings: [my_session.fif] # local files with annotations (globs allowed)
      channels_contract: any-of-type   # narrow the inferred contract (fixed < any-of-type < any)
      channel_types: [ecog, seeg]      # the types an any-of-type model reads
      init:                        # MVPFormer pipelines: the pretrained weights to start from
        hub: braindecode/mvpformer-s-pretrained   # used when in the local cache and fitting the data
        pretrain: configs/pretrain_seizure.yaml   # else our own bci pretrain run of this config
        cache: ~/.cache/bci/pretrained            # where that run is kept and reused (default)

The saved model's channel contract (:class:`~bci.channels.ChannelContract`) is inferred
from the pipeline (:func:`~bci.model.inferred_contract`: ``any`` for per-channel and
any-channel-count models, else ``fixed``; Euclidean alignment makes it ``fixed``);
``train.channels_contract`` may narrow it, never widen it.

``train.init`` (:func:`~bci.pretraining.validate_init`, :func:`~bci.pretraining.resolve_init`)
sets the pipeline's ``init``: the hub checkpoint when it loads offline and fits the data, else
the weights of our own ``bci pretrain`` run of the named config, run into the cache first when
it has not run yet. The saved model's ``metadata.pretrained`` records the weights used (with
the run's ``pretrain.json`` summary), licence and terms, and why the hub checkpoint was not used.
"""

from __future__ import annotations

import logging
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import mne
import numpy as np
import sklearn
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.metrics import get_scorer_names
from sklearn.model_selection import (
    StratifiedGroupKFold,
    StratifiedKFold,
    cross_val_predict,
)
from tqdm.auto import tqdm

from pipelines.alignment import euclidean_alignment
from pipelines.registry import fill_unset, load_pipelines
from pipelines.selection import default_scoring

from .alarm import TARGET_FP_PER_24H, AlarmRule, operating_point
from .channels import CONTRACTS, DATA_TYPES, ChannelSet
from .config import Config, check_keys, load_config
from .datasets import training_recordings
from .errors import ConfigError, DataError
from .evaluate import _group_fit_params, chosen_params
from .io import Recording
from .model import TrainedModel, inferred_contract
from .preprocess import Preprocessor, TrainingData, epochs_from_annotations
from .pretraining import resolve_init, validate_init
from .seizure import WindowSpec, training_data, window_traces

log = logging.getLogger(__name__)

TRAIN_KEYS = {
    "pipeline", "task", "channels", "events", "tmin", "tmax", "hop", "recordings", "window", "labels", "scoring",
    "channels_contract", "channel_types", "alarm", "operating_point", "init",
}  # fmt: skip
TASKS = ("classification", "seizure")


def validate_train_section(cfg: Config) -> dict:
    section = cfg.get("train")
    if not isinstance(section, dict):
        raise cfg.error("train", "missing; expected a mapping with at least 'pipeline'")
    check_keys(section, TRAIN_KEYS, f"{cfg.path}: train")
    if not isinstance(section.get("pipeline"), str):
        raise cfg.error("train.pipeline", f"expected a pipeline name or file, found {section.get('pipeline')!r}")
    task = section.setdefault("task", "classification")
    if task not in TASKS:
        raise cfg.error("train.task", f"expected one of {', '.join(TASKS)}, found {task!r}")
    for key in ("tmin", "tmax", "hop"):
        value = section.get(key)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise cfg.error(f"train.{key}", f"expected a number of seconds, found {value!r}")
    if section.get("hop") is not None and section["hop"] <= 0:
        raise cfg.error("train.hop", f"expected a positive number of seconds, found {section['hop']!r}")
    channels = section.get("channels")
    if channels is not None and not (isinstance(channels, list) and channels and all(isinstance(c, str) for c in channels)):
        raise cfg.error("train.channels", f"expected a list of channel names, found {channels!r}")
    contract = section.get("channels_contract")
    if contract is not None and contract not in CONTRACTS:
        raise cfg.error("train.channels_contract", f"expected one of {', '.join(CONTRACTS)}, found {contract!r}")
    types = section.get("channel_types")
    if types is not None and contract != "any-of-type":
        raise cfg.error("train.channel_types", f"only with channels_contract: any-of-type, found channels_contract {contract!r}")
    if section.get("alarm") is not None or section.get("operating_point") is not None:
        if section["task"] != "seizure":
            raise cfg.error("train.operating_point", "alarm settings and an operating point are for seizure models (train.task: seizure)")
        AlarmRule.from_config(section.get("alarm"), key=f"{cfg.path}: train.alarm")
        point = section.get("operating_point") or {}
        if not isinstance(point, dict) or set(point) - {"target_fp_per_24h", "cv"}:
            raise cfg.error("train.operating_point", f"expected a mapping with target_fp_per_24h (and cv), found {point!r}")
        target, cv = point.get("target_fp_per_24h", TARGET_FP_PER_24H), point.get("cv", 5)
        if isinstance(target, bool) or not isinstance(target, (int, float)) or target <= 0:
            raise cfg.error("train.operating_point.target_fp_per_24h", f"expected false alarms per 24 h > 0, found {target!r}")
        if isinstance(cv, bool) or not isinstance(cv, int) or cv == 1 or cv < 0:
            raise cfg.error("train.operating_point.cv", f"expected a number of folds >= 2, or 0 for the training fit itself, found {cv!r}")
    if not cfg.get("datasets") and not section.get("recordings"):
        raise cfg.error("train", "no data: name MOABB 'datasets' or local 'train.recordings'")
    scoring = section.get("scoring")
    if scoring is not None:
        if scoring not in get_scorer_names():
            raise cfg.error("train.scoring", f"unknown scikit-learn scorer {scoring!r} (e.g. roc_auc, accuracy, balanced_accuracy)")
    return section


def _event_map(events) -> dict:
    if events is None:
        return {}
    if isinstance(events, list):
        return {str(e): str(e) for e in events}
    if isinstance(events, dict):
        return {str(k): str(v) for k, v in events.items()}
    raise DataError(f"train.events: expected a list of annotation names or a mapping annotation -> class, found {events!r}")


def classification_data(cfg: Config, section: dict, pre: Preprocessor, progress: bool = False) -> TrainingData:
    """Epochs around annotated events, preprocessed causally recording by recording."""
    recordings = training_recordings(cfg, section)
    first = recordings[0][1]
    names = section.get("channels") or [n for n, t in zip(first.channels.names, first.channels.types) if t in DATA_TYPES]
    target = ChannelSet(names)
    events = section.get("events")
    X, y, groups, sfreqs = [], [], [], set()
    for group, rec, interval in tqdm(recordings, desc="prepare", unit="run", disable=not progress):
        mapping = rec.channels.plan_mapping(target)
        mapped = Recording(mapping.apply(rec.data), rec.sfreq, target, rec.annotations, rec.provenance)
        processed = pre.apply(mapped, causal=True)
        sfreqs.add(processed.sfreq)
        found = set(rec.annotations.description)
        event_map = _event_map(events) or {d: d for d in sorted(found) if _default_class(d)}
        tmin = float(section.get("tmin", 0.0))
        tmax = section.get("tmax")
        if tmax is None:
            if interval is None:
                raise cfg.error("train.tmax", "needed for local recordings: the end of each trial window in seconds after the event")
            tmax = interval[1] - interval[0]
        if float(tmax) <= tmin:
            raise cfg.error("train.tmax", f"must be after tmin ({tmin}), found {tmax}")
        if not set(event_map) & found:
            continue
        Xi, yi, _ = epochs_from_annotations(processed, event_map, tmin, float(tmax))
        X.append(Xi)
        y.append(yi)
        groups += [group] * len(yi)
    if not X:
        raise DataError(f"no trials: none of the events {events or 'named by the paradigm'} occur in the recordings")
    if len(sfreqs) > 1:
        raise DataError(f"recordings have different rates after preprocessing ({sorted(sfreqs)} Hz): set preprocessing.resample")
    X, y = np.concatenate(X), np.concatenate(y)
    classes = sorted(set(y.tolist()))
    if len(classes) < 2:
        raise DataError(f"only one class in the training data ({classes}); check train.events")
    sfreq = sfreqs.pop()
    return TrainingData(
        X=X, y=y, groups=np.asarray(groups), sfreq=sfreq, input_channels=target,
        window_s=X.shape[-1] / sfreq, classes=classes, sources=sorted({g.rsplit("/", 2)[0] for g in groups}),
    )  # fmt: skip


def _default_class(description: str) -> bool:
    """Without train.events, annotations that look like class labels (not rest/BAD/boundaries)."""
    d = description.lower()
    return not (d.startswith(("bad", "edge", "boundary")) or d in ("rest", "t0"))


def collect(cfg: Config, section: dict, pre: Preprocessor, progress: bool = False) -> TrainingData:
    if section["task"] == "seizure":
        return training_data(cfg, section, pre, progress=progress)
    return classification_data(cfg, section, pre, progress=progress)


def train(config, out_dir: str | Path, *, progress: bool = True) -> TrainedModel:
    """Fit the config's pipeline on its data and save it to ``out_dir``."""
    mne.set_log_level("ERROR")
    cfg = config if isinstance(config, Config) else load_config(config)
    section = validate_train_section(cfg)
    pipelines = load_pipelines([section["pipeline"]], cfg)  # fails fast on an unknown pipeline
    (name, estimator), = pipelines.items()
    init = validate_init(cfg, section["init"]) if section.get("init") is not None else None
    init_key, init_target = _init_parameter(estimator, name) if init else (None, None)
    pre_cfg = dict(cfg.get("preprocessing") or {})
    align = bool(pre_cfg.pop("euclidean_alignment", False))
    pre = Preprocessor.from_config(pre_cfg)
    data = collect(cfg, section, pre, progress=progress)
    X = data.X
    alignment = None
    if align:  # the model's Euclidean alignment, estimated on the calibration windows
        X, alignment = euclidean_alignment(X)
    # Inner searches (param_grid, ACM grid) score as MOABB's evaluations do unless the
    # config says otherwise: ROC-AUC for two classes, accuracy for more.
    scoring = section.get("scoring") or default_scoring(len(data.classes))
    estimator = fill_unset(estimator, seed=cfg["seed"], sfreq=data.sfreq, scoring=scoring)
    init_record = None
    if init:
        source, init_record = resolve_init(
            init, sfreq=data.sfreq, progress=progress,
            check=lambda model, where: init_target.check_pretrained(model, data.sfreq, where),
        )  # fmt: skip
        estimator.set_params(**{init_key: source})
    try:
        contract = inferred_contract(estimator).restrict("fixed" if align else None)
        contract = contract.restrict(section.get("channels_contract"), section.get("channel_types"))
    except DataError as exc:
        raise cfg.error("train.channels_contract", f"{exc} ({name}{', Euclidean alignment' if align else ''})") from None
    calibration = None
    if not hasattr(estimator, "predict_proba"):
        # Live decoding needs probabilities: Platt scaling on out-of-fold decision values,
        # the classifier itself refitted on all windows (scikit-learn's ensemble=False).
        cv = StratifiedKFold(min(5, *np.unique(data.y, return_counts=True)[1]), shuffle=True, random_state=cfg["seed"])
        estimator = CalibratedClassifierCV(estimator, method="sigmoid", cv=cv, ensemble=False)
        calibration = f"sigmoid (Platt) on {cv.get_n_splits()}-fold out-of-fold decision values"
    log.info("fitting %s on %d windows %s", name, len(X), X.shape[1:])
    t0 = time.perf_counter()
    fitted = estimator.estimator if calibration else estimator
    estimator.fit(X, data.y, **_group_fit_params(fitted, data.groups))
    fit_time = time.perf_counter() - t0
    if calibration:
        fitted = estimator.calibrated_classifiers_[0].estimator
        if hasattr(fitted, "best_estimator_"):  # keep the refitted pipeline, not the search (its scorer is a function)
            estimator.calibrated_classifiers_[0].estimator = fitted.best_estimator_
    chosen = chosen_params(fitted)
    if hasattr(estimator, "best_estimator_"):
        estimator = estimator.best_estimator_
    alarm = {}
    if section.get("operating_point") is not None or section.get("alarm") is not None:
        alarm = seizure_operating_point(section, estimator, data, seed=cfg["seed"])
    counts = {c: int((data.y == c).sum()) for c in data.classes}
    train_accuracy = float((np.asarray(estimator.predict(X)).astype(str) == data.y.astype(str)).mean())
    model = TrainedModel(
        name=name, estimator=estimator, classes=[str(c) for c in data.classes], input_channels=data.input_channels,
        sfreq=data.sfreq, window_s=data.window_s, hop_s=float(section.get("hop") or 0.0625),
        preprocessing=pre.to_config(), task=section["task"], alignment=alignment, channels_contract=contract,
        metadata={
            "seed": cfg["seed"], "config": Path(cfg.path).name, "trained_on": data.sources,
            "n_windows": counts, "fit_seconds": round(fit_time, 3), "train_accuracy": train_accuracy,
            "chosen_params": chosen, "search_scoring": scoring, "calibration": calibration,
            "versions": {"sklearn": sklearn.__version__, "mne": mne.__version__, **_versions()}, **alarm,
            **_pretrained(estimator, init_record),
        },
    )  # fmt: skip
    model.save(out_dir)
    return model


def seizure_operating_point(section: dict, estimator, data: TrainingData, seed: int) -> dict:
    """``{"alarm": rule settings, "operating_point": report}`` for a seizure model's metadata.

    The alarm rule of ``train.alarm`` at the threshold :func:`bci.alarm.operating_point`
    chooses for ``train.operating_point.target_fp_per_24h`` (default
    :data:`bci.alarm.TARGET_FP_PER_24H`) on out-of-fold probabilities of the training windows
    (``cv`` folds grouped by recording/segment, default 5; ``cv: 0`` uses the fitted model
    itself, optimistic), each recording or segment played as a trace of decisions every
    window hop. Without ``operating_point``, the rule as given.
    """
    rule = AlarmRule.from_config(section.get("alarm"), key="train.alarm")
    point = section.get("operating_point")
    if point is None:
        return {"alarm": rule.to_config()}
    cv = int(point.get("cv", 5))
    column = sorted(set(data.y.tolist())).index("seizure")
    if cv:
        folds = StratifiedGroupKFold(min(cv, len(set(data.groups.tolist()))), shuffle=True, random_state=seed)
        proba = cross_val_predict(clone(estimator), data.X, data.y, groups=data.groups, cv=folds, method="predict_proba")
    else:
        proba = estimator.predict_proba(data.X)
    hop = WindowSpec.from_config(section.get("window"), key="train.window").hop_s
    traces = window_traces(data.groups, data.y, proba[:, column], data.window_s, hop)
    chosen, report = operating_point(rule, traces, float(point.get("target_fp_per_24h", TARGET_FP_PER_24H)))
    report["probabilities"] = f"{cv}-fold out-of-fold, grouped by recording/segment" if cv else "the fitted model (in-sample)"
    if not report["reached"]:
        log.warning("no alarm threshold reaches %g false alarms per 24 h on the training data; using %.2f (%.1f per 24 h)",
                    report["target_fp_per_24h"], report["threshold"], report["fp_per_24h"])
    return {"alarm": chosen.to_config(), "operating_point": report}


def _pretrained(estimator, init_record: dict | None = None) -> dict:
    """``{"pretrained": provenance}`` when the network started from pretrained weights
    (``DeepClassifier(init=...)``: source, revision, licence, terms of use; with ``train.init``
    its resolution under ``init``), else ``{}``."""
    steps = getattr(estimator, "steps", None)
    provenance = getattr(steps[-1][1] if steps else estimator, "provenance_", None)
    if not provenance:
        return {}
    return {"pretrained": {**provenance, **({"init": init_record} if init_record else {})}}


def _init_parameter(estimator, name: str) -> tuple[str, object]:
    """``(parameter key, classifier)`` of the one network in ``estimator`` that ``train.init`` starts
    from pretrained weights (a ``DeepClassifier`` of a model :data:`~pipelines.deep.PRETRAINED_MODELS`
    lists, whose own ``init`` is unset)."""
    params = estimator.get_params(deep=True)
    found = [(key, params[key.rpartition("__")[0]] if "__" in key else estimator)
             for key in params if key.rpartition("__")[2] == "init"]  # fmt: skip
    found = [(key, owner) for key, owner in found if hasattr(owner, "check_pretrained")]
    if len(found) != 1:
        raise ConfigError(f"train.init: pipeline {name!r} has {len(found) or 'no'} network(s) that start from pretrained weights; expected one (MVPFormer)")
    key, owner = found[0]
    if params[key] is not None:
        raise ConfigError(f"train.init: pipeline {name!r} already sets init: {params[key]}; name the weights in one place")
    owner.check_pretrained(None, 0.0, "train.init")  # the model takes pretrained weights at all
    return key, owner


def _versions() -> dict:
    out = {}
    for pkg in ("torch", "pyriemann", "braindecode", "moabb"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
