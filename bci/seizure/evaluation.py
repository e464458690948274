"""The seizure evaluation (``evaluation: {kind: seizure}``): Bonn segments cross-validated, then
SzCORE event scores of every pipeline on the continuous recordings, run as live."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import mne
import numpy as np
import pandas as pd
from sklearn.base import clone
from tqdm.auto import tqdm

from pipelines.registry import fill_unset, load_pipelines
from pipelines.seizure import combine_channels

from ..alarm import TARGET_FP_PER_24H, AlarmRule, detect_alarms, operating_point, smoothed_trace
from ..config import check_keys
from ..errors import ConfigError, DataError
from ..io import load_recording
from ..preprocess import Preprocessor
from ..report import ResultsFile
from ..szcore import SCORE_COLUMNS, bids_recordings, read_seizures_tsv, score_recording
from .data import CLASSES, WindowSpec, bonn_windows, parse_task, recording_windows, segment_folds
from .detector import channel_probabilities, event_model, joint_probabilities, model_folder
from .metrics import alarm_events, latency, per_segment, segment_metrics, window_traces
from .report import plot_trend, summary_markdown

log = logging.getLogger(__name__)


RESULT_COLUMNS = [
    "dataset", "subject", "session", "pipeline", "score", "accuracy", "sensitivity", "specificity",
    "roc_auc", "kappa", "window_accuracy", "window_roc_auc", "time", "fit_time", "predict_time",
    "samples", "n_test", "channels", "recording", "combine", "latency_s", "raw_latency_s", "n_alarms", *SCORE_COLUMNS,
    "evaluation", "scoring", "seed", "params",
]  # fmt: skip


SEGMENT_COLUMNS = ["task", "pipeline", "fold", "segment", "label", "proba"]
EVAL_KEYS = {"tasks", "n_folds", "threshold", "events"}


EVENT_KEYS = {"recording", "onset_s", "offset_s", "hop_s", "combine", "report_combine", "train_task", "alarm",
              "operating_point", "target_latency_s", "target_false_alarms"}  # fmt: skip


def _model_prep(cfg) -> tuple[Preprocessor, WindowSpec]:
    pre_cfg = dict(cfg.get("preprocessing") or {})
    if pre_cfg.pop("euclidean_alignment", False):
        raise cfg.error("preprocessing.euclidean_alignment", "not used by the seizure evaluation (single-channel windows)")
    pre = Preprocessor.from_config(pre_cfg)
    try:
        spec = WindowSpec.from_config(cfg.get("window"))
    except ConfigError as exc:
        raise cfg.error("window", str(exc)) from None
    if pre.resample and abs(float(pre.resample) - spec.sfreq) > 1e-9:
        raise cfg.error("window.sfreq", f"{spec.sfreq:g} Hz differs from preprocessing.resample ({pre.resample} Hz)")
    return pre, spec


def _check_model_input(estimator, spec: WindowSpec) -> None:
    """MVPFormer limits, checked before any fit: whole segments, at most the time codebook."""
    for _, value in estimator.get_params(deep=True).items():
        if getattr(value, "model", None) == "MVPFormer" and hasattr(value, "module_params"):
            mp = dict(value.module_params or {})
            seg = int(mp.get("segment_len", 2560))
            if spec.n_times % seg:
                raise ConfigError(
                    f"MVPFormer: windows of {spec.n_times} samples ({spec.length_s:g} s at {spec.sfreq:g} Hz) are not "
                    f"a whole number of segments of segment_len={seg} samples"
                )
            if spec.n_times // seg > int(mp.get("max_segments", 110)):
                raise ConfigError(
                    f"MVPFormer: {spec.n_times // seg} segments per window, more than max_segments="
                    f"{mp.get('max_segments', 110)} (the size of the time codebook)"
                )


def _fit(pipeline, X, y, seed: int, sfreq: float):
    est = fill_unset(clone(pipeline), seed=seed, sfreq=sfreq)
    t0 = time.perf_counter()
    est.fit(X, y)
    return est, time.perf_counter() - t0


def _predict(est, X, batch: int = 2048) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    p = np.concatenate([est.predict_proba(X[i : i + batch])[:, -1] for i in range(0, len(X), batch)])
    return p, time.perf_counter() - t0


def _malow_path(cfg, events: dict) -> Path:
    data = cfg.get("data") or {}
    return cfg.resolve_path(str(events.get("recording") or data.get("malow") or "../shared/data/seizure/malow"))


def _bids_roots(cfg) -> list[Path]:
    """Roots of the config's ``datasets: [{name: bids, path: ROOT}]`` entries."""
    roots = []
    for i, ds in enumerate(cfg.get("datasets") or []):
        if ds.get("name") != "bids" or set(ds) - {"name", "path", "params"} or ds.get("params") or not ds.get("path"):
            raise cfg.error(f"datasets[{i}]", f"the seizure evaluation reads BIDS-EEG datasets, {{name: bids, path: ROOT}}; found {ds!r}")
        roots.append(cfg.resolve_path(str(ds["path"])))
    return roots


def _continuous_recordings(cfg, events: dict) -> list[dict]:
    """The recordings scored with the detector: Malow (its seizure from ``events``) and
    every recording of the BIDS datasets (seizures from its events.tsv); a seizure end
    of None runs to the end of the recording."""
    malow = _malow_path(cfg, events)
    if not malow.exists():
        raise DataError(f"{malow}: no such recording (evaluation.params.events.recording or data.malow)")
    offset = events.get("offset_s")
    out = [{"dataset": "Malow", "subject": "1", "recording": malow.name, "path": malow,
            "seizures": [(float(events["onset_s"]), None if offset is None else float(offset))]}]  # fmt: skip
    for root in _bids_roots(cfg):
        out += [{"dataset": f"BIDS {root.name}", "subject": bp.subject, "recording": bp.fpath.name, "path": bp.fpath,
                 "seizures": read_seizures_tsv(tsv)} for bp, tsv in bids_recordings(root)]  # fmt: skip
    return out


def evaluate_seizure(cfg, out_dir, progress: bool = True):
    """Bonn segment metrics (cross-validated) and SzCORE event scores on the continuous
    recordings (Malow, BIDS datasets); writes the report.

    Writes ``results.csv`` (one row per task x pipeline x fold, ``session="segments"``,
    and one per continuous recording x pipeline x channel combination,
    ``session="events"``), ``segments.csv`` (out-of-fold probability of every Bonn
    segment), ``traces.csv`` (decision time, probabilities, per recording), ``summary.md``,
    ``malow_trend.png`` and, with ``events``, the detectors trained for them as saved models
    (``models/<pipeline>``, :func:`event_model`). Returns the results frame.
    """
    mne.set_log_level("ERROR")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = check_keys(cfg["evaluation"].get("params"), EVAL_KEYS, f"{cfg.path}: evaluation.params")
    seed = cfg["seed"]
    pre, spec = _model_prep(cfg)
    bonn_root = cfg.resolve_path(str((cfg.get("data") or {}).get("bonn", "../shared/data/seizure/bonn")))
    if not cfg.get("pipelines"):
        raise cfg.error("pipelines", "expected at least one pipeline (e.g. seizure_bandpower_lr)")
    pipelines = load_pipelines(cfg["pipelines"], cfg)
    for est in pipelines.values():
        _check_model_input(est, spec)
    tasks = params.get("tasks", ["ABCD-E", "A-E"])
    for t in tasks:
        parse_task(t)
    n_folds = int(params.get("n_folds", 5))
    threshold = float(params.get("threshold", 0.5))
    events = params.get("events")
    if events is not None:
        events = check_keys(events, EVENT_KEYS, f"{cfg.path}: evaluation.params.events")
        if "onset_s" not in events:
            raise cfg.error("evaluation.params.events.onset_s", "missing: the seizure onset in seconds")
        detector = AlarmRule.from_config(events.get("alarm"), key="evaluation.params.events.alarm")
        point = events.get("operating_point")
        target = point.get("target_fp_per_24h", TARGET_FP_PER_24H) if isinstance(point, dict) else None
        if point is not None and (set(point) - {"target_fp_per_24h"} or isinstance(target, bool)
                                  or not isinstance(target, (int, float)) or target <= 0):  # fmt: skip
            raise cfg.error("evaluation.params.events.operating_point", f"expected {{target_fp_per_24h: N > 0}}, found {point!r}")
        recordings = _continuous_recordings(cfg, events)
    elif cfg.get("datasets"):
        raise cfg.error("datasets", "continuous recordings are scored with the detector of evaluation.params.events: add that section")
    settings = {
        name: {k: v for k, v in est.get_params(deep=True).items() if isinstance(v, (int, float, str, bool, type(None), list, tuple, dict))}
        for name, est in pipelines.items()
    }  # fmt: skip
    config_text = json.dumps({**cfg, "seed": seed, "pipeline_settings": settings}, indent=2, default=str)
    results = ResultsFile(out / "results.csv", RESULT_COLUMNS)
    segments = ResultsFile(out / "segments.csv", SEGMENT_COLUMNS, key=("task", "pipeline", "fold"))
    config_file = out / "config.json"
    if not config_file.is_file() or config_file.read_text() != config_text:  # another config: nothing to resume
        results.clear()
        segments.clear()
    config_file.write_text(config_text)

    common = {"evaluation": "seizure", "seed": seed}
    n_cells = len(tasks) * len(pipelines) * n_folds + (len(pipelines) * (1 + len(recordings)) if events else 0)
    bar = tqdm(total=n_cells, desc="seizure", unit="fit", disable=not progress)
    # out-of-fold window probabilities of the events' training task: each pipeline's operating point
    oof: dict = {}
    for task in tasks:
        data = bonn_windows(bonn_root, task, preprocessing=pre, window=spec)
        folds = segment_folds(data, n_folds, seed)
        for name, pipeline in pipelines.items():
            if events and parse_task(task) == parse_task(events.get("train_task", "ABCD-E")):
                oof[name] = (data, np.full(len(data.y), np.nan))
            for k, (train, test) in enumerate(folds):
                if results.finished(f"Bonn {data.task}", f"fold {k + 1}", name):  # same config, finished by an earlier run
                    bar.update(1)
                    continue
                bar.set_postfix_str(f"{task} {name} fold {k + 1}")
                est, fit_time = _fit(pipeline, data.X[train], data.y[train], seed, spec.sfreq)
                proba, predict_time = _predict(est, data.X[test])
                if name in oof and oof[name][0] is data:
                    oof[name][1][test] = proba
                win = segment_metrics(data.y[test], proba, threshold)
                ids, seg_p, seg_y = per_segment(proba, data.groups[test], data.y[test])
                seg = segment_metrics(seg_y, seg_p, threshold)
                segments.append([{"task": data.task, "pipeline": name, "fold": k + 1, "segment": i, "label": int(l), "proba": float(p)}
                                 for i, p, l in zip(ids, seg_p, seg_y)])  # fmt: skip
                results.append([{
                    "dataset": f"Bonn {data.task}", "subject": f"fold {k + 1}", "session": "segments", "pipeline": name,
                    "score": seg["accuracy"], **{m: seg[m] for m in ("accuracy", "sensitivity", "specificity", "roc_auc", "kappa")},
                    "window_accuracy": win["accuracy"], "window_roc_auc": win["roc_auc"], "time": fit_time,
                    "fit_time": fit_time, "predict_time": predict_time, "samples": len(train), "n_test": int(seg["n"]),
                    "channels": int(data.X.shape[1]), "scoring": "segment accuracy", **common,
                    "params": json.dumps({"threshold": threshold, "windows_per_segment": data.info["windows_per_segment"]}),
                }])  # fmt: skip
                bar.update(1)

    traces = {}
    if events:
        points = _operating_points(events, detector, oof, spec)
        results.remove(session="events")  # the detectors run again: their traces make the plot
        results.append(_events(events, detector, recordings, pipelines, pre, spec, bonn_root, seed, common, traces, bar, points, out))
        _trace_csv(out / "traces.csv", traces)
        malow = recordings[0]["recording"]
        plot_trend(out / "malow_trend.png", {k[1:]: t for k, t in traces.items() if k[0] == malow}, events, detector)
    bar.close()
    frame = results.read()
    title = cfg.get("name", Path(cfg.path).stem)
    summary = summary_markdown(frame, title, cfg, segments.read(), events, detector if events else None, spec, pre, traces)
    (out / "summary.md").write_text(summary)
    return frame


def _operating_points(events, detector: AlarmRule, oof: dict, spec) -> dict:
    """``{pipeline: (rule, report)}``: the threshold for ``events.operating_point.target_fp_per_24h``
    on the pipeline's out-of-fold Bonn window probabilities (as ``bci train`` chooses it)."""
    point = events.get("operating_point")
    if not point:
        return {}
    out = {}
    for name, (data, proba) in oof.items():
        if np.isnan(proba).any():  # folds reused from an earlier run carry no window probabilities
            log.warning("%s: no operating point (folds resumed from an earlier run); delete the output folder to compute it", name)
            continue
        traces = window_traces(data.groups, data.y, proba, spec.length_s, spec.hop_s)
        out[name] = operating_point(detector, traces, float(point.get("target_fp_per_24h", TARGET_FP_PER_24H)))
    return out


def _events(events, detector, recordings, pipelines, pre, spec, bonn_root, seed, common, traces, bar, points, out) -> list[dict]:
    """Train every pipeline on all Bonn windows of ``train_task`` and save it as a model
    (``out/models/<pipeline>``, :func:`event_model`); run each on every continuous recording
    and score its events (:func:`bci.szcore.score_recording`), at the config's alarm rule
    and, for the main combination, at the pipeline's operating point (``points``: chosen on
    Bonn, so the row says how that threshold transfers).

    The main combination (``events.combine``, the pipelines' own) goes through the saved
    model's streaming predictor (:meth:`~bci.model.TrainedModel.predict_recording`): its
    alarms are those ``bci stream --model out/models/<pipeline>`` raises on a replay of
    the recording. The other combinations re-combine the same channels' probabilities."""
    hop = float(events.get("hop_s", 1.0))
    train = bonn_windows(bonn_root, events.get("train_task", "ABCD-E"), preprocessing=pre, window=spec)
    combine = events.get("combine", "top3")
    extra = [c for c in events.get("report_combine", ["mean", "max"]) if c != combine]
    fitted = {}
    for name, pipeline in pipelines.items():
        bar.set_postfix_str(f"{name} on Bonn {train.task}")
        est, fit_time = _fit(pipeline, train.X, train.y, seed, spec.sfreq)
        model = event_model(name, est, train, pre, spec, hop, detector, seed)
        model.save(out / "models" / model_folder(name))
        fitted[name] = (model, fit_time)
        bar.update(1)
    rows = []
    for rec in recordings:
        signal = load_recording(rec["path"])
        seizures = [(a, signal.duration if b is None else b) for a, b in rec["seizures"]]
        windows, times = recording_windows(signal, pre, spec, hop)
        for name, (model, fit_time) in fitted.items():
            bar.set_postfix_str(f"{rec['recording']} {name}")
            est = model.estimator
            t0 = time.perf_counter()
            # the main combination: the saved model through its streaming predictor, as bci stream runs it
            records = model.predict_recording(signal, hop_s=hop)
            predict_time = time.perf_counter() - t0
            if [round(r["end_s"], 6) for r in records] != [round(float(t), 6) for t in times]:
                raise DataError(f"{name}: the streaming predictor's windows differ from the evaluation's on {rec['recording']}")
            per_channel = channel_probabilities(est, windows)
            variants = {str(c): combine_channels(per_channel, c) for c in extra}
            variants = {str(combine): np.array([r[CLASSES[1]] for r in records]), **variants}
            joint = joint_probabilities(est, windows)
            if joint is not None:
                variants["joint"] = joint
            rules = {how: detector for how in variants}
            if name in points:
                rule_op, _ = points[name]
                variants[f"{combine} @ {rule_op.threshold:g}"] = variants[str(combine)]
                rules[f"{combine} @ {rule_op.threshold:g}"] = rule_op
            for how, proba in variants.items():
                alarms = detect_alarms(rules[how], times, proba)
                scores = score_recording(seizures, alarm_events(alarms, hop), signal.duration)
                traces[(rec["recording"], name, how)] = {
                    "times": times, "proba": proba, "smooth": smoothed_trace(rules[how], times, proba), "alarms": alarms,
                    "per_channel": per_channel if how == str(combine) else None, "channels": list(signal.channels.names),
                    "seizures": seizures, "duration": signal.duration, "hop": hop,
                }  # fmt: skip
                rows.append({
                    "dataset": rec["dataset"], "subject": rec["subject"], "session": "events", "recording": rec["recording"],
                    "pipeline": name, "combine": how, "score": scores["event_f1"], **scores,
                    "latency_s": latency([a["raised_s"] for a in alarms], seizures),
                    "raw_latency_s": latency(times[proba >= rules[how].threshold], seizures), "n_alarms": len(alarms),
                    "time": fit_time, "fit_time": fit_time, "predict_time": predict_time, "samples": len(train.y),
                    "n_test": len(times), "channels": int(windows.shape[1]), "scoring": "SzCORE event F1 (timescoring)",
                    **common, "params": json.dumps({"train_task": train.task, "seizures": seizures, "hop_s": hop,
                                                    "alarm": rules[how].to_config(),
                                                    "operating_point": points[name][1] if rules[how] is not detector else None,
                                                    "alarm_times": [round(a["raised_s"], 2) for a in alarms]}),
                })  # fmt: skip
            bar.update(1)
    return rows


def _trace_csv(path: Path, traces: dict) -> None:
    frames = [pd.DataFrame({"recording": r, "pipeline": n, "combine": c, "time_s": t["times"], "proba": t["proba"],
                            "smoothed": t["smooth"]}) for (r, n, c), t in traces.items()]  # fmt: skip
    if frames:
        pd.concat(frames).to_csv(path, index=False, float_format="%.5g")

