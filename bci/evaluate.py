"""Offline evaluation: pipelines side by side on MOABB datasets, cell by cell.

Data come from MOABB paradigms (``paradigm.get_data``), train/test splits from MOABB's
splitters (``WithinSessionSplitter``, ``CrossSessionSplitter``, ``CrossSubjectSplitter``)
and scores from the paradigm's scorer (ROC-AUC for two classes, else accuracy), so the
numbers are MOABB's. What we add: a chronological **cross-run** split for
single-session datasets (train on the earlier runs, test on the last: PhysionetMI's runs
4/8/12), a **holdout** of named sessions (train 1-3, test 4-5: the BCI IV 2b
competition protocol), fit/predict seconds and the hyper-parameters each fit chose
(order/lag, grid winners) in ``results.csv``, a progress bar over
subjects x pipelines, and resume: rows are appended as each (dataset, subject, pipeline)
cell finishes, and a re-run skips finished cells.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.metrics import accuracy_score, get_scorer
from sklearn.model_selection import BaseCrossValidator

from .config import Config
from .datasets import get_dataset, load_subject_data
from .errors import ConfigError, DataError

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


def make_splits(kind: str, params: dict, y: np.ndarray, meta: pd.DataFrame, seed: int) -> list[Split]:
    """Train/test index splits of one subject's (or, cross-subject, all) trials."""
    from moabb.evaluations.splitters import CrossSessionSplitter, CrossSubjectSplitter, WithinSessionSplitter

    meta = meta.reset_index(drop=True)
    splits = []
    if kind == "within_session":
        splitter = WithinSessionSplitter(n_folds=int(params.get("n_folds", 5)), shuffle=True, random_state=seed)
        for train, test in splitter.split(y, meta):
            splits.append(Split(meta.subject[test[0]], str(meta.session[test[0]]), train, test))
    elif kind == "cross_session":
        sessions = meta.session.astype(str)
        if sessions.nunique() < 2:
            raise DataError(
                f"cross-session evaluation needs at least two sessions; subject {meta.subject[0]} has "
                f"{sessions.nunique()} ({sessions.unique().tolist()}); use kind: cross_run or within_session"
            )
        if "train_sessions" in params or "test_sessions" in params:
            holdout = GroupHoldout(params.get("train_sessions"), params.get("test_sessions"))
            for train, test in holdout.split(meta, y, sessions):
                splits.append(Split(meta.subject[0], "+".join(sorted(sessions[test].unique(), key=_chronological_key)), train, test))
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
    leaves = [k.rsplit("__", 1)[-1] for k in found]
    if len(set(leaves)) == len(leaves):  # short names ("order", "C") when unambiguous
        return {k.rsplit("__", 1)[-1]: v for k, v in found.items()}
    return found


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value if isinstance(value, (int, float, str, bool)) else str(value)


def fill_unset(estimator: BaseEstimator, *, seed: int, sfreq: float) -> BaseEstimator:
    """Set unset ``random_state``/``seed`` (and shuffled inner CV splits) to ``seed``, ``sfreq`` to the data's rate."""
    update = {}
    for key, value in estimator.get_params(deep=True).items():
        leaf = key.split("__")[-1]
        if value is None and (leaf in ("random_state", "seed")):
            update[key] = seed
        elif value is None and leaf == "sfreq":
            update[key] = sfreq
        elif leaf == "cv" and getattr(value, "shuffle", False) and value.random_state is None:
            update[key] = type(value)(n_splits=value.n_splits, shuffle=True, random_state=seed)
    return estimator.set_params(**update) if update else estimator


def _group_fit_params(estimator, groups: np.ndarray) -> dict:
    """``step__groups`` for the pipeline steps whose fit takes groups (alignment per session/run)."""
    import inspect

    params = {}
    for name, step in getattr(estimator, "steps", []):
        if step != "passthrough" and "groups" in inspect.signature(step.fit).parameters:
            params[f"{name}__groups"] = groups
    return params


def run_cell(pipeline, X, y, split: Split, scoring: str, seed: int, sfreq: float, groups: np.ndarray) -> dict:
    """Fit on the split's training trials, score on its test trials.

    Steps that align signals or matrices per group (Euclidean alignment, Riemannian
    re-centering) get the training trials' session (or run) labels as ``groups``.
    """
    est = fill_unset(clone(pipeline), seed=seed, sfreq=sfreq)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        est.fit(X[split.train], y[split.train], **_group_fit_params(est, groups[split.train]))
        fit_time = time.perf_counter() - t0
        t0 = time.perf_counter()
        score = get_scorer(scoring)(est, X[split.test], y[split.test])
        accuracy = accuracy_score(y[split.test], est.predict(X[split.test]))
        predict_time = time.perf_counter() - t0
    messages = sorted({str(w.message).splitlines()[0][:100] for w in caught if not issubclass(w.category, (FutureWarning, DeprecationWarning))})
    return {
        "score": float(score),
        "accuracy": float(accuracy),
        "time": fit_time,
        "fit_time": fit_time,
        "predict_time": predict_time,
        "samples": int(len(split.train)),
        "n_test": int(len(split.test)),
        "params": json.dumps(chosen_params(est), sort_keys=True),
        "warnings": "; ".join(f"{m} (x{sum(str(w.message).startswith(m) for w in caught)})" for m in messages),
    }


class ResultsFile:
    """``results.csv`` written row by row; knows which cells are finished."""

    def __init__(self, path: Path):
        self.path = path
        self.done: set[tuple[str, str, str]] = set()
        if path.exists() and path.stat().st_size > 0:
            old = pd.read_csv(path)
            self.done = {(str(d), str(s), str(p)) for d, s, p in zip(old.dataset, old.subject, old.pipeline)}

    def finished(self, dataset: str, subject, pipeline: str) -> bool:
        return (dataset, str(subject), pipeline) in self.done

    def append(self, rows: list[dict]) -> None:
        frame = pd.DataFrame(rows, columns=RESULT_COLUMNS)
        if self.path.exists() and self.path.stat().st_size > 0:
            header = pd.read_csv(self.path, nrows=0).columns.tolist()
            if header != RESULT_COLUMNS:  # written by another version: rewrite with today's columns
                frame = pd.concat([pd.read_csv(self.path), frame], ignore_index=True)[RESULT_COLUMNS]
                frame.to_csv(self.path, index=False)
            else:
                frame.to_csv(self.path, mode="a", header=False, index=False)
        else:
            frame.to_csv(self.path, index=False)
        for r in rows:
            self.done.add((r["dataset"], str(r["subject"]), r["pipeline"]))

    def read(self) -> pd.DataFrame:
        return pd.read_csv(self.path) if self.path.exists() else pd.DataFrame(columns=RESULT_COLUMNS)


def build_paradigm(cfg: Config):
    import moabb.paradigms as mp

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
    from pipelines.registry import load_pipelines

    mne_data = (cfg.get("data") or {}).get("mne_data")
    if mne_data and not os.environ.get("MNE_DATA"):
        os.environ["MNE_DATA"] = str(cfg.resolve_path(mne_data))
    if not cfg.get("datasets"):
        raise cfg.error("datasets", "expected at least one dataset")
    if "evaluation" not in cfg:
        raise cfg.error("evaluation", "missing; expected a mapping with kind: cross_session | within_session | cross_subject | cross_run")
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
        if kind == "cross_session" and dataset.n_sessions < 2:
            raise DataError(f"{dataset.code} has {dataset.n_sessions} session per subject: cross-session evaluation is impossible; use kind: cross_run")
        if not paradigm.is_valid(dataset):
            raise DataError(f"{dataset.code} is not compatible with paradigm {type(paradigm).__name__}")
        jobs.append((dataset, subjects))
    return paradigm, pipelines, jobs


def evaluate(cfg: Config, out_dir: str | Path, subjects: list[int] | None = None, progress: bool = True) -> pd.DataFrame:
    """Run the evaluation the config describes; writes results.csv, summary.md, plots."""
    from tqdm.auto import tqdm

    from .report import write_report

    import mne

    mne.set_log_level("ERROR")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paradigm, pipelines, jobs = plan(cfg, subjects)
    kind, ev_params, seed = cfg["evaluation"]["kind"], cfg["evaluation"].get("params", {}), cfg["seed"]
    scoring = cfg["evaluation"].get("scoring") or paradigm.scoring
    results = ResultsFile(out / "results.csv")
    (out / "config.json").write_text(json.dumps({**cfg, "seed": seed}, indent=2, default=str))
    # Load every subject first: a subject that is not available fails before any fit.
    cells = []
    for dataset, subject_list in jobs:
        groups = [[s] for s in subject_list] if kind != "cross_subject" else [subject_list]
        for group in groups:
            todo = {n: p for n, p in pipelines.items() if not all(results.finished(dataset.code, s, n) for s in group)}
            if todo:
                cells.append((dataset, group, todo, _load(paradigm, dataset, group)))
    total = sum(len(g) * len(t) for _, g, t, _ in cells)
    bar = tqdm(total=total, desc="evaluate", unit="cell", disable=not progress)
    for dataset, group, todo, (X, y, meta) in cells:
        splits = make_splits(kind, ev_params, y, meta, seed)
        sfreq = data_sfreq(paradigm, dataset, X.shape[-1])
        column = meta.run if kind == "cross_run" else meta.session
        groups = (meta.subject.astype(str) + "/" + column.astype(str)).to_numpy()
        for name, pipeline in todo.items():
            bar.set_postfix_str(f"{dataset.code} s{group[0] if len(group) == 1 else 'all'} {name}")
            rows = []
            for split in splits:
                cell = run_cell(pipeline, X, y, split, scoring, seed, sfreq, groups)
                rows.append({
                    "dataset": dataset.code, "subject": split.subject, "session": split.session,
                    "pipeline": name, "channels": X.shape[1], "n_sessions": meta.session.nunique(),
                    "evaluation": kind, "scoring": scoring, "seed": seed, **cell,
                })  # fmt: skip
            results.append(rows)
            bar.update(len(group))
    bar.close()
    frame = results.read()
    write_report(frame, out, title=cfg.get("name", Path(cfg.path).stem))
    return frame


def data_sfreq(paradigm, dataset, n_times: int) -> float:
    """Sampling rate of the paradigm's epochs (MOABB returns arrays without it)."""
    if getattr(paradigm, "resample", None):
        return float(paradigm.resample)
    tmax = paradigm.tmax if paradigm.tmax is not None else dataset.interval[1] - dataset.interval[0]
    return (n_times - 1) / (tmax - paradigm.tmin)


def _load(paradigm, dataset, subjects):
    parts = [load_subject_data(paradigm, dataset, s) for s in subjects]
    X = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    meta = pd.concat([p[2] for p in parts], ignore_index=True)
    if len(np.unique(y)) < 2:
        raise DataError(f"{dataset.code}, subjects {subjects}: only one class after epoching ({np.unique(y).tolist()})")
    return X, y, meta
