"""Offline evaluation: pipelines side by side on MOABB datasets, cell by cell.

Data come from MOABB paradigms (``paradigm.get_data``), train/test splits from MOABB's
splitters (``WithinSessionSplitter``, ``CrossSessionSplitter``, ``CrossSubjectSplitter``)
and scores from the paradigm's scorer (ROC-AUC for two classes, else accuracy), so the
numbers are MOABB's. What we add: a chronological **cross-run** split for
single-session datasets (train on the earlier runs, test on the last: PhysionetMI's runs
4/8/12), a **holdout** of named sessions (train 1-3, test 4-5: the BCI IV 2b
competition protocol), **transfer from other subjects** (``params.transfer``: the other
subjects' sessions join the target's training trials, each session aligned to its own
reference, and the target's own calibration can be cut to its first N trials: a new user
with little calibration), fit/predict seconds and the hyper-parameters each fit chose
(order/lag, grid winners) in ``results.csv``, a progress bar over
subjects x pipelines, and resume: rows are appended as each (dataset, subject, pipeline)
cell finishes, and a re-run skips finished cells.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import dask
import mne
import moabb.paradigms as mp
import numpy as np
import pandas as pd
import torch
from dask.distributed import Client, LocalCluster, as_completed
from moabb.evaluations.splitters import CrossSessionSplitter, CrossSubjectSplitter, WithinSessionSplitter
from sklearn.base import clone
from sklearn.metrics import accuracy_score, get_scorer
from sklearn.model_selection import BaseCrossValidator
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from pipelines.alignment import alignment_steps
from pipelines.registry import fill_unset, load_pipelines
from pipelines.validation import class_probabilities

from .channels import ChannelSet
from .config import Config, from_section
from .datasets import get_dataset, load_subject_data
from .errors import ConfigError, DataError
from .model import TrainedModel
from .report import ResultsFile, short_param_names, write_report
from .seizure import evaluate_seizure
from .seizure import summary_text as seizure_summary_text

log = logging.getLogger(__name__)

RESULT_COLUMNS = [
    "dataset", "subject", "session", "pipeline", "score", "accuracy", "time", "fit_time",
    "predict_time", "samples", "n_test", "channels", "n_sessions", "evaluation", "scoring",
    "seed", "params", "warnings",
]  # fmt: skip


class GroupHoldout(BaseCrossValidator):
    """One split by group label: train on ``train`` groups, test on ``test`` groups.

    With ``test=None`` the last group in chronological order (MOABB's names start with
    their recording index) is held out and all earlier ones train; with ``train=None``
    every group not tested trains. Groups are compared as strings.
    """

    def __init__(self, train=None, test=None):
        self.train = train
        self.test = test

    def _split_groups(self, groups):
        names = sorted({str(g) for g in groups}, key=_chronological_key)
        test = [str(t) for t in self.test] if self.test is not None else names[-1:]
        train = [str(t) for t in self.train] if self.train is not None else [g for g in names if g not in test]
        missing = sorted(set(train + test) - set(names))
        if missing:
            raise DataError(f"holdout asks for groups {missing}, available: {names}")
        return train, test

    def get_n_splits(self, X=None, y=None, groups=None):
        return 1

    def split(self, X, y=None, groups=None):
        groups = np.asarray([str(g) for g in groups])
        train, test = self._split_groups(groups)
        yield np.flatnonzero(np.isin(groups, train)), np.flatnonzero(np.isin(groups, test))


def _chronological_key(name: str):
    digits = "".join(ch for ch in name if ch.isdigit())
    return (int(digits) if digits else 0, name)


@dataclass
class Split:
    subject: object
    session: str
    train: np.ndarray
    test: np.ndarray
    #: Test sessions scored apart after one fit, ``(label, indices)`` each (a holdout of
    #: several sessions, as BCI IV 2b's 4 and 5): one row per session, as MOABB's
    #: cross-session scores, and test-time alignment sees one session at a time.
    #: ``None``: ``test`` is scored as one.
    parts: list[tuple[str, np.ndarray]] | None = None
    #: With transfer: the source subjects whose trials joined ``train``, and how many of the
    #: target's own trials it keeps (reported in the row's ``params``).
    transfer: dict = field(default_factory=dict)

    def scored(self) -> list[tuple[str, np.ndarray]]:
        return self.parts or [(self.session, self.test)]


#: Evaluation kinds that take ``params.transfer`` (a target subject's own sessions or runs split).
TRANSFER_KINDS = ("cross_session", "pseudo_online", "cross_run")


@dataclass
class Transfer:
    """``evaluation.params.transfer``: learn from other subjects too.

    Every session (run) of the ``subjects`` joins the target subject's training trials, each
    aligned to its own reference by the pipelines' alignment step (the per-domain re-centring
    of pyRiemann's ``TLCenter``, Zanini et al. 2018; Euclidean alignment for the deep models,
    He & Wu 2020), and the target's test sessions are scored as without transfer.
    ``calibration_trials`` keeps only the first N of the target's own training trials, in
    recorded order (0: none, a new user with no calibration; null: all of them).
    """

    subjects: str | list = "others"  # "others": every other subject of the dataset's list, or a list
    calibration_trials: int | None = None

    @classmethod
    def from_params(cls, params: dict, kind: str) -> "Transfer | None":
        if params.get("transfer") is None:
            return None
        key = "evaluation.params.transfer"
        if kind not in TRANSFER_KINDS:
            raise ConfigError(f"{key}: applies to kind {', '.join(TRANSFER_KINDS)}; found kind {kind!r}")
        spec = from_section(cls, params["transfer"], key)
        if isinstance(spec.subjects, str) and spec.subjects != "others":
            raise ConfigError(f"{key}.subjects: expected 'others' or a list of subjects, found {spec.subjects!r}")
        if spec.calibration_trials is not None and spec.calibration_trials < 0:
            raise ConfigError(f"{key}.calibration_trials: expected >= 0 or null, found {spec.calibration_trials}")
        return spec

    def sources(self, target, subjects: list) -> list:
        """The source subjects for ``target``: never the target itself."""
        pool = subjects if self.subjects == "others" else self.subjects
        sources = [s for s in pool if str(s) != str(target)]
        if not sources:
            raise DataError(f"transfer to subject {target}: no other subject to learn from (subjects: {list(pool)})")
        return sources


def make_splits(kind: str, params: dict, y: np.ndarray, meta: pd.DataFrame, seed: int, target=None) -> list[Split]:
    """Train/test index splits of one subject's (or, cross-subject, all) trials.

    With ``params.transfer`` (:class:`Transfer`), ``meta`` holds the ``target`` subject's trials
    and the source subjects': the target's are split as without transfer, then the sources'
    join every training set."""

    meta = meta.reset_index(drop=True)
    transfer = Transfer.from_params(params, kind)
    if transfer is not None:
        return _transfer_splits(kind, params, y, meta, seed, target, transfer)
    splits = []
    if kind == "within_session":
        splitter = WithinSessionSplitter(n_folds=int(params.get("n_folds", 5)), shuffle=True, random_state=seed)
        for train, test in splitter.split(y, meta):
            splits.append(Split(meta.subject[test[0]], str(meta.session[test[0]]), train, test))
    elif kind in ("cross_session", "pseudo_online"):
        sessions = meta.session.astype(str)
        if sessions.nunique() < 2:
            raise DataError(
                f"cross-session evaluation needs at least two sessions; subject {meta.subject[0]} has "
                f"{sessions.nunique()} ({sessions.unique().tolist()}); use kind: cross_run or within_session"
            )
        if "train_sessions" in params or "test_sessions" in params:
            holdout = GroupHoldout(params.get("train_sessions"), params.get("test_sessions"))
            for train, test in holdout.split(meta, y, sessions):
                names = sorted(sessions[test].unique(), key=_chronological_key)
                parts = [(n, test[sessions[test].to_numpy() == n]) for n in names]
                splits.append(Split(meta.subject[0], "+".join(names), train, test, parts if len(parts) > 1 else None))
        else:
            for train, test in CrossSessionSplitter().split(y, meta):
                splits.append(Split(meta.subject[test[0]], str(meta.session[test[0]]), train, test))
    elif kind == "cross_run":
        runs = meta.session.astype(str) + "/" + meta.run.astype(str)
        if runs.nunique() < 2:
            raise DataError(f"cross-run evaluation needs at least two runs; subject {meta.subject[0]} has one")
        holdout = GroupHoldout(params.get("train_runs"), params.get("test_runs"))
        for train, test in holdout.split(meta, y, meta.run.astype(str)):
            splits.append(Split(meta.subject[0], "run " + "+".join(sorted(meta.run[test].astype(str).unique())), train, test))
    elif kind == "cross_subject":
        for train, test in CrossSubjectSplitter().split(y, meta):
            splits.append(Split(meta.subject[test[0]], "all", train, test))
    else:  # validated in bci.config
        raise ConfigError(f"unknown evaluation kind {kind!r}")
    return splits


def _transfer_splits(kind, params, y, meta, seed, target, transfer: Transfer) -> list[Split]:
    is_target = (meta.subject.astype(str) == str(target)).to_numpy()
    own, sources = np.flatnonzero(is_target), np.flatnonzero(~is_target)
    if not len(own) or not len(sources):
        raise DataError(f"transfer to subject {target}: expected its trials and other subjects'; found {len(own)} and {len(sources)}")
    plain = {k: v for k, v in params.items() if k != "transfer"}
    splits = []
    for split in make_splits(kind, plain, y[own], meta.iloc[own], seed):
        mine = own[split.train][: transfer.calibration_trials]  # recorded order: the first N
        parts = [(name, own[idx]) for name, idx in split.parts] if split.parts else None
        info = {"transfer_from": sorted(meta.subject[sources].unique().tolist()), "own_trials": int(len(mine))}
        splits.append(Split(split.subject, split.session, np.concatenate([mine, sources]), own[split.test], parts, info))
    return splits


def chosen_params(estimator) -> dict:
    """Hyper-parameters a fitted estimator chose: grid winners, selected order/lag."""
    found: dict = {}
    stack = [("", estimator)]
    while stack:
        prefix, est = stack.pop()
        best = getattr(est, "best_params_", None)
        if isinstance(best, dict):
            found.update({f"{prefix}{k}": _plain(v) for k, v in best.items()})
        for attr in ("order_", "lag_"):
            if hasattr(est, attr):
                found[f"{prefix}{attr.rstrip('_')}"] = _plain(getattr(est, attr))
        for name, sub in getattr(est, "steps", []):
            stack.append((f"{name}__" if prefix == "" else f"{prefix}{name}__", sub))
        if hasattr(est, "best_estimator_"):
            stack.append((prefix, est.best_estimator_))
    return short_param_names(found)


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value if isinstance(value, (int, float, str, bool)) else str(value)


def _group_fit_params(estimator, groups: np.ndarray) -> dict:
    """``step__groups`` for the pipeline steps whose fit takes groups (alignment per session/run)."""

    params = {}
    for name, step in getattr(estimator, "steps", []):
        if step != "passthrough" and "groups" in inspect.signature(step.fit).parameters:
            params[f"{name}__groups"] = groups
    return params


#: Pseudo-online adaptation modes, side by side: the training reference, the reference following
#: the session trial by trial (the live loop's), and the whole session's (transductive).
PSEUDO_ONLINE_MODES = ("none", "incremental", "transductive")
#: Trials after which the pseudo-online accuracies are also reported (the adaptation's warm-up).
LEARNING_TRIALS = 20


def session_model(name: str, estimator, n_channels: int, n_times: int, sfreq: float) -> TrainedModel:
    """A pipeline fitted on epochs as a streaming model: channels ``EEG1..EEGn``, no preprocessing
    (the paradigm's), one window per trial (window and hop = the trial's length)."""
    channels = ChannelSet([f"EEG{i + 1}" for i in range(n_channels)], ["eeg"] * n_channels)
    window_s = n_times / sfreq
    return TrainedModel(name=name, estimator=estimator, classes=[str(c) for c in estimator.classes_], input_channels=channels,
                        sfreq=float(sfreq), window_s=window_s, hop_s=window_s, preprocessing={})  # fmt: skip


def play_session(model: TrainedModel, X: np.ndarray, adapt: bool) -> np.ndarray:
    """The trials ``X`` of one session pushed in recorded order, one after the other, through the
    model's streaming predictor (:meth:`TrainedModel.stream`, the live loop's): one decision per
    trial, ``(n_trials, n_classes)``, no look-ahead."""
    predictor = model.stream(model.sfreq, model.input_channels, catch_up=True, flat_uv=0.0, adapt=adapt)
    out = []
    for i, x in enumerate(X):
        proba = predictor.push(x)
        if proba is None or len(proba) != 1:
            raise DataError(f"{model.name}: trial {i} gave {0 if proba is None else len(proba)} decisions, expected 1")
        out.append(proba[0])
    return np.vstack(out)


def pseudo_online_session(est, X: np.ndarray, y: np.ndarray, sfreq: float) -> list[dict]:
    """One test session played trial by trial (:func:`play_session`) without adaptation and with
    incremental adaptation, beside transductive (whole-session) adaptation: a result per mode
    with its accuracy, the accuracy after :data:`LEARNING_TRIALS` trials and every trial's
    correctness (the learning curve) in ``params``. Pipelines without an alignment have one mode."""
    model = session_model("pipeline", est, X.shape[1], X.shape[2], sfreq)
    aligned = model.online_adaptation() is not None
    results = []
    for mode in PSEUDO_ONLINE_MODES if aligned else ("none",):
        t0 = time.perf_counter()
        if mode == "transductive":  # the alignment steps re-centre the whole session at once
            steps = alignment_steps(est)
            before = [s.adapt for s in steps]
            for s in steps:
                s.adapt = True
            proba = model.order_proba(class_probabilities(est, X))
            for s, adapt in zip(steps, before):
                s.adapt = adapt
        else:
            proba = play_session(model, X, adapt=mode == "incremental")
        elapsed = time.perf_counter() - t0
        correct = (np.asarray(model.classes)[proba.argmax(axis=1)] == np.asarray(y).astype(str)).astype(int)
        results.append({
            "mode": mode, "score": float(correct.mean()), "accuracy": float(correct.mean()), "predict_time": elapsed,
            "scoring": "accuracy (pseudo-online)",
            "params": json.dumps({"adaptation": mode, f"accuracy_after_{LEARNING_TRIALS}": float(correct[LEARNING_TRIALS:].mean()),
                                  "correct": correct.tolist()}),
        })  # fmt: skip
    return results


def run_cell(pipeline, X, y, split: Split, scoring: str, seed: int, sfreq: float, groups: np.ndarray,
             kind: str = "cross_session") -> list[dict]:  # fmt: skip
    """Fit on the split's training trials, score on its test trials: one result per
    scored part (:meth:`Split.scored`), each with its ``session`` label.

    Steps that align signals or matrices per group (Euclidean alignment, Riemannian
    re-centering) get the training trials' session (or run) labels as ``groups``.
    """
    est = fill_unset(clone(pipeline), seed=seed, sfreq=sfreq, scoring=scoring)
    scored = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        est.fit(X[split.train], y[split.train], **_group_fit_params(est, groups[split.train]))
        fit_time = time.perf_counter() - t0
        for session, test in split.scored():
            if kind == "pseudo_online":
                scored += [(session, test, r) for r in pseudo_online_session(est, X[test], y[test], sfreq)]
                continue
            t0 = time.perf_counter()
            score = get_scorer(scoring)(est, X[test], y[test])
            accuracy = accuracy_score(y[test], est.predict(X[test]))
            scored.append((session, test, {"score": float(score), "accuracy": float(accuracy),
                                           "predict_time": time.perf_counter() - t0}))  # fmt: skip
    messages = sorted({str(w.message).splitlines()[0][:100] for w in caught if not issubclass(w.category, (FutureWarning, DeprecationWarning))})
    common = {
        "time": fit_time,
        "fit_time": fit_time,
        "samples": int(len(split.train)),
        "params": json.dumps({**chosen_params(est), **split.transfer}, sort_keys=True),
        "warnings": "; ".join(f"{m} (x{sum(str(w.message).startswith(m) for w in caught)})" for m in messages),
    }
    rows = [{"session": session, "n_test": int(len(test)), **common, **result} for session, test, result in scored]
    for row, (_, _, result) in zip(rows, scored):
        if "params" in result:  # the pipeline's chosen hyper-parameters beside the mode's figures
            row["params"] = json.dumps({**json.loads(common["params"]), **json.loads(result["params"])}, sort_keys=True)
    return rows


def build_paradigm(cfg: Config):
    spec = cfg.get("paradigm") or {"name": "LeftRightImagery", "params": {}}
    cls = getattr(mp, spec["name"], None)
    if cls is None or not isinstance(cls, type):
        raise cfg.error("paradigm.name", f"unknown MOABB paradigm {spec['name']!r} (e.g. LeftRightImagery, MotorImagery)")
    try:
        return cls(**spec.get("params", {}))
    except (TypeError, ValueError) as exc:
        raise cfg.error("paradigm.params", str(exc)) from None


def plan(cfg: Config, subjects_override: list[int] | None = None):
    """Resolve datasets, subjects, paradigm, pipelines and evaluation before any long work."""
    mne_data = (cfg.get("data") or {}).get("mne_data")
    if mne_data and not os.environ.get("MNE_DATA"):
        os.environ["MNE_DATA"] = str(cfg.resolve_path(mne_data))
    if not cfg.get("datasets"):
        raise cfg.error("datasets", "expected at least one dataset")
    if "evaluation" not in cfg:
        raise cfg.error("evaluation", "missing; expected a mapping with kind: cross_session | within_session | cross_subject | cross_run | pseudo_online")
    paradigm = build_paradigm(cfg)
    pipelines = load_pipelines(cfg["pipelines"], cfg)
    kind = cfg["evaluation"]["kind"]
    jobs = []
    for i, spec in enumerate(cfg["datasets"]):
        params = dict(spec.get("params", {}))
        if "path" in params:
            params["path"] = str(cfg.resolve_path(params["path"]))
        try:
            dataset = get_dataset(spec["name"], **params)
        except ConfigError as exc:
            raise cfg.error(f"datasets[{i}].name", str(exc)) from None
        subjects = subjects_override or spec.get("subjects") or list(dataset.subject_list)
        unknown = [s for s in subjects if s not in dataset.subject_list]
        if unknown:
            raise DataError(f"{dataset.code}: subjects {unknown} do not exist (available {dataset.subject_list[0]}..{dataset.subject_list[-1]})")
        if kind in ("cross_session", "pseudo_online") and dataset.n_sessions < 2:
            raise DataError(f"{dataset.code} has {dataset.n_sessions} session per subject: cross-session evaluation is impossible; use kind: cross_run")
        if not paradigm.is_valid(dataset):
            raise DataError(f"{dataset.code} is not compatible with paradigm {type(paradigm).__name__}")
        jobs.append((dataset, subjects))
    return paradigm, pipelines, jobs


@dataclass
class SubjectData:
    """One subject's (cross-subject: all subjects'; transfer: the target's and its sources')
    trials and what every cell on them shares."""

    X: np.ndarray
    y: np.ndarray
    meta: pd.DataFrame
    splits: list[Split]
    sfreq: float
    groups: np.ndarray  # "subject/session" (cross-run: "subject/run") label of every trial

    @classmethod
    def prepare(cls, paradigm, dataset, X, y, meta, kind: str, ev_params: dict, seed: int, target=None) -> "SubjectData":
        splits = make_splits(kind, ev_params, y, meta, seed, target)
        sfreq = data_sfreq(paradigm, dataset, X.shape[-1])
        column = meta.run if kind == "cross_run" else meta.session
        groups = (meta.subject.astype(str) + "/" + column.astype(str)).to_numpy()
        return cls(X, y, meta, splits, sfreq, groups)


def cell_rows(dataset_code: str, name: str, pipeline, data: SubjectData, kind: str, scoring: str, seed: int) -> list[dict]:
    """The results.csv rows of one (dataset, subject, pipeline) cell: one per scored test part."""
    rows = []
    for split in data.splits:
        for cell in run_cell(pipeline, data.X, data.y, split, scoring, seed, data.sfreq, data.groups, kind):
            mode = cell.pop("mode", None)
            rows.append({
                "dataset": dataset_code, "subject": split.subject, "pipeline": name if mode is None else f"{name} | {mode}",
                "channels": data.X.shape[1],
                "n_sessions": data.meta.session.nunique(), "evaluation": kind, "scoring": scoring, "seed": seed, **cell,
            })  # fmt: skip
    return rows


def summary_text(frame: pd.DataFrame) -> str:
    """The console summary of ``bci evaluate``: mean score per pipeline, or the seizure tables."""
    if len(frame) and (frame.evaluation == "seizure").all():
        return seizure_summary_text(frame)
    summary = frame.groupby("pipeline").score.agg(["mean", "std", "count"]).sort_values("mean", ascending=False)
    return summary.to_string(float_format=lambda v: f"{v:.3f}")


def evaluate(
    cfg: Config,
    out_dir: str | Path,
    subjects: list[int] | None = None,
    progress: bool = True,
    cluster: str | None = None,
) -> pd.DataFrame:
    """Run the evaluation the config describes; writes results.csv, summary.md, plots.

    ``evaluation.kind: seizure`` is :func:`bci.seizure.evaluate_seizure` (Bonn segments and
    continuous recordings); every other kind runs MOABB-style cells here. ``cluster``:
    ``None`` runs the cells here, one after the other; ``"local:N"`` (N worker processes on
    this machine) or a scheduler address (``"tcp://host:8786"``) runs them as Dask futures
    (see :func:`run_on_cluster`) with the same rows and scores.
    """
    if (cfg.get("evaluation") or {}).get("kind") == "seizure":
        if subjects or cluster:
            raise ConfigError("--subjects and --cluster apply to MOABB evaluations; the seizure evaluation runs Bonn and its recordings here")
        return evaluate_seizure(cfg, out_dir, progress=progress)

    mne.set_log_level("ERROR")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paradigm, pipelines, jobs = plan(cfg, subjects)
    kind, ev_params, seed = cfg["evaluation"]["kind"], cfg["evaluation"].get("params", {}), cfg["seed"]
    scoring = cfg["evaluation"].get("scoring") or paradigm.scoring
    results = ResultsFile(out / "results.csv", RESULT_COLUMNS)
    (out / "config.json").write_text(json.dumps({**cfg, "seed": seed}, indent=2, default=str))
    transfer = Transfer.from_params(ev_params, kind)
    todo_cells = []
    for dataset, subject_list in jobs:
        groups = [[s] for s in subject_list] if kind != "cross_subject" else [subject_list]
        for group in groups:
            todo = {n: p for n, p in pipelines.items() if not all(results.finished(dataset.code, s, n) for s in group)}
            pool = group + transfer.sources(group[0], subject_list) if transfer else group
            if todo:
                todo_cells.append((dataset, group, todo, pool))
    if cluster is not None:
        run_on_cluster(
            cluster, paradigm, todo_cells, results,
            kind=kind, ev_params=ev_params, scoring=scoring, seed=seed, progress=progress,
        )  # fmt: skip
    else:
        # Load every subject first (each once, transfer sources too): a subject that is not
        # available fails before any fit.
        loaded: dict = {}
        needed = list(dict.fromkeys((dataset, s) for dataset, _, _, pool in todo_cells for s in pool))
        for dataset, s in tqdm(needed, desc="load", unit="subject", disable=not progress, leave=False):
            loaded[dataset.code, s] = load_subject_data(paradigm, dataset, s)
        total = sum(len(g) * len(t) for _, g, t, _ in todo_cells)
        bar = tqdm(total=total, desc="evaluate", unit="cell", disable=not progress)
        for dataset, group, todo, pool in todo_cells:
            X, y, meta = _concat(dataset, pool, [loaded[dataset.code, s] for s in pool])
            data = SubjectData.prepare(paradigm, dataset, X, y, meta, kind, ev_params, seed, group[0])
            for name, pipeline in todo.items():
                bar.set_postfix_str(f"{dataset.code} s{group[0] if len(group) == 1 else 'all'} {name}")
                results.append(cell_rows(dataset.code, name, pipeline, data, kind, scoring, seed))
                bar.update(len(group))
        bar.close()
    frame = results.read()
    write_report(frame, out, title=cfg.get("name", Path(cfg.path).stem))
    return frame


# ------------------------------------------------------------------ Dask cluster
#: Thread pools pinned to one thread in every worker process (one task per thread):
#: multithreaded BLAS under parallel workers oversubscribes the cores (DESIGN.md 4).
THREAD_ENV = {
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1", "VECLIB_MAXIMUM_THREADS": "1",
}  # fmt: skip
#: Times a task that *raised* is re-run (a worker that dies is handled by the
#: scheduler: its tasks go to other workers, up to ``distributed.scheduler.allowed-failures``).
TASK_RETRIES = 1
#: How long to wait for an existing scheduler to answer.
CONNECT_TIMEOUT = "20s"


def parse_cluster(spec: str) -> tuple[str, int | str]:
    """``"local:N"`` -> ``("local", N)``; ``"tcp://host:port"`` -> ``("address", spec)``."""
    text = str(spec).strip()
    if text == "local":
        return "local", os.cpu_count() or 1
    if text.startswith("local:"):
        n = text.partition(":")[2]
        if n.isdigit() and int(n) >= 1:
            return "local", int(n)
    elif "://" in text and text.split("://", 1)[1]:
        return "address", text
    raise ConfigError(f"--cluster: expected local:N (N >= 1 worker processes) or a scheduler address such as tcp://host:8786, found {spec!r}")


def _connect(spec: str):
    """A Dask client (and the LocalCluster it owns, if any) for ``spec``."""

    kind, value = parse_cluster(spec)
    if kind == "local":
        # the scheduler runs in this process: its INFO/WARNING lines would break the progress bar
        logging.getLogger("distributed").setLevel(logging.ERROR)
        # dask sets MALLOC_TRIM_THRESHOLD_=65536 in its workers to limit fragmentation; it
        # turns off glibc's adaptive mmap threshold and made our cells 1.45x slower (ACM
        # grid cell, measured): keep glibc's default. No dashboard here, so no profiler.
        local_config = {
            "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
            "distributed.worker.profile.enabled": False,
        }
        with dask.config.set(local_config):
            cluster = LocalCluster(
                n_workers=value, threads_per_worker=1, processes=True, env=dict(THREAD_ENV),
                dashboard_address=None, silence_logs=logging.ERROR,
            )  # fmt: skip
        return Client(cluster, set_as_default=False), cluster
    try:
        return Client(value, timeout=CONNECT_TIMEOUT, set_as_default=False), None
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"--cluster: cannot reach the Dask scheduler at {value}: {str(exc).splitlines()[0]}") from None


def _pin_worker_threads(mne_data: str | None) -> None:
    """Run at the start of every task on a worker: one thread per pool, quiet MNE, data path.

    LocalCluster workers get :data:`THREAD_ENV` at spawn; workers of an existing
    cluster may not, so the pools already loaded are limited here too.
    """

    for key, value in THREAD_ENV.items():
        os.environ.setdefault(key, value)
    if mne_data and not os.environ.get("MNE_DATA"):
        os.environ["MNE_DATA"] = mne_data
    threadpool_limits(limits=1)
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)

    mne.set_log_level("ERROR")


def _load_task(paradigm, dataset, group, pool, kind, ev_params, seed, mne_data) -> SubjectData:
    _pin_worker_threads(mne_data)
    X, y, meta = _load(paradigm, dataset, pool)
    return SubjectData.prepare(paradigm, dataset, X, y, meta, kind, ev_params, seed, group[0])


def _cell_task(data: SubjectData, dataset_code, name, pipeline, kind, scoring, seed, mne_data) -> list[dict]:
    _pin_worker_threads(mne_data)
    return cell_rows(dataset_code, name, pipeline, data, kind, scoring, seed)


def run_on_cluster(spec: str, paradigm, cells, results: ResultsFile, *, kind, ev_params, scoring, seed, progress=True) -> None:
    """Evaluate ``cells`` (``(dataset, subjects, {name: pipeline}, subjects to load)``) as Dask futures.

    One task loads each subject group's trials on a worker (in parallel across
    workers; the arrays stay in worker memory and move only to the workers running
    that subject's cells); one task per (dataset, subject, pipeline) cell fits and
    scores it. Rows are appended to ``results`` here, on the client, as cells finish
    (``as_completed``), so an interrupted sweep resumes from what was written. A killed
    worker's tasks are rescheduled on the others (a lost subject is reloaded); a cell
    that comes back twice is written once (:meth:`ResultsFile.append`). At the end the
    rows of this run are put in the serial order, so a fresh run writes the same
    results.csv as the serial path.
    """

    mne_data = os.environ.get("MNE_DATA")
    client, cluster = _connect(spec)
    token = uuid.uuid4().hex[:8]
    order: dict[int, list[tuple[str, str, str]]] = {}
    try:
        futures, loads, pending = {}, {}, {}
        for i, (dataset, group, todo, pool) in enumerate(cells):
            tag = f"{dataset.code}-s{'+'.join(map(str, group)) if len(group) < 4 else 'all'}"
            loads[i] = client.submit(
                _load_task, paradigm, dataset, group, pool, kind, ev_params, seed, mne_data,
                key=f"load-{tag}-{token}", retries=TASK_RETRIES,
            )  # fmt: skip
            for j, (name, pipeline) in enumerate(todo.items()):
                future = client.submit(
                    _cell_task, loads[i], dataset.code, name, pipeline, kind, scoring, seed, mne_data,
                    key=f"cell-{tag}-{name}-{token}", retries=TASK_RETRIES,
                )  # fmt: skip
                futures[future] = (i, j, len(group), f"{tag} {name}")
            pending[i] = len(todo)
        total = sum(len(g) * len(t) for _, g, t, _ in cells)
        bar = tqdm(total=total, desc="evaluate", unit="cell", disable=not progress)
        for future in as_completed(list(futures), loop=client.loop):
            i, j, n_subjects, label = futures.pop(future)
            rows = future.result()  # re-raises the cell's error here
            results.append(rows)
            order.setdefault(i, []).extend((j, r["dataset"], str(r["subject"]), r["pipeline"]) for r in rows)
            pending[i] -= 1
            if not pending[i]:
                del loads[i]  # this subject's arrays are no longer needed on the workers
            if progress:
                info = client.scheduler_info(n_workers=1)  # cluster-wide counts only
                bar.set_postfix_str(f"{label} ({info.get('n_workers', len(info['workers']))} workers)")
            bar.update(n_subjects)
        bar.close()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    keys = [tuple(k[1:]) for i in sorted(order) for k in sorted(order[i], key=lambda k: k[0])]
    results.reorder(list(dict.fromkeys(keys)))


def data_sfreq(paradigm, dataset, n_times: int) -> float:
    """Sampling rate of the paradigm's epochs (MOABB returns arrays without it)."""
    if getattr(paradigm, "resample", None):
        return float(paradigm.resample)
    tmax = paradigm.tmax if paradigm.tmax is not None else dataset.interval[1] - dataset.interval[0]
    return (n_times - 1) / (tmax - paradigm.tmin)


def _load(paradigm, dataset, subjects):
    return _concat(dataset, subjects, [load_subject_data(paradigm, dataset, s) for s in subjects])


def _concat(dataset, subjects, parts):
    """One array of the subjects' ``(X, y, meta)`` parts, in order."""
    X = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    meta = pd.concat([p[2] for p in parts], ignore_index=True)
    if len(np.unique(y)) < 2:
        raise DataError(f"{dataset.code}, subjects {subjects}: only one class after epoching ({np.unique(y).tolist()})")
    return X, y, meta
