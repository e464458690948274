"""Evaluation sweep wall time: the serial path against Dask LocalClusters of 1 and 2 workers.

One fixed sweep (PhysionetMI left/right imagery, cross-run, 11 sensorimotor channels;
default subjects 1-4 x seven CPU-bound Riemannian pipelines, ours and MOABB's) runs
three times into fresh folders: ``serial`` (``bci evaluate`` without ``--cluster``,
the peer), ``local:1`` and ``local:2`` (``--cluster local:N``: one single-threaded
worker process per core, BLAS and torch pinned to one thread). Wall time includes
everything a user waits for: cluster start, worker imports, data loading, cells and
the report. Also printed: the summed fit+predict seconds of the cells (the CPU work),
whether the scores equal the serial run's, and the 1-minute load average before and
after each run (the machine may be shared: read the speed-ups with it).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

PIPELINES = ["acm_ts_svm_grid", "acm_ts_svm_auto", "moabb_ts_svm", "ts_svm", "fgmdm", "moabb_csp_lda", "moabb_mdm"]
CHANNELS = ["FC3", "FC4", "C5", "C3", "C1", "Cz", "C2", "C4", "C6", "CP3", "CP4"]


def sweep_config(subjects: list[int], pipelines: list[str], path: Path):
    from bci.config import Config, validate

    data = {
        "name": "distributed benchmark sweep",
        "seed": 42,
        "datasets": [{"name": "PhysionetMI", "subjects": subjects, "params": {"imagined": True}}],
        "paradigm": {"name": "LeftRightImagery", "params": {"fmin": 8, "fmax": 30, "channels": CHANNELS}},
        "evaluation": {"kind": "cross_run"},
        "pipelines": pipelines,
    }
    return validate(Config(data, path))


def _subjects(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="bci bench distributed", description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", default="1-4", help="PhysionetMI subjects (default 1-4)")
    parser.add_argument("--pipelines", default=",".join(PIPELINES), help="pipeline names, comma-separated")
    parser.add_argument("--workers", default="1,2", help="LocalCluster sizes to time (default 1,2)")
    parser.add_argument("--quick", action="store_true", help="subjects 1-2, three fast pipelines")
    parser.add_argument("--json", help="write the table as JSON records")
    args = parser.parse_args(argv)
    os.environ.setdefault("MNE_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mne_data"))
    from benchmarks.common import emit
    from bci.evaluate import evaluate

    subjects = [1, 2] if args.quick else _subjects(args.subjects)
    pipelines = ["moabb_ts_svm", "ts_svm", "moabb_mdm"] if args.quick else args.pipelines.split(",")
    modes = [None] + [f"local:{n}" for n in args.workers.split(",")]
    rows, reference = [], None
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        for mode in modes:
            out = Path(tmp) / (mode or "serial").replace(":", "")
            cfg = sweep_config(subjects, pipelines, out / "sweep.yaml")
            load_before = os.getloadavg()[0]
            t0 = time.perf_counter()
            frame = evaluate(cfg, out, progress=False, cluster=mode)
            wall = time.perf_counter() - t0
            scores = frame.set_index(["subject", "pipeline"]).score.sort_index()
            if reference is None:
                reference = scores
            rows.append({
                "mode": mode or "serial",
                "cells": len(frame),
                "wall_ms": round(wall * 1000),
                "cells_fit_predict_ms": round(float((frame.fit_time + frame.predict_time).sum()) * 1000),
                "speedup_vs_serial": None,
                "scores_equal_serial": bool(scores.equals(reference)),
                "load_1min_before": round(load_before, 2),
                "load_1min_after": round(os.getloadavg()[0], 2),
            })  # fmt: skip
    for row in rows:
        row["speedup_vs_serial"] = round(rows[0]["wall_ms"] / row["wall_ms"], 2)
    title = (
        f"Evaluation sweep: PhysionetMI subjects {subjects[0]}-{subjects[-1]} x {len(pipelines)} pipelines "
        f"(cross-run), serial vs Dask LocalCluster ({os.cpu_count()} cores; nice {os.nice(0)})"
    )
    emit(rows, title, args.json)
    return rows


if __name__ == "__main__":
    main()
