"""The trial window of a cross-session config, chosen on its training sessions alone.

``bci bench windows [--config CONFIG] [--pipeline NAME] [--windows 0-4 0.5-3.5 ...]``: for
each candidate window (seconds after the start of the dataset's interval: the cue, for
motor-imagery datasets), the pipeline is scored by
leave-one-session-out on the config's training sessions only (each held-out session aligned on
its own trials when the pipeline adapts, as ``bci evaluate`` scores it), per subject; the window
with the best inner mean over subjects is the choice. The score on the test sessions is printed
beside it for the record, never used to choose (benchmarks/RESULTS.md, issue 24). The epochs
are loaded once over the dataset's whole interval and cut per window.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bci.config import load_config
from bci.errors import ConfigError
from bci.evaluate import Split, _load, data_sfreq, plan, run_cell

from .common import emit

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "bnci2014_004_cross_session.yaml"
DEFAULT_WINDOWS = ("0-4", "0.5-4", "0.5-3.5", "0.5-2.5", "1-3", "1-4", "0-3")


def parse_window(text: str) -> tuple[float, float]:
    """``'0.5-3.5'`` -> ``(0.5, 3.5)`` seconds after the cue."""
    lo, sep, hi = text.partition("-")
    try:
        start, stop = float(lo), float(hi)
    except ValueError:
        start = stop = None
    if not sep or start is None or not 0 <= start < stop:
        raise ConfigError(f"window {text!r}: expected START-STOP seconds after the cue, 0 <= START < STOP (e.g. 0.5-3.5)")
    return start, stop


def _score(pipeline, X, y, sessions, train, test, sfreq, seed) -> float:
    """Mean accuracy over the ``test`` sessions of the pipeline fitted on the ``train`` ones, as
    ``bci evaluate`` scores a cross-session holdout (:func:`bci.evaluate.run_cell`: one fit, each
    test session scored, and aligned when the pipeline adapts, on its own)."""
    split = Split(subject=None, session="", train=np.flatnonzero(np.isin(sessions, train)), test=np.flatnonzero(np.isin(sessions, test)),
                  parts=[(s, np.flatnonzero(sessions == s)) for s in test])  # fmt: skip
    return float(np.mean([r["accuracy"] for r in run_cell(pipeline, X, y, split, "accuracy", seed, sfreq, sessions)]))


def run(config=DEFAULT_CONFIG, pipeline: str = "fbts_lr_recentered", windows=DEFAULT_WINDOWS, subjects=None,
        progress: bool = True) -> list[dict]:  # fmt: skip
    cfg = load_config(config)
    ev = (cfg.get("evaluation") or {}).get("params") or {}
    if "train_sessions" not in ev or "test_sessions" not in ev:
        raise ConfigError(f"{config}: evaluation.params needs train_sessions and test_sessions (a cross-session config)")
    train, test = [str(s) for s in ev["train_sessions"]], [str(s) for s in ev["test_sessions"]]
    if len(train) < 2:
        raise ConfigError(f"{config}: leave-one-session-out needs at least 2 training sessions, found {train}")
    spans = [parse_window(w) for w in windows]
    params = (cfg.get("paradigm") or {}).get("params") or {}
    for key in ("tmin", "tmax"):
        params.pop(key, None)  # the whole interval, cut per window below
    cfg["pipelines"] = [pipeline]
    paradigm, pipelines, jobs = plan(cfg, subjects)
    ((_, est),) = pipelines.items()
    dataset, subjects = jobs[0][0], jobs[0][1]
    inner = {w: [] for w in windows}
    outer = {w: [] for w in windows}
    for subject in tqdm(subjects, desc="subjects", disable=not progress):
        X, y, meta = _load(paradigm, dataset, [subject])
        sessions = meta.session.astype(str).to_numpy()
        sfreq = data_sfreq(paradigm, dataset, X.shape[-1])
        for w, (start, stop) in zip(windows, spans):
            a, b = int(round(start * sfreq)), int(round(stop * sfreq))
            if b > X.shape[-1]:
                raise ConfigError(f"window {w}: ends after the epochs ({X.shape[-1] / sfreq:g} s)")
            Xw = X[..., a:b]
            inner[w].append(np.mean([_score(est, Xw, y, sessions, [s for s in train if s != held], [held], sfreq, cfg["seed"])
                                     for held in train]))  # fmt: skip
            outer[w].append(_score(est, Xw, y, sessions, train, test, sfreq, cfg["seed"]))
    best = max(windows, key=lambda w: np.mean(inner[w]))
    return [{"window (s)": w, "inner per subject": " / ".join(f"{v:.3f}" for v in inner[w]),
             "inner mean": float(np.mean(inner[w])), "chosen": "yes" if w == best else "",
             "test (not used)": float(np.mean(outer[w]))} for w in windows]  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="bci bench windows", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--pipeline", default="fbts_lr_recentered")
    parser.add_argument("--windows", nargs="+", default=list(DEFAULT_WINDOWS), metavar="START-STOP")
    parser.add_argument("--subjects", help="e.g. 1,2 or 1-3 (default: the config's)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--json", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    from bci.cli import parse_subjects

    subjects = parse_subjects(args.subjects) if args.subjects else None
    rows = run(args.config, args.pipeline, args.windows, subjects, progress=not args.no_progress)
    emit(rows, f"Trial window by leave-one-session-out on the training sessions ({args.pipeline})", args.json)


if __name__ == "__main__":
    main()
